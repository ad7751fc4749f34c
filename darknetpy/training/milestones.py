"""What the Darknet training loop writes besides its iteration lines (``detector.c:
train_detector``).

Checkpoints ``_<N>``/``_last``/``_ema``/``_final`` (:func:`save`, :func:`periodic_saves`), the
mAP points with ``_best.weights`` (:func:`map_due`, :func:`evaluate_map`) and ``chart.png``
(:func:`draw`), each for the :class:`~darknetpy.training.setup.Run` the loop of
:mod:`darknetpy.training.train` holds. Buffers (batch-norm statistics) are averaged over the
processes before any of them is read; only rank 0 writes. Every rank evaluates the mAP (a share of
the list each, :mod:`darknetpy.training.map_eval`), so all of them meet the same collectives even
when the evaluation fails.
"""

from __future__ import annotations

from pathlib import Path

from ..model.weights import WeightsHeader, write_weights
from . import distributed as D
from .chart import draw_chart
from .checkpoint import checkpoint_path, save_checkpoint
from .map_eval import network_map
from .setup import Run

__all__ = ["draw", "evaluate_map", "map_due", "periodic_saves", "save"]


def save(run: Run, tag: str | int, with_state: bool = True) -> Path:
    """``<backup>/<cfgbase>_<tag>.weights`` (``save_weights``: version 0.2.5), with the exact-resume
    state beside it unless ``with_state`` is False; returns the path (every rank)."""
    loop, c = run.loop, run.c
    path = checkpoint_path(run.backup, run.base, tag)
    D.average_buffers(run.net, run.ctx)
    if run.ctx.is_main:
        header = WeightsHeader(0, 2, 5, loop.iteration * c.batch)  # save_weights: 0.2.5
        save_checkpoint(path, run.net, header, loop=loop if with_state else None,
                        optimizer=run.optimizer, ema=run.ema, scaler=run.scaler)  # fmt: skip
    return path


def draw(run: Run, chart: bool) -> None:
    """``chart.png`` and ``chart_<cfgbase>.png`` in the backup folder (rank 0, when ``chart``)."""
    loop, c = run.loop, run.c
    if chart and run.ctx.is_main:
        draw_chart([run.backup / "chart.png", run.backup / f"chart_{run.base}.png"],
                   loop.losses, loop.maps, max_batches=c.max_batches,
                   max_chart_loss=c.max_chart_loss,
                   title=f"{run.base}: iteration {loop.iteration}, avg loss "
                         f"{loop.avg_loss:.3f}, {loop.avg_time:.2f} hours left")  # fmt: skip


def periodic_saves(run: Run, *, stop: bool, chart: bool) -> Path | None:
    """``_<N>`` at the ``saveweights`` points; ``_last`` (and ``_ema`` once the EMA started) plus
    the chart at the ``savelast`` points or when the run is stopping. Returns the last path
    written."""
    loop, saves = run.loop, run.saves
    saved = None
    if saves.numbered_due(loop.iteration):
        saves.iter_save = loop.iter_save = loop.iteration
        saved = save(run, loop.iteration)
    if saves.last_due(loop.iteration) or stop:
        saves.iter_save_last = loop.iter_save_last = loop.iteration
        saved = save(run, "last")
        if run.ema is not None and run.ema.initialized:
            with run.ema.swapped():
                save(run, "ema", with_state=False)
        draw(run, chart)
    return saved


def map_due(run: Run) -> bool:
    """An mAP point: ``every_map`` iterations after the last one (never before ``burn_in``), and the
    end."""
    loop, c = run.loop, run.c
    next_map = max(loop.iter_map + run.every_map, c.burn_in)
    return loop.iteration >= next_map or loop.iteration >= c.max_batches


def evaluate_map(run: Run, thresh: float, iou_thresh: float) -> float:
    """The mAP point: ``validate_detector_map`` (points 0) on the network in memory, every rank a
    share of the list; keeps ``_best``; records it in the loop state. If the evaluation fails (on
    any rank: every rank raises the same error), ``_last`` is saved by all ranks together (the
    weights are fine) before the error goes on."""
    loop = run.loop
    loop.iter_map = loop.iteration
    try:
        loop.last_map = _network_map(run, thresh, iou_thresh)
    except Exception:
        saved = save(run, "last")  # the weights are fine: keep them
        run.say(f"the mAP evaluation failed; saved {saved}")
        raise
    except BaseException:  # Ctrl-C twice: only this process knows, so no collective save
        if not run.ctx.enabled:
            run.say(f"the mAP evaluation was interrupted; saved {save(run, 'last')}")
        raise
    loop.maps.append((loop.iteration, loop.last_map))
    return loop.last_map


def _network_map(run: Run, thresh: float, iou_thresh: float) -> float:
    D.average_buffers(run.net, run.ctx)
    value = network_map(run.net, run.data_path, thresh=thresh, iou_thresh=iou_thresh,
                        device=run.ctx.device, ctx=run.ctx)  # fmt: skip
    run.say(f"\n mean_average_precision (mAP@{iou_thresh:0.2f}) = {value:f}")
    if value >= run.loop.best_map:
        run.loop.best_map = value
        best = checkpoint_path(run.backup, run.base, "best")
        if run.ctx.is_main:
            write_weights(best, run.net, WeightsHeader(0, 2, 5, run.loop.iteration * run.c.batch))
        run.say(f"New best mAP! saved {best}")
    return value
