"""Darknet's detection losses as surrogates whose gradient is exactly Darknet's delta.

Darknet does not differentiate a loss: each head computes ``l.delta`` (target minus output, on
the *activated* outputs) and back-propagates it unchanged to the previous layer
(``backward_yolo_layer``: ``prev.delta += l.delta``). darknetpy computes the same delta without
autograd and returns ``total = -sum(delta * z)`` over every head input ``z``, so
``d total / d z == -delta`` elementwise. That holds for new_coords=1 too: there ``z`` is already
the logistic output of the conv, whose backward applies ``y(1-y)`` exactly as Darknet's does.

Mirrors ``yolo_layer.c`` (``forward_yolo_layer``, ``process_batch``, ``delta_yolo_box``,
``delta_yolo_class``, ``averages_yolo_deltas``, ``compare_yolo_class``) and ``box.c:
dx_box_iou``; the IoU measures come from :mod:`darknetpy.boxes`; ``[region]`` and
``[Gaussian_yolo]`` are in :mod:`darknetpy.loss_region`.

Vectorised over batch, anchors and cells. Truths that land on the same (image, anchor slot, cell)
must be applied in Darknet's order (the objectness and class rules depend on what an earlier truth
wrote): the (truth, anchor) assignments are split into *rounds* of distinct positions, applied in
order.

Deliberate differences, where Darknet would read or write outside its buffers: a truth's cell
index is clamped to the grid, and a [yolo]/[region] truth with a negative class is skipped like
one with class >= classes. Not reproduced: the SAT ``adversarial`` pass, the
``badlabels_rejection_percentage`` / ``num_sigmas_reject_badlabels`` / ``equidistant_point``
filters, and the GPU-only ``delta_normalizer`` and ``loss_scale`` factors of
``backward_yolo_layer_gpu`` (the CPU build, which produced the golden data, applies neither).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from .boxes import IouLoss, box_giou, box_iou, box_iou_kind
from .errors import UsageError

FLT_MAX = float(np.finfo(np.float32).max)  # C's FLT_MAX: max_delta's "no clipping"
_FOCAL_ALPHA = 0.5  # delta_yolo_class / delta_region_class: alpha hard-coded to 0.5
_CLASS_MATCH_THRESH = 0.25  # compare_yolo_class(..., 0.25f): a class prob above it allows ignoring


# --------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeadStats:
    """One head's figures as Darknet prints them after a training forward pass.

    ``class_loss``, ``iou_loss``, ``uc_loss`` and ``total_loss`` are already divided by the
    mini-batch, as printed; ``cost`` is Darknet's ``*l.cost`` (not divided). ``count`` is the
    number of (truth, anchor) assignments (1 when there were none, as Darknet sets it).
    """

    layer: int
    kind: str  # "yolo", "Gaussian_yolo" or "region"
    cost: float
    count: int
    avg_iou: float
    class_loss: float = 0.0
    iou_loss: float = 0.0
    uc_loss: float = 0.0
    total_loss: float = 0.0
    avg_obj: float = 0.0
    avg_anyobj: float = 0.0
    avg_cat: float = 0.0
    recall50: float = 0.0
    recall75: float = 0.0
    line: str = ""  # the line Darknet writes to stderr for this head


@dataclass(frozen=True)
class HeadLoss:
    """The result for one head: Darknet's delta (same shape as the head input) and statistics."""

    delta: torch.Tensor
    cost: torch.Tensor  # 0-dim float64
    stats: HeadStats


@dataclass(frozen=True)
class LossTerms:
    """Darknet's training losses for every detection head.

    Attributes:
        total: scalar surrogate; its gradient w.r.t. each head input is ``-deltas[i]``.
        costs: ``{layer index: Darknet's cost}`` (``*l.cost``, what ``get_network_cost`` averages).
        stats: ``{layer index: HeadStats}``.
        deltas: ``{layer index: Darknet's delta}`` (detached, the head input's shape).
    """

    total: torch.Tensor
    costs: Mapping[int, float]
    stats: Mapping[int, HeadStats]
    deltas: Mapping[int, torch.Tensor] = field(default_factory=dict)

    @property
    def cost(self) -> float:
        """Darknet's ``get_network_cost``: the mean of the head costs."""
        return sum(self.costs.values()) / max(len(self.costs), 1)


# --------------------------------------------------------------------------------------------
# head options, normalised from the layer's options record
# --------------------------------------------------------------------------------------------
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


def _kind(value: Any) -> str:
    """An :class:`~darknetpy.boxes.IouLoss` as its cfg string (``mse/iou/giou/diou/ciou``)."""
    return str(getattr(value, "value", value))


def _class_map(path: Path | None) -> tuple[int, ...] | None:
    if path is None:
        return None
    from .layers.detection import read_class_map

    return read_class_map(path)


@functools.lru_cache(maxsize=256)
def _spec_of(options: Any, make: Callable[[Any], Any]) -> Any:
    return make(options)


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
    (:mod:`darknetpy.layers.detection`); keys one of them lacks take Darknet's default."""
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


# --------------------------------------------------------------------------------------------
# box.c: the analytic IoU-loss gradient (IoU, GIoU, DIoU, CIoU themselves are in boxes.py)
# --------------------------------------------------------------------------------------------
def dx_box_iou(pred: torch.Tensor, truth: torch.Tensor, kind: str) -> torch.Tensor:
    """``box.c: dx_box_iou``: Darknet's analytic (dx, dy, dw, dh) of the IoU-family loss.

    ``pred`` and ``truth`` are (..., 4) x, y, w, h in network-input units. The intersection is not
    clamped; GIoU/DIoU/CIoU replace the IoU term by their extra term alone when the boxes do not
    overlap; dw and dh carry no ½. ``kind`` is ``giou``, ``diou``, ``ciou`` or anything else (IoU).
    """
    px, py, pw, ph = pred.unbind(-1)
    tx, ty, tw, th = truth.unbind(-1)
    top, bot, left, right = py - ph / 2, py + ph / 2, px - pw / 2, px + pw / 2
    p_t, p_b = torch.fmin(top, bot), torch.fmax(top, bot)
    p_l, p_r = torch.fmin(left, right), torch.fmax(left, right)
    t_t, t_b, t_l, t_r = ty - th / 2, ty + th / 2, tx - tw / 2, tx + tw / 2
    zero = torch.zeros_like(px)

    area = (p_b - p_t) * (p_r - p_l)
    i_h = torch.fmin(p_b, t_b) - torch.fmax(p_t, t_t)
    i_w = torch.fmin(p_r, t_r) - torch.fmax(p_l, t_l)
    inter = i_w * i_h
    union = area + (t_b - t_t) * (t_r - t_l) - inter
    g_cw = torch.fmax(p_r, t_r) - torch.fmin(p_l, t_l)
    g_ch = torch.fmax(p_b, t_b) - torch.fmin(p_t, t_t)
    g_c = g_cw * g_ch

    d_area = {"t": -(p_r - p_l), "b": p_r - p_l, "l": -(p_b - p_t), "r": p_b - p_t}
    d_inter = {
        "t": torch.where(p_t > t_t, -i_w, zero),
        "b": torch.where(p_b < t_b, i_w, zero),
        "l": torch.where(p_l > t_l, -i_h, zero),
        "r": torch.where(p_r < t_r, i_h, zero),
    }
    d_union = {k: d_area[k] - d_inter[k] for k in d_area}
    d_c = {
        "t": torch.where(p_t < t_t, -g_cw, zero),
        "b": torch.where(p_b > t_b, g_cw, zero),
        "l": torch.where(p_l < t_l, -g_ch, zero),
        "r": torch.where(p_r > t_r, g_ch, zero),
    }
    p = {
        k: torch.where(union > 0, (union * d_inter[k] - inter * d_union[k]) / (union * union), zero)
        for k in d_area
    }
    p["t"] = torch.where(top < bot, p["t"], p["b"])  # "correct corner selection" for flipped boxes
    p["l"] = torch.where(left < right, p["l"], p["r"])
    apart = (i_w <= 0) | (i_h <= 0)
    if kind == "giou":
        for k, value in p.items():
            term = (g_c * d_union[k] - union * d_c[k]) / (g_c * g_c)
            p[k] = torch.where(apart, term, torch.where(g_c > 0, value + term, value))
    grad = torch.stack((p["l"] + p["r"], p["t"] + p["b"], p["r"] - p["l"], p["b"] - p["t"]), -1)
    if kind in ("diou", "ciou"):
        terms = _diou_terms(pred, truth, inter / union, kind == "ciou")
        c2_positive = terms[..., 4:] > 0
        grad = torch.where(c2_positive, grad + terms[..., :4], grad)
        grad = torch.where(apart.unsqueeze(-1), terms[..., :4], grad)
    return grad


def _diou_terms(
    pred: torch.Tensor, truth: torch.Tensor, iou: torch.Tensor, ciou: bool
) -> torch.Tensor:
    """The DIoU (and CIoU aspect-ratio) part of ``dx_box_iou``: (..., 5) dx, dy, dw, dh and the
    squared enclosing diagonal c² (the terms apply only where it is > 0)."""
    px, py, pw, ph = pred.unbind(-1)
    tx, ty, tw, th = truth.unbind(-1)
    top, bot, left, right = py - ph / 2, py + ph / 2, px - pw / 2, px + pw / 2
    t_t, t_b, t_l, t_r = ty - th / 2, ty + th / 2, tx - tw / 2, tx + tw / 2
    p_t, p_b = torch.fmin(top, bot), torch.fmax(top, bot)
    p_l, p_r = torch.fmin(left, right), torch.fmax(left, right)
    c_w = torch.fmax(right, t_r) - torch.fmin(left, t_l)
    c_h = torch.fmax(bot, t_b) - torch.fmin(top, t_t)
    c2 = c_w * c_w + c_h * c_h
    c4 = c2 * c2
    dist2 = (px - tx) ** 2 + (py - ty) ** 2
    beyond_r, beyond_l = (p_r > t_r).to(px), (p_l < t_l).to(px)
    beyond_b, beyond_t = (p_b > t_b).to(px), (p_t < t_t).to(px)
    dx = (2 * (tx - px) * c2 - 2 * c_w * (beyond_r - beyond_l) * dist2) / c4
    dy = (2 * (ty - py) * c2 - 2 * c_h * (beyond_b - beyond_t) * dist2) / c4
    dw = 2 * c_w * (0.5 * beyond_r + 0.5 * beyond_l) * dist2 / c4
    dh = 2 * c_h * (0.5 * beyond_b + 0.5 * beyond_t) * dist2 / c4
    if ciou:
        diff = torch.atan(tw / th) - torch.atan(pw / ph)
        v = 4 / (math.pi * math.pi) * diff * diff
        alpha = v / (1 - iou + v + 0.000001)
        dw = dw + alpha * (8 / (math.pi * math.pi) * diff * ph)
        dh = dh + alpha * (-8 / (math.pi * math.pi) * diff * pw)
    return torch.stack((dx, dy, dw, dh, c2), dim=-1)


def fix_nan_inf(x: torch.Tensor) -> torch.Tensor:
    """``yolo_layer.c: fix_nan_inf``: NaN and ±inf become 0."""
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


# --------------------------------------------------------------------------------------------
# truth rows
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Truths:
    """Truth rows of a mini-batch on the CPU: boxes (N, T, 4) float32, class ids (N, T) int64."""

    boxes: torch.Tensor
    classes: torch.Tensor

    @classmethod
    def from_tensor(
        cls, truth: torch.Tensor | np.ndarray, max_boxes: int, *, batch: int, index: int = -1
    ) -> Truths:
        """Rows ``(x, y, w, h, class, ...)``; only the first ``max_boxes`` (``max=``) count.

        Raises:
            UsageError: not a (batch, boxes, 5 or more) array for ``batch`` images.
        """
        t = truth.detach().cpu() if isinstance(truth, torch.Tensor) else torch.as_tensor(truth)
        if t.dim() != 3 or t.shape[-1] < 5:
            raise UsageError(
                "truth must be (batch, boxes, 5+) rows x, y, w, h, class; got shape "
                f"{tuple(t.shape)}"
            )
        if t.shape[0] != batch:
            raise UsageError(
                f"layer {index}: truth has {t.shape[0]} images, the head input {batch}"
            )
        t = t[:, :max_boxes].to(torch.float32)
        return cls(t[..., :4].contiguous(), t[..., 4].to(torch.int64))  # C's (int) truncates

    def valid(
        self, classes: int, *, class_check_first: bool, any_class: bool = False
    ) -> torch.Tensor:
        """(N, T) rows Darknet uses: before the first x == 0 row, with a class in [0, classes).

        ``class_check_first``: the loop skips a row with class >= classes *before* testing x == 0
        (``forward_region_layer``, the Gaussian step A), so such a row does not end the list.
        ``any_class``: keep rows of any class (the Gaussian step B has no class check).
        """
        stop = self.boxes[..., 0] == 0
        if class_check_first:
            stop &= self.classes < classes
        ended = torch.cumsum(stop.to(torch.int64), dim=1) > 0
        if any_class:
            return ~ended
        return ~ended & (self.classes >= 0) & (self.classes < classes)


def _mapped(classes: torch.Tensor, class_map: tuple[int, ...] | None) -> torch.Tensor:
    """Class ids through ``map=`` (``l.map[class_id]``); ids outside the table are kept."""
    if class_map is None:
        return classes
    table = torch.tensor(class_map, dtype=torch.int64, device=classes.device)
    inside = (classes >= 0) & (classes < len(class_map))
    return torch.where(inside, table[classes.clamp(0, len(class_map) - 1)], classes)


def _rounds(key: torch.Tensor) -> torch.Tensor:
    """For each assignment (in Darknet's order), how many earlier ones share its position key."""
    if key.numel() == 0:
        return key.clone()
    order = torch.sort(key, stable=True).indices
    sorted_key = key[order]
    start = torch.ones_like(sorted_key, dtype=torch.bool)
    start[1:] = sorted_key[1:] != sorted_key[:-1]
    idx = torch.arange(key.numel())
    group_start = torch.cummax(torch.where(start, idx, torch.zeros_like(idx)), dim=0).values
    rank = torch.empty_like(key)
    rank[order] = idx - group_start
    return rank


def _cells(boxes: torch.Tensor, w: int, h: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``i = (truth.x * l.w)``, ``j = (truth.y * l.h)`` truncated, clamped to the grid."""
    i = (boxes[..., 0] * w).to(torch.int64).clamp(0, w - 1)
    j = (boxes[..., 1] * h).to(torch.int64).clamp(0, h - 1)
    return i, j


def _mult(spec: Any, cls: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Class multipliers (``counters_per_class``) of ``cls``; 1 without them or out of range."""
    ones = torch.ones(cls.shape, dtype=dtype, device=cls.device)
    if spec.class_multipliers is None:
        return ones
    table = torch.tensor(spec.class_multipliers, dtype=dtype, device=cls.device)
    inside = (cls >= 0) & (cls < len(table))
    return torch.where(inside, table[cls.clamp(0, len(table) - 1)], ones)


def best_anchors(wh: torch.Tensor, anchors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best anchor by shape IoU, both boxes centred at 0; ties keep the lowest index
    (``process_batch``).

    Args:
        wh: (..., 2) truth sizes, anchors: (A, 2), both relative to the network input.
    Returns:
        (best index, IoU matrix (..., A)); the index is 0 when every IoU is 0.
    """
    zeros = torch.zeros_like(wh)
    truth = torch.cat((zeros, wh), dim=-1).unsqueeze(-2)
    boxes = torch.cat((torch.zeros_like(anchors), anchors), dim=-1)
    iou = box_iou(boxes, truth)
    best = torch.argmax(iou, dim=-1)  # first maximum
    best = torch.where(iou.amax(dim=-1) > 0, best, torch.zeros_like(best))
    return best, iou


# --------------------------------------------------------------------------------------------
# [yolo]
# --------------------------------------------------------------------------------------------
def yolo_activate(z: torch.Tensor, spec: YoloSpec) -> torch.Tensor:
    """``forward_yolo_layer``: σ on x, y, objectness and classes (not on w, h; nothing at all
    with new_coords), then ``x·s − (s−1)/2`` on x and y. (N, A·(5+C), H, W) in and out."""
    n, _, h, w = z.shape
    out = z.detach().to(torch.float32).reshape(n, len(spec.mask), 5 + spec.classes, h, w).clone()
    if not spec.new_coords:
        out[:, :, 0:2] = torch.sigmoid(out[:, :, 0:2])
        out[:, :, 4:] = torch.sigmoid(out[:, :, 4:])
    scale, beta = scale_x_y_args(spec.scale_x_y)
    out[:, :, 0:2] = out[:, :, 0:2] * scale + beta
    return out.reshape(z.shape)


def scale_x_y_args(scale_x_y: float) -> tuple[float, float]:
    """``scal_add_cpu(.., l.scale_x_y, -0.5*(l.scale_x_y - 1), ..)``: both as C floats."""
    scale = np.float32(scale_x_y)
    return float(scale), float(np.float32(-0.5 * float(scale - np.float32(1))))


def yolo_boxes(
    out: torch.Tensor, anchors: torch.Tensor, new_coords: bool, input_size: tuple[int, int]
) -> torch.Tensor:
    """``get_yolo_box`` for every cell: (N, A, H, W, 4) x, y, w, h relative to the network input.

    Args:
        out: activated outputs (N, A, 5+C, H, W); anchors: (A, 2) pixels of this head's slots.
    """
    _, _, _, h, w = out.shape
    net_w, net_h = input_size
    jj = torch.arange(h, device=out.device, dtype=out.dtype).view(1, 1, h, 1)
    ii = torch.arange(w, device=out.device, dtype=out.dtype).view(1, 1, 1, w)
    aw = anchors[:, 0].view(1, -1, 1, 1).to(out)
    ah = anchors[:, 1].view(1, -1, 1, 1).to(out)
    if new_coords:
        bw = out[:, :, 2] * out[:, :, 2] * 4 * aw / net_w
        bh = out[:, :, 3] * out[:, :, 3] * 4 * ah / net_h
    else:
        bw = torch.exp(out[:, :, 2]) * aw / net_w
        bh = torch.exp(out[:, :, 3]) * ah / net_h
    return torch.stack(((ii + out[:, :, 0]) / w, (jj + out[:, :, 1]) / h, bw, bh), dim=-1)


def best_truth_ious(
    pred: torch.Tensor,
    boxes: torch.Tensor,
    valid: torch.Tensor,
    *,
    want_index: bool = True,
    chunk: int = 1 << 24,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best IoU of every predicted box with its image's valid truths, and which truth.

    ``box_iou`` (I/U, 0 when I or U is 0, 0 when an overlap is negative) on corners computed once;
    a NaN IoU never wins, as Darknet's ``iou > best_iou`` is false for it.

    Args:
        pred: (N, P, 4); boxes: (N, T, 4); valid: (N, T).
        want_index: also find which truth (else the index is all 0).
    Returns:
        (best IoU (N, P), its truth index (N, P); 0 when no IoU is > 0, as Darknet's loop).
    """
    n, p, _ = pred.shape
    best = pred.new_zeros((n, p))
    arg = torch.zeros((n, p), dtype=torch.int64, device=pred.device)
    used = torch.nonzero(valid.any(dim=0))
    if used.numel() == 0:
        return best, arg
    t = int(used.max()) + 1  # truth slots past the last valid one cannot win
    boxes = boxes[:, :t].to(pred)
    valid = valid[:, :t].to(pred.device)
    p_lo, p_hi = pred[..., :2] - pred[..., 2:] / 2, pred[..., :2] + pred[..., 2:] / 2
    t_lo, t_hi = boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2
    p_area = pred[..., 2] * pred[..., 3]
    t_area = boxes[..., 2] * boxes[..., 3]
    step = max(1, chunk // max(p * t, 1))
    for s in range(0, n, step):
        e = s + step
        side = torch.minimum(p_hi[s:e, :, None], t_hi[s:e, None]) - torch.maximum(
            p_lo[s:e, :, None], t_lo[s:e, None]
        )  # (n, P, T, 2)
        inter = side[..., 0] * side[..., 1]
        inter = inter.masked_fill_((side[..., 0] < 0) | (side[..., 1] < 0), 0)
        union = p_area[s:e, :, None] + t_area[s:e, None] - inter
        zero = (inter == 0) | (union == 0) | ~valid[s:e, None]
        iou = (inter / union).masked_fill_(zero, 0).nan_to_num_(nan=0.0)
        if want_index:
            value, index = iou.max(dim=-1)
            arg[s:e] = torch.where(value > 0, index, torch.zeros_like(index))
        else:
            value = iou.amax(dim=-1)
        best[s:e] = value
    return best, arg


def _class_deltas(
    cur: torch.Tensor, out: torch.Tensor, cls: torch.Tensor, spec: YoloSpec
) -> torch.Tensor:
    """``delta_yolo_class`` for K distinct positions: the new (K, C) class deltas.

    A position whose delta for the truth's class is already non-zero (an earlier truth hit it) only
    gets that class set, so the target becomes multi-label; otherwise every class is written.

    Args:
        cur: (K, C) current class deltas; out: (K, C) class outputs; cls: (K,) class ids.
    """
    k = torch.arange(cls.numel(), device=cur.device)
    mult = _mult(spec, cls, cur.dtype)
    eps = spec.label_smooth_eps
    y_pos = 1 * (1 - eps) + 0.5 * eps if eps else 1.0
    already = cur[k, cls] != 0

    # partial update: only the truth's class, the other classes keep their earlier deltas
    part = cur.clone()
    r = y_pos - out[k, cls]
    value = torch.where(torch.isfinite(r), r, cur[k, cls])
    if spec.class_multipliers is not None:
        value = value * mult
    part[k, cls] = value

    onehot = torch.zeros_like(out)
    onehot[k, cls] = 1
    if spec.focal_loss:
        pt = out[k, cls] + np.float32(0.000000000000001)
        grad = -(1 - pt) * (2 * pt * torch.log(pt) + pt - 1)
        full = (onehot - out) * (_FOCAL_ALPHA * grad)[:, None]
    else:
        target = onehot * (1 - eps) + 0.5 * eps if eps else onehot
        r_all = target - out
        full = torch.where(torch.isfinite(r_all), r_all, cur)
        if spec.class_multipliers is not None:
            full[k, cls] = full[k, cls] * (mult * spec.cls_normalizer)
    return torch.where(already[:, None], part, full)


def yolo_box_deltas(
    o: torch.Tensor,
    truth: torch.Tensor,
    anchor: torch.Tensor,
    i: torch.Tensor,
    j: torch.Tensor,
    grid: tuple[int, int],
    input_size: tuple[int, int],
    norm: torch.Tensor,
    spec: YoloSpec,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``delta_yolo_box`` for K assignments: (box deltas (K, 4), IoU (K,), GIoU (K,)).

    Args:
        o: (K, 4) activated x, y and raw (or activated, new_coords) w, h at the position;
        truth: (K, 4); anchor: (K, 2) pixels; i, j: (K,) cell; norm: (K,) iou_normalizer · class
            multiplier. In float32, like the C code (float64 drifts further from it).
    """
    w, h = grid
    net_w, net_h = input_size
    o = o.to(torch.float32)
    truth = truth.to(o)
    anchor = anchor.to(o)
    fi, fj = i.to(o), j.to(o)
    if spec.new_coords:
        pw = o[:, 2] * o[:, 2] * 4 * anchor[:, 0] / net_w
        ph = o[:, 3] * o[:, 3] * 4 * anchor[:, 1] / net_h
    else:
        pw = torch.exp(o[:, 2]) * anchor[:, 0] / net_w
        ph = torch.exp(o[:, 3]) * anchor[:, 1] / net_h
    pred = torch.stack(((fi + o[:, 0]) / w, (fj + o[:, 1]) / h, pw, ph), dim=-1)
    iou = box_iou(pred, truth)
    giou = box_giou(pred, truth)
    pred = pred.clone()
    pred[:, 2] = torch.where(pred[:, 2] == 0, torch.ones_like(pw), pred[:, 2])  # avoid nan
    pred[:, 3] = torch.where(pred[:, 3] == 0, torch.ones_like(ph), pred[:, 3])
    norm = norm.to(o)
    if spec.iou_loss == "mse":
        scale = 2 - truth[:, 2] * truth[:, 3]
        tx = truth[:, 0] * w - fi
        ty = truth[:, 1] * h - fj
        if spec.new_coords:
            tw = torch.sqrt(truth[:, 2] * net_w / (4 * anchor[:, 0]))
            th = torch.sqrt(truth[:, 3] * net_h / (4 * anchor[:, 1]))
        else:
            tw = torch.log(truth[:, 2] * net_w / anchor[:, 0])
            th = torch.log(truth[:, 3] * net_h / anchor[:, 1])
        target = torch.stack((tx, ty, tw, th), dim=-1)
        return (scale * norm)[:, None] * (target - o), iou, giou
    d = dx_box_iou(pred, truth, spec.iou_loss)
    if not spec.new_coords:
        d[:, 2:] = d[:, 2:] * torch.exp(o[:, 2:4])
    d = fix_nan_inf(d * norm[:, None])
    if spec.max_delta != FLT_MAX:
        d = d.clamp(-spec.max_delta, spec.max_delta)
    return d, iou, giou


@dataclass
class _Acc:
    """Statistic accumulators of one head (``train_yolo_args`` and the locals of process_batch)."""

    count: int = 0
    tot_iou: float = 0.0
    tot_iou_loss: float = 0.0
    tot_giou_loss: float = 0.0
    recall50: int = 0
    recall75: int = 0
    avg_obj: float = 0.0
    avg_cat: float = 0.0
    avg_anyobj: float = 0.0

    def add(
        self, iou: torch.Tensor, giou: torch.Tensor, obj: torch.Tensor, cat: torch.Tensor
    ) -> None:
        self.count += int(iou.numel())
        self.tot_iou += float(iou.sum())
        self.tot_iou_loss += float((1 - iou).sum())
        self.tot_giou_loss += float((1 - giou).sum())
        self.recall50 += int((iou > 0.5).sum())
        self.recall75 += int((iou > 0.75).sum())
        self.avg_obj += float(obj.sum())
        self.avg_cat += float(cat.sum())


@dataclass(frozen=True)
class _Assignments:
    """(truth, anchor) pairs a head trains on, in Darknet's order (image, truth, best anchor
    first)."""

    b: torch.Tensor
    slot: torch.Tensor
    anchor: torch.Tensor
    i: torch.Tensor
    j: torch.Tensor
    truth: torch.Tensor  # (K, 4)
    cls: torch.Tensor  # class id, after `map`

    def to(self, device: torch.device) -> _Assignments:
        return _Assignments(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


CellFn = Callable[[torch.Tensor, int, int], tuple[torch.Tensor, torch.Tensor]]


def yolo_assignments(
    truths: Truths,
    valid: torch.Tensor,
    spec: YoloSpec,
    grid: tuple[int, int],
    input_size: tuple[int, int],
    cell_of: CellFn = _cells,
) -> _Assignments:
    """Step B of ``process_batch``: for each valid truth, the best anchor over all anchors (if in
    this head's mask) then every other mask anchor whose ``iou_thresh_kind`` IoU > iou_thresh.

    Computed on the CPU from the truths alone (float32, as Darknet); rows come out in Darknet's
    order: image, truth, then best anchor before the others in anchor order.
    """
    w, h = grid
    net_w, net_h = input_size
    n, t = valid.shape
    anchors = torch.tensor(spec.anchors, dtype=torch.float32)
    rel = torch.stack((anchors[:, 0] / net_w, anchors[:, 1] / net_h), dim=-1)
    total = rel.shape[0]
    best, _ = best_anchors(truths.boxes[..., 2:4], rel)
    slot_of = torch.full((total,), -1, dtype=torch.int64)
    for s, m in reversed(list(enumerate(spec.mask))):  # int_index: the first slot holding m
        if 0 <= m < total:
            slot_of[m] = s
    ns = torch.arange(total)
    take = torch.zeros((n, t, 1 + total), dtype=torch.bool)
    anchor = torch.zeros((n, t, 1 + total), dtype=torch.int64)
    take[..., 0] = valid & (slot_of[best] >= 0)
    anchor[..., 0] = best
    if spec.iou_thresh < 1.0:
        shape = torch.cat((torch.zeros_like(truths.boxes[..., 2:4]), truths.boxes[..., 2:4]), -1)
        boxes = torch.cat((torch.zeros_like(rel), rel), dim=-1)
        kind = box_iou_kind(boxes, shape.unsqueeze(-2), IouLoss(spec.iou_thresh_kind))
        extra = (kind > spec.iou_thresh) & (ns != best.unsqueeze(-1)) & (slot_of >= 0)
        take[..., 1:] = valid.unsqueeze(-1) & extra
        anchor[..., 1:] = ns
    bi, ti, _ = torch.nonzero(take, as_tuple=True)
    chosen = anchor[take]
    cells_i, cells_j = cell_of(truths.boxes, w, h)
    return _Assignments(
        b=bi,
        slot=slot_of[chosen],
        anchor=chosen,
        i=cells_i[bi, ti],
        j=cells_j[bi, ti],
        truth=truths.boxes[bi, ti],
        cls=_mapped(truths.classes[bi, ti], spec.class_map),
    )


def yolo_loss(
    z: torch.Tensor,
    truth: torch.Tensor | np.ndarray,
    spec: YoloSpec,
    *,
    input_size: tuple[int, int],
    index: int = -1,
) -> HeadLoss:
    """Darknet's ``forward_yolo_layer`` in training mode for one head.

    Args:
        z: (N, A·(5+C), H, W) the tensor entering the [yolo] layer.
        truth: (N, T, 5+) rows x, y, w, h, class relative to the network input.
        input_size: the current network (width, height).
        index: the layer index (for the printed line).
    """
    n, _, h, w = z.shape
    a, c = len(spec.mask), spec.classes
    out = yolo_activate(z, spec).view(n, a, 5 + c, h, w)
    truths = Truths.from_tensor(truth, spec.max_boxes, batch=n, index=index)
    valid = truths.valid(c, class_check_first=False)
    delta = _yolo_negatives(out, truths, valid, spec, input_size)
    acc = _Acc(avg_anyobj=float(out[:, :, 4].sum()))
    asg = yolo_assignments(truths, valid, spec, (w, h), input_size).to(out.device)
    if asg.b.numel():
        _yolo_positives(out, delta, asg, spec, input_size, acc)
    if spec.iou_thresh < 1.0:  # averages_yolo_deltas
        labels = (delta[:, :, 5:] > 0).sum(dim=2)
        div = torch.where((delta[:, :, 4] != 0) & (labels > 0), labels, torch.ones_like(labels))
        delta[:, :, :4] = delta[:, :, :4] / div.unsqueeze(2).to(delta)
    cost, stats = _yolo_cost(delta, acc, spec, index, n)
    return HeadLoss(delta.view(z.shape), cost, stats)


def _yolo_negatives(
    out: torch.Tensor,
    truths: Truths,
    valid: torch.Tensor,
    spec: YoloSpec,
    input_size: tuple[int, int],
) -> torch.Tensor:
    """Step A of ``process_batch``, every cell and anchor slot: the objectness delta toward 0,
    ignored (or smoothed) where the best IoU with a truth is > ignore_thresh and some class prob
    is > 0.25, and the ``truth_thresh`` positives. Replaces a NaN/inf objectness by 0 in ``out``
    (in images with a valid truth, where Darknet's truth loop reaches that check)."""
    n, a, _, h, w = out.shape
    device = out.device
    has_truth = valid.any(dim=1).to(device).view(n, 1, 1, 1)
    obj = out[:, :, 4]
    out[:, :, 4] = torch.where(has_truth & ~torch.isfinite(obj), torch.zeros_like(obj), obj)
    obj = out[:, :, 4]
    anchors = torch.tensor(spec.anchors, dtype=torch.float32, device=device)
    pred = yolo_boxes(
        out, anchors[torch.tensor(spec.mask, device=device)], spec.new_coords, input_size
    )
    want_index = spec.truth_thresh < 1.0
    best_iou, best_t = best_truth_ious(
        pred.reshape(n, -1, 4), truths.boxes, valid, want_index=want_index
    )
    best_iou, best_t = best_iou.view(n, a, h, w), best_t.view(n, a, h, w)
    class_match = (out[:, :, 5:] > _CLASS_MATCH_THRESH).any(dim=2)  # compare_yolo_class
    best_match = torch.where(class_match, best_iou, torch.zeros_like(best_iou))
    delta = torch.zeros_like(out)
    d_obj = spec.obj_normalizer * (0 - obj)
    ignore = best_match > spec.ignore_thresh
    if spec.objectness_smooth:
        smooth = torch.maximum(d_obj, spec.obj_normalizer * (best_match - obj))
        d_obj = torch.where(ignore, smooth, d_obj)
    else:
        d_obj = torch.where(ignore, torch.zeros_like(d_obj), d_obj)
    delta[:, :, 4] = d_obj
    if want_index:
        _yolo_truth_thresh(out, delta, best_iou, best_t, truths, spec, input_size)
    return delta


def _yolo_positives(
    out: torch.Tensor,
    delta: torch.Tensor,
    asg: _Assignments,
    spec: YoloSpec,
    input_size: tuple[int, int],
    acc: _Acc,
) -> None:
    """Step B of ``process_batch``: box, objectness and class deltas of every assignment, applied
    round by round so that positions hit by several truths see them in Darknet's order."""
    _, a, _, h, w = out.shape
    mult = _mult(spec, asg.cls)
    o_all = out[asg.b, asg.slot, :, asg.j, asg.i]  # (K, 5+C)
    anchors = torch.tensor(spec.anchors, dtype=torch.float32, device=out.device)
    box, iou, giou = yolo_box_deltas(
        o_all[:, :4],
        asg.truth,
        anchors[asg.anchor],
        asg.i,
        asg.j,
        (w, h),
        input_size,
        spec.iou_normalizer * mult,
        spec,
    )
    k = torch.arange(len(asg.cls), device=out.device)
    acc.add(iou, giou, o_all[:, 4], o_all[k, 5 + asg.cls])
    rank = _rounds((((asg.b * a + asg.slot) * h + asg.j) * w + asg.i).cpu()).to(out.device)
    for r in range(int(rank.max()) + 1):
        sel = rank == r
        b, s, i, j = asg.b[sel], asg.slot[sel], asg.i[sel], asg.j[sel]
        cur = delta[b, s, :, j, i]
        o = o_all[sel]
        cur[:, :4] = cur[:, :4] + box[sel].to(cur)  # accumulate
        new_obj = mult[sel] * spec.obj_normalizer * (1 - o[:, 4])
        if spec.objectness_smooth:
            new_obj = torch.where(cur[:, 4] == 0, new_obj, cur[:, 4])
        cur[:, 4] = new_obj
        cur[:, 5:] = _class_deltas(cur[:, 5:], o[:, 5:], asg.cls[sel], spec)
        delta[b, s, :, j, i] = cur


def _yolo_truth_thresh(
    out: torch.Tensor,
    delta: torch.Tensor,
    best_iou: torch.Tensor,
    best_t: torch.Tensor,
    truths: Truths,
    spec: YoloSpec,
    input_size: tuple[int, int],
) -> None:
    """Step A, ``best_iou > truth_thresh``: the cell becomes a positive for its best truth."""
    h, w = out.shape[-2:]
    b, s, j, i = torch.nonzero(best_iou > spec.truth_thresh, as_tuple=True)
    if b.numel() == 0:
        return
    device = out.device
    t = best_t[b, s, j, i]
    cls = _mapped(truths.classes.to(device)[b, t], spec.class_map)
    truth = truths.boxes.to(device)[b, t]
    mult = _mult(spec, cls, out.dtype)
    iou = best_iou[b, s, j, i]
    o = out[b, s, :, j, i]
    cur = delta[b, s, :, j, i]
    target = iou * iou if spec.objectness_smooth else torch.ones_like(iou)
    cur[:, 4] = spec.obj_normalizer * (target - o[:, 4])
    cur[:, 5:] = _class_deltas(cur[:, 5:], o[:, 5:], cls, spec)
    k = torch.arange(cls.numel(), device=device)
    if spec.objectness_smooth:
        cur[k, 5 + cls] = mult * (iou * iou - o[k, 5 + cls])
    anchors = torch.tensor(spec.anchors, dtype=torch.float32, device=device)
    slot_anchor = torch.tensor(spec.mask, device=device)[s]
    box, _, _ = yolo_box_deltas(
        o[:, :4],
        truth,
        anchors[slot_anchor],
        i,
        j,
        (w, h),
        input_size,
        spec.iou_normalizer * mult,
        spec,
    )
    cur[:, :4] = cur[:, :4] + box.to(cur)
    delta[b, s, :, j, i] = cur


def _yolo_cost(
    delta: torch.Tensor, acc: _Acc, spec: YoloSpec, index: int, batch: int
) -> tuple[torch.Tensor, HeadStats]:
    """The end of ``forward_yolo_layer``: ``*l.cost`` and the printed line (show_details)."""
    count = acc.count or 1
    per_entry = torch.sum(delta * delta, dim=(0, 1, 3, 4), dtype=torch.float64).tolist()
    loss = sum(per_entry)
    name = "mse" if spec.iou_loss == "mse" else ("giou" if spec.iou_loss == "giou" else "iou")
    head = (
        f"v3 ({name} loss, Normalizer: (iou: {spec.iou_normalizer:.2f}, obj: "
        f"{spec.obj_normalizer:.2f}, cls: {spec.cls_normalizer:.2f}) Region {index} Avg (IOU: "
        f"{acc.tot_iou / count:f}), count: {count}, "
    )
    common: dict[str, Any] = {
        "layer": index,
        "kind": "yolo",
        "count": count,
        "avg_iou": acc.tot_iou / count,
        "avg_obj": acc.avg_obj / count,
        "avg_cat": acc.avg_cat / count,
        "avg_anyobj": acc.avg_anyobj / max(delta[:, :, 4].numel(), 1),
        "recall50": acc.recall50 / count,
        "recall75": acc.recall75 / count,
    }
    if spec.show_details == 0:
        line = head + f"total_loss = {loss / batch:f} "
        return torch.tensor(loss, dtype=torch.float64), HeadStats(
            cost=loss, total_loss=loss / batch, line=line, **common
        )
    class_loss = spec.obj_normalizer * sum(per_entry[4:])
    iou_loss = loss - class_loss
    cost = loss
    if spec.iou_loss != "mse":
        tot = acc.tot_giou_loss if spec.iou_loss == "giou" else acc.tot_iou_loss
        cost = spec.iou_normalizer * (tot / count) + class_loss
    line = head + (
        f"class_loss = {class_loss / batch:f}, iou_loss = {iou_loss / batch:f}, "
        f"total_loss = {loss / batch:f} "
    )
    return torch.tensor(cost, dtype=torch.float64), HeadStats(
        cost=cost,
        class_loss=class_loss / batch,
        iou_loss=iou_loss / batch,
        total_loss=loss / batch,
        line=line,
        **common,
    )


# --------------------------------------------------------------------------------------------
# the network entry point
# --------------------------------------------------------------------------------------------
def head_loss(
    layer: Any,
    z: torch.Tensor,
    truth: torch.Tensor | np.ndarray,
    *,
    input_size: tuple[int, int],
    seen: int = 0,
) -> HeadLoss:
    """The loss of one head layer (``[yolo]``, ``[Gaussian_yolo]`` or ``[region]``)."""
    from .loss_region import gaussian_yolo_loss, region_loss, region_spec

    kind = getattr(layer, "darknet_name", None)
    index = int(getattr(layer, "index", -1))
    if kind == "yolo":
        spec = cached_spec(layer.options, yolo_spec)
        return yolo_loss(z, truth, spec, input_size=input_size, index=index)
    if kind == "Gaussian_yolo":
        spec = cached_spec(layer.options, yolo_spec)
        return gaussian_yolo_loss(z, truth, spec, input_size=input_size, index=index)
    if kind == "region":
        rspec = cached_spec(layer.options, region_spec)
        return region_loss(z, truth, rspec, seen=seen, index=index)
    raise UsageError(
        f"layer {index} ({kind}) is not a detection head ([yolo], [Gaussian_yolo], [region])"
    )


def compute_loss(
    net: Any,
    head_inputs: Mapping[int, torch.Tensor],
    truth: torch.Tensor | np.ndarray,
    *,
    input_size: tuple[int, int] | None = None,
    seen: int = 0,
) -> LossTerms:
    """Darknet's training losses of every detection head of ``net``.

    Args:
        net: a :class:`~darknetpy.network.Network` (reads ``layers`` and ``net.width/height``).
        head_inputs: ``{head layer index: tensor entering it (N, C, H, W)}``.
        truth: (N, T, 5+) rows (x, y, w, h, class) relative to the network input; the rows end at
            the first x == 0.
        input_size: the current network (width, height), when random resizing changed it.
        seen: images seen so far (``[region]`` pulls boxes toward their anchors while < 12800).
    Returns:
        :class:`LossTerms`; ``total.backward()`` leaves ``-delta`` in each head input's gradient.
    """
    if not head_inputs:
        raise UsageError("compute_loss: no head inputs given (the network has no detection head?)")
    if input_size is None:
        input_size = (int(net.net.width), int(net.net.height))
    total: torch.Tensor | None = None
    costs: dict[int, float] = {}
    stats: dict[int, HeadStats] = {}
    deltas: dict[int, torch.Tensor] = {}
    for index in sorted(head_inputs):
        z = head_inputs[index]
        result = head_loss(net.layers[index], z, truth, input_size=input_size, seen=seen)
        term = -(result.delta.to(z.dtype) * z).sum()
        total = term if total is None else total + term
        costs[index] = float(result.cost)
        stats[index] = result.stats
        deltas[index] = result.delta
    assert total is not None
    return LossTerms(
        total=total,
        costs=MappingProxyType(costs),
        stats=MappingProxyType(stats),
        deltas=MappingProxyType(deltas),
    )
