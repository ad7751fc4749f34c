"""Darknet's ``[yolo]`` loss: ``yolo_layer.c: forward_yolo_layer`` in training mode.

Step A of ``process_batch`` scores every cell and anchor slot (objectness toward 0, the ignore
rule, ``truth_thresh``); step B every (truth, anchor) assignment of :func:`yolo_assignments`;
``averages_yolo_deltas`` then divides box deltas by the labels of a position (``iou_thresh`` < 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..records import HeadLoss, HeadStats, TruthRows
from ..yolo_box import exp_times_float, get_yolo_box
from .assign import (
    Truths,
    _Assignments,
    _mapped,
    _rounds,
    best_truth_ious,
    from_position_rows,
    position_rows,
    yolo_assignments,
)
from .deltas import _class_deltas, _mult, yolo_box_deltas
from .specs import YoloSpec, device_tensor

_CLASS_MATCH_THRESH = 0.25  # compare_yolo_class(..., 0.25f): a class prob above it allows ignoring


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
    out: torch.Tensor,
    anchors: torch.Tensor,
    new_coords: bool,
    input_size: tuple[int, int],
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
    box = get_yolo_box(out[:, :, 0], out[:, :, 1], out[:, :, 2], out[:, :, 3], ii, jj, aw, ah, (w, h),
                       (net_w, net_h), exp_times=exp_times_float, new_coords=new_coords)
    return torch.stack(box, dim=-1)


_STATS = ("count", "tot_iou", "tot_iou_loss", "tot_giou_loss", "recall50", "recall75", "avg_obj",
          "avg_cat")  # the locals of process_batch that the printed line reads


def _pair_stats(take: torch.Tensor, iou: torch.Tensor, giou: torch.Tensor, obj: torch.Tensor,
                cat: torch.Tensor) -> torch.Tensor:
    """:data:`_STATS` summed over the pairs taken, as a float64 tensor on their device (float32
    sums, as Darknet's accumulators)."""
    def total(x: torch.Tensor) -> torch.Tensor:
        return torch.where(take, x, torch.zeros_like(x)).sum().to(torch.float64)

    return torch.stack((take.sum().to(torch.float64), total(iou), total(1 - iou), total(1 - giou),
                        (take & (iou > 0.5)).sum().to(torch.float64),
                        (take & (iou > 0.75)).sum().to(torch.float64), total(obj), total(cat)))


def yolo_loss(
    z: torch.Tensor,
    truth: torch.Tensor | np.ndarray | TruthRows,
    spec: YoloSpec,
    *,
    input_size: tuple[int, int],
    index: int = -1,
) -> HeadLoss:
    """Darknet's ``forward_yolo_layer`` in training mode for one head.

    Nothing here reads the device: the cost stays a tensor and the printed figures
    (:class:`HeadStats`) are read when first looked at.

    Args:
        z: (N, A·(5+C), H, W) the tensor entering the [yolo] layer.
        truth: (N, T, 5+) rows x, y, w, h, class relative to the network input.
        input_size: the current network (width, height).
        index: the layer index (for the printed line).
    """
    n, _, h, w = z.shape
    a, c = len(spec.mask), spec.classes
    out = yolo_activate(z, spec).view(n, a, 5 + c, h, w)
    truths = Truths.from_tensor(truth, spec.max_boxes, batch=n, index=index, device=z.device)
    valid = truths.valid(c, class_check_first=False)
    delta = _yolo_negatives(out, truths, valid, spec, input_size)
    asg = yolo_assignments(truths, valid, spec, (w, h), input_size)
    delta, pairs = _yolo_positives(out, delta, asg, spec, input_size)
    if spec.iou_thresh < 1.0:
        _average_yolo_deltas(delta)
    anyobj = out[:, :, 4].sum().to(torch.float64)
    return _yolo_cost(delta, torch.cat((pairs, anyobj.view(1))), spec, index, n, z.shape)


def _average_yolo_deltas(delta: torch.Tensor) -> None:
    """``averages_yolo_deltas``: a position with an objectness delta and several positive class
    labels gets its box deltas divided by their number (in place)."""
    labels = (delta[:, :, 5:] > 0).sum(dim=2)
    div = torch.where((delta[:, :, 4] != 0) & (labels > 0), labels, torch.ones_like(labels))
    delta[:, :, :4] = delta[:, :, :4] / div.unsqueeze(2).to(delta)


def _masked_anchors(spec: YoloSpec, device: torch.device) -> torch.Tensor:
    """(A, 2) pixels: the anchor of each slot of this head (``l.biases[l.mask[n]]``)."""
    return device_tensor(tuple(spec.anchors[m] for m in spec.mask), torch.float32, device)


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
    has_truth = valid.any(dim=1).view(n, 1, 1, 1)
    obj = out[:, :, 4]
    out[:, :, 4] = torch.where(has_truth & ~torch.isfinite(obj), torch.zeros_like(obj), obj)
    obj = out[:, :, 4]
    pred = yolo_boxes(out, _masked_anchors(spec, out.device), spec.new_coords, input_size)
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
    if want_index and truths.boxes.shape[1]:
        delta = _yolo_truth_thresh(out, delta, best_iou, best_t, truths, spec, input_size)
    return delta


def _yolo_positives(
    out: torch.Tensor,
    delta: torch.Tensor,
    asg: _Assignments,
    spec: YoloSpec,
    input_size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step B of ``process_batch``: box, objectness and class deltas of every pair taken, applied
    round by round (``asg.rounds``, known on the host) so that positions hit by several truths see
    them in Darknet's order. Returns (delta, the :data:`_STATS` sums)."""
    _, a, e, h, w = out.shape
    cls = torch.where(asg.take, asg.cls, torch.zeros_like(asg.cls)).clamp(0, spec.classes - 1)
    mult = _mult(spec, asg.cls)
    o_all = out[asg.b, asg.slot, :, asg.j, asg.i]  # (K, 5+C)
    anchors = device_tensor(spec.anchors, torch.float32, out.device)
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
    k = torch.arange(len(cls), device=out.device)
    pairs = _pair_stats(asg.take, iou, giou, o_all[:, 4], o_all[k, 5 + cls])
    if not asg.rounds:
        return delta, pairs
    rows = position_rows(delta)
    spare = rows.shape[0] - 1
    pos = asg.positions(a, h, w)
    rank = _rounds(torch.where(asg.take, pos, spare))
    new_obj = mult * spec.obj_normalizer * (1 - o_all[:, 4])
    for r in range(asg.rounds):
        at = torch.where(asg.take & (rank == r), pos, spare)
        cur = rows[at]
        cur[:, :4] = cur[:, :4] + box.to(cur)  # accumulate
        if spec.objectness_smooth:
            cur[:, 4] = torch.where(cur[:, 4] == 0, new_obj, cur[:, 4])
        else:
            cur[:, 4] = new_obj
        cur[:, 5:] = _class_deltas(cur[:, 5:], o_all[:, 5:], cls, spec)
        rows[at] = cur
    return from_position_rows(rows, out.shape), pairs


def _yolo_truth_thresh(
    out: torch.Tensor,
    delta: torch.Tensor,
    best_iou: torch.Tensor,
    best_t: torch.Tensor,
    truths: Truths,
    spec: YoloSpec,
    input_size: tuple[int, int],
) -> torch.Tensor:
    """Step A, ``best_iou > truth_thresh``: the cell becomes a positive for its best truth
    (computed at every position, kept where the IoU is over the threshold)."""
    n, a, e, h, w = out.shape
    device = out.device
    t = best_t.reshape(n, -1)
    cls = _mapped(truths.classes.gather(1, t), spec.class_map).reshape(-1)
    truth = truths.boxes.gather(1, t.unsqueeze(-1).expand(-1, -1, 4)).reshape(-1, 4)
    safe = cls.clamp(0, spec.classes - 1)
    mult = _mult(spec, cls, out.dtype)
    iou = best_iou.reshape(-1)
    o = position_rows(out)[:-1]
    old = position_rows(delta)[:-1]
    cur = old.clone()
    target = iou * iou if spec.objectness_smooth else torch.ones_like(iou)
    cur[:, 4] = spec.obj_normalizer * (target - o[:, 4])
    cur[:, 5:] = _class_deltas(cur[:, 5:], o[:, 5:], safe, spec)
    k = torch.arange(cls.numel(), device=device)
    if spec.objectness_smooth:
        cur[k, 5 + safe] = mult * (iou * iou - o[k, 5 + safe])
    s = torch.arange(a, device=device).view(1, a, 1, 1).expand(n, a, h, w).reshape(-1)
    j = torch.arange(h, device=device).view(1, 1, h, 1).expand(n, a, h, w).reshape(-1)
    i = torch.arange(w, device=device).view(1, 1, 1, w).expand(n, a, h, w).reshape(-1)
    box, _, _ = yolo_box_deltas(
        o[:, :4],
        truth,
        _masked_anchors(spec, device)[s],
        i,
        j,
        (w, h),
        input_size,
        spec.iou_normalizer * mult,
        spec,
    )
    cur[:, :4] = cur[:, :4] + box.to(cur)
    hit = (best_iou > spec.truth_thresh).reshape(-1, 1)
    rows = torch.where(hit, cur, old)
    return rows.view(n, a, h, w, e).permute(0, 1, 4, 2, 3).contiguous()


def _yolo_cost(
    delta: torch.Tensor, sums: torch.Tensor, spec: YoloSpec, index: int, batch: int,
    shape: torch.Size,
) -> HeadLoss:
    """The end of ``forward_yolo_layer``: ``*l.cost`` (a device tensor) and the printed line
    (show_details), made from ``sums`` (:data:`_STATS` and the objectness sum) when read."""
    per_entry = torch.sum(delta * delta, dim=(0, 1, 3, 4), dtype=torch.float64)
    loss = per_entry.sum()
    class_loss = spec.obj_normalizer * per_entry[4:].sum()
    count = sums[0].clamp(min=1)
    cost = loss
    if spec.show_details and spec.iou_loss != "mse":
        tot = sums[3] if spec.iou_loss == "giou" else sums[2]
        cost = spec.iou_normalizer * (tot / count) + class_loss
    figures = torch.cat((torch.stack((loss, class_loss, cost)), sums))
    cells = max(delta[:, :, 4].numel(), 1)
    return HeadLoss(delta.view(shape), cost,
                    lambda: _yolo_stats(figures.tolist(), spec, index, batch, cells))


def _yolo_stats(figures: list[float], spec: YoloSpec, index: int, batch: int,
                cells: int) -> HeadStats:
    """The printed line and figures of ``forward_yolo_layer`` from the values read back."""
    loss, class_loss, cost, *rest = figures
    acc = dict(zip((*_STATS, "avg_anyobj"), rest))
    count = int(acc["count"]) or 1
    name = "mse" if spec.iou_loss == "mse" else ("giou" if spec.iou_loss == "giou" else "iou")
    head = (
        f"v3 ({name} loss, Normalizer: (iou: {spec.iou_normalizer:.2f}, obj: "
        f"{spec.obj_normalizer:.2f}, cls: {spec.cls_normalizer:.2f}) Region {index} Avg (IOU: "
        f"{acc['tot_iou'] / count:f}), count: {count}, "
    )
    common: dict[str, Any] = {
        "layer": index,
        "kind": "yolo",
        "count": count,
        "avg_iou": acc["tot_iou"] / count,
        "avg_obj": acc["avg_obj"] / count,
        "avg_cat": acc["avg_cat"] / count,
        "avg_anyobj": acc["avg_anyobj"] / cells,
        "recall50": acc["recall50"] / count,
        "recall75": acc["recall75"] / count,
    }
    if spec.show_details == 0:
        line = head + f"total_loss = {loss / batch:f} "
        return HeadStats(cost=loss, total_loss=loss / batch, line=line, **common)
    iou_loss = loss - class_loss
    line = head + (
        f"class_loss = {class_loss / batch:f}, iou_loss = {iou_loss / batch:f}, "
        f"total_loss = {loss / batch:f} "
    )
    return HeadStats(
        cost=cost,
        class_loss=class_loss / batch,
        iou_loss=iou_loss / batch,
        total_loss=loss / batch,
        line=line,
        **common,
    )
