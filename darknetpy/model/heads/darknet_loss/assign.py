"""Which predictions each truth trains: truth rows, best anchors, best-truth IoUs, and the
``iou_thresh`` multi-anchor assignment of ``yolo_layer.c: process_batch``.

Truths that land on the same (image, anchor slot, cell) must be applied in Darknet's order (the
objectness and class rules depend on what an earlier truth wrote): :func:`_rounds` splits the
assignments into *rounds* of distinct positions, applied in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ....errors import UsageError
from ...boxes import IouLoss, box_iou, box_iou_kind
from .specs import YoloSpec


@dataclass(frozen=True)
class Truths:
    """Truth rows of a mini-batch on the CPU: boxes (N, T, 4) float32, class ids (N, T) int64."""

    boxes: torch.Tensor
    classes: torch.Tensor

    @classmethod
    def from_tensor(
        cls,
        truth: torch.Tensor | np.ndarray,
        max_boxes: int,
        *,
        batch: int,
        index: int = -1,
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


def _negative_rows(truths: Truths, classes: int) -> torch.Tensor:
    """Rows with a negative class that step A of [region]/[Gaussian_yolo] still scores (their loop
    only skips class >= classes)."""
    stop = (truths.boxes[..., 0] == 0) & (truths.classes < classes)
    ended = torch.cumsum(stop.to(torch.int64), dim=1) > 0
    return ~ended & (truths.classes < 0)


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
    t_lo, t_hi = (
        boxes[..., :2] - boxes[..., 2:] / 2,
        boxes[..., :2] + boxes[..., 2:] / 2,
    )
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


def _slots_of(mask: tuple[int, ...], total: int) -> torch.Tensor:
    """``int_index(l.mask, n, l.n)`` for every anchor: the first slot holding it, else -1."""
    slot_of = torch.full((total,), -1, dtype=torch.int64)
    for s, m in reversed(list(enumerate(mask))):
        if 0 <= m < total:
            slot_of[m] = s
    return slot_of


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
    net_w, net_h = input_size
    n, t = valid.shape
    anchors = torch.tensor(spec.anchors, dtype=torch.float32)
    rel = torch.stack((anchors[:, 0] / net_w, anchors[:, 1] / net_h), dim=-1)
    total = rel.shape[0]
    best, _ = best_anchors(truths.boxes[..., 2:4], rel)
    slot_of = _slots_of(spec.mask, total)
    take = torch.zeros((n, t, 1 + total), dtype=torch.bool)
    anchor = torch.zeros((n, t, 1 + total), dtype=torch.int64)
    take[..., 0] = valid & (slot_of[best] >= 0)
    anchor[..., 0] = best
    if spec.iou_thresh < 1.0:
        shape = torch.cat((torch.zeros_like(truths.boxes[..., 2:4]), truths.boxes[..., 2:4]), -1)
        boxes = torch.cat((torch.zeros_like(rel), rel), dim=-1)
        kind = box_iou_kind(boxes, shape.unsqueeze(-2), IouLoss(spec.iou_thresh_kind))
        others = torch.arange(total)
        extra = (kind > spec.iou_thresh) & (others != best.unsqueeze(-1)) & (slot_of >= 0)
        take[..., 1:] = valid.unsqueeze(-1) & extra
        anchor[..., 1:] = others
    bi, ti, _ = torch.nonzero(take, as_tuple=True)
    chosen = anchor[take]
    cells_i, cells_j = cell_of(truths.boxes, *grid)
    return _Assignments(
        b=bi,
        slot=slot_of[chosen],
        anchor=chosen,
        i=cells_i[bi, ti],
        j=cells_j[bi, ti],
        truth=truths.boxes[bi, ti],
        cls=_mapped(truths.classes[bi, ti], spec.class_map),
    )
