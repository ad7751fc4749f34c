"""YOLOv8 head geometry: anchor points, the DFL read-out, distances <-> boxes, CIoU.

Every function is a small pure function on tensors reproducing one ultralytics 8.4.190 formula
(named in its docstring); darknetpy's own code, written from the formulas. Boxes here are corner
boxes ``(x1, y1, x2, y2)`` unless the name says ``xywh``; distances are ``(l, t, r, b)`` from an
anchor point, in grid units (multiply by the anchor's stride for input pixels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "anchor_points",
    "ciou",
    "dfl_expectation",
    "dist_to_xywh",
    "dist_to_xyxy",
    "iou",
    "xywh_to_xyxy",
    "xyxy_to_dist",
    "xyxy_to_xywh",
]

CIOU_EPS = 1e-7  # ultralytics.utils.metrics.bbox_iou's eps


def anchor_points(
    shapes: Sequence[tuple[int, int]],
    strides: Sequence[float],
    *,
    offset: float = 0.5,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres of every level and the stride of each (``utils/tal.py: make_anchors``).

    Args:
        shapes: ``(H, W)`` of each level.
        strides: input pixels per cell of each level.
        offset: added to the cell indices (0.5: the cell centre).

    Returns:
        points ``(A, 2)``: ``(x + offset, y + offset)`` in grid units, level by level, row-major
        within a level; strides ``(A, 1)``.
    """
    points, per_anchor = [], []
    for (h, w), s in zip(shapes, strides, strict=True):
        sx = torch.arange(w, dtype=dtype, device=device) + offset
        sy = torch.arange(h, dtype=dtype, device=device) + offset
        gy, gx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((gx, gy), -1).view(-1, 2))
        per_anchor.append(torch.full((h * w, 1), float(s), dtype=dtype, device=device))
    return torch.cat(points), torch.cat(per_anchor)


def dfl_expectation(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """The DFL read-out: softmax over the ``reg_max`` bins, then the expected bin index
    (``nn/modules/block.py: DFL.forward``, ``utils/loss.py: v8DetectionLoss.bbox_decode``).

    ``logits`` with ``reg_max`` bins along ``dim`` -> that axis removed: distances in grid units,
    in ``[0, reg_max - 1]``.
    """
    dim = dim % logits.dim()
    shape = [1] * logits.dim()
    shape[dim] = logits.shape[dim]
    bins = torch.arange(shape[dim], dtype=logits.dtype, device=logits.device).view(shape)
    return (logits.softmax(dim) * bins).sum(dim)


def dist_to_xyxy(dist: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``(l, t, r, b)`` from ``points`` -> ``(x1, y1, x2, y2)`` (``utils/tal.py: dist2bbox``,
    ``xywh=False``). Shapes ``(..., 4)`` and ``(..., 2)`` broadcast."""
    lt, rb = dist.chunk(2, -1)
    return torch.cat((points - lt, points + rb), -1)


def dist_to_xywh(dist: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``(l, t, r, b)`` from ``points`` -> ``(cx, cy, w, h)`` (``utils/tal.py: dist2bbox``,
    ``xywh=True``: centre as the mean of the corners, size as their difference)."""
    lt, rb = dist.chunk(2, -1)
    x1y1 = points - lt
    x2y2 = points + rb
    return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), -1)


def xyxy_to_dist(points: torch.Tensor, boxes: torch.Tensor, limit: float) -> torch.Tensor:
    """Corner boxes -> ``(l, t, r, b)`` from ``points``, clamped to ``[0, limit - 0.01]``
    (``utils/tal.py: bbox2dist`` with ``reg_max=limit``; the loss passes ``reg_max - 1``)."""
    x1y1, x2y2 = boxes.chunk(2, -1)
    return torch.cat((points - x1y1, x2y2 - points), -1).clamp(0, limit - 0.01)


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)`` (``utils/ops.py: xywh2xyxy``)."""
    xy, wh = boxes[..., :2], boxes[..., 2:] / 2
    return torch.cat((xy - wh, xy + wh), -1)


def xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """``(x1, y1, x2, y2)`` -> ``(cx, cy, w, h)`` (``utils/ops.py: xyxy2xywh``)."""
    x1y1, x2y2 = boxes[..., :2], boxes[..., 2:]
    return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), -1)


def iou(a: torch.Tensor, b: torch.Tensor, eps: float = CIOU_EPS) -> torch.Tensor:
    """Plain IoU of corner boxes (``utils/metrics.py: bbox_iou(xywh=False)``, its eps placement)."""
    wa, ha = a[..., 2] - a[..., 0], a[..., 3] - a[..., 1] + eps
    wb, hb = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1] + eps
    inter = (a[..., 2].minimum(b[..., 2]) - a[..., 0].maximum(b[..., 0])).clamp(0) * (
        a[..., 3].minimum(b[..., 3]) - a[..., 1].maximum(b[..., 1])
    ).clamp(0)
    return inter / (wa * ha + wb * hb - inter + eps)


def ciou(a: torch.Tensor, b: torch.Tensor, eps: float = CIOU_EPS) -> torch.Tensor:
    """Complete IoU of corner boxes ``a`` and ``b`` (``(..., 4)``, broadcast) -> ``(...)``
    (``utils/metrics.py: bbox_iou(xywh=False, CIoU=True)``).

    Kept as ultralytics computes it: ``eps`` is added to both heights (not the widths) and to the
    union and the enclosing diagonal; the aspect weight ``alpha = v / (1 - iou + v + eps)`` is a
    constant for autograd (no gradient flows through it).
    """
    ax1, ay1, ax2, ay2 = a.unbind(-1)
    bx1, by1, bx2, by2 = b.unbind(-1)
    wa, ha = ax2 - ax1, ay2 - ay1 + eps
    wb, hb = bx2 - bx1, by2 - by1 + eps
    inter = (ax2.minimum(bx2) - ax1.maximum(bx1)).clamp(0) * (
        ay2.minimum(by2) - ay1.maximum(by1)
    ).clamp(0)
    union = wa * ha + wb * hb - inter + eps
    iou = inter / union
    cw = ax2.maximum(bx2) - ax1.minimum(bx1)
    ch = ay2.maximum(by2) - ay1.minimum(by1)
    c2 = cw.pow(2) + ch.pow(2) + eps
    rho2 = ((bx1 + bx2 - ax1 - ax2).pow(2) + (by1 + by2 - ay1 - ay2).pow(2)) / 4
    v = (4 / math.pi**2) * ((wb / hb).atan() - (wa / ha).atan()).pow(2)
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return iou - (rho2 / c2 + v * alpha)
