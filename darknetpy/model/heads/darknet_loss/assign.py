"""Which predictions each truth trains: truth rows, best anchors, best-truth IoUs, and the
``iou_thresh`` multi-anchor assignment of ``yolo_layer.c: process_batch``.

Truths that land on the same (image, anchor slot, cell) must be applied in Darknet's order (the
objectness and class rules depend on what an earlier truth wrote): :func:`_rounds` splits the
assignments into *rounds* of distinct positions, applied in order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ....errors import UsageError
from ...boxes import IouLoss, box_iou, box_iou_kind
from ..records import TruthRows
from .specs import YoloSpec, device_tensor


@dataclass(frozen=True)
class Truths:
    """Truth rows of a mini-batch on the loss's device: boxes (N, T, 4) float32, class ids (N, T)
    int64; ``host`` (N, T, 5+) float32 holds the same rows in host memory, so that the amount of
    work (truth slots in use, truths sharing a cell) is known without reading the device. T stops
    after the last row with x != 0 (no later row is ever used)."""

    boxes: torch.Tensor
    classes: torch.Tensor
    host: np.ndarray

    @classmethod
    def from_tensor(
        cls,
        truth: torch.Tensor | np.ndarray | TruthRows,
        max_boxes: int,
        *,
        batch: int,
        index: int = -1,
        device: torch.device | str | None = None,
    ) -> Truths:
        """Rows ``(x, y, w, h, class, ...)``; only the first ``max_boxes`` (``max=``) count.

        A :class:`TruthRows` is used as it is (rows already on ``device``). A tensor on an
        accelerator is read back once to size the work (the training loop passes TruthRows).

        Raises:
            UsageError: not a (batch, boxes, 5 or more) array for ``batch`` images.
        """
        if isinstance(truth, TruthRows):
            rows, host = truth.rows, np.asarray(truth.host)
        elif isinstance(truth, torch.Tensor):
            rows = truth.detach()
            host = (rows if rows.device.type == "cpu" else rows.cpu()).numpy()
        else:
            host = np.asarray(truth)
            rows = torch.from_numpy(np.array(host, dtype=np.float32))
        if host.ndim != 3 or host.shape[-1] < 5:
            raise UsageError(
                "truth must be (batch, boxes, 5 or more) rows x, y, w, h, class; got shape "
                f"{tuple(host.shape)}"
            )
        if host.shape[0] != batch:
            raise UsageError(
                f"layer {index}: truth has {host.shape[0]} images, the head input {batch}"
            )
        host = host[:, :max_boxes].astype(np.float32, copy=False)
        used = np.flatnonzero((host[..., 0] != 0).any(axis=0))
        t = int(used[-1]) + 1 if used.size else 0
        rows = rows[:, :t].to(device=device if device is not None else rows.device,
                              dtype=torch.float32, non_blocking=True)  # fmt: skip
        return cls(rows[..., :4], rows[..., 4].to(torch.int64), host[:, :t])  # C's (int) truncates

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

    def per_cell(self, w: int, h: int, point: str = "center") -> int:
        """The most rows (before an image's first x == 0) whose cell is the same, on a w x h grid
        (cells as :func:`_cells`, or at the Gaussian ``yolo_point``), from the host copy: a bound on
        the assignments that share one position. Rows with a non-finite x or y count everywhere."""
        x, y, bw, bh = (self.host[..., k] for k in range(4))
        if x.size == 0:
            return 0
        live = np.cumsum(x == 0, axis=1) == 0
        with np.errstate(invalid="ignore", over="ignore"):
            if point == "left_top":
                x, y = x - bw / np.float32(2), y - bh / np.float32(2)
            elif point == "right_bottom":
                x, y = x + bw / np.float32(2), y + bh / np.float32(2)
            fx, fy = x * np.float32(w), y * np.float32(h)
            finite = np.isfinite(fx) & np.isfinite(fy)
            i = np.clip(np.where(finite, fx, 0), -1, w).astype(np.int64).clip(0, w - 1)
            j = np.clip(np.where(finite, fy, 0), -1, h).astype(np.int64).clip(0, h - 1)
        n = x.shape[0]
        key = (np.arange(n)[:, None] * h + j) * w + i
        counts = np.bincount(key[live & finite], minlength=1)
        wild = (live & ~finite).sum(axis=1).max(initial=0)
        return int(counts.max(initial=0)) + int(wild)


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
    table = device_tensor(class_map, torch.int64, classes.device)
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
    idx = torch.arange(key.numel(), device=key.device)
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
    t = boxes.shape[1]
    best = pred.new_zeros((n, p))
    arg = torch.zeros((n, p), dtype=torch.int64, device=pred.device)
    if t == 0:
        return best, arg
    boxes = boxes.to(pred)
    valid = valid.to(pred.device)
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
    """Every candidate (truth, anchor) pair of a head, in Darknet's order (image, truth, best anchor
    first, then the others in anchor order), with ``take`` marking those it trains on: fixed
    shapes (K = images x truth slots x candidate anchors), so nothing waits for the device.

    ``slot``, ``cls`` of a pair not taken are arbitrary (``slot`` >= 0); ``rounds`` bounds how many
    taken pairs share one position (from the host copy of the truths)."""

    take: torch.Tensor
    b: torch.Tensor
    slot: torch.Tensor
    anchor: torch.Tensor
    i: torch.Tensor
    j: torch.Tensor
    truth: torch.Tensor  # (K, 4)
    cls: torch.Tensor  # class id, after `map`
    rounds: int

    def positions(self, a: int, h: int, w: int) -> torch.Tensor:
        """Each pair's flat position ``((b*A + slot)*H + j)*W + i``."""
        return ((self.b * a + self.slot) * h + self.j) * w + self.i


CellFn = Callable[[torch.Tensor, int, int], tuple[torch.Tensor, torch.Tensor]]


@functools.lru_cache(maxsize=256)
def _slots_of(mask: tuple[int, ...], total: int) -> tuple[int, ...]:
    """``int_index(l.mask, n, l.n)`` for every anchor: the first slot holding it, else -1."""
    slot_of = [-1] * total
    for s, m in reversed(list(enumerate(mask))):
        if 0 <= m < total:
            slot_of[m] = s
    return tuple(slot_of)


@functools.lru_cache(maxsize=256)
def _relative_anchors(anchors: tuple[tuple[float, float], ...], net_w: int, net_h: int,
                      device: torch.device) -> torch.Tensor:
    """(A, 2) anchors divided by the network input, in float32 (as ``process_batch``)."""
    pixels = torch.tensor(anchors, dtype=torch.float32)
    return torch.stack((pixels[:, 0] / net_w, pixels[:, 1] / net_h), dim=-1).to(device)


def yolo_assignments(
    truths: Truths,
    valid: torch.Tensor,
    spec: YoloSpec,
    grid: tuple[int, int],
    input_size: tuple[int, int],
    cell_of: CellFn = _cells,
    point: str = "center",
) -> _Assignments:
    """Step B of ``process_batch``: for each valid truth, the best anchor over all anchors (if in
    this head's mask) then every other mask anchor whose ``iou_thresh_kind`` IoU > iou_thresh.

    Computed on the truths' device from the truths alone (float32, as Darknet); pairs come in
    Darknet's order: image, truth, then best anchor before the others in anchor order.
    ``point``: the cell of a truth for the rounds bound (``cell_of``'s ``yolo_point``).
    """
    net_w, net_h = input_size
    n, t = valid.shape
    device = truths.boxes.device
    rel = _relative_anchors(spec.anchors, int(net_w), int(net_h), torch.device(device))
    total = rel.shape[0]
    best, _ = best_anchors(truths.boxes[..., 2:4], rel)
    slot_of = device_tensor(_slots_of(spec.mask, total), torch.int64, device)
    takes = [(valid & (slot_of[best] >= 0)).unsqueeze(-1)]
    anchors = [best.unsqueeze(-1)]
    if spec.iou_thresh < 1.0:
        shape = torch.cat((torch.zeros_like(truths.boxes[..., 2:4]), truths.boxes[..., 2:4]), -1)
        boxes = torch.cat((torch.zeros_like(rel), rel), dim=-1)
        kind = box_iou_kind(boxes, shape.unsqueeze(-2), IouLoss(spec.iou_thresh_kind))
        others = torch.arange(total, device=device)
        extra = (kind > spec.iou_thresh) & (others != best.unsqueeze(-1)) & (slot_of >= 0)
        takes.append(valid.unsqueeze(-1) & extra)
        anchors.append(others.expand(n, t, total))
    take = torch.cat(takes, dim=-1)
    s = take.shape[-1]
    anchor = torch.cat(anchors, dim=-1).reshape(-1)
    bi = torch.arange(n, device=device).view(n, 1, 1).expand(n, t, s).reshape(-1)
    ti = torch.arange(t, device=device).view(1, t, 1).expand(n, t, s).reshape(-1)
    cells_i, cells_j = cell_of(truths.boxes, *grid)
    return _Assignments(
        take=take.reshape(-1),
        b=bi,
        slot=slot_of[anchor].clamp(min=0),
        anchor=anchor,
        i=cells_i[bi, ti],
        j=cells_j[bi, ti],
        truth=truths.boxes[bi, ti],
        cls=_mapped(truths.classes[bi, ti], spec.class_map),
        rounds=truths.per_cell(*grid, point=point),
    )


def position_rows(delta: torch.Tensor) -> torch.Tensor:
    """(N, A, E, H, W) as (N*A*H*W + 1, E) rows by position, plus one spare row that the pairs not
    taken write to (dropped by :func:`from_position_rows`)."""
    n, a, e, h, w = delta.shape
    rows = delta.permute(0, 1, 3, 4, 2).reshape(n * a * h * w, e)
    return torch.cat((rows, rows.new_zeros((1, e))))


def from_position_rows(rows: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The inverse of :func:`position_rows` (contiguous, (N, A, E, H, W))."""
    n, a, e, h, w = shape
    return rows[:-1].view(n, a, h, w, e).permute(0, 1, 4, 2, 3).contiguous()
