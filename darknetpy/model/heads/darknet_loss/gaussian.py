"""Darknet's ``[Gaussian_yolo]`` loss: ``gaussian_yolo_layer.c: forward_gaussian_yolo_layer`` in
training mode (step A over every cell, ``truth_thresh``, step B over the assignments, then
``averages_gaussian_yolo_deltas`` at every position, unconditionally)."""

from __future__ import annotations

import numpy as np
import torch

from ..records import HeadLoss, HeadStats, TruthRows
from .assign import (
    CellFn,
    Truths,
    _Assignments,
    _mapped,
    _negative_rows,
    _rounds,
    best_truth_ious,
    from_position_rows,
    position_rows,
    yolo_assignments,
)
from .deltas import _gaussian_boxes, _gaussian_class_deltas, _mult, gaussian_box_deltas
from .specs import YoloSpec, device_tensor
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


def gaussian_yolo_loss(
    z: torch.Tensor,
    truth: torch.Tensor | np.ndarray | TruthRows,
    spec: YoloSpec,
    *,
    input_size: tuple[int, int],
    index: int = -1,
) -> HeadLoss:
    """Darknet's ``forward_gaussian_yolo_layer`` in training mode for one head (nothing here reads
    the device; the printed figures are read when first looked at)."""
    n, _, h, w = z.shape
    out = gaussian_yolo_activate(z, spec).view(n, len(spec.mask), 9 + spec.classes, h, w)
    truths = Truths.from_tensor(truth, spec.max_boxes, batch=n, index=index, device=z.device)
    delta = _gaussian_negatives(out, truths, spec, input_size)
    delta, pairs = _gaussian_positives(out, delta, truths, spec, input_size)
    _average_gaussian_deltas(delta)
    return _gaussian_cost(delta, out[:, :, 8], pairs, index, z.shape)


def _slot_anchors(out: torch.Tensor, spec: YoloSpec) -> torch.Tensor:
    """(N, A, H, W, 2) the anchor (pixels) of every position's slot."""
    n, a, _, h, w = out.shape
    anchors = device_tensor(tuple(spec.anchors[m] for m in spec.mask), torch.float32, out.device)
    return anchors.view(1, a, 1, 1, 2).expand(n, a, h, w, 2)


def _gaussian_negatives(
    out: torch.Tensor, truths: Truths, spec: YoloSpec, input_size: tuple[int, int]
) -> torch.Tensor:
    """Step A at every cell and anchor slot: the objectness delta toward 0, ignored (or smoothed)
    where the best IoU with a truth is > ignore_thresh and some class prob is > 0.25, and the
    ``truth_thresh`` positives. Rows with a negative class take part (the loop only skips class
    >= classes)."""
    n, a, e, h, w = out.shape
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
    if not truths.boxes.shape[1]:
        return delta
    t = best_t.reshape(n, -1)
    classes = _mapped(truths.classes, spec.class_map).gather(1, t).view(n, a, h, w)
    if spec.objectness_smooth:
        d_obj = spec.obj_normalizer * (best_match * best_match - obj)
        delta[:, :, 8] = torch.where(ignore, d_obj, delta[:, :, 8])
        rows = position_rows(delta)[:-1]
        cls = classes.reshape(-1).clamp(0, c - 1)
        smooth = _gaussian_class_deltas(rows[:, 9:], position_rows(out)[:-1, 9:], cls, spec)
        smooth = smooth.view(n, a, h, w, c).permute(0, 1, 4, 2, 3)
        delta[:, :, 9:] = torch.where(ignore.unsqueeze(2), smooth, delta[:, :, 9:])
    if spec.truth_thresh < 1.0:
        delta = _gaussian_truth_thresh(out, delta, best_iou, classes, best_t, truths, spec,
                                       input_size)  # fmt: skip
    return delta


def _gaussian_truth_thresh(
    out: torch.Tensor,
    delta: torch.Tensor,
    best_iou: torch.Tensor,
    classes: torch.Tensor,
    best_t: torch.Tensor,
    truths: Truths,
    spec: YoloSpec,
    input_size: tuple[int, int],
) -> torch.Tensor:
    """Step A, ``best_iou > truth_thresh``: the position becomes a positive for its best truth
    (computed at every position, kept where the IoU is over the threshold)."""
    n, a, e, h, w = out.shape
    device = out.device
    cls = classes.reshape(-1).clamp(0, spec.classes - 1)
    mult = _mult(spec, cls, out.dtype)
    iou = best_iou.reshape(-1)
    t = best_t.reshape(n, -1)
    truth_b = truths.boxes.gather(1, t.unsqueeze(-1).expand(-1, -1, 4)).reshape(-1, 4)
    o = position_rows(out)[:-1]
    old = position_rows(delta)[:-1]
    cur = old.clone()
    cur[:, 8] = spec.obj_normalizer * ((iou * iou if spec.objectness_smooth else 1) - o[:, 8])
    cur[:, 9:] = _gaussian_class_deltas(cur[:, 9:], o[:, 9:], cls, spec)
    k = torch.arange(cls.numel(), device=device)
    if spec.objectness_smooth:
        cur[k, 9 + cls] = mult * (iou * iou - o[k, 9 + cls])
    j = torch.arange(h, device=device).view(1, 1, h, 1).expand(n, a, h, w).reshape(-1)
    i = torch.arange(w, device=device).view(1, 1, 1, w).expand(n, a, h, w).reshape(-1)
    d, _ = gaussian_box_deltas(
        o[:, :8],
        truth_b,
        _slot_anchors(out, spec).reshape(-1, 2),
        i,
        j,
        (w, h),
        input_size,
        2 - truth_b[:, 2] * truth_b[:, 3],
        spec.iou_normalizer * mult,
        spec,
    )
    cur[:, :8] = cur[:, :8] + d.to(cur)
    rows = torch.where((best_iou > spec.truth_thresh).reshape(-1, 1), cur, old)
    return rows.view(n, a, h, w, e).permute(0, 1, 4, 2, 3).contiguous()


def _gaussian_positives(
    out: torch.Tensor,
    delta: torch.Tensor,
    truths: Truths,
    spec: YoloSpec,
    input_size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step B: every (truth, anchor) pair, the truth's cell taken at its ``yolo_point`` and no
    class check, applied round by round in Darknet's order. Returns (delta, the sums count,
    IoU, recall .5, recall .75, objectness, truth-class probability as float64)."""
    _, a, e, h, w = out.shape
    valid = truths.valid(spec.classes, class_check_first=False, any_class=True)
    cells = _gaussian_cells(spec.yolo_point)
    asg = yolo_assignments(truths, valid, spec, (w, h), input_size, cell_of=cells,
                           point=spec.yolo_point)  # fmt: skip
    take = asg.take
    mult = _mult(spec, asg.cls, out.dtype)
    o_all = out[asg.b, asg.slot, :, asg.j, asg.i]
    anchors = device_tensor(spec.anchors, torch.float32, out.device)
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
    inside = (asg.cls >= 0) & (asg.cls < spec.classes)
    k = torch.arange(asg.cls.numel(), device=out.device)
    cat = o_all[k, 9 + asg.cls.clamp(0, spec.classes - 1)]

    def total(x: torch.Tensor, where: torch.Tensor = take) -> torch.Tensor:
        return torch.where(where, x, torch.zeros_like(x)).sum().to(torch.float64)

    pairs = torch.stack((take.sum().to(torch.float64), total(iou),
                         (take & (iou > 0.5)).sum().to(torch.float64),
                         (take & (iou > 0.75)).sum().to(torch.float64), total(o_all[:, 8]),
                         total(cat, take & inside)))  # fmt: skip
    if not asg.rounds:
        return delta, pairs
    return _apply_gaussian_rounds(delta, asg, o_all, box, mult, spec), pairs


def _apply_gaussian_rounds(
    delta: torch.Tensor,
    asg: _Assignments,
    o_all: torch.Tensor,
    box: torch.Tensor,
    mult: torch.Tensor,
    spec: YoloSpec,
) -> torch.Tensor:
    """Step B's writes: box deltas added, objectness and class deltas set, one round of distinct
    positions at a time (``asg.rounds`` rounds, known on the host)."""
    _, a, _, h, w = delta.shape
    rows = position_rows(delta)
    spare = rows.shape[0] - 1
    pos = asg.positions(a, h, w)
    rank = _rounds(torch.where(asg.take, pos, spare))
    new_obj = mult * spec.obj_normalizer * (1 - o_all[:, 8])
    for r in range(asg.rounds):
        at = torch.where(asg.take & (rank == r), pos, spare)
        cur = rows[at]
        cur[:, :8] = cur[:, :8] + box.to(cur)
        cur[:, 8] = new_obj
        cur[:, 9:] = _gaussian_class_deltas(cur[:, 9:], o_all[:, 9:], asg.cls, spec)
        rows[at] = cur
    return from_position_rows(rows, delta.shape)


def _average_gaussian_deltas(delta: torch.Tensor) -> None:
    """``averages_gaussian_yolo_deltas``: box deltas divided by the positive class labels of the
    position, at every position (in place)."""
    labels = (delta[:, :, 9:] > 0).sum(dim=2)
    delta[:, :, :8] = delta[:, :, :8] / torch.where(
        labels > 0, labels, torch.ones_like(labels)
    ).unsqueeze(2).to(delta)


def _gaussian_cost(
    delta: torch.Tensor, obj: torch.Tensor, pairs: torch.Tensor, index: int, shape: torch.Size
) -> HeadLoss:
    """The end of ``forward_gaussian_yolo_layer``: ``*l.cost`` (a device tensor) and the printed
    line, made when read."""
    sq = delta.to(torch.float64) ** 2
    loss = sq.sum()
    figures = torch.cat((torch.stack((loss, sq[:, :, 8:].sum(), sq[:, :, 4:8].sum(),
                                      obj.mean().to(torch.float64))), pairs))  # fmt: skip
    return HeadLoss(delta.view(shape), loss,
                    lambda: _gaussian_stats(figures.tolist(), index, delta.shape[0]))


def _gaussian_stats(figures: list[float], index: int, n: int) -> HeadStats:
    """The printed line and figures of ``forward_gaussian_yolo_layer`` from the values read."""
    loss, class_loss, uc, no_obj, count_f, tot_iou, recall50, recall75, avg_obj, avg_cat = figures
    except_uc = loss - uc
    count, nan = int(count_f), float("nan")

    def per(x: float) -> float:
        return x / count if count else nan

    line = (
        f"Region {index} Avg IOU: {per(tot_iou):f}, Class: {per(avg_cat):f}, "
        f"Obj: {per(avg_obj):f}, No Obj: {no_obj:f}, .5R: {per(recall50):f}, "
        f".75R: {per(recall75):f},  count: {count}, class_loss = {class_loss / n:.2f}, "
        f"iou_loss = {(except_uc - class_loss) / n:.2f}, "
        f"uc_loss = {(loss - except_uc) / n:.2f}, total_loss = {loss / n:.2f}"
    )
    return HeadStats(
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
        avg_anyobj=no_obj,
        avg_cat=per(avg_cat),
        recall50=per(recall50),
        recall75=per(recall75),
        line=line,
    )
