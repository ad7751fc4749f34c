"""Darknet's ``[region]`` (YOLOv2) loss: ``region_layer.c: forward_region_layer`` in training mode.

The delta is returned in the layout of the layer *input* (channel-major), which is what Darknet
back-propagates (``[region]`` flattens its output to cell-major order and flattens the delta
back). Not supported: ``tree=`` (softmax trees, YOLO9000) and ``coords`` other than 4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...boxes import box_iou
from ..records import HeadLoss, HeadStats
from .assign import Truths, _mapped, _negative_rows, _rounds, best_truth_ious
from .deltas import _region_box_deltas, _region_boxes, _region_class_deltas
from .specs import RegionSpec

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


@dataclass
class _RegionAcc:
    """The statistics ``forward_region_layer`` prints (its locals ``avg_iou``, ``recall``,
    ``avg_obj``, ``avg_cat``, ``count``, ``class_count``)."""

    count: int = 0
    iou: float = 0.0
    recall: int = 0
    obj: float = 0.0
    cat: float = 0.0
    class_count: int = 0


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
    acc.cat += cat[0]
    acc.class_count += cat[1]
    delta = delta.view(z.shape)
    cost = float(torch.sum(delta * delta, dtype=torch.float64))
    stats = _region_stats(acc, cost, float(out[:, :, 4].mean()), index, n)
    return HeadLoss(delta, torch.tensor(cost, dtype=torch.float64), stats)


def _region_stats(acc: _RegionAcc, cost: float, no_obj: float, index: int, batch: int) -> HeadStats:
    """The end of ``forward_region_layer``: the printed line (NaN averages without truths)."""
    count, nan = acc.count, float("nan")

    def per(x: float, k: int = count) -> float:
        return x / k if k else nan

    line = (
        f"Region Avg IOU: {per(acc.iou):f}, Class: {per(acc.cat, acc.class_count):f}, "
        f"Obj: {per(acc.obj):f}, No Obj: {no_obj:f}, Avg Recall: {per(acc.recall):f},  "
        f"count: {count}"
    )
    return HeadStats(
        layer=index,
        kind="region",
        cost=cost,
        count=count,
        avg_iou=per(acc.iou),
        total_loss=cost / batch,
        avg_obj=per(acc.obj),
        avg_anyobj=no_obj,
        avg_cat=per(acc.cat, acc.class_count),
        recall50=per(acc.recall),
        line=line,
    )


def _region_negatives(
    out: torch.Tensor, truths: Truths, spec: RegionSpec, seen: int
) -> tuple[torch.Tensor, tuple[float, int]]:
    """The per-cell part of ``forward_region_layer``: no-object deltas (through σ'), zeroed
    where the best IoU with a truth is > thresh (``classfix`` variants), and the early-training
    pull of every box toward its anchor. Returns (delta, (class output sum, class count))."""
    n, a, _, h, w = out.shape
    device = out.device
    anchors = torch.tensor(spec.anchors, dtype=torch.float32, device=device)
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
    cat: tuple[float, int] = (0.0, 0)
    if spec.classfix == -1:
        delta[:, :, 4] = spec.noobject_scale * ((best_iou - obj) * grad)
    else:
        over = best_iou > spec.thresh
        negative = spec.noobject_scale * ((0 - obj) * grad)
        delta[:, :, 4] = torch.where(over, torch.zeros_like(obj), negative)
        if spec.classfix > 0 and bool(over.any()):
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
) -> tuple[float, int]:
    """``classfix`` > 0: where the best IoU is > thresh, class deltas toward the best truth's
    class (scaled by the objectness with ``classfix=2``). Returns (class output sum, count)."""
    b, s, j, i = torch.nonzero(over, as_tuple=True)
    obj = out[:, :, 4]
    cls = truths.classes.to(out.device)[b, best_t[b, s, j, i]].clamp(0, spec.classes - 1)
    o = out[b, s, 5:, j, i]
    scale = torch.full_like(cls, 1, dtype=obj.dtype)
    if spec.classfix == 2:
        scale = obj[b, s, j, i]
    delta[b, s, 5:, j, i] = _region_class_deltas(o, cls, spec.class_scale * scale, spec.focal_loss)
    return float(o[torch.arange(cls.numel(), device=out.device), cls].sum()), int(b.numel())


def _region_best_anchor(
    out: torch.Tensor,
    truths: Truths,
    bi: torch.Tensor,
    ti: torch.Tensor,
    spec: RegionSpec,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The best anchor of each truth's cell by shape IoU (predicted shapes, or the anchors with
    ``bias_match``). Returns (truth boxes (K, 4), cell i, cell j, best anchor, whether any IoU
    was > 0)."""
    a, h, w = out.shape[1], out.shape[3], out.shape[4]
    device = out.device
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
    return tb, ci, cj, torch.where(found, torch.argmax(ious, dim=1), 0), found


def _region_positives(
    out: torch.Tensor, delta: torch.Tensor, truths: Truths, spec: RegionSpec
) -> _RegionAcc:
    """The per-truth part of ``forward_region_layer``: the best anchor of the truth's cell gets
    box, objectness and class deltas, all written with '=' (the last truth on a position
    wins)."""
    a, h, w = out.shape[1], out.shape[3], out.shape[4]
    device = out.device
    bi, ti = torch.nonzero(truths.valid(spec.classes, class_check_first=True), as_tuple=True)
    if bi.numel() == 0:
        return _RegionAcc()
    tb, ci, cj, best_n, found = _region_best_anchor(out, truths, bi, ti, spec)
    # best_index stays 0 when no IoU is > 0: Darknet then writes at image 0, cell 0, anchor 0
    pb, pj, pi = (torch.where(found, v, 0) for v in (bi.to(device), cj, ci))
    o = out[pb, best_n, :, pj, pi]  # (K, 5+C)
    anchors = torch.tensor(spec.anchors, dtype=torch.float32, device=device)
    box, iou = _region_box_deltas(
        o[:, :4], tb, anchors[best_n], ci.to(o), cj.to(o), (w, h), spec.coord_scale
    )
    o_obj = o[:, 4]
    target = iou if spec.rescore else torch.ones_like(iou)
    d_obj = spec.object_scale * (target - o_obj) * ((1 - o_obj) * o_obj)
    cls = _mapped(truths.classes[bi, ti], spec.class_map).to(device)
    scale = torch.full_like(o_obj, spec.class_scale)
    rows = torch.cat(
        (
            box,
            d_obj[:, None],
            _region_class_deltas(o[:, 5:], cls, scale, spec.focal_loss),
        ),
        dim=1,
    )
    rank = _rounds((((pb * a + best_n) * h + pj) * w + pi).cpu()).to(device)
    for r in range(int(rank.max()) + 1):
        sel = rank == r
        delta[pb[sel], best_n[sel], :, pj[sel], pi[sel]] = rows[sel]
    k = int(bi.numel())
    return _RegionAcc(
        count=k,
        iou=float(iou.sum()),
        recall=int((iou > 0.5).sum()),
        obj=float(o_obj.sum()),
        cat=float(o[torch.arange(k, device=device), 5 + cls].sum()),
        class_count=k,
    )
