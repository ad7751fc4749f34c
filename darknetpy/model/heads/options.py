"""Options records of the ``[yolo]`` and ``[Gaussian_yolo]`` heads and their parsing from the cfg.

Each ``[yolo]`` and ``[Gaussian_yolo]`` section is parsed once into a frozen options record holding
every key darknet reads for it (``parser.c: parse_yolo, parse_gaussian_yolo``). The keys they share
are declared once, in :class:`BaseYoloOptions`, and read once, by one shared parsing step. The
layers, and the ``map=`` file the options name, live in :mod:`darknetpy.model.heads.yolo`,
:mod:`~darknetpy.model.heads.gaussian_yolo` and :mod:`~darknetpy.model.heads.darknet_head`;
``[region]``'s record sits beside its head in :mod:`~darknetpy.model.heads.region`, and the
value readers all three share in :mod:`~darknetpy.model.heads.option_readers`.

Where darknet silently falls back (an unknown ``iou_loss``, ``nms_kind``, ``iou_thresh_kind`` or
``yolo_point`` string) darknetpy raises :class:`~darknetpy.errors.CfgError` listing the choices.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import numpy as np

from ...errors import CfgError
from ..boxes import IOU_KINDS, IOU_LOSSES, IouLoss
from ..cfg import CfgWarning, Options
from .option_readers import anchor_pairs, c_float, check_positive, path_option

__all__ = [
    "FLT_MAX",
    "GAUSSIAN_NMS_KINDS",
    "NMS_KINDS",
    "YOLO_POINTS",
    "BaseYoloOptions",
    "GaussianYoloOptions",
    "IouLoss",
    "NmsKind",
    "YoloOptions",
    "YoloPoint",
    "classes_multipliers",
    "parse_gaussian_yolo_options",
    "parse_yolo_options",
]

T = TypeVar("T")

FLT_MAX = float(np.finfo(np.float32).max)
"""C's ``FLT_MAX``: darknet's default ``max_delta`` (no clipping)."""

# Keys AlexeyAB reads in [yolo] for tracking only (`parse_yolo`); darknetpy does not track.
_TRACKING_KEYS = (
    "embedding_layer",
    "track_history_size",
    "sim_thresh",
    "dets_for_track",
    "dets_for_show",
    "track_ciou_norm",
)


class NmsKind(Enum):
    """darknet's ``NMS_KIND`` (``nms_kind=``); the *last* detection layer's value is used."""

    DEFAULT = "default"  # do_nms_sort: plain IoU
    GREEDY = "greedynms"  # diounms_sort with box_diou (fixed exponent 0.6)
    DIOU = "diounms"  # diounms_sort with box_diounms(beta_nms)
    CORNERS = "cornersnms"  # [Gaussian_yolo] only: plain IoU through diounms_sort


NMS_KINDS: MappingProxyType[str, NmsKind] = MappingProxyType(
    {k.value: k for k in NmsKind if k is not NmsKind.CORNERS}
)
GAUSSIAN_NMS_KINDS: MappingProxyType[str, NmsKind] = MappingProxyType({k.value: k for k in NmsKind})


class YoloPoint(Enum):
    """``yolo_point=`` of ``[Gaussian_yolo]``: which point of the box x, y predict."""

    CENTER = "center"
    LEFT_TOP = "left_top"
    RIGHT_BOTTOM = "right_bottom"


YOLO_POINTS: MappingProxyType[str, YoloPoint] = MappingProxyType({k.value: k for k in YoloPoint})


@dataclass(frozen=True)
class BaseYoloOptions:
    """The keys ``[yolo]`` and ``[Gaussian_yolo]`` share (``parse_yolo``, ``parse_gaussian_yolo``).

    ``anchors`` holds all ``num`` anchors of the line as ``(w, h)`` pairs in network-input pixels
    (the loss matches each truth against every one); ``mask`` names the ones this head predicts.
    Anchor values missing from the line are 0.5, as darknet's ``make_yolo_layer`` initialises them.
    """

    classes: int = 20
    total: int = 1  # `num=`: anchors on the line, over all heads
    mask: tuple[int, ...] = (0,)
    anchors: tuple[tuple[float, float], ...] = ((0.5, 0.5),)
    max_boxes: int = 200  # `max=`
    jitter: float = 0.2
    resize: float = 1.0
    random: float = 0.0  # 1 means coefficient 1.4 in the training loop
    ignore_thresh: float = 0.5
    truth_thresh: float = 1.0
    iou_thresh: float = 1.0
    iou_thresh_kind: IouLoss = IouLoss.IOU
    iou_loss: IouLoss = IouLoss.MSE
    iou_normalizer: float = 0.75
    obj_normalizer: float = 1.0
    cls_normalizer: float = 1.0
    delta_normalizer: float = 1.0
    max_delta: float = FLT_MAX
    counters_per_class: tuple[int, ...] | None = None
    label_smooth_eps: float = 0.0
    scale_x_y: float = 1.0
    objectness_smooth: bool = False
    beta_nms: float = 0.6
    nms_kind: NmsKind = NmsKind.DEFAULT
    map: Path | None = None  # class-id remapping file (training only)

    @property
    def num(self) -> int:
        """Anchor slots of this head (darknet's ``l.n``)."""
        return len(self.mask)

    @property
    def masked_anchors(self) -> tuple[tuple[float, float], ...]:
        """The ``(w, h)`` of each anchor slot of this head, in slot order."""
        return tuple(self.anchors[k] for k in self.mask)

    @property
    def classes_multipliers(self) -> tuple[float, ...] | None:
        """Multipliers from ``counters_per_class`` (``parser.c: get_classes_multipliers``)."""
        return classes_multipliers(self.counters_per_class, self.max_delta)


@dataclass(frozen=True)
class YoloOptions(BaseYoloOptions):
    """``[yolo]``, every key ``parser.c: parse_yolo`` reads (tracking keys are declared ignored):
    the shared keys of :class:`BaseYoloOptions` plus ``focal_loss``, ``new_coords`` and
    ``show_details``."""

    focal_loss: bool = False
    new_coords: bool = False
    show_details: int = 1

    @property
    def entries(self) -> int:
        """Channels per anchor slot: x, y, w, h, objectness, classes."""
        return 5 + self.classes


@dataclass(frozen=True)
class GaussianYoloOptions(BaseYoloOptions):
    """``[Gaussian_yolo]`` (``parser.c: parse_gaussian_yolo``): the shared keys of
    :class:`BaseYoloOptions` plus ``uc_normalizer`` and ``yolo_point``."""

    uc_normalizer: float = 1.0
    yolo_point: YoloPoint = YoloPoint.CENTER

    @property
    def entries(self) -> int:
        """Channels per anchor slot: x, σx, y, σy, w, σw, h, σh, objectness, classes."""
        return 9 + self.classes


def classes_multipliers(
    counters: Sequence[int] | None, max_delta: float
) -> tuple[float, ...] | None:
    """``max_count / count_i`` capped at ``max_delta``, counts below 1 read as 1
    (``parser.c: get_classes_multipliers``); None without ``counters_per_class``."""
    if counters is None:
        return None
    counts = [max(1, c) for c in counters]
    with np.errstate(over="ignore", invalid="ignore"):
        top = np.float32(max(counts))
        return tuple(
            float(min(np.float32(top / np.float32(c)), np.float32(max_delta))) for c in counts
        )


# ---- option parsing ----
def _counters(opts: Options, classes: int) -> tuple[int, ...] | None:
    if not opts.has("counters_per_class"):
        return None
    counters = opts.get_ints("counters_per_class")
    if len(counters) != classes:
        raise opts.error(
            f"counters_per_class= has {len(counters)} values but classes={classes}; give one count "
            "per class",
            "counters_per_class",
        )
    return counters


_FALLBACKS = MappingProxyType(
    {
        "iou_loss": "plain IoU",  # parse_yolo: any other string is IOU
        "iou_thresh_kind": "iou",  # prints "Wrong iou_thresh_kind", uses IOU
        "nms_kind": "default",  # DEFAULT_NMS
        "yolo_point": "center",  # YOLO_CENTER
    }
)


def _choice(opts: Options, key: str, table: MappingProxyType[str, T], default: str) -> T:
    """``opts.get_choice`` whose error also says what darknet would silently have used."""
    try:
        return opts.get_choice(key, table, default)
    except CfgError as exc:
        raise CfgError(f"{exc} (darknet would silently use {_FALLBACKS[key]})") from None


def _parse_yolo_common(
    opts: Options, nms_kinds: MappingProxyType[str, NmsKind], *, overflow_is_error: bool
) -> dict[str, Any]:
    """The :class:`BaseYoloOptions` keys, as keyword arguments of a head's options record."""
    classes = opts.get_int("classes", 20)
    check_positive(opts, "classes", classes)
    total = opts.get_int("num", 1)
    check_positive(opts, "num", total)
    mask = opts.get_ints("mask", tuple(range(total)))
    bad = [k for k in mask if not 0 <= k < total]
    listed = len(opts.get_floats("anchors", ())) // 2
    if bad and min(mask) >= 0 and max(mask) < listed:
        # cspx-p7-mish.cfg: mask=16,17,18,19 with num=16 and 20 anchors listed. Darknet reads
        # biases[32..39] past its buffer (undefined); the author meant the anchors listed.
        where = opts.where(next((e for e in opts.section.entries if e.key == "mask"), None))
        warnings.warn(
            f"{where}: mask={','.join(map(str, mask))} uses anchor {max(mask)}, but num={total} "
            f"gives anchors 0..{total - 1} (darknet reads past its anchor buffer there); "
            f"darknetpy uses the {listed} anchors anchors= lists, as num={listed}: set "
            f"num={listed}", CfgWarning, stacklevel=4)
        total, bad = listed, []
    if bad:
        raise opts.error(
            f"mask={','.join(map(str, mask))} uses anchor {bad[0]}, but num={total} gives anchors "
            f"0..{total - 1} (darknet would read past its anchor buffer); mask indices count the "
            f"(w, h) pairs of anchors= from 0",
            "mask",
        )
    max_delta = c_float(opts.get_float("max_delta", FLT_MAX))
    return {
        "classes": classes,
        "total": total,
        "mask": mask,
        "anchors": anchor_pairs(opts, total, overflow_is_error=overflow_is_error),
        "max_boxes": opts.get_int("max", 200),
        "jitter": c_float(opts.get_float("jitter", 0.2)),
        "resize": c_float(opts.get_float("resize", 1.0)),
        "random": c_float(opts.get_float("random", 0.0)),
        "ignore_thresh": c_float(opts.get_float("ignore_thresh", 0.5)),
        "truth_thresh": c_float(opts.get_float("truth_thresh", 1.0)),
        "iou_thresh": c_float(opts.get_float("iou_thresh", 1.0)),
        "iou_thresh_kind": _choice(opts, "iou_thresh_kind", IOU_KINDS, "iou"),
        "iou_loss": _choice(opts, "iou_loss", IOU_LOSSES, "mse"),
        "iou_normalizer": c_float(opts.get_float("iou_normalizer", 0.75)),
        "obj_normalizer": c_float(opts.get_float("obj_normalizer", 1.0)),
        "cls_normalizer": c_float(opts.get_float("cls_normalizer", 1.0)),
        "delta_normalizer": c_float(opts.get_float("delta_normalizer", 1.0)),
        "max_delta": max_delta,
        "counters_per_class": _counters(opts, classes),
        "label_smooth_eps": c_float(opts.get_float("label_smooth_eps", 0.0)),
        "scale_x_y": c_float(opts.get_float("scale_x_y", 1.0)),
        "objectness_smooth": opts.get_bool("objectness_smooth", False),
        "beta_nms": c_float(opts.get_float("beta_nms", 0.6)),
        "nms_kind": _choice(opts, "nms_kind", nms_kinds, "default"),
        "map": path_option(opts, "map"),
    }


def parse_yolo_options(opts: Options) -> YoloOptions:
    """``[yolo]`` keys into :class:`YoloOptions` (``parser.c: parse_yolo``)."""
    common = _parse_yolo_common(opts, NMS_KINDS, overflow_is_error=False)
    opts.ignore(*_TRACKING_KEYS)
    return YoloOptions(
        **common,
        focal_loss=opts.get_bool("focal_loss", False),
        new_coords=opts.get_bool("new_coords", False),
        show_details=opts.get_int("show_details", 1),
    )


def parse_gaussian_yolo_options(opts: Options) -> GaussianYoloOptions:
    """``[Gaussian_yolo]`` keys into :class:`GaussianYoloOptions` (``parse_gaussian_yolo``)."""
    common = _parse_yolo_common(opts, GAUSSIAN_NMS_KINDS, overflow_is_error=True)
    return GaussianYoloOptions(
        **common,
        uc_normalizer=c_float(opts.get_float("uc_normalizer", 1.0)),
        yolo_point=_choice(opts, "yolo_point", YOLO_POINTS, "center"),
    )
