"""YOLOX's training loss, as Megvii's ``YOLOXHead.get_losses`` (``yolox/models/yolo_head.py``)
and ``IOUloss`` (``yolox/models/losses.py``) at their HEAD.

With ``num_fg`` the foreground anchors of the batch (SimOTA, ``assign.py``), at least 1:

* ``iou = sum_fg (1 - IoU(pred, truth)^2) / num_fg``, weighted 5 in the total;
* ``obj = sum_all BCEWithLogits(obj, fg) / num_fg``;
* ``cls = sum_fg sum_c BCEWithLogits(cls_c, onehot_c * IoU_matched) / num_fg``;
* ``l1 = sum_fg |raw box - l1 target| / num_fg`` when ``use_l1`` (the last epochs), the target
  being the truth in the head's own parametrisation (``get_l1_target``).

The loss reads the head's raw per-level maps (box, objectness, classes) and truth rows relative
to the input, which it turns into YOLOX's pixel labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .assign import assign_image
from .decode import anchor_points, decode_boxes, flatten_levels

__all__ = [
    "IOU_WEIGHT",
    "YoloxLoss",
    "YoloxLossDetails",
    "iou_loss",
    "l1_target",
    "yolox_loss",
    "yolox_loss_details",
]

IOU_WEIGHT = 5.0  # get_losses' reg_weight


class YoloxLoss(NamedTuple):
    """The reference's loss tuple: ``total = iou + obj + cls + l1``, ``iou`` already x5;
    ``fg_per_gt`` is ``max(num_fg, 1) / max(num_gt, 1)``. All scalar tensors."""

    total: Tensor
    iou: Tensor
    obj: Tensor
    cls: Tensor
    l1: Tensor
    fg_per_gt: Tensor


class YoloxLossDetails(NamedTuple):
    """:class:`YoloxLoss` with SimOTA's assignment: ``fg`` (N, A) the foreground anchors and
    ``matched_iou`` (N, A) their IoU with the matched truth (0 elsewhere), for statistics."""

    terms: YoloxLoss
    fg: Tensor
    matched_iou: Tensor


def iou_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``1 - IoU^2`` per row of (cx, cy, w, h) boxes, as ``IOUloss(reduction="none",
    loss_type="iou")`` (``yolox/models/losses.py``)."""
    tl = torch.max(pred[:, :2] - pred[:, 2:] / 2, target[:, :2] - target[:, 2:] / 2)
    br = torch.min(pred[:, :2] + pred[:, 2:] / 2, target[:, :2] + target[:, 2:] / 2)
    area_p = torch.prod(pred[:, 2:], 1)
    area_g = torch.prod(target[:, 2:], 1)
    en = (tl < br).type(tl.dtype).prod(dim=1)
    area_i = torch.prod(br - tl, 1) * en
    area_u = area_p + area_g - area_i
    iou = area_i / (area_u + 1e-16)
    return 1 - iou**2


def l1_target(gt: Tensor, grid: Tensor, stride: Tensor, eps: float = 1e-8) -> Tensor:
    """The truth ``(M, 4)`` (cx, cy, w, h pixels) as the raw box outputs that would decode to it:
    ``xy / stride - grid`` and ``log(wh / stride + eps)`` (``YOLOXHead.get_l1_target``)."""
    s = stride[:, None]
    return torch.cat([gt[:, 0:2] / s - grid, torch.log(gt[:, 2:4] / s + eps)], dim=1)


def yolox_loss(
    level_outputs: Sequence[Tensor],
    truth: Tensor,
    strides: Sequence[int],
    *,
    use_l1: bool = False,
    input_size: tuple[int, int] | None = None,
) -> YoloxLoss:
    """YOLOX's loss terms (:func:`yolox_loss_details` without the assignment)."""
    return yolox_loss_details(
        level_outputs, truth, strides, use_l1=use_l1, input_size=input_size
    ).terms


def yolox_loss_details(
    level_outputs: Sequence[Tensor],
    truth: Tensor,
    strides: Sequence[int],
    *,
    use_l1: bool = False,
    input_size: tuple[int, int] | None = None,
) -> YoloxLossDetails:
    """YOLOX's loss (``YOLOXHead.get_losses``) of raw head outputs against truth boxes.

    Args:
        level_outputs: one ``(N, 5 + nc, H, W)`` map per level: box (4), objectness (1), classes,
            all raw (before exp/sigmoid).
        truth: ``(N, T, 5)`` rows (x, y, w, h, class), box centre and size relative to the input;
            all-zero rows are padding (the reference's ``labels.sum(2) > 0``).
        strides: each level's stride in input pixels.
        use_l1: add the L1 term (YOLOX switches it on with the no-augmentation epochs).
        input_size: (height, width) of the network input; by default the first level's size
            times its stride.

    Returns:
        The loss terms (``total`` carries the gradient) and the assignment.
    """
    flat = flatten_levels(level_outputs).float()
    batch, num_anchors, channels = flat.shape
    nc = channels - 5
    shapes = [(int(x.shape[-2]), int(x.shape[-1])) for x in level_outputs]
    grid, stride = anchor_points(shapes, strides, device=flat.device)
    height, width = input_size or (shapes[0][0] * strides[0], shapes[0][1] * strides[0])

    raw_box, obj, cls = flat[..., :4], flat[..., 4:5], flat[..., 5:]
    boxes = decode_boxes(raw_box, grid, stride)
    truth = truth.to(flat.device, torch.float32)
    valid = truth.sum(dim=2) > 0
    scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=flat.device)
    gt_boxes = truth[..., :4] * scale
    gt_classes = truth[..., 4].long()

    with torch.no_grad():
        found = [
            assign_image(
                boxes[b], cls[b], obj[b], gt_boxes[b], gt_classes[b], valid[b], grid, stride
            )
            for b in range(batch)
        ]
    fg = torch.stack([a.fg for a in found])  # (N, A)
    gt_index = torch.stack([a.gt_index for a in found])
    matched_iou = torch.stack([a.iou for a in found])

    num_fg = fg.sum().float().clamp(min=1)
    num_gt = valid.sum().float().clamp(min=1)
    sel = fg.reshape(-1)  # one host sync: the foreground rows, image by image, anchor order
    reg_target = torch.take_along_dim(gt_boxes, gt_index[..., None], dim=1).reshape(-1, 4)[sel]
    cls_target = F.one_hot(torch.take_along_dim(gt_classes, gt_index, dim=1), nc)
    cls_target = (cls_target * matched_iou[..., None]).reshape(-1, nc)[sel]

    loss_iou = iou_loss(boxes.reshape(-1, 4)[sel], reg_target).sum() / num_fg
    loss_obj = F.binary_cross_entropy_with_logits(
        obj.reshape(-1, 1), fg.reshape(-1, 1).float(), reduction="none"
    ).sum() / num_fg
    loss_cls = F.binary_cross_entropy_with_logits(
        cls.reshape(-1, nc)[sel], cls_target, reduction="none"
    ).sum() / num_fg
    if use_l1:
        anchor = torch.arange(num_anchors, device=flat.device).repeat(batch)[sel]
        target = l1_target(reg_target, grid[anchor], stride[anchor])
        loss_l1 = (raw_box.reshape(-1, 4)[sel] - target).abs().sum() / num_fg
    else:
        loss_l1 = flat.new_zeros(())
    total = IOU_WEIGHT * loss_iou + loss_obj + loss_cls + loss_l1
    terms = YoloxLoss(total, IOU_WEIGHT * loss_iou, loss_obj, loss_cls, loss_l1, num_fg / num_gt)
    return YoloxLossDetails(terms, fg, matched_iou)
