"""``darknetpy train CFG DATA [WEIGHTS]``: Darknet's training loop (``detector.c: train_detector``).

One iteration (``network.c: train_network_waitkey``): the loader builds ``batch`` images; they are
split into ``subdivisions`` mini-batches, each one forward (batch norm on that mini-batch) and backward
with gradients summed; then ONE update (:class:`~darknetpy.training.optim.DarknetOptimizer`) at the rate of
``get_current_rate`` for this update's batch number. The printed loss is the head costs' mean summed
over the mini-batches divided by ``batch``; ``avg loss`` is its 0.9/0.1 running average.

Around it, as Darknet: random resize every 10 iterations (:mod:`darknetpy.training.multiscale`), ``--map``
every ``max(4 epochs, 100)`` iterations and at the end, checkpoints ``_last``/``_<N>``/``_best``/
``_final`` (:mod:`darknetpy.training.checkpoint`), ``chart.png`` (:mod:`darknetpy.training.chart`), EMA, several
processes (:mod:`darknetpy.training.distributed`). Differences: a NaN loss stops the run with an error
(Darknet trains on); Ctrl-C/SIGTERM save ``_last`` and stop; every random draw is a pure function of
``--seed`` and the iteration, so a run resumed from ``_last`` continues exactly.

This module is the loop itself; :mod:`darknetpy.training.setup` builds the run it holds
(:func:`~darknetpy.training.setup.prepare`), :mod:`darknetpy.training.milestones` writes what it
leaves behind (checkpoints, the mAP points and ``_best``, the chart).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..errors import TrainingError, UsageError
from ..model.heads import compute_loss
from ..model.heads.records import TruthRows
from . import distributed as D
from .checkpoint import StopRequest, checkpoint_path
from .device_settings import to_device_images
from .milestones import draw, evaluate_map, map_due, periodic_saves, save
from .multiscale import ResizePlan, map_interval, random_size
from .optim import frozen_layers, inference_layers
from .recipe_loop import is_recipe_cfg, train_recipe
from .result import TrainResult
from .schedule import current_rate
from .setup import AMP_DTYPES, Run, prepare

__all__ = ["AMP_DTYPES", "ResizePlan", "TrainResult", "TrainingError", "map_interval",
           "random_size", "train"]  # fmt: skip

f32 = np.float32


def train(cfg: str | Path, data: str | Path, weights: str | Path | None = None, *,
          map: bool = False, clear: bool = False, gpus: Sequence[int] | None = None,
          device: str = "cpu", amp: str = "off", workers: int | None = None,
          seed: int | None = None, max_batches: int | None = None,
          backup: str | Path | None = None, map_epochs: int = 4, thresh: float = 0.25,
          iou_thresh: float = 0.5, strict: bool = False, progress: bool | None = None,
          cache: bool | None = None, chart: bool = True, lenient: bool = False,
          bn_momentum: str | None = None, gpu_lr_rule: str = "darknet",
          tf32: bool = False, darknet_cpu_defects: bool = False) -> TrainResult:
    """Train a Darknet detector like ``darknet detector train DATA CFG [WEIGHTS]``.

    Args:
        cfg, data: the ``.cfg`` and ``.data`` files.
        weights: initial weights: a full or partial (``yolov4.conv.137``) ``.weights`` file, or a
            checkpoint to resume (its ``seen`` gives the iteration; a matching ``.state.pt`` beside
            it restores momentum, EMA, seed and counters exactly).
        map: mAP@0.5 on ``valid`` every ``max(map_epochs epochs, 100)`` iterations (never before
            ``burn_in``) and at the end; keeps ``_best.weights``.
        clear: start at iteration 0 whatever the weights file says.
        gpus: CUDA ids by local rank (with torchrun or ``--gpus``), as Darknet's ``-gpus``.
        device: ``cpu`` or ``cuda``. amp: ``off``, ``fp16`` (gradient scaling; on the CPU too,
            slowly) or ``bf16``.
        workers: loader processes per process (default: scaled to its share of the cores,
            :func:`~darknetpy.training.device_settings.default_workers`).
        seed: base of every random draw (default: random, printed and saved for resumes).
        max_batches: override ``[net] max_batches`` (quick runs).
        backup: checkpoint folder (default: ``backup=`` of the .data file, else ``backup/``).
        progress: a tqdm bar (default: when stderr is a terminal).
        cache: decode the training images once into shared memory (default: lists up to 2000).
        chart: write ``chart.png`` and ``chart_<cfgbase>.png`` in the backup folder.
        bn_momentum: which darknet build's batch norm to reproduce in training (CLI
            ``--darknet-build``): ``"cpu"`` (running-average factor 0.1, [connected] 0.05, and the
            C code's arithmetic: unbiased batch variance, its backward) or ``"gpu"`` (0.01 and
            cuDNN's arithmetic, PyTorch's own); default: the build of the device trained on
            (:class:`~darknetpy.model.layers.common.DarknetBatchNorm`).
        darknet_cpu_defects: also reproduce the CPU build's three back-propagation defects
            (:mod:`darknetpy.model.cpu_defects`; needs the ``"cpu"`` build). Off: the exact
            gradient, which is what darknet's GPU build computes.
        gpu_lr_rule: with several processes, ``"darknet"`` multiplies the learning rate by their
            number (Darknet's ``-gpus``), ``"none"`` keeps the cfg's (hank-ai/darknet);
            :mod:`darknetpy.training.launch_plan`.
        lenient: load a damaged ``weights`` file as Darknet does (a warning instead of an error).
        tf32: TensorFloat-32 for CUDA's fp32 convolutions and matmuls (default off: the numbers
            of the CPU, within float32 noise; :mod:`darknetpy.training.device_settings`).

    A cfg with ``[net] recipe=yolov8|yolox`` trains the ultralytics/YOLOX way instead
    (:mod:`darknetpy.training.recipe_loop`).

    Raises:
        CfgError, DataError, WeightsError, UsageError: bad inputs. TrainingError: NaN loss.
    """
    if is_recipe_cfg(Path(cfg)):
        if gpus or amp != "off" or bn_momentum or darknet_cpu_defects:
            raise UsageError(f"{cfg}: --gpus, --amp, --darknet-build and --darknet-cpu-defects are "
                             "Darknet-recipe options; a recipe= cfg sets its batch-norm momentum "
                             "with bn_momentum= in [net]")
        return train_recipe(Path(cfg), Path(data), None if weights is None else Path(weights),
                            map=map, clear=clear, device=device, seed=seed,
                            max_batches=max_batches, backup=backup, map_epochs=map_epochs,
                            thresh=thresh, iou_thresh=iou_thresh, strict=strict,
                            cache=cache, chart=chart, tf32=tf32)  # fmt: skip
    ctx = D.setup(device, gpus)
    try:
        run = prepare(ctx, Path(cfg), Path(data), None if weights is None else Path(weights),
                      clear=clear, amp=amp, workers=workers, seed=seed,
                      max_batches=max_batches, backup=backup, map_epochs=map_epochs,
                      strict=strict, progress=progress, cache=cache, map=map, lenient=lenient,
                      bn_momentum=bn_momentum, gpu_lr_rule=gpu_lr_rule, tf32=tf32,
                      darknet_cpu_defects=darknet_cpu_defects)  # fmt: skip
        return _loop(run, map=map, thresh=thresh, iou_thresh=iou_thresh, chart=chart)
    finally:
        D.teardown(ctx)


# ------------------------------------------------------------------ one iteration
def _train_step(run: Run, images: torch.Tensor, truth: torch.Tensor) -> float:
    """Forward/backward every mini-batch with summed gradients; Darknet's iteration loss.

    The truths go to the device once per iteration; with their host copy (:class:`TruthRows`) the
    heads never wait for the device. The one wait is the returned loss (read once, at the end).
    """
    c, dev = run.c, run.ctx.device
    size = (images.shape[-1], images.shape[-2])
    rows, host = truth.to(dev, non_blocking=True), truth.numpy()  # host: no device involved
    total: torch.Tensor | None = None
    for s in range(c.subdivisions):
        x = to_device_images(images[s * c.mini_batch:(s + 1) * c.mini_batch], dev,
                             channels_last=run.device_settings.channels_last)  # fmt: skip
        part = slice(s * c.mini_batch, (s + 1) * c.mini_batch)
        t = TruthRows(rows[part], host[part])
        last = s == c.subdivisions - 1
        with nullcontext() if last or not run.ctx.enabled else run.model.no_sync():
            with run.autocast:
                heads = run.model(x)
            seen = run.loop.iteration * c.batch + (s + 1) * c.mini_batch  # seen += mini-batch
            terms = compute_loss(run.net, {k: v.float() for k, v in heads.items()}, t,
                                 input_size=size, seen=seen)  # fmt: skip
            (terms.total if run.scaler is None else run.scaler.scale(terms.total)).backward()
        cost = terms.cost_tensor
        total = cost if total is None else total + cost
    assert total is not None
    return total.item() / (c.subdivisions * c.mini_batch)


def _all_finite(params: list[torch.Tensor]) -> bool:
    """Whether every parameter value is finite, with one read of the device: the largest |value| of
    each tensor (``torch._foreach_norm``, inf norm; NaN where it holds one) reduced to one flag."""
    if not params:
        return True
    with torch.no_grad():
        norms = torch._foreach_norm(params, float("inf"))
        return bool(torch.isfinite(torch.stack([n.to(torch.float32) for n in norms]).max()))


def _update(run: Run, loss: float) -> float:
    """One optimizer update after the mini-batches; returns the rate used."""
    loop, c = run.loop, run.c
    if not math.isfinite(loss):
        last = checkpoint_path(run.backup, run.base, "last")
        raise TrainingError(
            f"iteration {loop.iteration + run.ctx.world_size}: the loss is {loss}; training stopped "
            f"and the last checkpoint ({last if last.exists() else 'none yet'}) was kept. Lower "
            "learning_rate, raise burn_in, or check the labels (darknetpy check DATA)"
        )
    for layer in list(run.net.layers)[:frozen_layers(run.net, loop.iteration)]:
        for p in layer.parameters():
            p.grad = None  # stopbackward=N: frozen while the iteration is below N
    batch_num = loop.iteration + 1  # get_current_batch at the update
    rate = current_rate(batch_num, c, np.random.default_rng([loop.seed, batch_num]))
    if run.scaler is not None:
        scale = run.scaler.get_scale()
        run.scaler.step(run.optimizer, rate=rate, iteration=batch_num)
        run.scaler.update()
        if run.scaler.get_scale() < scale:  # inf/nan gradients: the scaler skipped the update
            loop.skipped += 1
            run.say(f" iteration {loop.iteration + run.ctx.world_size}: update skipped (inf/nan "
                    f"gradients at fp16 loss scale {scale:g}, now {run.scaler.get_scale():g}); "
                    f"{loop.skipped} skipped so far")  # fmt: skip
        run.optimizer.zero_grad()
    else:
        run.optimizer.step(rate=rate, iteration=batch_num)
    if not _all_finite(list(run.net.parameters())):
        last = checkpoint_path(run.backup, run.base, "last")
        raise TrainingError(
            f"iteration {loop.iteration + run.ctx.world_size}: the update made the weights "
            f"non-finite (the next loss is inf at rate {rate:g}); training stopped without saving "
            f"them and the last checkpoint ({last if last.exists() else 'none yet'}) was kept. "
            "Lower learning_rate or raise burn_in"
        )
    loop.iteration += run.ctx.world_size
    loop.loop_count += 1
    step = run.ctx.world_size  # the EMA's apply point is crossed, not always met
    if run.ema is not None and (done := run.ema.after_update(loop.iteration, step=step)):
        run.say(f" {done}")
    if run.ctx.enabled and loop.loop_count % 4 == 0:
        D.average_buffers(run.net, run.ctx)  # sync_nets every 4 iterations
    return rate


# ------------------------------------------------------------------ the loop
def _loop(run: Run, *, map: bool, thresh: float, iou_thresh: float, chart: bool) -> TrainResult:
    loop, c, ctx, net, say = run.loop, run.c, run.ctx, run.net, run.say
    world = ctx.world_size
    started, images_done, last_saved, interrupted = time.time(), 0, None, False
    batches = run.loader.iterate(loop.iteration // world + 1, size=run.plan)  # lazy
    try:
        with StopRequest() as stop:
            while loop.iteration < c.max_batches:
                t0 = time.time()
                batch = next(batches)
                t1 = time.time()
                net.train()
                for layer in list(net.layers)[:inference_layers(net)]:
                    layer.eval()  # train=0 layers before stopbackward: BN on rolling statistics
                torch.manual_seed(int(np.random.SeedSequence(  # dropout etc.: rank's own masks
                    [D.rank_seed(loop.seed, ctx.rank), loop.iteration]).generate_state(1)[0]))
                loss = D.all_reduce_mean(_train_step(run, batch.images, batch.truth), ctx)
                rate = _update(run, loss)
                train_time, load_time = time.time() - t1, t1 - t0
                images_done += c.batch * world
                if loop.avg_loss < 0 or loop.avg_loss != loop.avg_loss:
                    loop.avg_loss = loss
                loop.avg_loss = float(f32(loop.avg_loss * 0.9 + loss * 0.1))
                loop.losses.append((loop.iteration, loop.avg_loss))
                left = (c.max_batches - loop.iteration) / world * (train_time + load_time) / 3600
                loop.avg_time = left if loop.avg_time < 0 else 0.01 * left + 0.99 * loop.avg_time
                say(f" {loop.iteration}: {loss:f}, {loop.avg_loss:f} avg loss, {rate:f} rate, "
                    f"{train_time:f} seconds, {loop.iteration * c.batch} images, "
                    f"{loop.avg_time:f} hours left")  # fmt: skip
                run.bar.set_postfix_str(
                    f"loss {loss:.3f} avg {loop.avg_loss:.3f} {batch.width}x{batch.height}"
                    + (f" mAP {loop.last_map:.3f}" if loop.last_map >= 0 else ""))  # fmt: skip
                run.bar.update(min(loop.iteration, c.max_batches) - run.bar.n)

                if map and map_due(run):
                    evaluate_map(run, thresh, iou_thresh)
                    if run.plan.coef:  # back to the initial size until the next resize point
                        run.plan = replace(run.plan, resets=(*run.plan.resets, batch.iteration))
                        batches.close()  # drop the batches built ahead at the old size
                        batches = run.loader.iterate(batch.iteration + 1, size=run.plan)
                    draw(run, chart)
                stop_now = D.any_rank(stop.signal is not None, ctx)
                last_saved = periodic_saves(run, stop=stop_now, chart=chart) or last_saved
                if stop_now:
                    interrupted = True
                    say(f"stopped at iteration {loop.iteration}; resume with: darknetpy train "
                        f"{run.cfg_path} {run.data_path} {last_saved}")  # fmt: skip
                    break
            if not interrupted:
                last_saved = save(run, "final")
                draw(run, chart)
                say(f"saved {last_saved}")
    finally:
        batches.close()
        run.loader.close()  # the persistent workers
        run.bar.close()
    seconds = time.time() - started
    summary = run.loader.summary()
    if ctx.is_main and (summary.bad_images or summary.label_files):
        say(str(summary))
    if loop.skipped:
        say(f"{loop.skipped} of the updates were skipped by the fp16 gradient scaler (inf/nan "
            "gradients); the iteration count and learning rate advanced over them")
    return TrainResult(
        iteration=loop.iteration, weights=last_saved, backup=run.backup,
        best_map=loop.best_map if loop.best_map >= 0 else None, losses=tuple(loop.losses),
        maps=tuple(loop.maps), interrupted=interrupted, seconds=seconds,
        images_per_second=images_done / seconds if seconds > 0 else 0.0, network=net,
        skipped_updates=loop.skipped,
    )
