"""``darknetpy train`` for cfgs with ``[net] recipe=yolov8|yolox``: the references' training loop.

One iteration is one ``batch`` of images (Darknet's unit); an epoch is ``ceil(train images / batch)``
iterations. Each iteration: the recipe's lr/momentum/accumulation for iteration ``ni``
(:class:`~darknetpy.training.recipes.RecipeSchedule`), forward every mini-batch, the head's own loss
(``net.compute_loss``) back-propagated; every ``accumulate`` iterations (ultralytics' ``ni -
last_opt_step >= accumulate``) gradient clipping, one optimizer step and one EMA update. Mosaic (and
mixup) stop for the last ``close_mosaic`` epochs, when ``[yolox]`` heads switch their L1 loss on.
``--map`` evaluates the EMA weights every ``map_epochs`` epochs (ultralytics validates every epoch;
Darknet's 100-iteration floor does not apply) and at the end;
``_final``, ``_best`` and ``_<N>`` (written at each of those points, ``--map`` or not) hold the EMA
weights (what ultralytics and YOLOX save and validate), ``_last`` the raw weights plus the state
(optimizer, EMA, counters) for an exact resume.
"""

from __future__ import annotations

import math
import secrets
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.datafile import DataConfig, read_image_list, read_names
from ..data.modern import ModernAugment
from ..errors import DataError, TrainingError, UsageError
from ..model.cfg import Options, read_cfg
from ..model.netconfig import NetConfig
from ..model.network import Network
from ..model.recipe_options import RecipeOptions, recipe_name
from ..model.weights import WeightsHeader, read_weights, write_weights
from ..devices import parse_device
from .chart import draw_chart
from .checkpoint import (
    LoopState,
    StopRequest,
    basecfg,
    check_writable,
    checkpoint_path,
    load_state,
    save_checkpoint,
)
from .device_settings import apply_settings, to_device_images, training_settings
from .map_eval import network_map
from .recipe_data import RecipeBatches
from .recipe_init import init_from_scratch, set_recipe_bn_momentum
from .recipes import (
    RecipeEMA,
    RecipeSchedule,
    accumulate_steps,
    auto_optimizer,
    build_optimizer,
    epoch_iterations,
    param_groups,
    resolve_length,
    scaled_decay,
)
from .result import TrainResult

__all__ = ["RecipePlan", "is_recipe_cfg", "plan_recipe", "train_recipe"]


def is_recipe_cfg(cfg: Path) -> bool:
    """Whether ``cfg``'s first section sets ``recipe=yolov8|yolox`` (the full parse comes later)."""
    sections = read_cfg(cfg)
    return bool(sections) and recipe_name(Options(sections[0])) != "darknet"


@dataclass(frozen=True)
class RecipePlan:
    """What a recipe run does, resolved from ``[net]`` and the training-set size."""

    epochs: int
    epoch_iters: int
    max_batches: int
    accumulate: int
    optimizer: str  # sgd | adamw
    lr0: float
    momentum: float
    decay: float  # as applied (scaled to the nominal batch)
    warmup_bias_lr: float
    close_mosaic_iteration: int  # 1-based loader iteration from which mosaic is off (0: never)

    def describe(self) -> str:
        return (f"{self.epochs} epochs x {self.epoch_iters} iterations, max_batches "
                f"{self.max_batches}; {self.optimizer} lr {self.lr0:g} momentum {self.momentum:g} "
                f"decay {self.decay:g}; accumulate {self.accumulate}; mosaic off from iteration "
                f"{self.close_mosaic_iteration or 'never'}")  # fmt: skip


def plan_recipe(c: NetConfig, r: RecipeOptions, train_images: int, classes: int,
                max_batches: int | None = None) -> RecipePlan:
    """Epochs, accumulation, optimizer choice (``optimizer=auto``), lr and decay of a run."""
    nb = epoch_iterations(train_images, c.batch)
    epochs, total = resolve_length(r.epochs, c.max_batches if max_batches is None else max_batches, nb)
    acc = accumulate_steps(r.nominal_batch, c.batch, nb * epochs)
    decay = scaled_decay(c.decay, c.batch, acc, r.nominal_batch)
    if r.optimizer == "auto":
        auto = auto_optimizer(train_images, c.batch, r.nominal_batch, epochs, classes)
        name, lr0, momentum, bias_lr = auto.name, auto.lr, auto.momentum, auto.warmup_bias_lr
    else:
        name, momentum, bias_lr = r.optimizer, c.momentum, r.warmup_bias_lr
        lr0 = c.learning_rate * c.batch / r.lr_batch if r.lr_batch else c.learning_rate
    close = (epochs - r.close_mosaic) * nb + 1 if r.close_mosaic else 0
    return RecipePlan(epochs, nb, total, acc, name, lr0, momentum, decay, bias_lr, max(close, 0))


def _augment(c: NetConfig, r: RecipeOptions, plan: RecipePlan) -> ModernAugment:
    extra = dict(getattr(r, "augment", None) or {})
    return ModernAugment.for_kind(r.recipe, close_mosaic_iteration=plan.close_mosaic_iteration, **extra)


def _set_l1(net: Network, on: bool) -> None:
    """YOLOX's ``head.use_l1``: on from the first no-mosaic epoch."""
    for i in net.heads:
        head = net.layers[i]
        if head.darknet_name == "yolox" and hasattr(head, "use_l1"):
            head.use_l1 = on


class _State:
    """The recipe's resumable state beside the optimizer's: EMA and the last optimizer step."""

    def __init__(self, ema: RecipeEMA | None, last_opt_step: int = -1) -> None:
        self.ema, self.last_opt_step = ema, last_opt_step

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema.state_dict() if self.ema else None, "last_opt_step": self.last_opt_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_opt_step = int(state.get("last_opt_step", -1))
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])


@dataclass
class _Run:
    """Everything a recipe run holds (built by :func:`_setup`)."""

    cfg: Path
    data: Path
    net: Network
    c: NetConfig
    r: RecipeOptions
    plan: RecipePlan
    loop: LoopState
    optimizer: torch.optim.Optimizer
    extra: _State
    schedule: RecipeSchedule
    batches: RecipeBatches
    backup: Path
    base: str
    device: torch.device

    def header(self) -> WeightsHeader:
        return WeightsHeader(0, 2, 5, self.loop.iteration * self.c.batch)  # save_weights: 0.2.5

    def save(self, tag: str | int, *, use_ema: bool = False) -> Path:
        """``_<tag>.weights``: the EMA weights (``use_ema``), else the raw ones with the state."""
        path = checkpoint_path(self.backup, self.base, tag)
        if use_ema and self.extra.ema is not None:
            with self.extra.ema.swapped():
                save_checkpoint(path, self.net, self.header())
        else:
            save_checkpoint(path, self.net, self.header(), loop=self.loop,
                            optimizer=self.optimizer, ema=self.extra)  # fmt: skip
        return path


def _setup(cfg: Path, data: Path, weights: Path | None, *, map: bool, clear: bool, device: str,
           seed: int | None, max_batches: int | None, backup: str | Path | None, strict: bool,
           cache: bool | None, tf32: bool = False) -> _Run:
    """Network (recipe init, then the weights file), plan, optimizer, EMA, schedule, batches."""
    init_seed = seed if seed is not None else secrets.randbelow(2**31)
    torch.manual_seed(init_seed)
    net = Network.from_cfg(cfg, strict=strict)
    c, r = net.net, net.net.recipe
    if not net.heads:
        raise UsageError(f"{cfg}: no detection head; darknetpy train trains detectors")
    classes = int(net.layers[net.heads[-1]].classes)
    dc = DataConfig.from_file(data, strict=strict)
    backup_dir = Path(backup if backup is not None else
                      dc.backup if "backup" in dc.lines else "backup")  # fmt: skip
    check_writable(backup_dir)
    images = read_image_list(dc.train or Path("data/train.txt"), base=data.parent,
                             where=dc.where("train"))  # fmt: skip
    if map and dc.names is not None and len(read_names(dc.names)) != classes:
        raise DataError(f"{dc.names}: {len(read_names(dc.names))} names, but {cfg}'s head has "
                        f"classes={classes}; make them agree")  # fmt: skip
    plan = plan_recipe(c, r, len(images), classes, max_batches)
    c = net.net = replace(c, max_batches=plan.max_batches)

    init_from_scratch(net, r)  # before the weights file, so what it holds wins
    header, state = WeightsHeader(), None
    if weights is not None:
        header = read_weights(weights, net, partial=True)
        state = None if clear else load_state(weights, header)
    set_recipe_bn_momentum(net, r.bn_momentum)
    dev = parse_device(device)
    net.to(dev)
    apply_settings(training_settings(dev, tf32=tf32, workers=0), net)  # cudnn.benchmark, TF32
    loop = state["loop"] if state else LoopState()
    if state is None:
        loop.iteration = 0 if clear else header.seen // c.batch
    loop.seed = seed if seed is not None else (loop.seed if state else init_seed)
    optimizer = build_optimizer(param_groups(net), plan.optimizer, plan.lr0, plan.momentum,
                                plan.decay, r.nesterov)  # fmt: skip
    extra = _State(RecipeEMA(net, r.ema_decay, r.ema_tau) if r.ema_decay else None)
    if state:
        optimizer.load_state_dict(state["optimizer"] or {})
        extra.load_state_dict(state["ema"] or {})
    schedule = RecipeSchedule(r, plan.lr0, plan.momentum, plan.warmup_bias_lr, plan.epoch_iters,
                              plan.epochs, plan.accumulate)  # fmt: skip
    batches = RecipeBatches(images, classes, _augment(c, r, plan), c.batch, loop.seed,
                            (c.width, c.height),
                            cache=len(images) <= 2000 if cache is None else cache)  # fmt: skip
    run = _Run(cfg, data, net, c, r, plan, loop, optimizer, extra, schedule, batches, backup_dir,
               basecfg(cfg), dev)  # fmt: skip
    print(f"{run.base}: recipe {r.recipe}, {len(images)} training images, batch {c.batch} = "
          f"{c.subdivisions} x {c.mini_batch}; {plan.describe()}; seed {loop.seed}; iteration "
          f"{loop.iteration}; checkpoints in {backup_dir}", flush=True)  # fmt: skip
    return run


def _iteration(run: _Run, images: torch.Tensor, truth: torch.Tensor) -> tuple[float, str]:
    """One iteration ``ni``: schedule, forward/backward, and (every ``accumulate``) clip, step, EMA.
    Returns the printed loss and the rest of the printed line."""
    ni, r, extra = run.loop.iteration, run.r, run.extra
    if ni + 1 == run.plan.close_mosaic_iteration:
        _set_l1(run.net, True)
        print(f" iteration {ni + 1}: mosaic off" + (", L1 on" if r.recipe == "yolox" else ""))
    s = run.schedule.at(ni)
    run.schedule.apply(run.optimizer, s)
    run.net.train()
    loss, items = _forward_backward(run.net, images, truth, run.c, run.device)
    if not math.isfinite(loss):
        raise TrainingError(f"iteration {ni + 1}: the loss is {loss}; training stopped (the last "
                            "checkpoint was kept); lower learning_rate or check the labels")
    stepped = ni - extra.last_opt_step >= s.accumulate  # ultralytics' accumulation test
    if stepped:
        if r.clip_grad:
            torch.nn.utils.clip_grad_norm_(run.net.parameters(), max_norm=r.clip_grad)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        if extra.ema is not None:
            extra.ema.update()
        extra.last_opt_step = ni
    terms = " ".join(f"{v:.4f}" for v in items)
    return loss, f"{s.lrs[0]:f} rate; ({terms})" + (" step" if stepped else "")


def _evaluate(run: _Run, thresh: float, iou_thresh: float) -> float:
    """mAP of the EMA weights, in memory (:func:`.map_eval.network_map`); keeps ``_best``."""
    loop = run.loop
    with run.extra.ema.swapped() if run.extra.ema is not None else nullcontext():
        t0 = time.time()
        value = network_map(run.net, run.data, thresh=thresh, iou_thresh=iou_thresh,
                            device=run.device)  # fmt: skip
        print(f"\n mean_average_precision (mAP@{iou_thresh:0.2f}) = {value:f} "
              f"(EMA weights, {time.time() - t0:.1f} s)", flush=True)  # fmt: skip
        if value >= loop.best_map:
            loop.best_map = value
            write_weights(checkpoint_path(run.backup, run.base, "best"), run.net, run.header())
    return value


def train_recipe(cfg: Path, data: Path, weights: Path | None, *, map: bool = False,
                 clear: bool = False, device: str = "cpu", seed: int | None = None,
                 max_batches: int | None = None, backup: str | Path | None = None,
                 map_epochs: int = 4, thresh: float = 0.25, iou_thresh: float = 0.5,
                 strict: bool = False, cache: bool | None = None,
                 chart: bool = True, tf32: bool = False) -> TrainResult:
    """Train a ``recipe=yolov8|yolox`` cfg (see the module docstring)."""
    run = _setup(cfg, data, weights, map=map, clear=clear, device=device, seed=seed,
                 max_batches=max_batches, backup=backup, strict=strict, cache=cache, tf32=tf32)
    loop, c = run.loop, run.c
    every_map = max(1, map_epochs) * run.plan.epoch_iters  # per epochs, as ultralytics validates

    def draw() -> None:
        if chart:
            draw_chart([run.backup / "chart.png", run.backup / f"chart_{run.base}.png"],
                       loop.losses, loop.maps, max_batches=c.max_batches,
                       max_chart_loss=c.max_chart_loss,
                       title=f"{run.base}: iteration {loop.iteration}, avg loss "
                             f"{loop.avg_loss:.3f}")  # fmt: skip

    started, interrupted, last_saved = time.time(), False, None
    _set_l1(run.net, 0 < run.plan.close_mosaic_iteration <= loop.iteration + 1)
    batches = run.batches.iterate(loop.iteration + 1)
    try:
        with StopRequest() as stop:
            while loop.iteration < c.max_batches:
                t0 = time.time()
                batch = next(batches)
                t1 = time.time()
                loss, rest = _iteration(run, batch.images, batch.truth)
                loop.iteration += 1
                loop.avg_loss = loss if loop.avg_loss < 0 else loop.avg_loss * 0.9 + loss * 0.1
                loop.losses.append((loop.iteration, loop.avg_loss))
                print(f" {loop.iteration}: {loss:f}, {loop.avg_loss:f} avg loss, {rest}, "
                      f"{time.time() - t1:f} seconds (data {t1 - t0:.3f}), "
                      f"{loop.iteration * c.batch} images", flush=True)  # fmt: skip
                if loop.iteration % every_map == 0 and loop.iteration < c.max_batches:
                    run.save(loop.iteration, use_ema=True)  # _<N>: EMA weights at each map point
                if map and (loop.iteration % every_map == 0 or loop.iteration >= c.max_batches):
                    loop.last_map = _evaluate(run, thresh, iou_thresh)
                    loop.maps.append((loop.iteration, loop.last_map))
                    draw()
                if stop.signal is not None:
                    interrupted = True
                    last_saved = run.save("last")
                    print(f"stopped at iteration {loop.iteration}; resume with: darknetpy train "
                          f"{cfg} {data} {last_saved}")  # fmt: skip
                    break
            if not interrupted:
                run.save("last")
                last_saved = run.save("final", use_ema=True)
                print(f"saved {last_saved} (EMA weights)", flush=True)
                draw()
    finally:
        batches.close()
    seconds = time.time() - started
    done = loop.iteration
    print(f"{done} iterations in {seconds:.1f} s ({seconds / max(done, 1):.3f} s/iteration)",
          flush=True)  # fmt: skip
    return TrainResult(
        iteration=loop.iteration, weights=last_saved, backup=run.backup,
        best_map=loop.best_map if loop.best_map >= 0 else None, losses=tuple(loop.losses),
        maps=tuple(loop.maps), interrupted=interrupted, seconds=seconds,
        images_per_second=done * c.batch / seconds if seconds > 0 else 0.0, network=run.net,
    )


def _forward_backward(net: Network, images: torch.Tensor, truth: torch.Tensor, c: NetConfig,
                      dev: torch.device) -> tuple[float, tuple[float, ...]]:
    """Every mini-batch forward, the head loss backward (gradients summed); the printed loss (YOLOv8:
    box + cls + dfl per image, as ultralytics prints it; YOLOX: its total) and the head's terms, both
    averaged over the mini-batches."""
    per_image = any(net.layers[i].darknet_name == "yolov8" for i in net.heads)
    total, items = 0.0, None
    for s in range(c.subdivisions):
        x = to_device_images(images[s * c.mini_batch:(s + 1) * c.mini_batch], dev)
        t = truth[s * c.mini_batch:(s + 1) * c.mini_batch].to(dev, non_blocking=True)
        t = t[:, :max(1, int((t.abs().sum(-1) > 0).sum(1).max()))]  # padding rows cost TAL time
        heads = net.head_inputs(x)
        loss = net.compute_loss(heads, t)
        loss.total.backward()
        total += float(loss.total.detach()) / (x.shape[0] if per_image else 1)
        terms = np.array([v for i in sorted(loss.stats) for v in _printed_terms(loss.stats[i])])
        items = terms if items is None else items + terms
    return total / c.subdivisions, tuple((items / c.subdivisions).tolist()) if items is not None else ()


def _printed_terms(stats: Any) -> tuple[float, ...]:
    """A head's printed loss terms: its ``items`` (``[yolov8]``: box, cls, dfl as ultralytics prints
    them; ``[yolox]``: iou, obj, cls, l1) when it has them, else its cost."""
    items = getattr(stats, "items", None)
    return tuple(float(v) for v in items) if items is not None else (float(stats.cost),)
