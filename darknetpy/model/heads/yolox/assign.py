"""SimOTA label assignment, as Megvii's ``yolox/models/yolo_head.py`` at its HEAD.

``YOLOXHead.get_assignments`` runs per image under ``torch.no_grad`` in float32:

1. the geometry prior (``get_geometry_constraint``): an anchor is a candidate for a truth when
   its cell centre lies strictly inside the square of half-side ``1.5 * stride`` around the
   truth's centre (the HEAD has no "centre inside the box" test any more); only anchors that are
   candidates for some truth are scored;
2. the cost (truth x candidate): class BCE of ``sqrt(sigmoid(cls) * sigmoid(obj))`` against the
   one-hot class, summed over classes, ``+ 3 * -log(iou + 1e-8)``, ``+ 1e6`` outside the prior;
3. ``simota_matching``: each truth takes its ``k`` cheapest candidates, ``k`` the integer part of
   the sum of its 10 best IoUs (at least 1); an anchor taken by several truths keeps the one of
   least cost (over all truths, as the reference's ``torch.min(cost[:, multiple], dim=0)``).

The functions here are the same steps on tensors, without the per-truth Python loop: truths are
the rows of a padded ``(T, 4)`` block with a ``valid`` mask (padding rows never match).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CENTER_RADIUS",
    "Assignment",
    "assign_image",
    "center_prior",
    "dynamic_ks",
    "pairwise_cost",
    "pairwise_iou_cxcywh",
    "simota_matching",
]

CENTER_RADIUS = 1.5  # get_geometry_constraint's center_radius, in strides
IOU_COST_WEIGHT = 3.0
OUT_OF_PRIOR_COST = 1e6
TOPK_IOUS = 10  # simota_matching's n_candidate_k


class Assignment(NamedTuple):
    """SimOTA's result for one image, one entry per anchor (``A``).

    ``fg``: the anchor is foreground; ``gt_index``: the truth row it is matched to (0 where not
    fg); ``iou``: the IoU of its (detached) predicted box with that truth (0 where not fg).
    """

    fg: Tensor
    gt_index: Tensor
    iou: Tensor


def pairwise_iou_cxcywh(a: Tensor, b: Tensor) -> Tensor:
    """IoU ``(Ta, Tb)`` of (cx, cy, w, h) boxes, as ``yolox/utils/boxes.py: bboxes_iou(a, b,
    xyxy=False)`` (no epsilon: a zero union gives NaN, as there)."""
    tl = torch.max(a[:, None, :2] - a[:, None, 2:] / 2, b[:, :2] - b[:, 2:] / 2)
    br = torch.min(a[:, None, :2] + a[:, None, 2:] / 2, b[:, :2] + b[:, 2:] / 2)
    area_a = torch.prod(a[:, 2:], 1)
    area_b = torch.prod(b[:, 2:], 1)
    en = (tl < br).type(tl.dtype).prod(dim=2)
    area_i = torch.prod(br - tl, 2) * en
    return area_i / (area_a[:, None] + area_b - area_i)


def center_prior(
    gt: Tensor, grid: Tensor, stride: Tensor, radius: float = CENTER_RADIUS
) -> Tensor:
    """``(T, A)``: anchor centre ``(grid + 0.5) * stride`` strictly within ``radius * stride`` of
    each truth centre on both axes (``YOLOXHead.get_geometry_constraint``, same arithmetic)."""
    x_c = ((grid[:, 0] + 0.5) * stride)[None]
    y_c = ((grid[:, 1] + 0.5) * stride)[None]
    dist = stride[None] * radius
    c_l = x_c - (gt[:, 0:1] - dist)
    c_r = (gt[:, 0:1] + dist) - x_c
    c_t = y_c - (gt[:, 1:2] - dist)
    c_b = (gt[:, 1:2] + dist) - y_c
    return torch.stack([c_l, c_t, c_r, c_b], 2).min(dim=-1).values > 0.0


def pairwise_cost(
    ious: Tensor, cls_logits: Tensor, obj_logits: Tensor, gt_classes: Tensor, prior: Tensor
) -> Tensor:
    """SimOTA's cost ``(T, A)`` (the ``cost`` of ``get_assignments``).

    Args:
        ious: ``(T, A)`` IoU of each truth with each predicted box.
        cls_logits: ``(A, nc)`` class logits; obj_logits: ``(A, 1)`` objectness logits.
        gt_classes: ``(T,)`` class of each truth.
        prior: ``(T, A)`` the geometry prior.
    """
    num_gt, num_anchors = gt_classes.shape[0], cls_logits.shape[0]
    p = (cls_logits.float().sigmoid() * obj_logits.float().sigmoid()).sqrt()
    # The reference's BCE of (T, A, nc) repeats against the one-hot class. Each entry is the BCE
    # of p against 0 or against 1, so both are computed once per anchor and laid out as the
    # reference's (T, A, nc) block; the sum over classes then runs on the same values in the same
    # order (bit-identical costs, without T * A * nc logarithms).
    neg = F.binary_cross_entropy(p, torch.zeros_like(p), reduction="none")
    pos = F.binary_cross_entropy(p, torch.ones_like(p), reduction="none")
    cls_index = gt_classes.to(torch.int64)[:, None, None].expand(num_gt, num_anchors, 1)
    cls_block = neg.unsqueeze(0).repeat(num_gt, 1, 1)
    cls_block.scatter_(2, cls_index, pos[:, gt_classes.to(torch.int64)].T.unsqueeze(2))
    cls_cost = cls_block.sum(-1)
    iou_cost = -torch.log(ious + 1e-8)
    return cls_cost + IOU_COST_WEIGHT * iou_cost + OUT_OF_PRIOR_COST * (~prior)


def dynamic_ks(ious: Tensor, valid: Tensor) -> Tensor:
    """``(T,)`` how many anchors each truth takes: the sum of its ``min(10, A)`` best IoUs,
    truncated to an integer, at least 1; 0 for padding rows (``simota_matching``)."""
    topk = torch.topk(ious, min(TOPK_IOUS, ious.shape[1]), dim=1).values
    ks = torch.clamp(topk.sum(1).int(), min=1).long()
    return torch.where(valid, ks, torch.zeros_like(ks))


def simota_matching(cost: Tensor, ious: Tensor, ks: Tensor) -> Assignment:
    """Dynamic-k matching and ambiguity resolution (``YOLOXHead.simota_matching``).

    Args:
        cost: ``(T, A)`` costs; padding rows must hold ``inf`` so that they never win.
        ious: ``(T, A)`` IoUs; ks: ``(T,)`` anchors per truth (``dynamic_ks``).

    Returns:
        Per anchor: foreground, matched truth, the IoU with it.
    """
    num_gt, num_anchors = cost.shape
    # Truth t takes its ks[t] cheapest anchors (the reference's topk(largest=False) per truth).
    order = torch.argsort(cost, dim=1, stable=True)
    take = torch.arange(num_anchors, device=cost.device)[None] < ks[:, None]
    matching = torch.zeros_like(cost, dtype=torch.bool).scatter_(1, order, take)
    count = matching.sum(0)
    fg = count > 0
    if num_gt == 0 or num_anchors == 0:
        return Assignment(fg, torch.zeros_like(count), torch.zeros(num_anchors, device=cost.device))
    best = cost.min(dim=0).indices  # ties: the first truth, as torch.min
    matching = torch.where((count > 1)[None], F.one_hot(best, num_gt).T.bool(), matching)
    # One truth per column now: argmax finds it (0 in empty columns), the sum picks its IoU.
    return Assignment(fg, matching.to(torch.uint8).argmax(0), (matching * ious).sum(0))

@torch.no_grad()
def assign_image(
    boxes: Tensor,
    cls_logits: Tensor,
    obj_logits: Tensor,
    gt_boxes: Tensor,
    gt_classes: Tensor,
    valid: Tensor,
    grid: Tensor,
    stride: Tensor,
) -> Assignment:
    """SimOTA for one image (``YOLOXHead.get_assignments``), in float32, without gradients.

    Args:
        boxes: ``(A, 4)`` decoded (cx, cy, w, h) predictions in input pixels.
        cls_logits: ``(A, nc)``; obj_logits: ``(A, 1)`` raw logits.
        gt_boxes: ``(T, 4)`` truths (cx, cy, w, h) in input pixels; gt_classes: ``(T,)``.
        valid: ``(T,)`` which truth rows are real (padding rows are ignored).
        grid: ``(A, 2)`` cell indices; stride: ``(A,)`` (``anchor_points``).

    Returns:
        The per-anchor assignment over all ``A`` anchors.
    """
    num_anchors = boxes.shape[0]
    prior = center_prior(gt_boxes, grid, stride) & valid[:, None]
    # Only anchors in some truth's prior are scored, as the reference (the top-10 IoUs and the
    # k cheapest are taken among them). One host sync per image, for the memory.
    idx = prior.any(dim=0).nonzero().squeeze(1)
    ious = pairwise_iou_cxcywh(gt_boxes.float(), boxes[idx].float())
    ious = torch.where(valid[:, None], ious, 0.0)
    cost = pairwise_cost(ious, cls_logits[idx], obj_logits[idx], gt_classes, prior[:, idx])
    cost = torch.where(valid[:, None], cost, torch.inf)
    found = simota_matching(cost, ious, dynamic_ks(ious, valid))
    fg = torch.zeros(num_anchors, dtype=torch.bool, device=boxes.device)
    gt_index = torch.zeros(num_anchors, dtype=torch.long, device=boxes.device)
    iou = torch.zeros(num_anchors, dtype=torch.float32, device=boxes.device)
    fg[idx], gt_index[idx], iou[idx] = found.fg, found.gt_index, found.iou
    return Assignment(fg, gt_index, iou)
