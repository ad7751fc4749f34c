"""Darknet's ``[region]`` (YOLOv2) and ``[Gaussian_yolo]`` training deltas.

``[region]`` mirrors ``region_layer.c: forward_region_layer, delta_region_box, delta_region_class,
get_region_box``; ``[Gaussian_yolo]`` mirrors ``gaussian_yolo_layer.c: forward_gaussian_yolo_layer,
delta_gaussian_yolo_box, delta_gaussian_yolo_class, averages_gaussian_yolo_deltas``. Both return the
delta in the layout of the layer *input* (channel-major), which is what Darknet back-propagates
(``[region]`` flattens its output to cell-major order and flattens the delta back).

Not supported: ``[region] tree=`` (softmax trees, YOLO9000) and ``coords`` other than 4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .boxes import box_giou, box_iou
from .errors import UsageError
from .loss import (
    FLT_MAX,
    HeadLoss,
    HeadStats,
    Truths,
    YoloSpec,
    _class_map,
    _mapped,
    _mult,
    _rounds,
    best_truth_ious,
    dx_box_iou,
    fix_nan_inf,
    scale_x_y_args,
    yolo_assignments,
)

_SEEN_PRIOR = 12800  # forward_region_layer: boxes are pulled toward their anchor while seen < 12800
_PRIOR_SCALE = 0.01
_SIGMA_CONST = 0.3  # delta_gaussian_yolo_box
_EPSI = float(np.float32(1e-9))


# --------------------------------------------------------------------------------------------
# [region]
# --------------------------------------------------------------------------------------------
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


def region_spec(options: Any) -> RegionSpec:
    """A :class:`RegionSpec` from ``RegionOptions`` (:mod:`darknetpy.layers.detection`).

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


def region_activate(z: torch.Tensor, spec: RegionSpec) -> torch.Tensor:
    """``forward_region_layer`` in the input's channel layout: σ on objectness, softmax over the
    classes when ``softmax=1``; x, y, w, h stay raw (σ is applied to x, y when decoding)."""
    n, _, h, w = z.shape
    out = z.detach().to(torch.float32).reshape(n, len(spec.anchors), 5 + spec.classes, h, w).clone()
    out[:, :, 4] = torch.sigmoid(out[:, :, 4])
    if spec.softmax:
        out[:, :, 5:] = torch.softmax(out[:, :, 5:], dim=2)
    return out.reshape(z.shape)


def region_output(z: torch.Tensor, spec: RegionSpec) -> torch.Tensor:
    """Darknet's ``l.output`` buffer of [region]: cell-major (``flatten``), (N, H·W·A·(5+C))."""
    out = region_activate(z, spec)
    n, ch, h, w = out.shape
    return out.view(n, ch, h * w).transpose(1, 2).reshape(n, -1)


def _region_box_deltas(
    o: torch.Tensor,
    truth: torch.Tensor,
    anchor: torch.Tensor,
    i: torch.Tensor,
    j: torch.Tensor,
    grid: tuple[int, int],
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``delta_region_box``: (deltas (..., 4), written with '=', and the IoU (...)).

    ``o`` holds the raw x, y, w, h; the x, y deltas carry σ' (unlike [yolo])."""
    w, h = grid
    sx, sy = torch.sigmoid(o[..., 0]), torch.sigmoid(o[..., 1])
    pred = _region_boxes(o, anchor, i, j, grid)
    iou = box_iou(pred, truth)
    tx, ty = truth[..., 0] * w - i, truth[..., 1] * h - j
    tw = torch.log(truth[..., 2] * w / anchor[..., 0])
    th = torch.log(truth[..., 3] * h / anchor[..., 1])
    delta = torch.stack(
        (
            scale * (tx - sx) * ((1 - sx) * sx),
            scale * (ty - sy) * ((1 - sy) * sy),
            scale * (tw - o[..., 2]),
            scale * (th - o[..., 3]),
        ),
        dim=-1,
    )
    return delta, iou


def _region_class_deltas(
    out: torch.Tensor, cls: torch.Tensor, scale: torch.Tensor, focal: bool
) -> torch.Tensor:
    """``delta_region_class`` (no tree): every class overwritten, ``scale·(onehot − p)``."""
    k = torch.arange(cls.numel(), device=out.device)
    onehot = torch.zeros_like(out)
    onehot[k, cls] = 1
    delta = scale[:, None] * (onehot - out)
    if focal:
        pt = out[k, cls] + np.float32(0.000000000000001)
        grad = -(1 - pt) * (2 * pt * torch.log(pt) + pt - 1)
        delta = delta * (0.5 * grad)[:, None]
    return delta


def region_loss(
    z: torch.Tensor,
    truth: torch.Tensor | np.ndarray,
    spec: RegionSpec,
    *,
    seen: int = 0,
    index: int = -1,
) -> HeadLoss:
    """Darknet's ``forward_region_layer`` in training mode; the delta is in ``z``'s layout.

    Args:
        seen: images seen so far; below 12800 every box is also pulled toward its anchor.
    """
    n, _, h, w = z.shape
    out = region_activate(z, spec).view(n, len(spec.anchors), 5 + spec.classes, h, w)
    truths = Truths.from_tensor(truth, spec.max_boxes, batch=n, index=index)
    delta, cat = _region_negatives(out, truths, spec, seen)
    acc = _region_positives(out, delta, truths, spec)
    acc["cat"] += cat[0]
    acc["class_count"] += cat[1]
    delta = delta.view(z.shape)
    cost = float(torch.sum(delta * delta, dtype=torch.float64))
    count, nan = acc["count"], float("nan")

    def per(x: float, k: int = count) -> float:
        return x / k if k else nan

    no_obj = float(out[:, :, 4].mean())
    line = (
        f"Region Avg IOU: {per(acc['iou']):f}, Class: {per(acc['cat'], acc['class_count']):f}, "
        f"Obj: {per(acc['obj']):f}, No Obj: {no_obj:f}, Avg Recall: {per(acc['recall']):f},  "
        f"count: {count}"
    )
    stats = HeadStats(
        layer=index,
        kind="region",
        cost=cost,
        count=count,
        avg_iou=per(acc["iou"]),
        total_loss=cost / n,
        avg_obj=per(acc["obj"]),
        avg_anyobj=no_obj,
        avg_cat=per(acc["cat"], acc["class_count"]),
        recall50=per(acc["recall"]),
        line=line,
    )
    return HeadLoss(delta, torch.tensor(cost, dtype=torch.float64), stats)


def _region_negatives(
    out: torch.Tensor, truths: Truths, spec: RegionSpec, seen: int
) -> tuple[torch.Tensor, tuple[float, int]]:
    """The per-cell part of ``forward_region_layer``: no-object deltas (through σ'), zeroed
    where the best IoU with a truth is > thresh (``classfix`` variants), and the early-training
    pull of every box toward its anchor. Returns (delta, (class output sum, class count))."""
    n, a, _, h, w = out.shape
    c = spec.classes
    device = out.device
    anchors = torch.tensor(spec.anchors, dtype=torch.float32, device=device)
    ii = torch.arange(w, device=device, dtype=torch.float32).view(1, 1, 1, w).expand(n, a, h, w)
    jj = torch.arange(h, device=device, dtype=torch.float32).view(1, 1, h, 1).expand(n, a, h, w)
    cell_anchor = anchors.view(1, a, 1, 1, 2).expand(n, a, h, w, 2)
    boxes_raw = out[:, :, :4].permute(0, 1, 3, 4, 2)  # (N, A, H, W, 4)
    pred = _region_boxes(boxes_raw, cell_anchor, ii, jj, (w, h))
    valid = truths.valid(c, class_check_first=True) | _negative_rows(truths, c)
    best_iou, best_t = best_truth_ious(pred.reshape(n, -1, 4), truths.boxes, valid)
    best_iou, best_t = best_iou.view(n, a, h, w), best_t.view(n, a, h, w)
    obj = out[:, :, 4]
    grad = (1 - obj) * obj
    delta = torch.zeros_like(out)
    cat_sum, cat_count = 0.0, 0
    if spec.classfix == -1:
        delta[:, :, 4] = spec.noobject_scale * ((best_iou - obj) * grad)
    else:
        over = best_iou > spec.thresh
        negative = spec.noobject_scale * ((0 - obj) * grad)
        delta[:, :, 4] = torch.where(over, torch.zeros_like(obj), negative)
        if spec.classfix > 0 and bool(over.any()):
            b, s, j, i = torch.nonzero(over, as_tuple=True)
            cls = truths.classes.to(device)[b, best_t[b, s, j, i]].clamp(0, c - 1)
            o = out[b, s, 5:, j, i]
            scale = torch.full_like(cls, 1, dtype=obj.dtype)
            if spec.classfix == 2:
                scale = obj[b, s, j, i]
            delta[b, s, 5:, j, i] = _region_class_deltas(
                o, cls, spec.class_scale * scale, spec.focal_loss
            )
            cat_count = int(b.numel())
            cat_sum = float(o[torch.arange(cls.numel(), device=device), cls].sum())
    if seen < _SEEN_PRIOR:
        prior = torch.stack(
            ((ii + 0.5) / w, (jj + 0.5) / h, cell_anchor[..., 0] / w, cell_anchor[..., 1] / h),
            dim=-1,
        )
        d, _ = _region_box_deltas(boxes_raw, prior, cell_anchor, ii, jj, (w, h), _PRIOR_SCALE)
        delta[:, :, :4] = d.permute(0, 1, 4, 2, 3)
    return delta, (cat_sum, cat_count)


def _region_positives(
    out: torch.Tensor, delta: torch.Tensor, truths: Truths, spec: RegionSpec
) -> dict[str, Any]:
    """The per-truth part of ``forward_region_layer``: the best anchor of the truth's cell by
    shape IoU (predicted shapes, or the anchors with ``bias_match``) gets box, objectness and
    class deltas, all written with '=' (the last truth on a position wins)."""
    a, h, w = out.shape[1], out.shape[3], out.shape[4]
    device = out.device
    acc: dict[str, Any] = {
        "count": 0,
        "iou": 0.0,
        "recall": 0,
        "obj": 0.0,
        "cat": 0.0,
        "class_count": 0,
    }
    bi, ti = torch.nonzero(truths.valid(spec.classes, class_check_first=True), as_tuple=True)
    if bi.numel() == 0:
        return acc
    anchors = torch.tensor(spec.anchors, dtype=torch.float32, device=device)
    tb = truths.boxes[bi, ti].to(device)
    ci = (tb[:, 0] * w).to(torch.int64).clamp(0, w - 1)
    cj = (tb[:, 1] * h).to(torch.int64).clamp(0, h - 1)
    bd = bi.to(device)
    if spec.bias_match:
        shape = (anchors / torch.tensor([w, h], device=device)).expand(len(bd), a, 2)
    else:
        o_cell = out[bd, :, :4, cj, ci]  # (K, A, 4)
        shape = torch.exp(o_cell[..., 2:4]) * anchors / torch.tensor([w, h], device=device)
    ious = box_iou(
        torch.cat((torch.zeros_like(shape), shape), -1),
        torch.cat((torch.zeros_like(tb[:, 2:]), tb[:, 2:]), -1)[:, None, :],
    )
    ious = torch.nan_to_num(ious, nan=0.0)
    found = ious.amax(dim=1) > 0
    best_n = torch.where(found, torch.argmax(ious, dim=1), 0)
    # best_index stays 0 when no IoU is > 0: Darknet then writes at image 0, cell 0, anchor 0
    pb, pj, pi = (torch.where(found, v, 0) for v in (bd, cj, ci))
    o = out[pb, best_n, :, pj, pi]  # (K, 5+C)
    box, iou = _region_box_deltas(
        o[:, :4], tb, anchors[best_n], ci.to(o), cj.to(o), (w, h), spec.coord_scale
    )
    o_obj = o[:, 4]
    target = iou if spec.rescore else torch.ones_like(iou)
    d_obj = spec.object_scale * (target - o_obj) * ((1 - o_obj) * o_obj)
    cls = _mapped(truths.classes[bi, ti], spec.class_map).to(device)
    scale = torch.full_like(o_obj, spec.class_scale)
    rows = torch.cat(
        (box, d_obj[:, None], _region_class_deltas(o[:, 5:], cls, scale, spec.focal_loss)), dim=1
    )
    rank = _rounds((((pb * a + best_n) * h + pj) * w + pi).cpu()).to(device)
    for r in range(int(rank.max()) + 1):
        sel = rank == r
        delta[pb[sel], best_n[sel], :, pj[sel], pi[sel]] = rows[sel]
    k = int(bi.numel())
    acc.update(
        count=k,
        iou=float(iou.sum()),
        recall=int((iou > 0.5).sum()),
        obj=float(o_obj.sum()),
        class_count=k,
        cat=float(o[torch.arange(k, device=device), 5 + cls].sum()),
    )
    return acc


def _region_boxes(
    raw: torch.Tensor,
    anchor: torch.Tensor,
    i: torch.Tensor,
    j: torch.Tensor,
    grid: tuple[int, int],
) -> torch.Tensor:
    """``get_region_box``: (..., 4) from raw x, y, w, h; anchors in grid cells."""
    w, h = grid
    return torch.stack(
        (
            (i + torch.sigmoid(raw[..., 0])) / w,
            (j + torch.sigmoid(raw[..., 1])) / h,
            torch.exp(raw[..., 2]) * anchor[..., 0] / w,
            torch.exp(raw[..., 3]) * anchor[..., 1] / h,
        ),
        dim=-1,
    )


def _negative_rows(truths: Truths, classes: int) -> torch.Tensor:
    """Rows with a negative class that step A of [region]/[Gaussian_yolo] still scores (their loop
    only skips class >= classes)."""
    stop = (truths.boxes[..., 0] == 0) & (truths.classes < classes)
    ended = torch.cumsum(stop.to(torch.int64), dim=1) > 0
    return ~ended & (truths.classes < 0)


# --------------------------------------------------------------------------------------------
# [Gaussian_yolo]
# --------------------------------------------------------------------------------------------
def gaussian_yolo_activate(z: torch.Tensor, spec: YoloSpec) -> torch.Tensor:
    """``forward_gaussian_yolo_layer``: σ on μx, σx, μy, σy, σw, σh, objectness and classes;
    ``x·s − (s−1)/2`` on μx and μy only. Per anchor: x, σx, y, σy, w, σw, h, σh, obj, classes."""
    n, _, h, w = z.shape
    out = z.detach().to(torch.float32).reshape(n, len(spec.mask), 9 + spec.classes, h, w).clone()
    for ch in (0, 1, 2, 3, 5, 7):
        out[:, :, ch] = torch.sigmoid(out[:, :, ch])
    out[:, :, 8:] = torch.sigmoid(out[:, :, 8:])
    scale, beta = scale_x_y_args(spec.scale_x_y)
    for ch in (0, 2):
        out[:, :, ch] = out[:, :, ch] * scale + beta
    return out.reshape(z.shape)


def _gaussian_boxes(
    o: torch.Tensor,
    anchor: torch.Tensor,
    i: torch.Tensor,
    j: torch.Tensor,
    grid: tuple[int, int],
    input_size: tuple[int, int],
    point: str,
) -> torch.Tensor:
    """``get_gaussian_yolo_box``; ``o`` (..., 8+) outputs, ``anchor`` (..., 2) pixels."""
    w, h = grid
    bw = torch.exp(o[..., 4]) * anchor[..., 0] / input_size[0]
    bh = torch.exp(o[..., 6]) * anchor[..., 1] / input_size[1]
    bx = (i + o[..., 0]) / w
    by = (j + o[..., 2]) / h
    if point == "left_top":
        bx, by = bx + bw / 2, by + bh / 2
    elif point == "right_bottom":
        bx, by = bx - bw / 2, by - bh / 2
    return torch.stack((bx, by, bw, bh), dim=-1)


def _gaussian_cells(point: str) -> Any:
    def cells(boxes: torch.Tensor, w: int, h: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = boxes[..., 0], boxes[..., 1]
        if point == "left_top":
            x, y = x - boxes[..., 2] / 2, y - boxes[..., 3] / 2
        elif point == "right_bottom":
            x, y = x + boxes[..., 2] / 2, y + boxes[..., 3] / 2
        else:
            return (
                (x * w).to(torch.int64).clamp(0, w - 1),
                (y * h).to(torch.int64).clamp(0, h - 1),
            )
        i = torch.clamp(x * w, min=0).clamp(max=w - 1).to(torch.int64)
        j = torch.clamp(y * h, min=0).clamp(max=h - 1).to(torch.int64)
        return i, j

    return cells


def gaussian_box_deltas(
    o: torch.Tensor,
    truth: torch.Tensor,
    anchor: torch.Tensor,
    i: torch.Tensor,
    j: torch.Tensor,
    grid: tuple[int, int],
    input_size: tuple[int, int],
    scale: torch.Tensor,
    norm: torch.Tensor,
    spec: YoloSpec,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``delta_gaussian_yolo_box`` for K assignments: (deltas (K, 8) to add, IoU (GIoU when the
    iou_loss is not mse) (K,)). ``o``: (K, 8) outputs; float32 as in C."""
    w, h = grid
    o = o.to(torch.float32)
    truth, anchor = truth.to(o), anchor.to(o)
    fi, fj = i.to(o), j.to(o)
    pred = _gaussian_boxes(o, anchor, fi, fj, grid, input_size, spec.yolo_point)
    iou = box_iou(pred, truth)
    giou = box_giou(pred, truth)
    pred[:, 2] = torch.where(pred[:, 2] == 0, torch.ones_like(fi), pred[:, 2])
    pred[:, 3] = torch.where(pred[:, 3] == 0, torch.ones_like(fi), pred[:, 3])
    tx, ty = truth[:, 0] * w - fi, truth[:, 1] * h - fj
    if spec.yolo_point == "left_top":
        tx, ty = (truth[:, 0] - truth[:, 2] / 2) * w - fi, (truth[:, 1] - truth[:, 3] / 2) * h - fj
    elif spec.yolo_point == "right_bottom":
        tx, ty = (truth[:, 0] + truth[:, 2] / 2) * w - fi, (truth[:, 1] + truth[:, 3] / 2) * h - fj
    tw = torch.log(truth[:, 2] * input_size[0] / anchor[:, 0])
    th = torch.log(truth[:, 3] * input_size[1] / anchor[:, 1])
    mu, uc = [], []
    for target, m, s in (
        (tx, o[:, 0], o[:, 1]),
        (ty, o[:, 2], o[:, 3]),
        (tw, o[:, 4], o[:, 5]),
        (th, o[:, 6], o[:, 7]),
    ):
        in_exp = (target - m) / s
        in_exp2 = in_exp**2
        normal = torch.exp(in_exp2 * (-1.0 / 2.0)) / (math.sqrt(math.pi * 2.0) * (s + _SIGMA_CONST))
        temp = (1.0 / 2.0) * 1.0 / (normal + _EPSI) * normal * scale.to(o)
        mu.append(temp * in_exp * (1.0 / s))
        uc.append(temp * (in_exp2 / s - 1.0 / (s + _SIGMA_CONST)))
    d_mu = torch.stack(mu, dim=-1)
    d_uc = torch.stack(uc, dim=-1)
    if spec.iou_loss != "mse":
        iou = giou
        d = dx_box_iou(pred, truth, spec.iou_loss)
        if spec.yolo_point == "left_top":
            d[:, 0], d[:, 1] = d[:, 0] - d[:, 2] / 2, d[:, 1] - d[:, 3] / 2
        elif spec.yolo_point == "right_bottom":
            d[:, 0], d[:, 1] = d[:, 0] + d[:, 2] / 2, d[:, 1] + d[:, 3] / 2
        d[:, 2] = d[:, 2] * torch.exp(o[:, 4])
        d[:, 3] = d[:, 3] * torch.exp(o[:, 6])
        d_mu = d
    d_mu = fix_nan_inf(d_mu * norm.to(o)[:, None])
    d_uc = fix_nan_inf(d_uc * spec.uc_normalizer)
    if spec.max_delta != FLT_MAX:
        d_mu = d_mu.clamp(-spec.max_delta, spec.max_delta)
        d_uc = d_uc.clamp(-spec.max_delta, spec.max_delta)
    out = torch.stack(
        (
            d_mu[:, 0],
            d_uc[:, 0],
            d_mu[:, 1],
            d_uc[:, 1],
            d_mu[:, 2],
            d_uc[:, 2],
            d_mu[:, 3],
            d_uc[:, 3],
        ),
        dim=-1,
    )
    return out, iou


def _gaussian_class_deltas(
    cur: torch.Tensor, out: torch.Tensor, cls: torch.Tensor, spec: YoloSpec
) -> torch.Tensor:
    """``delta_gaussian_yolo_class``: like delta_yolo_class, but "already hit" tests class 0's delta
    and there is no NaN guard and no focal loss.

    A class id outside [0, classes) (step B does not check it) gets all-negative targets on a first
    hit; on a repeated hit Darknet writes outside the anchor's channels, which is skipped here.
    """
    k = torch.arange(cls.numel(), device=cur.device)
    inside = (cls >= 0) & (cls < out.shape[1])
    kin, cin = k[inside], cls[inside]
    eps = spec.label_smooth_eps
    y_pos = 1 * (1 - eps) + 0.5 * eps if eps else 1.0
    mult = _mult(spec, cls, cur.dtype)
    part = cur.clone()
    part[kin, cin] = (y_pos - out[kin, cin]) * (
        1 if spec.class_multipliers is None else mult[inside]
    )
    onehot = torch.zeros_like(out)
    onehot[kin, cin] = 1
    full = (onehot * (1 - eps) + 0.5 * eps if eps else onehot) - out
    if spec.class_multipliers is not None:
        full[kin, cin] = full[kin, cin] * (mult[inside] * spec.cls_normalizer)
    return torch.where((cur[:, 0] != 0)[:, None], part, full)


def gaussian_yolo_loss(
    z: torch.Tensor,
    truth: torch.Tensor | np.ndarray,
    spec: YoloSpec,
    *,
    input_size: tuple[int, int],
    index: int = -1,
) -> HeadLoss:
    """Darknet's ``forward_gaussian_yolo_layer`` in training mode for one head."""
    n, _, h, w = z.shape
    a, c = len(spec.mask), spec.classes
    out = gaussian_yolo_activate(z, spec).view(n, a, 9 + c, h, w)
    device = out.device
    truths = Truths.from_tensor(truth, spec.max_boxes, batch=n, index=index)
    anchors = torch.tensor(spec.anchors, dtype=torch.float32, device=device)
    slot_anchor = (
        anchors[torch.tensor(spec.mask, device=device)].view(1, a, 1, 1, 2).expand(n, a, h, w, 2)
    )
    ii = torch.arange(w, device=device, dtype=torch.float32).view(1, 1, 1, w).expand(n, a, h, w)
    jj = torch.arange(h, device=device, dtype=torch.float32).view(1, 1, h, 1).expand(n, a, h, w)

    # ---- step A ----
    o_cells = out[:, :, :8].permute(0, 1, 3, 4, 2)
    pred = _gaussian_boxes(o_cells, slot_anchor, ii, jj, (w, h), input_size, spec.yolo_point)
    valid_a = truths.valid(c, class_check_first=True) | _negative_rows(truths, c)
    best_iou, best_t = best_truth_ious(pred.reshape(n, -1, 4), truths.boxes, valid_a)
    best_iou, best_t = best_iou.view(n, a, h, w), best_t.view(n, a, h, w)
    best_match = torch.where(
        (out[:, :, 9:] > 0.25).any(dim=2), best_iou, torch.zeros_like(best_iou)
    )
    obj = out[:, :, 8]
    delta = torch.zeros_like(out)
    ignore = best_match > spec.ignore_thresh
    delta[:, :, 8] = torch.where(ignore, torch.zeros_like(obj), spec.obj_normalizer * (0 - obj))
    classes_all = _mapped(truths.classes, spec.class_map).to(device)
    if spec.objectness_smooth and bool(ignore.any()):
        b, s, j, i = torch.nonzero(ignore, as_tuple=True)
        bm = best_match[b, s, j, i]
        delta[b, s, 8, j, i] = spec.obj_normalizer * (bm * bm - obj[b, s, j, i])
        cls = classes_all[b, best_t[b, s, j, i]].clamp(0, c - 1)
        delta[b, s, 9:, j, i] = _gaussian_class_deltas(
            delta[b, s, 9:, j, i], out[b, s, 9:, j, i], cls, spec
        )
    if spec.truth_thresh < 1.0 and bool((best_iou > spec.truth_thresh).any()):
        b, s, j, i = torch.nonzero(best_iou > spec.truth_thresh, as_tuple=True)
        t = best_t[b, s, j, i]
        cls = classes_all[b, t].clamp(0, c - 1)
        iou = best_iou[b, s, j, i]
        mult = _mult(spec, cls, out.dtype)
        o = out[b, s, :, j, i]
        cur = delta[b, s, :, j, i]
        cur[:, 8] = spec.obj_normalizer * ((iou * iou if spec.objectness_smooth else 1) - o[:, 8])
        cur[:, 9:] = _gaussian_class_deltas(cur[:, 9:], o[:, 9:], cls, spec)
        k = torch.arange(cls.numel(), device=device)
        if spec.objectness_smooth:
            cur[k, 9 + cls] = mult * (iou * iou - o[k, 9 + cls])
        truth_b = truths.boxes.to(device)[b, t]
        d, _ = gaussian_box_deltas(
            o[:, :8],
            truth_b,
            slot_anchor[b, s, j, i],
            i,
            j,
            (w, h),
            input_size,
            2 - truth_b[:, 2] * truth_b[:, 3],
            spec.iou_normalizer * mult,
            spec,
        )
        cur[:, :8] = cur[:, :8] + d.to(cur)
        delta[b, s, :, j, i] = cur

    # ---- step B ----
    valid_b = truths.valid(c, class_check_first=False, any_class=True)
    asg = yolo_assignments(
        truths, valid_b, spec, (w, h), input_size, cell_of=_gaussian_cells(spec.yolo_point)
    ).to(device)
    count, tot_iou, recall50, recall75, avg_obj, avg_cat = 0, 0.0, 0, 0, 0.0, 0.0
    if asg.b.numel():
        mult = _mult(spec, asg.cls, out.dtype)
        o_all = out[asg.b, asg.slot, :, asg.j, asg.i]
        box, iou = gaussian_box_deltas(
            o_all[:, :8],
            asg.truth,
            anchors[asg.anchor],
            asg.i,
            asg.j,
            (w, h),
            input_size,
            2 - asg.truth[:, 2] * asg.truth[:, 3],
            spec.iou_normalizer * mult,
            spec,
        )
        k = torch.arange(asg.cls.numel(), device=device)
        count, tot_iou = int(iou.numel()), float(iou.sum())
        recall50, recall75 = int((iou > 0.5).sum()), int((iou > 0.75).sum())
        inside = (asg.cls >= 0) & (asg.cls < c)
        avg_obj = float(o_all[:, 8].sum())
        avg_cat = float(o_all[k[inside], 9 + asg.cls[inside]].sum())
        rank = _rounds((((asg.b * a + asg.slot) * h + asg.j) * w + asg.i).cpu()).to(device)
        for r in range(int(rank.max()) + 1):
            sel = rank == r
            b, s, i, j = asg.b[sel], asg.slot[sel], asg.i[sel], asg.j[sel]
            cur = delta[b, s, :, j, i]
            o = o_all[sel]
            cur[:, :8] = cur[:, :8] + box[sel].to(cur)
            cur[:, 8] = mult[sel] * spec.obj_normalizer * (1 - o[:, 8])
            cur[:, 9:] = _gaussian_class_deltas(cur[:, 9:], o[:, 9:], asg.cls[sel], spec)
            delta[b, s, :, j, i] = cur

    # ---- averaging: every position, unconditionally ----
    labels = (delta[:, :, 9:] > 0).sum(dim=2)
    delta[:, :, :8] = delta[:, :, :8] / torch.where(
        labels > 0, labels, torch.ones_like(labels)
    ).unsqueeze(2).to(delta)

    sq = delta.to(torch.float64) ** 2
    loss = float(sq.sum())
    class_loss = float(sq[:, :, 8:].sum())
    except_uc = loss - float(sq[:, :, 4:8].sum())
    nan = float("nan")

    def per(x: float) -> float:
        return x / count if count else nan

    line = (
        f"Region {index} Avg IOU: {per(tot_iou):f}, Class: {per(avg_cat):f}, "
        f"Obj: {per(avg_obj):f}, "
        f"No Obj: {float(obj.mean()):f}, .5R: {per(recall50):f}, .75R: {per(recall75):f},  count: "
        f"{count}, class_loss = {class_loss / n:.2f}, "
        f"iou_loss = {(except_uc - class_loss) / n:.2f}, "
        f"uc_loss = {(loss - except_uc) / n:.2f}, total_loss = {loss / n:.2f}"
    )
    stats = HeadStats(
        layer=index,
        kind="Gaussian_yolo",
        cost=loss,
        count=count,
        avg_iou=per(tot_iou),
        class_loss=class_loss / n,
        iou_loss=(except_uc - class_loss) / n,
        uc_loss=(loss - except_uc) / n,
        total_loss=loss / n,
        avg_obj=per(avg_obj),
        avg_anyobj=float(obj.mean()),
        avg_cat=per(avg_cat),
        recall50=per(recall50),
        recall75=per(recall75),
        line=line,
    )
    return HeadLoss(delta.view(z.shape), torch.tensor(loss, dtype=torch.float64), stats)
