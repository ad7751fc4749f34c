"""What each head's loss reads, as plain values normalised from the layer's options record.

:class:`YoloSpec` serves ``[yolo]`` and ``[Gaussian_yolo]`` (``parser.c: parse_yolo``,
``parse_gaussian_yolo``), :class:`RegionSpec` ``[region]`` (``parse_region``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ....errors import UsageError
from ..darknet_head import read_class_map

FLT_MAX = float(np.finfo(np.float32).max)  # C's FLT_MAX: max_delta's "no clipping"


@dataclass(frozen=True)
class YoloSpec:
    """What the [yolo] / [Gaussian_yolo] loss reads, as plain values (see :func:`yolo_spec`)."""

    classes: int
    anchors: tuple[tuple[float, float], ...]  # every anchor of the cfg (l.total), pixels
    mask: tuple[int, ...]
    max_boxes: int = 200
    ignore_thresh: float = 0.5
    truth_thresh: float = 1.0
    iou_thresh: float = 1.0
    iou_thresh_kind: str = "iou"
    iou_loss: str = "mse"
    iou_normalizer: float = 0.75
    obj_normalizer: float = 1.0
    cls_normalizer: float = 1.0
    uc_normalizer: float = 1.0
    max_delta: float = FLT_MAX
    class_multipliers: tuple[float, ...] | None = None
    label_smooth_eps: float = 0.0
    focal_loss: bool = False
    scale_x_y: float = 1.0
    new_coords: bool = False
    objectness_smooth: bool = False
    class_map: tuple[int, ...] | None = None
    show_details: int = 1
    yolo_point: str = "center"  # Gaussian_yolo only


@dataclass(frozen=True)
class RegionSpec:
    """What the [region] loss reads (see :func:`region_spec`)."""

    classes: int
    anchors: tuple[tuple[float, float], ...]  # num pairs, grid cells
    max_boxes: int = 200
    softmax: bool = False
    rescore: bool = False
    bias_match: bool = False
    thresh: float = 0.5
    classfix: int = 0
    coord_scale: float = 1.0
    object_scale: float = 1.0
    noobject_scale: float = 1.0
    class_scale: float = 1.0
    focal_loss: bool = False
    class_map: tuple[int, ...] | None = None


def _kind(value: Any) -> str:
    """An :class:`~darknetpy.model.boxes.IouLoss` as its cfg string (``mse/iou/giou/diou/ciou``)."""
    return str(getattr(value, "value", value))


def _class_map(path: Path | None) -> tuple[int, ...] | None:
    if path is None:
        return None

    return read_class_map(path)


@functools.lru_cache(maxsize=256)
def _spec_of(options: Any, make: Callable[[Any], Any]) -> Any:
    return make(options)


@functools.lru_cache(maxsize=1024)
def _device_tensor(values: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype).to(device)


def device_tensor(values: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``torch.tensor(values)`` on ``device``, made once per (values, dtype, device): a head's
    anchors, mask and class tables are not copied to the device at every step. Never write to it."""
    return _device_tensor(values, dtype, torch.device(device))


def cached_spec(options: Any, make: Callable[[Any], Any]) -> Any:
    """``make(options)``, once per (frozen, hashable) options record: a ``map=`` file is read
    once, not at every training step."""
    try:
        hash(options)
    except TypeError:
        return make(options)
    return _spec_of(options, make)


def yolo_spec(options: Any) -> YoloSpec:
    """A :class:`YoloSpec` from ``YoloOptions`` or ``GaussianYoloOptions``
    (:mod:`darknetpy.model.heads.options`); keys one of them lacks take Darknet's default."""
    point = getattr(options, "yolo_point", "center")
    max_delta = float(options.max_delta)
    return YoloSpec(
        classes=int(options.classes),
        anchors=tuple((float(w), float(h)) for w, h in options.anchors),
        mask=tuple(int(m) for m in options.mask),
        max_boxes=int(options.max_boxes),
        ignore_thresh=float(options.ignore_thresh),
        truth_thresh=float(options.truth_thresh),
        iou_thresh=float(options.iou_thresh),
        iou_thresh_kind=_kind(options.iou_thresh_kind),
        iou_loss=_kind(options.iou_loss),
        iou_normalizer=float(options.iou_normalizer),
        obj_normalizer=float(options.obj_normalizer),
        cls_normalizer=float(options.cls_normalizer),
        uc_normalizer=float(getattr(options, "uc_normalizer", 1.0)),
        max_delta=max_delta if math.isfinite(max_delta) else FLT_MAX,
        class_multipliers=options.classes_multipliers,
        label_smooth_eps=float(options.label_smooth_eps),
        focal_loss=bool(getattr(options, "focal_loss", False)),
        scale_x_y=float(options.scale_x_y),
        new_coords=bool(getattr(options, "new_coords", False)),
        objectness_smooth=bool(options.objectness_smooth),
        class_map=_class_map(options.map),
        show_details=int(getattr(options, "show_details", 1)),
        yolo_point=str(getattr(point, "value", point)),
    )


def region_spec(options: Any) -> RegionSpec:
    """A :class:`RegionSpec` from ``RegionOptions`` (:mod:`darknetpy.model.heads.region`).

    Raises:
        UsageError: ``tree=`` (YOLO9000 softmax trees) or ``coords`` other than 4.
    """
    if options.coords != 4:
        raise UsageError(
            f"[region] coords={options.coords}: darknetpy trains [region] only with coords=4"
        )
    if options.tree is not None:
        raise UsageError(
            f"[region] tree={options.tree}: training with softmax trees (YOLO9000) is "
            "not supported by darknetpy"
        )
    return RegionSpec(
        classes=int(options.classes),
        anchors=tuple((float(w), float(h)) for w, h in options.anchors),
        max_boxes=int(options.max_boxes),
        softmax=bool(options.softmax),
        rescore=bool(options.rescore),
        bias_match=bool(options.bias_match),
        thresh=float(options.thresh),
        classfix=int(options.classfix),
        coord_scale=float(options.coord_scale),
        object_scale=float(options.object_scale),
        noobject_scale=float(options.noobject_scale),
        class_scale=float(options.class_scale),
        focal_loss=bool(options.focal_loss),
        class_map=_class_map(options.map),
    )
