"""Darknet's ``[region]`` (YOLOv2) loss: ``region_layer.c: forward_region_layer`` in training mode.

The delta is returned in the layout of the layer *input* (channel-major), which is what Darknet
back-propagates (``[region]`` flattens its output to cell-major order and flattens the delta
back). Not supported: ``tree=`` (softmax trees, YOLO9000) and ``coords`` other than 4.
"""

from __future__ import annotations

import numpy as np
import torch

from ...boxes import box_iou
from ..records import HeadLoss, HeadStats, TruthRows
from .assign import (
    Truths,
    _mapped,
    _negative_rows,
    _rounds,
    best_truth_ious,
    from_position_rows,
    position_rows,
)
from .deltas import _region_box_deltas, _region_boxes, _region_class_deltas
from .specs import RegionSpec, device_tensor

_SEEN_PRIOR = 12800  # forward_region_layer: boxes are pulled toward their anchor while seen < 12800
_PRIOR_SCALE = 0.01


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


def region_loss(
    z: torch.Tensor,
    truth: torch.Tensor | np.ndarray | TruthRows,
    spec: RegionSpec,
    *,
    seen: int = 0,
    index: int = -1,
) -> HeadLoss:
    """Darknet's ``forward_region_layer`` in training mode; the delta is in ``z``'s layout. Nothing
    here reads the device; the printed figures are read when first looked at.

    Args:
        seen: images seen so far; below 12800 every box is also pulled toward its anchor.
    """
    n, _, h, w = z.shape
    out = region_activate(z, spec).view(n, len(spec.anchors), 5 + spec.classes, h, w)
    truths = Truths.from_tensor(truth, spec.max_boxes, batch=n, index=index, device=z.device)
    delta, classfix = _region_negatives(out, truths, spec, seen)
    delta, pairs = _region_positives(out, delta, truths, spec)
    delta = delta.view(z.shape)
    cost = torch.sum(delta * delta, dtype=torch.float64)
    figures = torch.cat((torch.stack((cost, out[:, :, 4].mean().to(torch.float64))), pairs,
                         classfix))  # fmt: skip
    return HeadLoss(delta, cost, lambda: _region_stats(figures.tolist(), index, n))


def _region_stats(figures: list[float], index: int, batch: int) -> HeadStats:
    """The end of ``forward_region_layer``: the printed line (NaN averages without truths), from
    the cost, the objectness mean, the pair sums (count, IoU, recall, objectness, class) and the
    ``classfix`` sums (class, count)."""
    cost, no_obj, count_f, iou, recall, obj, cat, fix_cat, fix_count = figures
    count, nan = int(count_f), float("nan")
    cat, class_count = cat + fix_cat, count + int(fix_count)

    def per(x: float, k: int = count) -> float:
        return x / k if k else nan

    line = (
        f"Region Avg IOU: {per(iou):f}, Class: {per(cat, class_count):f}, "
        f"Obj: {per(obj):f}, No Obj: {no_obj:f}, Avg Recall: {per(recall):f},  "
        f"count: {count}"
    )
    return HeadStats(
        layer=index,
        kind="region",
        cost=cost,
        count=count,
        avg_iou=per(iou),
        total_loss=cost / batch,
        avg_obj=per(obj),
        avg_anyobj=no_obj,
        avg_cat=per(cat, class_count),
        recall50=per(recall),
        line=line,
    )


def _region_negatives(
    out: torch.Tensor, truths: Truths, spec: RegionSpec, seen: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-cell part of ``forward_region_layer``: no-object deltas (through σ'), zeroed
    where the best IoU with a truth is > thresh (``classfix`` variants), and the early-training
    pull of every box toward its anchor. Returns (delta, float64 (class output sum, count))."""
    n, a, _, h, w = out.shape
    device = out.device
    anchors = device_tensor(spec.anchors, torch.float32, device)
    ii = torch.arange(w, device=device, dtype=torch.float32).view(1, 1, 1, w).expand(n, a, h, w)
    jj = torch.arange(h, device=device, dtype=torch.float32).view(1, 1, h, 1).expand(n, a, h, w)
    cell_anchor = anchors.view(1, a, 1, 1, 2).expand(n, a, h, w, 2)
    boxes_raw = out[:, :, :4].permute(0, 1, 3, 4, 2)  # (N, A, H, W, 4)
    pred = _region_boxes(boxes_raw, cell_anchor, ii, jj, (w, h))
    c = spec.classes
    valid = truths.valid(c, class_check_first=True) | _negative_rows(truths, c)
    best_iou, best_t = best_truth_ious(pred.reshape(n, -1, 4), truths.boxes, valid)
    best_iou, best_t = best_iou.view(n, a, h, w), best_t.view(n, a, h, w)
    obj = out[:, :, 4]
    grad = (1 - obj) * obj
    delta = torch.zeros_like(out)
    cat = torch.zeros(2, dtype=torch.float64, device=device)
    if spec.classfix == -1:
        delta[:, :, 4] = spec.noobject_scale * ((best_iou - obj) * grad)
    else:
        over = best_iou > spec.thresh
        negative = spec.noobject_scale * ((0 - obj) * grad)
        delta[:, :, 4] = torch.where(over, torch.zeros_like(obj), negative)
        if spec.classfix > 0 and truths.boxes.shape[1]:
            cat = _region_classfix(out, delta, over, best_t, truths, spec)
    if seen < _SEEN_PRIOR:
        prior = torch.stack(
            (
                (ii + 0.5) / w,
                (jj + 0.5) / h,
                cell_anchor[..., 0] / w,
                cell_anchor[..., 1] / h,
            ),
            dim=-1,
        )
        d, _ = _region_box_deltas(boxes_raw, prior, cell_anchor, ii, jj, (w, h), _PRIOR_SCALE)
        delta[:, :, :4] = d.permute(0, 1, 4, 2, 3)
    return delta, cat


def _region_classfix(
    out: torch.Tensor,
    delta: torch.Tensor,
    over: torch.Tensor,
    best_t: torch.Tensor,
    truths: Truths,
    spec: RegionSpec,
) -> torch.Tensor:
    """``classfix`` > 0: where the best IoU is > thresh, class deltas toward the best truth's
    class (scaled by the objectness with ``classfix=2``), computed at every position and kept
    where ``over``. Returns float64 (class output sum, count) over those positions."""
    n, a, _, h, w = out.shape
    obj = out[:, :, 4].reshape(-1)
    cls = truths.classes.gather(1, best_t.reshape(n, -1)).reshape(-1).clamp(0, spec.classes - 1)
    o = position_rows(out)[:-1, 5:]
    scale = obj if spec.classfix == 2 else torch.ones_like(obj)
    d = _region_class_deltas(o, cls, spec.class_scale * scale, spec.focal_loss)
    d = d.view(n, a, h, w, -1).permute(0, 1, 4, 2, 3)
    delta[:, :, 5:] = torch.where(over.unsqueeze(2), d, delta[:, :, 5:])
    hit = over.reshape(-1)
    k = torch.arange(cls.numel(), device=out.device)
    picked = torch.where(hit, o[k, cls], torch.zeros_like(obj))
    return torch.stack((picked.sum().to(torch.float64), hit.sum().to(torch.float64)))


def _region_best_anchor(
    out: torch.Tensor, tb: torch.Tensor, bi: torch.Tensor, spec: RegionSpec
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The best anchor of each truth's cell by shape IoU (predicted shapes, or the anchors with
    ``bias_match``). Returns (cell i, cell j, best anchor, whether any IoU was > 0)."""
    a, h, w = out.shape[1], out.shape[3], out.shape[4]
    anchors = device_tensor(spec.anchors, torch.float32, out.device)
    size = device_tensor((float(w), float(h)), torch.float32, out.device)
    ci = (tb[:, 0] * w).to(torch.int64).clamp(0, w - 1)
    cj = (tb[:, 1] * h).to(torch.int64).clamp(0, h - 1)
    if spec.bias_match:
        shape = (anchors / size).expand(len(bi), a, 2)
    else:
        o_cell = out[bi, :, :4, cj, ci]  # (K, A, 4)
        shape = torch.exp(o_cell[..., 2:4]) * anchors / size
    ious = box_iou(
        torch.cat((torch.zeros_like(shape), shape), -1),
        torch.cat((torch.zeros_like(tb[:, 2:]), tb[:, 2:]), -1)[:, None, :],
    )
    ious = torch.nan_to_num(ious, nan=0.0)
    found = ious.amax(dim=1) > 0
    return ci, cj, torch.where(found, torch.argmax(ious, dim=1), 0), found


def _region_positives(
    out: torch.Tensor, delta: torch.Tensor, truths: Truths, spec: RegionSpec
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-truth part of ``forward_region_layer``: the best anchor of the truth's cell gets
    box, objectness and class deltas, all written with '=' (the last truth on a position wins).
    Returns (delta, float64 sums: count, IoU, recall, objectness, truth-class probability)."""
    n, a, e, h, w = out.shape
    t = truths.boxes.shape[1]
    device = out.device
    take = truths.valid(spec.classes, class_check_first=True).reshape(-1)
    bi = torch.arange(n, device=device).view(n, 1).expand(n, t).reshape(-1)
    tb = truths.boxes.reshape(-1, 4)
    ci, cj, best_n, found = _region_best_anchor(out, tb, bi, spec)
    # best_index stays 0 when no IoU is > 0: Darknet then writes at image 0, cell 0, anchor 0
    pb, pj, pi = (torch.where(found, v, 0) for v in (bi, cj, ci))
    o = out[pb, best_n, :, pj, pi]  # (K, 5+C)
    anchors = device_tensor(spec.anchors, torch.float32, device)
    box, iou = _region_box_deltas(
        o[:, :4], tb, anchors[best_n], ci.to(o), cj.to(o), (w, h), spec.coord_scale
    )
    o_obj = o[:, 4]
    target = iou if spec.rescore else torch.ones_like(iou)
    d_obj = spec.object_scale * (target - o_obj) * ((1 - o_obj) * o_obj)
    cls = _mapped(truths.classes.reshape(-1), spec.class_map)
    safe = torch.where(take, cls, torch.zeros_like(cls)).clamp(0, spec.classes - 1)
    scale = torch.full_like(o_obj, spec.class_scale)
    rows = torch.cat((box, d_obj[:, None], _region_class_deltas(o[:, 5:], safe, scale,
                                                                spec.focal_loss)), dim=1)
    k = torch.arange(safe.numel(), device=device)

    def total(x: torch.Tensor) -> torch.Tensor:
        return torch.where(take, x, torch.zeros_like(x)).sum().to(torch.float64)

    pairs = torch.stack((take.sum().to(torch.float64), total(iou),
                         (take & (iou > 0.5)).sum().to(torch.float64), total(o_obj),
                         total(o[k, 5 + safe])))  # fmt: skip
    if not t:
        return delta, pairs
    positions = position_rows(delta)
    spare = positions.shape[0] - 1
    pos = ((pb * a + best_n) * h + pj) * w + pi
    key = torch.where(take, pos, spare)
    last = _rounds(key.flip(0)).flip(0) == 0  # no later pair on the same position
    positions[torch.where(take & last, pos, spare)] = rows
    return from_position_rows(positions, out.shape), pairs
