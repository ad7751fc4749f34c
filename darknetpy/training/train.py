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
"""

from __future__ import annotations

import math
import os
import secrets
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.augment import AugmentConfig
from ..data.datafile import DataConfig, read_image_list, read_names
from ..data.loader import build_train_loader
from ..errors import DataError, TrainingError, UsageError, WeightsError
from ..model.heads import compute_loss
from ..model.layers.conv import BN_MOMENTUM_BY_BUILD, set_bn_momentum
from ..model.netconfig import NetConfig
from ..model.network import Network
from ..model.weights import WeightsHeader, read_weights, write_weights
from . import distributed as D
from .chart import draw_chart
from .checkpoint import (
    LoopState,
    SaveSchedule,
    StopRequest,
    basecfg,
    check_writable,
    checkpoint_path,
    default_saveweights,
    load_state,
    save_checkpoint,
)
from .map_eval import network_map
from .multiscale import ResizePlan, map_interval, random_coef, random_size
from .optim import DarknetEMA, DarknetOptimizer, frozen_layers, inference_layers
from .recipe_loop import is_recipe_cfg, train_recipe
from .result import TrainResult
from .schedule import current_rate

__all__ = ["AMP_DTYPES", "ResizePlan", "TrainResult", "TrainingError", "map_interval",
           "random_size", "train"]  # fmt: skip

f32 = np.float32
AMP_DTYPES = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def train(cfg: str | Path, data: str | Path, weights: str | Path | None = None, *,
          map: bool = False, clear: bool = False, gpus: Sequence[int] | None = None,
          device: str = "cpu", amp: str = "off", workers: int | None = None,
          seed: int | None = None, max_batches: int | None = None,
          backup: str | Path | None = None, map_epochs: int = 4, thresh: float = 0.25,
          iou_thresh: float = 0.5, strict: bool = False, progress: bool | None = None,
          cache: bool | None = None, chart: bool = True,
          bn_momentum: str | None = None) -> TrainResult:
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
        device: ``cpu`` or ``cuda``. amp: ``off``, ``fp16`` (CUDA, gradient scaling) or ``bf16``.
        workers: loader processes (default: 0 on a machine with 2 cores or fewer, else 4).
        seed: base of every random draw (default: random, printed and saved for resumes).
        max_batches: override ``[net] max_batches`` (quick runs).
        backup: checkpoint folder (default: ``backup=`` of the .data file, else ``backup/``).
        progress: a tqdm bar (default: when stderr is a terminal).
        cache: decode the training images once into shared memory (default: lists up to 2000).
        chart: write ``chart.png`` and ``chart_<cfgbase>.png`` in the backup folder.
        bn_momentum: whose batch-norm running-average factors to reproduce: ``"cpu"`` (darknet's
            CPU build: 0.1, [connected] 0.05) or ``"gpu"`` (its GPU build: 0.01); default: the
            build of the device trained on.

    A cfg with ``[net] recipe=yolov8|yolox`` trains the ultralytics/YOLOX way instead
    (:mod:`darknetpy.training.recipe_loop`).

    Raises:
        CfgError, DataError, WeightsError, UsageError: bad inputs. TrainingError: NaN loss.
    """
    if is_recipe_cfg(Path(cfg)):
        if gpus or amp != "off" or bn_momentum:
            raise UsageError(f"{cfg}: --gpus, --amp and --bn-momentum are Darknet-recipe options; a "
                             "recipe= cfg sets its batch-norm momentum with bn_momentum= in [net]")
        return train_recipe(Path(cfg), Path(data), None if weights is None else Path(weights),
                            map=map, clear=clear, device=device, seed=seed,
                            max_batches=max_batches, backup=backup, map_epochs=map_epochs,
                            thresh=thresh, iou_thresh=iou_thresh, strict=strict,
                            cache=cache, chart=chart)  # fmt: skip
    ctx = D.setup(device, gpus)
    try:
        run = _prepare(ctx, Path(cfg), Path(data), None if weights is None else Path(weights),
                       clear=clear, amp=amp, workers=workers, seed=seed,
                       max_batches=max_batches, backup=backup, map_epochs=map_epochs,
                       strict=strict, progress=progress, cache=cache, map=map,
                       bn_momentum=bn_momentum)  # fmt: skip
        return _loop(run, map=map, thresh=thresh, iou_thresh=iou_thresh, chart=chart)
    finally:
        D.teardown(ctx)


# ------------------------------------------------------------------ setting up
class _HeadInputs(torch.nn.Module):
    """``{head index: tensor entering it}`` as a module forward, so DDP can wrap it."""

    def __init__(self, net: Network) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        return self.net.head_inputs(x)  # frees every other layer output as soon as it is used


def _has_unused_parameters(net: Network) -> bool:
    """Whether a trainable layer feeds no detection head (DDP must then look for unused ones)."""
    needed, todo = set(), list(net.heads)
    while todo:
        index = todo.pop()
        if index >= 0 and index not in needed:
            needed.add(index)
            todo.extend(net.layers[index].sources)
    return any(p.requires_grad for layer in net.layers if layer.index not in needed
               for p in layer.parameters())  # fmt: skip


@dataclass
class _Run:
    ctx: D.DistContext
    cfg_path: Path
    data_path: Path
    net: Network
    c: NetConfig  # [net], max_batches and the learning rate (x processes) applied
    base: str
    backup: Path
    train_images: int
    loop: LoopState
    resumed: bool
    optimizer: DarknetOptimizer
    ema: DarknetEMA | None
    model: Any  # _HeadInputs, maybe inside DistributedDataParallel
    autocast: Any
    scaler: Any
    loader: Any
    plan: ResizePlan
    saves: SaveSchedule
    every_map: int
    say: Callable[[str], None]
    bar: Any


def _prepare(ctx: D.DistContext, cfg_path: Path, data_path: Path, weights: Path | None, *,
             clear: bool, amp: str, workers: int | None, seed: int | None,
             max_batches: int | None, backup: str | Path | None, map_epochs: int, strict: bool,
             progress: bool | None, cache: bool | None, map: bool = False,
             bn_momentum: str | None = None) -> _Run:
    from tqdm import tqdm

    if amp not in AMP_DTYPES:
        raise UsageError(f"--amp {amp}: choose one of {', '.join(AMP_DTYPES)}")
    if amp == "fp16" and ctx.device.type != "cuda":
        raise UsageError("--amp fp16 needs --device cuda (use --amp bf16 on CPU)")
    init_seed = seed if seed is not None else secrets.randbelow(2**31)
    torch.manual_seed(init_seed)  # initial values of the layers no weights file fills
    net = Network.from_cfg(cfg_path, strict=strict)
    c = net.net if max_batches is None else replace(net.net, max_batches=max_batches)
    if c.batch == 1:
        raise UsageError(f"{cfg_path}: batch=1 cannot train (Darknet: 'You set incorrect value "
                         "batch=1 for Training'); set e.g. batch=64 subdivisions=16")  # fmt: skip
    if ctx.is_main and c.batch < 8:
        warnings.warn(f"{cfg_path}: batch={c.batch} is lower than 8; Darknet recommends 64",
                      stacklevel=3)  # fmt: skip
    if ctx.is_main and c.dynamic_minibatch:
        warnings.warn("dynamic_minibatch=1 is not supported: the mini-batch stays fixed", stacklevel=3)
    c = net.net = replace(c, learning_rate=c.learning_rate * ctx.world_size)  # lr *= ngpus
    if not net.heads:
        raise UsageError(f"{cfg_path}: no [yolo], [region] or [Gaussian_yolo] layer; "
                         "darknetpy train trains detectors")  # fmt: skip
    head = net.layers[net.heads[-1]].options  # jitter, resize, random, max: the LAST head's

    dc = DataConfig.from_file(data_path, strict=strict)
    backup_dir = Path(backup if backup is not None else
                      dc.backup if "backup" in dc.lines else "backup")  # fmt: skip
    if ctx.is_main:
        check_writable(backup_dir)
    images = read_image_list(dc.train or Path("data/train.txt"), base=data_path.parent,
                             where=dc.where("train"))  # fmt: skip
    if map and dc.names is not None and len(read_names(dc.names)) != head.classes:
        raise DataError(f"{dc.names}: {len(read_names(dc.names))} names, but the last detection "
                        f"layer of {cfg_path} has classes={head.classes}; make them agree")

    header, state = WeightsHeader(), None
    if weights is not None:
        header = read_weights(weights, net, partial=True)
        state = None if clear else load_state(weights, header)
    loop = state["loop"] if state else LoopState()
    if state is None:
        loop.iteration = 0 if clear else header.seen // c.batch  # get_current_batch
        loop.iter_map = loop.iter_save = loop.iter_save_last = loop.iteration
    loop.seed = seed if seed is not None else (loop.seed if state else init_seed)
    loop.width, loop.height = c.width, c.height

    net.to(ctx.device)
    build = bn_momentum or ("gpu" if ctx.device.type == "cuda" else "cpu")
    if build not in BN_MOMENTUM_BY_BUILD:
        raise UsageError(f"--bn-momentum {build}: expected one of {', '.join(BN_MOMENTUM_BY_BUILD)}")
    set_bn_momentum(net, build)
    for layer in list(net.layers)[:frozen_layers(net, 2**62)]:
        layer.requires_grad_(False)  # stopbackward=1 and train_only_bn: never a gradient
    optimizer = DarknetOptimizer(net, c, batch=c.batch)
    ema = DarknetEMA(net, c.ema_alpha, c.max_batches) if c.ema_alpha else None
    if state:
        try:
            optimizer.load_state_dict(state["optimizer"] or {})
        except ValueError as exc:
            raise WeightsError(f"{weights}: its training state does not fit {cfg_path} ({exc}); "
                               "pass --clear, or delete the .state.pt file") from None
        if ema is not None and state["ema"] is not None:
            ema.load_state_dict(state["ema"])
    D.broadcast_module(net, ctx)
    model: Any = _HeadInputs(net)
    if ctx.enabled:
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        # buffers (BN statistics) stay per rank between the sync_nets points, as in Darknet
        sync = ("forward_sync_buffers" if "forward_sync_buffers" in
                inspect.signature(DistributedDataParallel).parameters else "broadcast_buffers")
        model = DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            find_unused_parameters=_has_unused_parameters(net), **{sync: False},
        )
    dtype = AMP_DTYPES[amp]

    aug = AugmentConfig.from_net(c, head)
    rank_seed = loop.seed if ctx.rank == 0 else int(
        np.random.SeedSequence([loop.seed, ctx.rank]).generate_state(1)[0] >> 1)  # fmt: skip
    loader = build_train_loader(
        images, aug, batch=c.batch, seed=rank_seed,
        workers=workers if workers is not None else (0 if (os.cpu_count() or 1) <= 2 else 4),
        cache=len(images) <= 2000 if cache is None else cache, pin_memory=ctx.device.type == "cuda",
    )
    start_index = loop.iteration // ctx.world_size + 1
    plan = ResizePlan((c.width, c.height), random_coef(head.random), c.resize_step, loop.seed,
                      c.max_batches, ctx.world_size, start_index, loop.iteration, loop.loop_count,
                      fresh=loop.avg_loss < 0)  # fmt: skip
    saves = SaveSchedule(dc.saveweights or default_saveweights(c.max_batches), dc.savelast,
                         loop.iter_save, loop.iter_save_last)  # fmt: skip

    show = ctx.is_main and (progress if progress is not None else sys.stderr.isatty())
    bar = tqdm(total=c.max_batches, initial=min(loop.iteration, c.max_batches), disable=not show,
               unit="it", dynamic_ncols=True, file=sys.stderr)  # fmt: skip

    def say(line: str) -> None:
        if show:
            bar.write(line, file=sys.stdout)
        elif ctx.is_main:
            print(line, flush=True)

    base = basecfg(cfg_path)
    say(f"{base}: {len(images)} training images; batch {c.batch} = {c.subdivisions} x "
        f"{c.mini_batch}; {ctx.world_size} process(es) on {ctx.device}, amp {amp}, batch-norm "
        f"averages of darknet's {build.upper()} build; seed "
        f"{loop.seed}; iteration {loop.iteration} of {c.max_batches}; checkpoints in {backup_dir}"
        + (f"; resuming exactly from {weights}" if state else ""))  # fmt: skip
    return _Run(
        ctx, cfg_path, data_path, net, c, base, backup_dir, len(images), loop, state is not None,
        optimizer, ema, model,
        torch.autocast(ctx.device.type, dtype=dtype) if dtype else nullcontext(),
        torch.amp.GradScaler(ctx.device.type) if amp == "fp16" else None,
        loader, plan, saves, map_interval(map_epochs, len(images), c.batch), say, bar,
    )


# ------------------------------------------------------------------ one iteration
def _train_step(run: _Run, images: torch.Tensor, truth: torch.Tensor) -> float:
    """Forward/backward every mini-batch with summed gradients; Darknet's iteration loss."""
    c, dev = run.c, run.ctx.device
    size = (images.shape[-1], images.shape[-2])
    total = 0.0
    for s in range(c.subdivisions):
        x = images[s * c.mini_batch:(s + 1) * c.mini_batch].to(dev, non_blocking=True)
        t = truth[s * c.mini_batch:(s + 1) * c.mini_batch].to(dev, non_blocking=True)
        last = s == c.subdivisions - 1
        with nullcontext() if last or not run.ctx.enabled else run.model.no_sync():
            with run.autocast:
                heads = run.model(x)
            seen = run.loop.iteration * c.batch + (s + 1) * c.mini_batch  # seen += mini-batch
            terms = compute_loss(run.net, {k: v.float() for k, v in heads.items()}, t,
                                 input_size=size, seen=seen)  # fmt: skip
            (terms.total if run.scaler is None else run.scaler.scale(terms.total)).backward()
        total += terms.cost
    return total / (c.subdivisions * c.mini_batch)


def _update(run: _Run, loss: float) -> float:
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
        run.scaler.step(run.optimizer, rate=rate, iteration=batch_num)
        run.scaler.update()
        run.optimizer.zero_grad()
    else:
        run.optimizer.step(rate=rate, iteration=batch_num)
    if not all(bool(torch.isfinite(p).all()) for p in run.net.parameters()):
        last = checkpoint_path(run.backup, run.base, "last")
        raise TrainingError(
            f"iteration {loop.iteration + run.ctx.world_size}: the update made the weights "
            f"non-finite (the next loss is inf at rate {rate:g}); training stopped without saving "
            f"them and the last checkpoint ({last if last.exists() else 'none yet'}) was kept. "
            "Lower learning_rate or raise burn_in"
        )
    loop.iteration += run.ctx.world_size
    loop.loop_count += 1
    if run.ema is not None and (done := run.ema.after_update(loop.iteration)):
        run.say(f" {done}")
    if run.ctx.enabled and loop.loop_count % 4 == 0:
        D.average_buffers(run.net, run.ctx)  # sync_nets every 4 iterations
    return rate


# ------------------------------------------------------------------ the loop
def _loop(run: _Run, *, map: bool, thresh: float, iou_thresh: float, chart: bool) -> TrainResult:
    loop, c, ctx, net, say = run.loop, run.c, run.ctx, run.net, run.say
    world = ctx.world_size

    def save(tag: str | int, with_state: bool = True) -> Path:
        path = checkpoint_path(run.backup, run.base, tag)
        D.average_buffers(net, ctx)
        if ctx.is_main:
            header = WeightsHeader(0, 2, 5, loop.iteration * c.batch)  # save_weights: 0.2.5
            save_checkpoint(path, net, header, loop=loop if with_state else None,
                            optimizer=run.optimizer, ema=run.ema)  # fmt: skip
        return path

    def draw() -> None:
        if chart and ctx.is_main:
            draw_chart([run.backup / "chart.png", run.backup / f"chart_{run.base}.png"],
                       loop.losses, loop.maps, max_batches=c.max_batches,
                       max_chart_loss=c.max_chart_loss,
                       title=f"{run.base}: iteration {loop.iteration}, avg loss "
                             f"{loop.avg_loss:.3f}, {loop.avg_time:.2f} hours left")  # fmt: skip

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
                torch.manual_seed(int(np.random.SeedSequence([loop.seed, loop.iteration])
                                      .generate_state(1)[0]))  # dropout etc.  # fmt: skip
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

                next_map = max(loop.iter_map + run.every_map, c.burn_in)
                if map and (loop.iteration >= next_map or loop.iteration >= c.max_batches):
                    loop.iter_map = loop.iteration
                    try:
                        loop.last_map = _evaluate_map(run, thresh, iou_thresh)
                    except BaseException:
                        last_saved = save("last")  # the weights are fine: keep them
                        say(f"the mAP evaluation failed; saved {last_saved}")
                        raise
                    loop.maps.append((loop.iteration, loop.last_map))
                    if run.plan.coef:  # back to the initial size until the next resize point
                        run.plan = replace(run.plan, resets=(*run.plan.resets, batch.iteration))
                        batches.close()  # drop the batches built ahead at the old size
                        batches = run.loader.iterate(batch.iteration + 1, size=run.plan)
                    draw()
                stop_now = D.any_rank(stop.signal is not None, ctx)
                if run.saves.numbered_due(loop.iteration):
                    run.saves.iter_save = loop.iter_save = loop.iteration
                    last_saved = save(loop.iteration)
                if run.saves.last_due(loop.iteration) or stop_now:
                    run.saves.iter_save_last = loop.iter_save_last = loop.iteration
                    last_saved = save("last")
                    if run.ema is not None and run.ema.initialized:
                        with run.ema.swapped():
                            save("ema", with_state=False)
                    draw()
                if stop_now:
                    interrupted = True
                    say(f"stopped at iteration {loop.iteration}; resume with: darknetpy train "
                        f"{run.cfg_path} {run.data_path} {last_saved}")  # fmt: skip
                    break
            if not interrupted:
                last_saved = save("final")
                draw()
                say(f"saved {last_saved}")
    finally:
        batches.close()
        run.bar.close()
    seconds = time.time() - started
    summary = run.loader.summary()
    if ctx.is_main and (summary.bad_images or summary.label_files):
        say(str(summary))
    return TrainResult(
        iteration=loop.iteration, weights=last_saved, backup=run.backup,
        best_map=loop.best_map if loop.best_map >= 0 else None, losses=tuple(loop.losses),
        maps=tuple(loop.maps), interrupted=interrupted, seconds=seconds,
        images_per_second=images_done / seconds if seconds > 0 else 0.0, network=net,
    )


def _evaluate_map(run: _Run, thresh: float, iou_thresh: float) -> float:
    """``validate_detector_map`` (points 0) on the network in memory, rank 0; keeps ``_best``."""
    D.average_buffers(run.net, run.ctx)
    value = -1.0
    if run.ctx.is_main:
        value = network_map(run.net, run.data_path, thresh=thresh, iou_thresh=iou_thresh,
                            device=run.ctx.device)
        run.say(f"\n mean_average_precision (mAP@{iou_thresh:0.2f}) = {value:f}")
        if value >= run.loop.best_map:
            run.loop.best_map = value
            best = checkpoint_path(run.backup, run.base, "best")
            write_weights(best, run.net, WeightsHeader(0, 2, 5, run.loop.iteration * run.c.batch))
            run.say(f"New best mAP! saved {best}")
    return D.broadcast_float(value, run.ctx)
