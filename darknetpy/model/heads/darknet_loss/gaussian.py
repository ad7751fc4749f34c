"""Darknet's ``[Gaussian_yolo]`` loss: ``gaussian_yolo_layer.c: forward_gaussian_yolo_layer`` in
training mode (step A over every cell, ``truth_thresh``, step B over the assignments, then
``averages_gaussian_yolo_deltas`` at every position, unconditionally)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..records import HeadLoss, HeadStats
from .assign import (
    CellFn,
    Truths,
    _Assignments,
    _mapped,
    _negative_rows,
    _rounds,
    best_truth_ious,
    yolo_assignments,
)
from .deltas import _gaussian_boxes, _gaussian_class_deltas, _mult, gaussian_box_deltas
from .specs import YoloSpec
from .yolo import scale_x_y_args

_CLASS_MATCH_THRESH = 0.25  # compare_gaussian_yolo_class(..., 0.25f)


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


def _gaussian_cells(point: str) -> CellFn:
    """The truth's cell (i, j) of step B: the cell of its ``yolo_point``."""

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


@dataclass(frozen=True)
class _StepB:
    """Step B's statistics (the locals of ``forward_gaussian_yolo_layer``)."""

    count: int = 0
    tot_iou: float = 0.0
    recall50: int = 0
    recall75: int = 0
    avg_obj: float = 0.0
    avg_cat: float = 0.0


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
    out = gaussian_yolo_activate(z, spec).view(n, len(spec.mask), 9 + spec.classes, h, w)
    truths = Truths.from_tensor(truth, spec.max_boxes, batch=n, index=index)
    delta = _gaussian_negatives(out, truths, spec, input_size)
    acc = _gaussian_positives(out, delta, truths, spec, input_size)
    _average_gaussian_deltas(delta)
    loss, stats = _gaussian_cost(delta, out[:, :, 8], acc, index)
    return HeadLoss(delta.view(z.shape), torch.tensor(loss, dtype=torch.float64), stats)


def _slot_anchors(out: torch.Tensor, spec: YoloSpec) -> torch.Tensor:
    """(N, A, H, W, 2) the anchor (pixels) of every position's slot."""
    n, a, _, h, w = out.shape
    anchors = torch.tensor(spec.anchors, dtype=torch.float32, device=out.device)
    mask = torch.tensor(spec.mask, device=out.device)
    return anchors[mask].view(1, a, 1, 1, 2).expand(n, a, h, w, 2)


def _gaussian_negatives(
    out: torch.Tensor, truths: Truths, spec: YoloSpec, input_size: tuple[int, int]
) -> torch.Tensor:
    """Step A at every cell and anchor slot: the objectness delta toward 0, ignored (or smoothed)
    where the best IoU with a truth is > ignore_thresh and some class prob is > 0.25, and the
    ``truth_thresh`` positives. Rows with a negative class take part (the loop only skips class
    >= classes)."""
    n, a, _, h, w = out.shape
    c, device = spec.classes, out.device
    slot_anchor = _slot_anchors(out, spec)
    ii = torch.arange(w, device=device, dtype=torch.float32).view(1, 1, 1, w).expand(n, a, h, w)
    jj = torch.arange(h, device=device, dtype=torch.float32).view(1, 1, h, 1).expand(n, a, h, w)
    o_cells = out[:, :, :8].permute(0, 1, 3, 4, 2)
    pred = _gaussian_boxes(o_cells, slot_anchor, ii, jj, (w, h), input_size, spec.yolo_point)
    valid = truths.valid(c, class_check_first=True) | _negative_rows(truths, c)
    best_iou, best_t = best_truth_ious(pred.reshape(n, -1, 4), truths.boxes, valid)
    best_iou, best_t = best_iou.view(n, a, h, w), best_t.view(n, a, h, w)
    class_match = (out[:, :, 9:] > _CLASS_MATCH_THRESH).any(dim=2)
    best_match = torch.where(class_match, best_iou, torch.zeros_like(best_iou))
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
        positive = torch.nonzero(best_iou > spec.truth_thresh, as_tuple=True)
        t = best_t[positive]
        _gaussian_truth_thresh(
            out, delta, positive, best_iou[positive], t, truths, spec, input_size
        )
    return delta


def _gaussian_truth_thresh(
    out: torch.Tensor,
    delta: torch.Tensor,
    where: tuple[torch.Tensor, ...],
    iou: torch.Tensor,
    t: torch.Tensor,
    truths: Truths,
    spec: YoloSpec,
    input_size: tuple[int, int],
) -> None:
    """Step A, ``best_iou > truth_thresh`` at positions ``where`` (b, s, j, i): the position
    becomes a positive for its best truth ``t``."""
    b, s, j, i = where
    h, w = out.shape[-2:]
    device = out.device
    cls = _mapped(truths.classes, spec.class_map).to(device)[b, t].clamp(0, spec.classes - 1)
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
        _slot_anchors(out, spec)[b, s, j, i],
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


def _gaussian_positives(
    out: torch.Tensor,
    delta: torch.Tensor,
    truths: Truths,
    spec: YoloSpec,
    input_size: tuple[int, int],
) -> _StepB:
    """Step B: every (truth, anchor) assignment, the truth's cell taken at its ``yolo_point``
    and no class check, applied round by round in Darknet's order."""
    h, w = out.shape[-2:]
    valid = truths.valid(spec.classes, class_check_first=False, any_class=True)
    cells = _gaussian_cells(spec.yolo_point)
    asg = yolo_assignments(truths, valid, spec, (w, h), input_size, cell_of=cells)
    asg = asg.to(out.device)
    if not asg.b.numel():
        return _StepB()
    mult = _mult(spec, asg.cls, out.dtype)
    o_all = out[asg.b, asg.slot, :, asg.j, asg.i]
    anchors = torch.tensor(spec.anchors, dtype=torch.float32, device=out.device)
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
    _apply_gaussian_rounds(delta, asg, o_all, box, mult, spec)
    k = torch.arange(asg.cls.numel(), device=out.device)
    inside = (asg.cls >= 0) & (asg.cls < spec.classes)
    return _StepB(
        count=int(iou.numel()),
        tot_iou=float(iou.sum()),
        recall50=int((iou > 0.5).sum()),
        recall75=int((iou > 0.75).sum()),
        avg_obj=float(o_all[:, 8].sum()),
        avg_cat=float(o_all[k[inside], 9 + asg.cls[inside]].sum()),
    )


def _apply_gaussian_rounds(
    delta: torch.Tensor,
    asg: _Assignments,
    o_all: torch.Tensor,
    box: torch.Tensor,
    mult: torch.Tensor,
    spec: YoloSpec,
) -> None:
    """Step B's writes: box deltas added, objectness and class deltas set, one round of distinct
    positions at a time."""
    _, a, _, h, w = delta.shape
    rank = _rounds((((asg.b * a + asg.slot) * h + asg.j) * w + asg.i).cpu()).to(delta.device)
    for r in range(int(rank.max()) + 1):
        sel = rank == r
        b, s, i, j = asg.b[sel], asg.slot[sel], asg.i[sel], asg.j[sel]
        cur = delta[b, s, :, j, i]
        o = o_all[sel]
        cur[:, :8] = cur[:, :8] + box[sel].to(cur)
        cur[:, 8] = mult[sel] * spec.obj_normalizer * (1 - o[:, 8])
        cur[:, 9:] = _gaussian_class_deltas(cur[:, 9:], o[:, 9:], asg.cls[sel], spec)
        delta[b, s, :, j, i] = cur


def _average_gaussian_deltas(delta: torch.Tensor) -> None:
    """``averages_gaussian_yolo_deltas``: box deltas divided by the positive class labels of the
    position, at every position (in place)."""
    labels = (delta[:, :, 9:] > 0).sum(dim=2)
    delta[:, :, :8] = delta[:, :, :8] / torch.where(
        labels > 0, labels, torch.ones_like(labels)
    ).unsqueeze(2).to(delta)


def _gaussian_cost(
    delta: torch.Tensor, obj: torch.Tensor, acc: _StepB, index: int
) -> tuple[float, HeadStats]:
    """The end of ``forward_gaussian_yolo_layer``: ``*l.cost`` and the printed line."""
    n = delta.shape[0]
    sq = delta.to(torch.float64) ** 2
    loss = float(sq.sum())
    class_loss = float(sq[:, :, 8:].sum())
    except_uc = loss - float(sq[:, :, 4:8].sum())
    count, nan = acc.count, float("nan")

    def per(x: float) -> float:
        return x / count if count else nan

    line = (
        f"Region {index} Avg IOU: {per(acc.tot_iou):f}, Class: {per(acc.avg_cat):f}, "
        f"Obj: {per(acc.avg_obj):f}, No Obj: {float(obj.mean()):f}, .5R: {per(acc.recall50):f}, "
        f".75R: {per(acc.recall75):f},  count: {count}, class_loss = {class_loss / n:.2f}, "
        f"iou_loss = {(except_uc - class_loss) / n:.2f}, "
        f"uc_loss = {(loss - except_uc) / n:.2f}, total_loss = {loss / n:.2f}"
    )
    return loss, HeadStats(
        layer=index,
        kind="Gaussian_yolo",
        cost=loss,
        count=count,
        avg_iou=per(acc.tot_iou),
        class_loss=class_loss / n,
        iou_loss=(except_uc - class_loss) / n,
        uc_loss=(loss - except_uc) / n,
        total_loss=loss / n,
        avg_obj=per(acc.avg_obj),
        avg_anyobj=float(obj.mean()),
        avg_cat=per(acc.avg_cat),
        recall50=per(acc.recall50),
        recall75=per(acc.recall75),
        line=line,
    )
