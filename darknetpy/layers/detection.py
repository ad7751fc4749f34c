"""Detection heads: ``[yolo]``, ``[Gaussian_yolo]`` and ``[region]``.

Each section is parsed once into a frozen options record (:class:`YoloOptions`,
:class:`GaussianYoloOptions`, :class:`RegionOptions`) holding every key darknet reads for it
(``parser.c: parse_yolo, parse_gaussian_yolo, parse_region``); the layer, the loss and the
post-processing all read that record. A layer's ``forward`` is darknet's inference-time
``l.output`` (``yolo_layer.c: forward_yolo_layer``, ``gaussian_yolo_layer.c:
forward_gaussian_yolo_layer``, ``region_layer.c: forward_region_layer``); decoding boxes from it
lives in :mod:`darknetpy.postprocess`.

Where darknet silently falls back (an unknown ``iou_loss``, ``nms_kind``, ``iou_thresh_kind`` or
``yolo_point`` string) darknetpy raises :class:`~darknetpy.errors.CfgError` listing the choices.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar, TypeVar

import numpy as np
import torch

from ..boxes import IOU_KINDS, IOU_LOSSES, IouLoss
from ..cfg import CfgWarning, Options, Section
from ..errors import CfgError
from .base import BuildContext, DarknetLayer, Shape

__all__ = [
    "FLT_MAX",
    "GaussianYoloLayer",
    "GaussianYoloOptions",
    "IouLoss",
    "NmsKind",
    "RegionLayer",
    "RegionOptions",
    "SoftmaxTree",
    "YoloLayer",
    "YoloOptions",
    "YoloPoint",
    "build_gaussian_yolo",
    "build_region",
    "build_yolo",
    "classes_multipliers",
    "read_class_map",
    "read_tree",
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
class YoloOptions:
    """``[yolo]``, every key ``parser.c: parse_yolo`` reads (tracking keys are declared ignored).

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
    focal_loss: bool = False
    scale_x_y: float = 1.0
    new_coords: bool = False
    objectness_smooth: bool = False
    beta_nms: float = 0.6
    nms_kind: NmsKind = NmsKind.DEFAULT
    map: Path | None = None  # class-id remapping file (training only)
    show_details: int = 1

    @property
    def num(self) -> int:
        """Anchor slots of this head (darknet's ``l.n``)."""
        return len(self.mask)

    @property
    def entries(self) -> int:
        """Channels per anchor slot: x, y, w, h, objectness, classes."""
        return 5 + self.classes

    @property
    def masked_anchors(self) -> tuple[tuple[float, float], ...]:
        """The ``(w, h)`` of each anchor slot of this head, in slot order."""
        return tuple(self.anchors[k] for k in self.mask)

    @property
    def classes_multipliers(self) -> tuple[float, ...] | None:
        """Multipliers from ``counters_per_class`` (``parser.c: get_classes_multipliers``)."""
        return classes_multipliers(self.counters_per_class, self.max_delta)


@dataclass(frozen=True)
class GaussianYoloOptions:
    """``[Gaussian_yolo]`` (``parser.c: parse_gaussian_yolo``): [yolo]'s keys minus ``new_coords``,
    ``focal_loss``, ``show_details`` and tracking, plus ``uc_normalizer`` and ``yolo_point``."""

    classes: int = 20
    total: int = 1
    mask: tuple[int, ...] = (0,)
    anchors: tuple[tuple[float, float], ...] = ((0.5, 0.5),)
    max_boxes: int = 200
    jitter: float = 0.2
    resize: float = 1.0
    random: float = 0.0
    ignore_thresh: float = 0.5
    truth_thresh: float = 1.0
    iou_thresh: float = 1.0
    iou_thresh_kind: IouLoss = IouLoss.IOU
    iou_loss: IouLoss = IouLoss.MSE
    iou_normalizer: float = 0.75
    obj_normalizer: float = 1.0
    cls_normalizer: float = 1.0
    delta_normalizer: float = 1.0
    uc_normalizer: float = 1.0
    max_delta: float = FLT_MAX
    counters_per_class: tuple[int, ...] | None = None
    label_smooth_eps: float = 0.0
    scale_x_y: float = 1.0
    objectness_smooth: bool = False
    beta_nms: float = 0.6
    nms_kind: NmsKind = NmsKind.DEFAULT
    yolo_point: YoloPoint = YoloPoint.CENTER
    map: Path | None = None

    @property
    def num(self) -> int:
        return len(self.mask)

    @property
    def entries(self) -> int:
        """Channels per anchor slot: x, σx, y, σy, w, σw, h, σh, objectness, classes."""
        return 9 + self.classes

    @property
    def masked_anchors(self) -> tuple[tuple[float, float], ...]:
        return tuple(self.anchors[k] for k in self.mask)

    @property
    def classes_multipliers(self) -> tuple[float, ...] | None:
        return classes_multipliers(self.counters_per_class, self.max_delta)


@dataclass(frozen=True)
class RegionOptions:
    """``[region]`` (YOLOv2, ``parser.c: parse_region``). Anchors are in grid cells."""

    classes: int = 20
    coords: int = 4
    num: int = 1
    anchors: tuple[tuple[float, float], ...] = ((0.5, 0.5),)
    max_boxes: int = 200
    log: int = 0
    sqrt: int = 0
    softmax: bool = False
    focal_loss: bool = False
    jitter: float = 0.2
    resize: float = 1.0
    rescore: bool = False
    thresh: float = 0.5
    classfix: int = 0  # -1: objectness below .5 is zeroed when decoding
    absolute: int = 0
    random: float = 0.0
    coord_scale: float = 1.0
    object_scale: float = 1.0
    noobject_scale: float = 1.0
    mask_scale: float = 1.0
    class_scale: float = 1.0
    bias_match: bool = False
    tree: Path | None = None  # softmax tree file (YOLO9000), read when the layer first runs
    map: Path | None = None  # class-id remapping file (training only)

    @property
    def entries(self) -> int:
        """Values per anchor: x, y, w, h, objectness, classes."""
        return self.coords + 1 + self.classes


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
def _anchor_pairs(
    opts: Options, count: int, *, overflow_is_error: bool
) -> tuple[tuple[float, float], ...]:
    """``count`` anchors from ``anchors=``; a missing value is 0.5, darknet's initial bias."""
    values = list(opts.get_floats("anchors", ()))
    where = opts.where(next((e for e in opts.section.entries if e.key == "anchors"), None))
    if len(values) > 2 * count:
        if overflow_is_error:
            raise opts.error(
                f"anchors= has {len(values)} values but num={count} allows {2 * count}; darknet "
                "writes past its anchor buffer here: set num= to the number of (w, h) pairs",
                "anchors",
            )
        warnings.warn(
            f"{where}: anchors= has {len(values)} values but num={count}; darknet reads only "
            "the first "
            f"{2 * count}: set num= to the number of (w, h) pairs",
            CfgWarning,
            stacklevel=4,
        )
        values = values[: 2 * count]
    elif len(values) < 2 * count:
        warnings.warn(
            f"{where}: anchors= has {len(values)} values but num={count} needs {2 * count}; "
            "darknet "
            "uses 0.5 for the missing ones",
            CfgWarning,
            stacklevel=4,
        )
        values += [0.5] * (2 * count - len(values))
    f32 = [_f32(v) for v in values]  # darknet keeps biases as float
    return tuple((f32[2 * i], f32[2 * i + 1]) for i in range(count))


_MAX_COUNT = 1 << 20  # classes / anchors beyond this cannot fit any real network


def _check_positive(opts: Options, key: str, value: int) -> None:
    if value < 1:
        raise opts.error(f"{key}={value} must be at least 1", key)
    if value > _MAX_COUNT:
        raise opts.error(f"{key}={value} is implausibly large (at most {_MAX_COUNT})", key)


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


def _path(opts: Options, key: str) -> Path | None:
    return Path(opts.get_str(key)) if opts.has(key) else None


def _f32(value: float) -> float:
    """A cfg number as darknet stores it (a C ``float``; beyond its range: +-inf)."""
    with np.errstate(over="ignore"):
        return float(np.float32(value))


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


def _parse_yolo_common(opts: Options, name: str) -> dict[str, object]:
    """Keys [yolo] and [Gaussian_yolo] share, as keyword arguments of their options record."""
    classes = opts.get_int("classes", 20)
    _check_positive(opts, "classes", classes)
    total = opts.get_int("num", 1)
    _check_positive(opts, "num", total)
    mask = opts.get_ints("mask", tuple(range(total)))
    bad = [k for k in mask if not 0 <= k < total]
    if bad:
        raise opts.error(
            f"mask={','.join(map(str, mask))} uses anchor {bad[0]}, but num={total} gives anchors "
            f"0..{total - 1} (darknet would read past its anchor buffer); mask indices count the "
            f"(w, h) pairs of anchors= from 0",
            "mask",
        )
    max_delta = _f32(opts.get_float("max_delta", FLT_MAX))
    kinds = GAUSSIAN_NMS_KINDS if name == "Gaussian_yolo" else NMS_KINDS
    return dict(
        classes=classes,
        total=total,
        mask=mask,
        anchors=_anchor_pairs(opts, total, overflow_is_error=name == "Gaussian_yolo"),
        max_boxes=opts.get_int("max", 200),
        jitter=_f32(opts.get_float("jitter", 0.2)),
        resize=_f32(opts.get_float("resize", 1.0)),
        random=_f32(opts.get_float("random", 0.0)),
        ignore_thresh=_f32(opts.get_float("ignore_thresh", 0.5)),
        truth_thresh=_f32(opts.get_float("truth_thresh", 1.0)),
        iou_thresh=_f32(opts.get_float("iou_thresh", 1.0)),
        iou_thresh_kind=_choice(opts, "iou_thresh_kind", IOU_KINDS, "iou"),
        iou_loss=_choice(opts, "iou_loss", IOU_LOSSES, "mse"),
        iou_normalizer=_f32(opts.get_float("iou_normalizer", 0.75)),
        obj_normalizer=_f32(opts.get_float("obj_normalizer", 1.0)),
        cls_normalizer=_f32(opts.get_float("cls_normalizer", 1.0)),
        delta_normalizer=_f32(opts.get_float("delta_normalizer", 1.0)),
        max_delta=max_delta,
        counters_per_class=_counters(opts, classes),
        label_smooth_eps=_f32(opts.get_float("label_smooth_eps", 0.0)),
        scale_x_y=_f32(opts.get_float("scale_x_y", 1.0)),
        objectness_smooth=opts.get_bool("objectness_smooth", False),
        beta_nms=_f32(opts.get_float("beta_nms", 0.6)),
        nms_kind=_choice(opts, "nms_kind", kinds, "default"),
        map=_path(opts, "map"),
    )


def parse_yolo_options(opts: Options) -> YoloOptions:
    """``[yolo]`` keys into :class:`YoloOptions` (``parser.c: parse_yolo``)."""
    common = _parse_yolo_common(opts, "yolo")
    opts.ignore(*_TRACKING_KEYS)
    return YoloOptions(
        **common,  # type: ignore[arg-type]
        focal_loss=opts.get_bool("focal_loss", False),
        new_coords=opts.get_bool("new_coords", False),
        show_details=opts.get_int("show_details", 1),
    )


def parse_gaussian_yolo_options(opts: Options) -> GaussianYoloOptions:
    """``[Gaussian_yolo]`` keys into :class:`GaussianYoloOptions` (``parse_gaussian_yolo``)."""
    common = _parse_yolo_common(opts, "Gaussian_yolo")
    return GaussianYoloOptions(
        **common,  # type: ignore[arg-type]
        uc_normalizer=_f32(opts.get_float("uc_normalizer", 1.0)),
        yolo_point=_choice(opts, "yolo_point", YOLO_POINTS, "center"),
    )


def parse_region_options(opts: Options) -> RegionOptions:
    """``[region]`` keys into :class:`RegionOptions` (``parser.c: parse_region``)."""
    coords = opts.get_int("coords", 4)
    if coords != 4:
        raise opts.error(
            f"coords={coords}: darknet's region decoding assumes 4 box coordinates "
            "(get_region_boxes strides by classes+5); use coords=4",
            "coords",
        )
    classes = opts.get_int("classes", 20)
    _check_positive(opts, "classes", classes)
    num = opts.get_int("num", 1)
    _check_positive(opts, "num", num)
    return RegionOptions(
        classes=classes,
        coords=coords,
        num=num,
        anchors=_anchor_pairs(opts, num, overflow_is_error=False),
        max_boxes=opts.get_int("max", 200),
        log=opts.get_int("log", 0),
        sqrt=opts.get_int("sqrt", 0),
        softmax=opts.get_bool("softmax", False),
        focal_loss=opts.get_bool("focal_loss", False),
        jitter=_f32(opts.get_float("jitter", 0.2)),
        resize=_f32(opts.get_float("resize", 1.0)),
        rescore=opts.get_bool("rescore", False),
        thresh=_f32(opts.get_float("thresh", 0.5)),
        classfix=opts.get_int("classfix", 0),
        absolute=opts.get_int("absolute", 0),
        random=_f32(opts.get_float("random", 0.0)),
        coord_scale=_f32(opts.get_float("coord_scale", 1.0)),
        object_scale=_f32(opts.get_float("object_scale", 1.0)),
        noobject_scale=_f32(opts.get_float("noobject_scale", 1.0)),
        mask_scale=_f32(opts.get_float("mask_scale", 1.0)),
        class_scale=_f32(opts.get_float("class_scale", 1.0)),
        bias_match=opts.get_bool("bias_match", False),
        tree=_path(opts, "tree"),
        map=_path(opts, "map"),
    )


# ---- files named by the options ----
@dataclass(frozen=True)
class SoftmaxTree:
    """A YOLO9000 class hierarchy (``tree.c: read_tree``).

    ``parent[i]`` is -1 for roots. ``group[i]`` numbers the run of consecutive lines sharing one
    parent that node ``i`` belongs to; darknet applies a softmax inside each such group.
    """

    names: tuple[str, ...]
    parent: tuple[int, ...]
    group: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.parent)

    @cached_property
    def depth(self) -> tuple[int, ...]:
        """Distance of each node from its root (roots 0)."""
        out: list[int] = []
        for p in self.parent:
            out.append(0 if p < 0 else out[p] + 1)
        return tuple(out)


def read_tree(path: Path, where: str = "") -> SoftmaxTree:
    """Read a darknet tree file: one ``name parent_index`` per line (``tree.c: read_tree``).

    Raises:
        CfgError: unreadable file, or a parent index that does not come before its child
            (darknetpy's vectorised hierarchy needs parents first, as darknet's own trees have).
    """
    prefix = f"{where}: " if where else ""
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise CfgError(
            f"{prefix}tree={path}: cannot read the softmax tree file ({exc.strerror or exc}); "
            "darknet opens it relative to the working directory"
        ) from None
    names: list[str] = []
    parents: list[int] = []
    groups: list[int] = []
    last_parent, group = -1, 0
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        names.append(fields[0] if fields else "")
        try:
            parent = int(fields[1]) if len(fields) > 1 else -1
        except ValueError:
            parent = -1
        if parent >= len(parents) or parent < -1:
            raise CfgError(
                f"{prefix}{path}:{number}: parent {parent} of {names[-1]!r} must be -1 or the "
                "index of an "
                "earlier line"
            )
        if parent != last_parent:
            group += 1
            last_parent = parent
        parents.append(parent)
        groups.append(group)
    return SoftmaxTree(tuple(names), tuple(parents), tuple(groups))


def read_class_map(path: Path) -> tuple[int, ...]:
    """A ``map=`` file: one class id per line, read with ``atoi`` (``utils.c: read_map``).

    Raises:
        CfgError: the file cannot be read.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise CfgError(
            f"map={path}: cannot read the class map file ({exc.strerror or exc})"
        ) from None
    out = []
    for line in lines:
        digits = line.strip()
        sign = -1 if digits.startswith("-") else 1
        digits = digits.lstrip("+-")
        count = len(digits) - len(digits.lstrip("0123456789"))
        out.append(sign * int(digits[:count]) if count else 0)
    return tuple(out)


# ---- layers ----
def _scale_xy(xy: torch.Tensor, scale: float) -> torch.Tensor:
    """``x * s - 0.5 * (s - 1)`` in float32 (``forward_yolo_layer``'s ``scal_add_cpu``)."""
    if scale == 1.0:
        return xy  # darknet's x * 1 + (-0.0) is x exactly
    beta = float(np.float32(-0.5 * float(np.float32(np.float32(scale) - np.float32(1)))))
    return xy * scale + beta


class YoloLayer(DarknetLayer):
    """``[yolo]``: darknet's ``l.output`` (``yolo_layer.c: forward_yolo_layer``).

    new_coords=0 applies the logistic to x, y, objectness and classes, *not* to w and h;
    new_coords=1 applies none (the conv before it is logistic). Then x and y become
    ``s * x - (s - 1) / 2`` with ``s = scale_x_y``. Channel ``a * (5 + classes) + e`` of anchor slot
    ``a`` holds entry ``e`` (x, y, w, h, objectness, classes).
    """

    darknet_name: ClassVar[str] = "yolo"

    def __init__(
        self,
        section: Section,
        index: int,
        sources: Sequence[int],
        in_shape: Shape,
        out_shape: Shape,
        options: YoloOptions,
    ) -> None:
        super().__init__(section, index, sources, in_shape, out_shape)
        self.options = options

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.options
        n, _, h, w = x.shape
        v = x.view(n, o.num, o.entries, h, w)
        if o.new_coords:
            xy, rest = v[:, :, :2], v[:, :, 2:]
        else:
            xy = torch.sigmoid(v[:, :, :2])
            rest = torch.cat((v[:, :, 2:4], torch.sigmoid(v[:, :, 4:])), 2)
        return torch.cat((_scale_xy(xy, o.scale_x_y), rest), 2).view(x.shape)

    def extra_repr(self) -> str:
        o = self.options
        return f"{super().extra_repr()}, classes={o.classes}, mask={o.mask}"


class GaussianYoloLayer(DarknetLayer):
    """``[Gaussian_yolo]``: darknet's ``l.output`` (``forward_gaussian_yolo_layer``).

    Per anchor slot the ``9 + classes`` channels are x, σx, y, σy, w, σw, h, σh, objectness,
    classes. The logistic applies to all but w and h; x and y are then scaled by ``scale_x_y``.
    """

    darknet_name: ClassVar[str] = "Gaussian_yolo"

    def __init__(
        self,
        section: Section,
        index: int,
        sources: Sequence[int],
        in_shape: Shape,
        out_shape: Shape,
        options: GaussianYoloOptions,
    ) -> None:
        super().__init__(section, index, sources, in_shape, out_shape)
        self.options = options

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.options
        n, _, h, w = x.shape
        v = x.view(n, o.num, o.entries, h, w)
        s = torch.sigmoid(v)
        parts = (
            _scale_xy(s[:, :, 0:1], o.scale_x_y),
            s[:, :, 1:2],  # x, σx
            _scale_xy(s[:, :, 2:3], o.scale_x_y),
            s[:, :, 3:4],  # y, σy
            v[:, :, 4:5],
            s[:, :, 5:6],
            v[:, :, 6:7],
            s[:, :, 7:],  # w, σw, h, σh, obj, classes
        )
        return torch.cat(parts, 2).view(x.shape)

    def extra_repr(self) -> str:
        o = self.options
        return f"{super().extra_repr()}, classes={o.classes}, mask={o.mask}"


class RegionLayer(DarknetLayer):
    """``[region]`` (YOLOv2): darknet's ``l.output`` (``region_layer.c: forward_region_layer``).

    Darknet first transposes the input to cell-major order (``blas.c: flatten``): the buffer holds,
    for each cell ``i = row * W + col``, for each anchor ``n``, the ``5 + classes`` values
    x, y, w, h, objectness, classes. Objectness gets the logistic, classes a softmax (or the
    softmax of each group of the ``tree=`` hierarchy); x, y, w, h stay raw (the logistic on x, y is
    applied when decoding). The returned tensor has the layer's (N, C, H, W) shape with exactly
    that memory order, so it equals darknet's buffer element for element.
    """

    darknet_name: ClassVar[str] = "region"

    def __init__(
        self,
        section: Section,
        index: int,
        sources: Sequence[int],
        in_shape: Shape,
        out_shape: Shape,
        options: RegionOptions,
    ) -> None:
        super().__init__(section, index, sources, in_shape, out_shape)
        self.options = options
        self._tree: SoftmaxTree | None = None

    @property
    def tree(self) -> SoftmaxTree | None:
        """The ``tree=`` hierarchy, read on first use (darknet reads it while parsing)."""
        if self.options.tree is None:
            return None
        if self._tree is None:
            self._tree = read_tree(self.options.tree, self.where())
            if len(self._tree) != self.options.classes:
                raise CfgError(
                    f"{self.where()}: tree={self.options.tree} has {len(self._tree)} nodes but "
                    f"classes={self.options.classes}; they must be equal"
                )
        return self._tree

    def cells(self, output: torch.Tensor) -> torch.Tensor:
        """View ``output`` (this layer's) as (N, H*W, num, 5 + classes), darknet's indexing."""
        o = self.options
        return output.reshape(output.shape[0], -1, o.num, o.entries)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.options
        n, c, h, w = x.shape
        v = x.reshape(n, c, h * w).transpose(1, 2).reshape(n, h * w, o.num, o.entries)
        classes = v[..., 5:]
        tree = self.tree
        if tree is not None:
            classes = _group_softmax(classes, tree)
        elif o.softmax:
            classes = torch.softmax(classes, -1)
        out = torch.cat((v[..., :4], torch.sigmoid(v[..., 4:5]), classes), -1)
        return out.reshape(n, c, h, w)

    def extra_repr(self) -> str:
        o = self.options
        return f"{super().extra_repr()}, classes={o.classes}, num={o.num}"


def _group_softmax(x: torch.Tensor, tree: SoftmaxTree) -> torch.Tensor:
    """Softmax in each group of ``tree`` on the last axis (``softmax_layer.c: softmax_tree``)."""
    group = torch.tensor(tree.group, device=x.device)
    flat = x.reshape(-1, x.shape[-1])
    index = group.expand_as(flat)
    ngroups = int(group.max()) + 1
    largest = flat.new_full((flat.shape[0], ngroups), -torch.inf)
    largest = largest.scatter_reduce(1, index, flat, "amax", include_self=True)
    e = torch.exp(flat - largest.gather(1, index))
    total = flat.new_zeros((flat.shape[0], ngroups)).scatter_add(1, index, e)
    return (e / total.gather(1, index)).reshape(x.shape)


# ---- builders ----
def _check_channels(opts: Options, ctx: BuildContext, expected: int, why: str, keys: str) -> Shape:
    prev = ctx.prev_shape
    if ctx.index == 0:
        raise opts.error(
            f"[{opts.section.name}] cannot be the first layer: it decodes the "
            f"output of a [convolutional] with filters={expected}"
        )
    if prev.channels != expected:
        above = ctx.layers[ctx.index - 1]
        raise opts.error(
            f"{why} needs filters={expected} in the layer just above ({above.where()}), "
            "which gives "
            f"{prev.channels} channels; darknet: \"filters= in the [convolutional]-layer doesn't "
            f'correspond to {keys} in [{opts.section.name}]-layer"'
        )
    return prev


def build_yolo(opts: Options, ctx: BuildContext) -> YoloLayer:
    """``[yolo]`` (``parser.c: parse_yolo``, ``yolo_layer.c: make_yolo_layer``)."""
    options = parse_yolo_options(opts)
    expected = options.num * options.entries
    prev = _check_channels(
        opts,
        ctx,
        expected,
        f"classes={options.classes} with {options.num} masks ({options.num}*({options.classes}+5))",
        "classes= or mask=",
    )
    return YoloLayer(opts.section, ctx.index, (ctx.index - 1,), prev, prev, options)


def build_gaussian_yolo(opts: Options, ctx: BuildContext) -> GaussianYoloLayer:
    """``[Gaussian_yolo]`` (``parser.c: parse_gaussian_yolo``)."""
    options = parse_gaussian_yolo_options(opts)
    expected = options.num * options.entries
    prev = _check_channels(
        opts,
        ctx,
        expected,
        f"classes={options.classes} with {options.num} masks ({options.num}*({options.classes}+9))",
        "classes= or mask=",
    )
    return GaussianYoloLayer(opts.section, ctx.index, (ctx.index - 1,), prev, prev, options)


def build_region(opts: Options, ctx: BuildContext) -> RegionLayer:
    """``[region]`` (``parser.c: parse_region``, ``region_layer.c: make_region_layer``)."""
    options = parse_region_options(opts)
    expected = options.num * options.entries
    prev = _check_channels(
        opts,
        ctx,
        expected,
        f"classes={options.classes} with num={options.num} ({options.num}*(4+1+{options.classes}))",
        "classes= or num=",
    )
    return RegionLayer(opts.section, ctx.index, (ctx.index - 1,), prev, prev, options)
