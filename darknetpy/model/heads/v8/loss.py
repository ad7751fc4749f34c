"""The YOLOv8 detection loss (``utils/loss.py: v8DetectionLoss`` of ultralytics 8.4.190).

``v8_loss(level_outputs, truth, strides)``: BCE of the class logits against the task-aligned
soft targets, CIoU and DFL on the foreground weighted by each anchor's target score, all three
divided by the sum of target scores (at least 1), times the gains (box 7.5, cls 0.5, dfl 1.5).
Like ultralytics, ``total`` is ``(box + cls + dfl) * batch size``: what it back-propagates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .assign import TAL_EPS, task_aligned_assign
from .decode import dfl_distances, level_shapes, split_levels
from .geometry import anchor_points, ciou, dist_to_xyxy, iou, xywh_to_xyxy, xyxy_to_dist

__all__ = ["V8Loss", "V8LossOptions", "bce_sparse_sum", "dfl_loss", "truth_to_gt", "v8_loss"]


@dataclass(frozen=True)
class V8LossOptions:
    """The loss's constants (ultralytics' defaults: ``cfg/default.yaml`` box/cls/dfl gains and
    the ``TaskAlignedAssigner`` settings ``v8DetectionLoss`` uses)."""

    reg_max: int = 16
    box_gain: float = 7.5
    cls_gain: float = 0.5
    dfl_gain: float = 1.5
    topk: int = 10
    alpha: float = 0.5
    beta: float = 6.0
    eps: float = TAL_EPS


@dataclass(frozen=True)
class V8Loss:
    """``total``: scalar with the graph, ``(box + cls + dfl) * N``; ``items``: detached (3,)
    gain-scaled ``(box, cls, dfl)`` per image (ultralytics' ``loss_items``, what it prints);
    ``foreground``: detached count of assigned anchors; ``avg_iou``: detached mean IoU of their
    predicted boxes with their truths (0 without any)."""

    total: torch.Tensor
    items: torch.Tensor
    batch: int
    foreground: torch.Tensor
    avg_iou: torch.Tensor

    @property
    def box(self) -> float:
        return float(self.items[0])

    @property
    def cls(self) -> float:
        return float(self.items[1])

    @property
    def dfl(self) -> float:
        return float(self.items[2])

    @property
    def scaled(self) -> torch.Tensor:
        """Detached (3,) ``(box, cls, dfl) * N``: ultralytics' returned ``loss`` vector."""
        return self.items * self.batch


def truth_to_gt(
    truth: torch.Tensor, size: tuple[float, float], classes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """darknetpy truth rows -> what the assigner takes (``v8DetectionLoss.preprocess``).

    Args:
        truth: (N, T, 5+) rows ``(x, y, w, h, class)`` relative to the input.
        size: input ``(width, height)`` in pixels.

    Returns:
        labels (N, T) int64, corner boxes (N, T, 4) in input pixels, mask (N, T) bool. A row
        counts when its pixel corners sum above 0 (ultralytics' ``mask_gt``: padding rows of zeros
        do not) and its class is in ``[0, classes)`` (others are ignored, as darknet ignores them).
    """
    w, h = size
    scale = truth.new_tensor([w, h, w, h])
    boxes = xywh_to_xyxy(truth[..., :4] * scale)
    labels = truth[..., 4].long()
    mask = (boxes.sum(-1) > 0) & (labels >= 0) & (labels < classes)
    return labels, boxes, mask


def dfl_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Distribution focal loss (``utils/loss.py: DFLoss``): cross-entropy against the two bins
    around the target distance, weighted by nearness; mean over the four sides.

    Args:
        logits: (n, 4, reg_max); target: (n, 4) distances in grid units.

    Returns:
        (n,) loss per anchor. Targets are clamped to ``[0, reg_max - 1.01]`` so the right bin
        exists.
    """
    reg_max = logits.shape[-1]
    target = target.clamp(0, reg_max - 1 - 0.01)
    left = target.long()
    right = left + 1
    w_left = right - target
    w_right = 1 - w_left
    logp = F.log_softmax(logits, -1)
    nll = logp.gather(-1, left[..., None])[..., 0] * w_left + (
        logp.gather(-1, right[..., None])[..., 0] * w_right
    )
    return -nll.mean(-1)


class _SparseBceSum(torch.autograd.Function):
    """Forward ``softplus(x).sum() - (x[where] * t).sum()``; backward ``sigmoid(x) - t`` written
    in one pass (autograd would add a softplus backward, a zero-filled scatter and a sum)."""

    @staticmethod
    def forward(ctx, logits, where, target):  # type: ignore[override]
        ctx.save_for_backward(logits, target, *where)
        return F.softplus(logits).sum() - (logits[where] * target).sum()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        logits, target, *where = ctx.saved_tensors
        g = logits.sigmoid()
        g.index_put_(tuple(where), -target, accumulate=True)
        return g.mul_(grad), None, None


def bce_sparse_sum(
    logits: torch.Tensor, where: tuple[torch.Tensor, ...], target: torch.Tensor
) -> torch.Tensor:
    """Summed BCE-with-logits of ``logits`` against targets that are 0 except ``target`` at the
    indices ``where`` (distinct) (``nn.BCEWithLogitsLoss(reduction="none")(...).sum()``, as
    ``v8DetectionLoss`` computes the class loss against its mostly-zero ``target_scores``).

    ``BCE(x, t) = softplus(x) - x * t``, so the sum is the softplus of every logit less ``x * t``
    on the few targets: no dense target tensor is built. Same value to float32 rounding and the
    same gradient, ``sigmoid(x) - t``. ``target`` gets no gradient.
    """
    return _SparseBceSum.apply(logits, tuple(where), target.detach())


def v8_loss(
    level_outputs: Sequence[torch.Tensor],
    truth: torch.Tensor,
    strides: Sequence[float],
    options: V8LossOptions | None = None,
) -> V8Loss:
    """The YOLOv8 loss of one batch (``v8DetectionLoss.get_assigned_targets_and_loss`` and
    ``loss``, ``BboxLoss.forward``).

    Args:
        level_outputs: per-level raw maps (N, 4 * reg_max + nc, H, W), box logits first.
        truth: (N, T, 5+) rows ``(x, y, w, h, class)`` relative to the input; zero rows ignored.
        strides: each level's stride; the input size is the first level's shape times its stride.
    """
    o = options or V8LossOptions()
    r = o.reg_max
    dist_logits, cls_logits = split_levels(level_outputs, r)  # (N, 4 r, A), (N, nc, A)
    n, nc, a = cls_logits.shape
    shapes = level_shapes(level_outputs)
    dtype, device = cls_logits.dtype, cls_logits.device
    points, stride = anchor_points(shapes, strides, dtype=dtype, device=device)
    size = (shapes[0][1] * float(strides[0]), shapes[0][0] * float(strides[0]))  # (w, h)
    truth = torch.as_tensor(truth, dtype=dtype, device=device)
    labels, gt_boxes, gt_mask = truth_to_gt(truth, size, nc)

    pred_boxes = dist_to_xyxy(dfl_distances(dist_logits, r), points)  # (N, A, 4) grid units
    target = task_aligned_assign(
        cls_logits.detach().transpose(1, 2),
        pred_boxes.detach() * stride,
        points * stride,
        labels,
        gt_boxes,
        gt_mask,
        topk=o.topk,
        alpha=o.alpha,
        beta=o.beta,
        min_side=float(strides[1] if len(strides) > 1 else strides[0]),
        eps=o.eps,
    )
    score_sum = target.score.sum().clamp(min=1)
    fb, fa = target.foreground.nonzero(as_tuple=True)
    weight = target.score[fb, fa]
    cls = bce_sparse_sum(cls_logits, (fb, target.labels[fb, fa], fa), weight)

    target_boxes = target.boxes[fb, fa] / stride[fa]
    box = ((1.0 - ciou(pred_boxes[fb, fa], target_boxes)) * weight).sum()
    target_dist = xyxy_to_dist(points[fa], target_boxes, r - 1)
    fg_dist = dist_logits.reshape(n, 4, r, a)[fb, :, :, fa]  # (n_fg, 4, reg_max)
    dfl = (dfl_loss(fg_dist, target_dist) * weight).sum()

    gains = cls_logits.new_tensor([o.box_gain, o.cls_gain, o.dfl_gain])
    items = torch.stack((box, cls, dfl)) / score_sum * gains
    with torch.no_grad():
        avg_iou = iou(pred_boxes[fb, fa], target_boxes).sum() / max(len(fb), 1)
    return V8Loss(items.sum() * n, items.detach(), n, torch.tensor(len(fb)), avg_iou)
