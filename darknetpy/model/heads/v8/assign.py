"""Task-aligned assignment (TAL) of truth boxes to YOLOv8 anchors.

Reproduces ``utils/tal.py: TaskAlignedAssigner`` of ultralytics 8.4.190 (as ``v8DetectionLoss``
builds it: topk 10, alpha 0.5, beta 6, eps 1e-9, ``topk2 == topk``), step by step:

1. candidates: anchor points strictly inside a truth box, whose sides below ``stride_val`` (the
   second level's stride) are first widened to it about the centre;
2. metric ``score ** alpha * ciou ** beta`` per (truth, candidate): the predicted probability of the
   truth's class and the clamped CIoU of the truth with the predicted box;
3. each truth keeps its ``topk`` anchors by metric (that are candidates);
4. an anchor kept by several truths goes to the truth of highest CIoU *among all truths it is a
   candidate of* (ultralytics' rule, kept: that truth need not be one that kept it);
5. the target score of an anchor is one-hot of its truth's class times
   ``metric * (truth's best CIoU) / (truth's best metric + eps)``, the best over its truths.

Everything is batched tensor work (no Python loops over anchors or truths).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .geometry import ciou, xywh_to_xyxy, xyxy_to_xywh

__all__ = ["Assignment", "candidates_in_gts", "task_aligned_assign"]

TAL_EPS = 1e-9


@dataclass(frozen=True)
class Assignment:
    """Targets per anchor (N images, A anchors).

    ``boxes`` (N, A, 4) the assigned truth's corner box (units as given: pixels); ``labels``
    (N, A) int64 its class; ``score`` (N, A) the soft target of that class (0 on the background):
    ultralytics' dense ``target_scores`` (N, A, nc) is ``score`` at ``labels`` and 0 elsewhere
    (:meth:`dense_scores`); ``foreground`` (N, A) bool; ``truth`` (N, A) int64 the assigned truth
    row (0 where background).
    """

    boxes: torch.Tensor
    labels: torch.Tensor
    score: torch.Tensor
    foreground: torch.Tensor
    truth: torch.Tensor

    def dense_scores(self, classes: int) -> torch.Tensor:
        """ultralytics' ``target_scores`` (N, A, classes)."""
        n, a = self.labels.shape
        dense = self.score.new_zeros((n, a, classes))
        return dense.scatter_(2, self.labels[..., None], self.score[..., None])


def candidates_in_gts(
    points: torch.Tensor, gt_boxes: torch.Tensor, gt_mask: torch.Tensor, min_side: float,
    eps: float = TAL_EPS,
) -> torch.Tensor:
    """(N, T, A) bool: anchor point strictly (by more than ``eps``) inside the truth box, whose
    sides shorter than ``min_side`` are widened to it about the centre for valid truths
    (``TaskAlignedAssigner.select_candidates_in_gts``; the round trip through centre/size is kept).

    Args:
        points: (A, 2) anchor points; gt_boxes: (N, T, 4) corner boxes (same units);
        gt_mask: (N, T) bool valid truth rows.
    """
    xywh = xyxy_to_xywh(gt_boxes)
    small = (xywh[..., 2:] < min_side) & gt_mask[..., None]
    xywh = torch.cat((xywh[..., :2], torch.where(small, min_side, xywh[..., 2:])), -1)
    boxes = xywh_to_xyxy(xywh)[:, :, None]  # (N, T, 1, 4)
    x, y = points[:, 0], points[:, 1]
    return (
        (x - boxes[..., 0] > eps)
        & (y - boxes[..., 1] > eps)
        & (boxes[..., 2] - x > eps)
        & (boxes[..., 3] - y > eps)
    )


def _topk_mask(metric: torch.Tensor, gt_mask: torch.Tensor, topk: int) -> torch.Tensor:
    """(N, T, A) int8: 1 on each valid truth's ``topk`` anchors by metric
    (``TaskAlignedAssigner.select_topk_candidates``)."""
    k = min(topk, metric.shape[-1])
    idx = torch.topk(metric, k, dim=-1, largest=True).indices
    idx = idx.masked_fill(~gt_mask[..., None], 0)
    count = torch.zeros(metric.shape, dtype=torch.int8, device=metric.device)
    count.scatter_add_(-1, idx, torch.ones_like(idx, dtype=torch.int8))
    return count.masked_fill(count > 1, 0)


def _resolve_multiple(mask_pos: torch.Tensor, overlaps: torch.Tensor) -> torch.Tensor:
    """Anchors positive for several truths keep only the truth of highest overlap
    (``TaskAlignedAssigner.select_highest_overlaps`` with ``topk2 == topk``)."""
    multi = (mask_pos.sum(-2, keepdim=True) > 1).expand_as(mask_pos)
    best = overlaps.max(1).indices
    is_best = torch.zeros_like(mask_pos).scatter_(1, best.unsqueeze(1), 1)
    return torch.where(multi, is_best, mask_pos)


@torch.no_grad()
def task_aligned_assign(
    pd_logits: torch.Tensor,
    pd_boxes: torch.Tensor,
    points: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_mask: torch.Tensor,
    *,
    topk: int = 10,
    alpha: float = 0.5,
    beta: float = 6.0,
    min_side: float = 16.0,
    eps: float = TAL_EPS,
) -> Assignment:
    """Task-aligned assignment (``utils/tal.py: TaskAlignedAssigner.forward``).

    Args:
        pd_logits: (N, A, nc) predicted class logits (any strides; only the scored pairs are
            read, through a sigmoid: ultralytics takes the probabilities of all).
        pd_boxes: (N, A, 4) predicted corner boxes; points (A, 2) anchor points; gt_boxes
            (N, T, 4) truth corner boxes; all in the same units (ultralytics: input pixels).
        gt_labels: (N, T) int64 classes in [0, nc) (any value where ``gt_mask`` is False).
        gt_mask: (N, T) bool valid truth rows.
        min_side: truth sides below it are widened for the candidate test (``stride_val``:
            the second level's stride).
    """
    n, a, nc = pd_logits.shape
    t = gt_boxes.shape[1]
    labels = gt_labels.clamp(0, nc - 1)
    if t == 0:
        zeros = torch.zeros((n, a), dtype=torch.int64, device=pd_boxes.device)
        return Assignment(
            torch.zeros_like(pd_boxes), zeros, pd_boxes.new_zeros((n, a)), zeros.bool(), zeros
        )
    in_gts = candidates_in_gts(points, gt_boxes, gt_mask, min_side, eps)  # (N, T, A)
    # get_box_metrics: only (truth, candidate) pairs are scored; the rest stay 0
    bi, ti, ai = (in_gts & gt_mask[..., None]).nonzero(as_tuple=True)
    pair_iou = ciou(gt_boxes[bi, ti], pd_boxes[bi, ai]).clamp(0)
    pair_score = pd_logits[bi, ai, labels[bi, ti]].sigmoid()
    overlaps = pd_boxes.new_zeros((n, t, a))
    metric = pd_boxes.new_zeros((n, t, a))
    overlaps[bi, ti, ai] = pair_iou
    metric[bi, ti, ai] = pair_score.pow(alpha) * pair_iou.pow(beta)

    mask_pos = _topk_mask(metric, gt_mask, topk) * in_gts * gt_mask[..., None]
    mask_pos = _resolve_multiple(mask_pos, overlaps)
    foreground, truth = mask_pos.max(-2)  # (N, A)
    foreground = foreground.bool()

    # get_targets
    target_labels = labels.gather(1, truth)
    target_boxes = gt_boxes.gather(1, truth[..., None].expand(n, a, gt_boxes.shape[-1]))

    # normalise: each truth's best metric maps to its best CIoU
    metric = metric * mask_pos
    overlaps = overlaps * mask_pos
    best_metric = metric.amax(-1, keepdim=True)
    best_iou = overlaps.amax(-1, keepdim=True)
    norm = (metric * best_iou / (best_metric + eps)).amax(-2)  # (N, A)
    score = norm * foreground
    return Assignment(target_boxes, target_labels, score, foreground, truth)
