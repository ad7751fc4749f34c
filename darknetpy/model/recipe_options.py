"""The ``[net]`` keys of the modern training recipes (``recipe=yolov8|yolox``): their MEANING, no torch.

``recipe=`` picks a column of :data:`RECIPE_DEFAULTS`; every key may be set on its own to override one
part. ``recipe=darknet`` (the default) returns ``None``: a Darknet cfg keeps Darknet's training exactly,
and the keys below are then reported as unused like any other unknown key. What each key reproduces
(ultralytics 8.4.190 ``engine/trainer.py``, ``cfg/default.yaml``, ``utils/torch_utils.py: ModelEMA``;
YOLOX ``yolox/exp/yolox_base.py``, ``yolox/utils/lr_scheduler.py``, ``yolox/core/trainer.py``) is
in the README's "Training recipes" table; the code that runs them is ``darknetpy.training.recipes``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .cfg import CfgWarning, Options

RECIPES = ("darknet", "yolov8", "yolox")
OPTIMIZERS = MappingProxyType({"sgd": "sgd", "adamw": "adamw", "auto": "auto"})
LR_SCHEDULES = MappingProxyType({"linear": "linear", "cosine": "cosine", "yoloxwarmcos": "yoloxwarmcos"})
INITS = MappingProxyType({"darknet": "darknet", "torch": "torch"})

# Each recipe's defaults. learning_rate/momentum/decay are Darknet's own [net] keys: a recipe only
# changes their defaults.
RECIPE_DEFAULTS: MappingProxyType[str, MappingProxyType[str, Any]] = MappingProxyType({
    "yolov8": MappingProxyType({  # ultralytics cfg/default.yaml
        "learning_rate": 0.01, "momentum": 0.937, "decay": 0.0005, "optimizer": "auto",
        "lr_batch": 0, "nesterov": True, "nominal_batch": 64, "epochs": 0, "warmup_epochs": 3.0,
        "warmup_bias_lr": 0.1, "warmup_momentum": 0.8, "lr_schedule": "linear", "lrf": 0.01,
        "no_aug_epochs": 0, "close_mosaic": 10, "clip_grad": 10.0, "ema_decay": 0.9999,
        "ema_tau": 2000.0, "bn_momentum": 0.03, "init": "torch",
    }),
    "yolox": MappingProxyType({  # YOLOX yolox/exp/yolox_base.py
        "learning_rate": 0.01, "momentum": 0.9, "decay": 0.0005, "optimizer": "sgd",
        "lr_batch": 64, "nesterov": True, "nominal_batch": 0, "epochs": 0, "warmup_epochs": 5.0,
        "warmup_bias_lr": 0.0, "warmup_momentum": 0.9, "lr_schedule": "yoloxwarmcos", "lrf": 0.05,
        "no_aug_epochs": 15, "close_mosaic": 16, "clip_grad": 0.0, "ema_decay": 0.9998,
        "ema_tau": 2000.0, "bn_momentum": 0.03, "init": "torch",
    }),
})  # fmt: skip


@dataclass(frozen=True)
class RecipeOptions:
    """The resolved recipe keys of one ``[net]`` section (see the module docstring)."""

    recipe: str
    optimizer: str  # sgd | adamw | auto (resolved when the training set size is known)
    lr_batch: int  # lr = learning_rate * batch / lr_batch (0: as given)
    nesterov: bool
    nominal_batch: int  # gradient accumulation to this many images per step (0: none)
    epochs: int  # 0: from max_batches
    warmup_epochs: float
    warmup_bias_lr: float
    warmup_momentum: float
    lr_schedule: str  # linear | cosine | yoloxwarmcos
    lrf: float
    no_aug_epochs: int
    close_mosaic: int
    clip_grad: float
    ema_decay: float
    ema_tau: float
    bn_momentum: float
    init: str  # darknet | torch
    augment: tuple[tuple[str, Any], ...] = ()
    # (ModernAugment field, value) pairs set in the cfg (darknetpy.data.modern); the others keep the
    # recipe's defaults. A tuple, so the options stay hashable and picklable.


#: [net] augmentation keys of the modern recipes (darknetpy.data.modern.ModernAugment fields): how many
#: numbers each takes.
AUGMENT_KEYS = MappingProxyType({
    "mosaic_prob": 1, "mixup_prob": 1, "degrees": 1, "translate": 1, "scale_range": 2, "shear": 1,
    "perspective": 1, "hsv_gains": 3, "hsv_prob": 1, "flip_prob": 1, "flipud_prob": 1, "mixup_scale": 2,
})  # fmt: skip

#: Darknet's augmentation keys, which have no effect under a modern recipe, and what to use instead.
DARKNET_AUGMENT_KEYS = MappingProxyType({
    "jitter": "scale_range/translate", "resize": "scale_range", "hue": "hsv_gains",
    "saturation": "hsv_gains", "exposure": "hsv_gains", "flip": "flip_prob", "blur": "-",
    "gaussian_noise": "-", "mixup": "mixup_prob", "cutmix": "-", "mosaic": "mosaic_prob",
    "mosaic_bound": "-",
})  # fmt: skip


def recipe_name(opts: Options) -> str:
    """``recipe=`` of ``[net]`` (``darknet`` when absent); an unknown name lists the choices."""
    return opts.get_choice("recipe", MappingProxyType({r: r for r in RECIPES}), "darknet")


def recipe_default(recipe: str, key: str, darknet_default: Any) -> Any:
    """The default of a Darknet ``[net]`` key (learning_rate, momentum, decay) under ``recipe``."""
    table = RECIPE_DEFAULTS.get(recipe)
    return darknet_default if table is None else table[key]


def _augment_keys(opts: Options) -> dict[str, Any]:
    """The augmentation keys present in ``[net]`` (numbers; 2- and 3-number keys as tuples)."""
    out: dict[str, Any] = {}
    for key, count in AUGMENT_KEYS.items():
        if not opts.has(key):
            continue
        if count == 1:
            out[key] = opts.get_float(key)
            continue
        values = opts.get_floats(key)
        if len(values) != count:
            raise opts.error(f"{key}= takes {count} numbers (comma separated), got {len(values)}", key)
        out[key] = values
    return out


def warn_darknet_augment(opts: Options, recipe: str) -> None:
    """Warn (path:line) for each Darknet augmentation key set under a modern recipe: it has no effect."""
    for key, instead in DARKNET_AUGMENT_KEYS.items():
        entry = next((e for e in opts.section.entries if e.key == key), None)
        if entry is not None:
            hint = f"; use {instead}" if instead != "-" else ""
            warnings.warn(f"{opts.where(entry)}: {key}= has no effect under recipe={recipe}{hint}",
                          CfgWarning, stacklevel=4)  # fmt: skip


def parse_recipe_options(opts: Options, recipe: str) -> RecipeOptions | None:
    """The recipe keys of ``[net]`` (``None`` for ``recipe=darknet``); bad values are CfgErrors."""
    if recipe == "darknet":
        return None
    d = RECIPE_DEFAULTS[recipe]
    warn_darknet_augment(opts, recipe)
    r = RecipeOptions(
        recipe=recipe,
        optimizer=opts.get_choice("optimizer", OPTIMIZERS, d["optimizer"]),
        lr_batch=opts.get_int("lr_batch", d["lr_batch"]),
        nesterov=opts.get_bool("nesterov", d["nesterov"]),
        nominal_batch=opts.get_int("nominal_batch", d["nominal_batch"]),
        epochs=opts.get_int("epochs", d["epochs"]),
        warmup_epochs=opts.get_float("warmup_epochs", d["warmup_epochs"]),
        warmup_bias_lr=opts.get_float("warmup_bias_lr", d["warmup_bias_lr"]),
        warmup_momentum=opts.get_float("warmup_momentum", d["warmup_momentum"]),
        lr_schedule=opts.get_choice("lr_schedule", LR_SCHEDULES, d["lr_schedule"]),
        lrf=opts.get_float("lrf", d["lrf"]),
        no_aug_epochs=opts.get_int("no_aug_epochs", d["no_aug_epochs"]),
        close_mosaic=opts.get_int("close_mosaic", d["close_mosaic"]),
        clip_grad=opts.get_float("clip_grad", d["clip_grad"]),
        ema_decay=opts.get_float("ema_decay", d["ema_decay"]),
        ema_tau=opts.get_float("ema_tau", d["ema_tau"]),
        bn_momentum=opts.get_float("bn_momentum", d["bn_momentum"]),
        init=opts.get_choice("init", INITS, d["init"]),
        augment=tuple(_augment_keys(opts).items()),
    )
    for key in ("lr_batch", "nominal_batch", "epochs", "no_aug_epochs", "close_mosaic"):
        if getattr(r, key) < 0:
            raise opts.error(f"{key}={getattr(r, key)} must be >= 0", key)
    for key in ("warmup_epochs", "clip_grad", "ema_tau", "lrf"):
        if getattr(r, key) < 0:
            raise opts.error(f"{key}={getattr(r, key)} must be >= 0", key)
    if not 0 <= r.ema_decay < 1:
        raise opts.error(f"ema_decay={r.ema_decay} must be in [0, 1) (0: no EMA)", "ema_decay")
    if r.ema_decay and r.ema_tau <= 0:
        raise opts.error(f"ema_tau={r.ema_tau} must be > 0 with an EMA", "ema_tau")
    if not 0 < r.bn_momentum <= 1:
        raise opts.error(f"bn_momentum={r.bn_momentum} must be in (0, 1] (PyTorch's convention)",
                         "bn_momentum")  # fmt: skip
    return r
