"""The ultralytics (YOLOv8) and YOLOX training recipes: optimizer groups, per-iteration lr, momentum and
gradient accumulation, the model EMA, and the epoch <-> iteration mapping. Pure functions and two small
classes; the loop that drives them is :mod:`darknetpy.training.recipe_loop`.

darknetpy counts iterations as Darknet does (one iteration = one ``batch`` of images); an epoch is
``ceil(train images / batch)`` iterations. References (read, not copied): ultralytics 8.4.190
``engine/trainer.py`` (``_build_train_pipeline``, ``build_optimizer``, ``_setup_scheduler``,
``_get_warmup_iterations``, ``_do_train``, ``optimizer_step``), ``utils/torch_utils.py`` (``one_cycle``,
``ModelEMA``); YOLOX ``yolox/exp/yolox_base.py`` (``get_optimizer``), ``yolox/utils/lr_scheduler.py``
(``yolox_warm_cos_lr``), ``yolox/utils/ema.py`` (``ModelEMA``), ``yolox/core/trainer.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..model.recipe_options import RecipeOptions

__all__ = ["AutoChoice", "ParamGroups", "RecipeEMA", "RecipeSchedule", "StepSettings", "accumulate_steps",
           "auto_optimizer", "build_optimizer", "cosine_lf", "ema_decay", "epoch_iterations",
           "linear_lf", "param_groups", "resolve_length", "scaled_decay", "warmup_iterations",
           "yolox_warm_cos_lr"]  # fmt: skip


# ------------------------------------------------------------------ epochs and iterations
def epoch_iterations(train_images: int, batch: int) -> int:
    """Iterations in an epoch: ``ceil(train_images / batch)`` (ultralytics ``len(train_loader)``, which
    keeps the last partial batch; YOLOX ``max_iter = len(train_loader)``)."""
    return max(1, math.ceil(train_images / batch))


def resolve_length(epochs: int, max_batches: int, epoch_iters: int) -> tuple[int, int]:
    """``(epochs, max_batches)``: ``epochs`` given and ``max_batches`` 0: ``epochs * epoch_iters``;
    ``epochs`` 0: ``ceil(max_batches / epoch_iters)``. With both, ``epochs`` shapes the schedule and
    ``max_batches`` ends the run."""
    if epochs > 0 and max_batches <= 0:
        return epochs, epochs * epoch_iters
    if epochs <= 0:
        return max(1, math.ceil(max_batches / epoch_iters)), max_batches
    return epochs, max_batches


# ------------------------------------------------------------------ accumulation, decay, optimizer choice
def accumulate_steps(nominal_batch: int, batch: int, max_batches: int) -> int:
    """Batches per optimizer step: ``max(round(nbs / batch), 1)``, at most the run's iterations
    (``trainer._build_train_pipeline``); 1 without a nominal batch."""
    if nominal_batch <= 0:
        return 1
    return max(1, min(max(round(nominal_batch / batch), 1), max_batches))


def scaled_decay(decay: float, batch: int, accumulate: int, nominal_batch: int) -> float:
    """``weight_decay * batch * accumulate / nbs`` (``trainer._build_train_pipeline``); as given without
    a nominal batch (YOLOX)."""
    return decay * batch * accumulate / nominal_batch if nominal_batch > 0 else decay


@dataclass(frozen=True)
class AutoChoice:
    """What ``optimizer=auto`` resolves to."""

    name: str  # sgd | adamw
    lr: float
    momentum: float
    warmup_bias_lr: float


def auto_optimizer(train_images: int, batch: int, nominal_batch: int, epochs: int,
                   classes: int) -> AutoChoice:
    """ultralytics' ``optimizer='auto'`` (``build_optimizer``): with ``ceil(images / max(batch, nbs)) *
    epochs`` > 10000 it takes MuSGD (lr 0.01, momentum 0.9) -- darknetpy takes plain SGD there (MuSGD's
    orthogonalised update is not reproduced) -- else AdamW with ``lr = round(0.002 * 5 / (4 + nc), 6)``
    and beta1 0.9. Both start the bias warm-up at 0."""
    iterations = math.ceil(train_images / max(batch, nominal_batch)) * epochs
    if iterations > 10000:
        return AutoChoice("sgd", 0.01, 0.9, 0.0)
    return AutoChoice("adamw", round(0.002 * 5 / (4 + classes), 6), 0.9, 0.0)


@dataclass(frozen=True)
class ParamGroups:
    """Trainable tensors in the references' three groups."""

    weights: list[nn.Parameter]  # decayed
    norms: list[nn.Parameter]  # batch-norm scales: no decay
    biases: list[nn.Parameter]  # every bias (conv and batch-norm): no decay


def param_groups(network: nn.Module) -> ParamGroups:
    """ultralytics ``build_optimizer`` (``"bias"`` in the name -> biases; a normalisation module's weight
    -> no decay; any other weight -> decay); YOLOX ``get_optimizer`` splits the same way (pg2 biases,
    pg0 BN weights, pg1 the other weights)."""
    groups = ParamGroups([], [], [])
    for module in network.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if "bias" in name:
                groups.biases.append(p)
            elif isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)):
                groups.norms.append(p)
            else:
                groups.weights.append(p)
    return groups


GROUP_NAMES = ("weight", "bn", "bias")


def build_optimizer(groups: ParamGroups, name: str, lr: float, momentum: float, decay: float,
                    nesterov: bool) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov) or AdamW (betas ``(momentum, 0.999)``) over the three groups, decay on
    the weights only; each group records ``param_group`` and ``initial_lr``."""
    specs = [(GROUP_NAMES[0], groups.weights, decay), (GROUP_NAMES[1], groups.norms, 0.0),
             (GROUP_NAMES[2], groups.biases, 0.0)]  # fmt: skip
    dicts = [{"params": ps, "weight_decay": wd, "param_group": tag, "initial_lr": lr}
             for tag, ps, wd in specs]  # fmt: skip
    if name == "adamw":
        return torch.optim.AdamW(dicts, lr=lr, betas=(momentum, 0.999), weight_decay=0.0)
    if name == "sgd":
        return torch.optim.SGD(dicts, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    raise ValueError(f"optimizer {name!r}: expected sgd or adamw")


# ------------------------------------------------------------------ learning rate
def linear_lf(epoch: int, epochs: int, lrf: float) -> float:
    """ultralytics' linear factor: ``max(1 - epoch / epochs, 0) * (1 - lrf) + lrf``."""
    return max(1 - epoch / epochs, 0) * (1.0 - lrf) + lrf


def cosine_lf(epoch: int, epochs: int, lrf: float) -> float:
    """ultralytics ``one_cycle(1, lrf, epochs)``: ``max((1 - cos(epoch * pi / epochs)) / 2, 0) *
    (lrf - 1) + 1``."""
    return max((1 - math.cos(epoch * math.pi / epochs)) / 2, 0) * (lrf - 1.0) + 1.0


def yolox_warm_cos_lr(lr: float, min_lr_ratio: float, total_iters: int, warmup_total_iters: int,
                      warmup_lr_start: float, no_aug_iter: int, iters: int) -> float:
    """YOLOX ``yolox_warm_cos_lr``: quadratic warm-up, cosine to ``lr * min_lr_ratio``, flat at the
    minimum for the last ``no_aug_iter`` iterations."""
    min_lr = lr * min_lr_ratio
    if iters <= warmup_total_iters:
        return (lr - warmup_lr_start) * pow(iters / float(warmup_total_iters), 2) + warmup_lr_start
    if iters >= total_iters - no_aug_iter:
        return min_lr
    progress = (iters - warmup_total_iters) / (total_iters - warmup_total_iters - no_aug_iter)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def warmup_iterations(warmup_epochs: float, epochs: int, epoch_iters: int) -> int:
    """ultralytics ``_get_warmup_iterations``: ``round(min(warmup_epochs, max(epochs - 1, 0)) * nb)``
    (the last epoch is never warm-up)."""
    capped = min(warmup_epochs, max(epochs - 1, 0))
    return round(capped * epoch_iters) if capped > 0 else 0


@dataclass(frozen=True)
class StepSettings:
    """What one iteration trains with."""

    lrs: tuple[float, float, float]  # per group: weights, bn, biases
    momentum: float
    accumulate: int  # the optimizer steps when iterations since the last step >= this


class RecipeSchedule:
    """lr, momentum and accumulation at each iteration ``ni`` (0-based, as ultralytics' ``ni``).

    ``linear``/``cosine`` (ultralytics ``_do_train``): the epoch's lr is ``lr0 * lf(epoch)``; during the
    first ``nw`` iterations (``ni <= nw``) every group's lr is interpolated linearly from 0 (biases: from
    ``warmup_bias_lr``) to it, momentum from ``warmup_momentum``, accumulation from 1 to its nominal value
    (``np.interp(...).round()``, half to even). ``yoloxwarmcos``: one lr for all groups from
    :func:`yolox_warm_cos_lr` at ``ni`` (YOLOX sets the lr of iteration k+1 after step k; the first
    iteration trains at ``warmup_lr_start`` = 0, which is the same formula at 0).
    """

    def __init__(self, r: RecipeOptions, lr0: float, momentum: float, warmup_bias_lr: float,
                 epoch_iters: int, epochs: int, accumulate: int) -> None:
        self.r, self.lr0, self.momentum, self.bias_lr0 = r, lr0, momentum, warmup_bias_lr
        self.nb, self.epochs, self.acc0 = epoch_iters, epochs, accumulate
        self.yolox = r.lr_schedule == "yoloxwarmcos"
        self.nw = (round(r.warmup_epochs * epoch_iters) if self.yolox
                   else warmup_iterations(r.warmup_epochs, epochs, epoch_iters))  # fmt: skip

    def epoch(self, ni: int) -> int:
        return ni // self.nb

    def lf(self, epoch: int) -> float:
        fn = cosine_lf if self.r.lr_schedule == "cosine" else linear_lf
        return fn(epoch, self.epochs, self.r.lrf)

    def at(self, ni: int) -> StepSettings:
        if self.yolox:
            lr = yolox_warm_cos_lr(self.lr0, self.r.lrf, self.nb * self.epochs, self.nw, 0.0,
                                   self.nb * self.r.no_aug_epochs, ni)  # fmt: skip
            return StepSettings((lr, lr, lr), self.momentum, self.acc0)
        target = self.lr0 * self.lf(self.epoch(ni))
        if not self.nw or ni > self.nw:
            return StepSettings((target, target, target), self.momentum, self.acc0)
        xi = [0, self.nw]
        acc = max(1, int(np.interp(ni, xi, [1, self.acc0]).round()))
        lr_w = float(np.interp(ni, xi, [0.0, target]))
        lr_b = float(np.interp(ni, xi, [self.bias_lr0, target]))
        mom = float(np.interp(ni, xi, [self.r.warmup_momentum, self.momentum]))
        return StepSettings((lr_w, lr_w, lr_b), mom, acc)

    def mosaic(self, ni: int) -> bool:
        """Mosaic/mixup on at ``ni``: off for the last ``close_mosaic`` epochs."""
        return self.epoch(ni) < self.epochs - self.r.close_mosaic

    def apply(self, optimizer: torch.optim.Optimizer, s: StepSettings) -> None:
        """Put ``s`` into the optimizer's groups (Adam's beta1 is not warmed: ultralytics only warms a
        group that has ``momentum``)."""
        for group in optimizer.param_groups:
            group["lr"] = s.lrs[GROUP_NAMES.index(group.get("param_group", "weight"))]
            if "momentum" in group:
                group["momentum"] = s.momentum


# ------------------------------------------------------------------ EMA
def ema_decay(decay: float, tau: float, updates: int) -> float:
    """ModelEMA's ramp (ultralytics and YOLOX): ``decay * (1 - exp(-updates / tau))``."""
    return decay * (1 - math.exp(-updates / tau))


class RecipeEMA:
    """ultralytics/YOLOX ``ModelEMA`` over every floating tensor of the state dict (parameters AND
    batch-norm running statistics), updated after each optimizer step: ``ema = d*ema + (1-d)*model``."""

    def __init__(self, network: nn.Module, decay: float, tau: float, updates: int = 0) -> None:
        self.network, self.decay, self.tau, self.updates = network, decay, tau, updates
        self.tensors = [v for v in network.state_dict(keep_vars=False).values()
                        if v.dtype.is_floating_point]  # fmt: skip
        self.shadow = [t.detach().clone() for t in self.tensors]

    initialized = True

    @torch.no_grad()
    def update(self) -> float:
        """One update; returns the ``d`` used."""
        self.updates += 1
        d = ema_decay(self.decay, self.tau, self.updates)
        torch._foreach_lerp_(self.shadow, [t.detach() for t in self.tensors], 1.0 - d)
        return d

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """The EMA values inside the network for the duration (evaluate, save)."""
        saved = [t.detach().clone() for t in self.tensors]
        with torch.no_grad():
            torch._foreach_copy_(self.tensors, self.shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.tensors, saved)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "shadow": [t.cpu() for t in self.shadow]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.shadow = [s.to(t.device, t.dtype) for s, t in zip(state["shadow"], self.tensors)]
