"""YOLOX's detection post-processing, as Megvii's ``yolox/utils/boxes.py: postprocess``.

Score = objectness x best class score; candidates with score >= ``conf_thresh`` go through
greedy NMS, per class unless ``class_agnostic`` (the reference calls torchvision's
``batched_nms`` / ``nms``; the kernel here is torchvision's CPU loop: boxes sorted by score with a
stable sort, ``w, h = max(0, ...)`` without +1, a box dies when its IoU with a kept one is
``> nms_thresh``). Rows are ``x1 y1 x2 y2 obj cls_conf class`` in input pixels, best first.

One deliberate difference: torchvision's ``batched_nms`` (under 1000 candidates on CPU) shifts
each class's boxes by ``class * (max coordinate + 1)`` and runs one NMS, so a box with a
coordinate below -1 can meet (and suppress) a box of the previous class. Here a box only ever
suppresses boxes of its own class; the shifts' rounding is not reproduced either.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from darknetpy.jit import jit

__all__ = ["nms", "postprocess_yolox"]


@jit
def _greedy_nms(boxes: np.ndarray, classes: np.ndarray, thresh: float) -> np.ndarray:
    """Keep-mask of greedy NMS over float32 ``boxes`` (x1 y1 x2 y2) sorted best first; a box only
    suppresses boxes of its own class (``classes`` all equal for class-agnostic NMS)."""
    m = boxes.shape[0]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    zero = np.float32(0.0)
    suppressed = np.zeros(m, np.bool_)
    for i in range(m):
        if suppressed[i]:
            continue
        for j in range(i + 1, m):
            if suppressed[j] or classes[j] != classes[i]:
                continue
            w = max(zero, min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]))
            h = max(zero, min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]))
            inter = w * h
            if inter / (area[i] + area[j] - inter) > thresh:
                suppressed[j] = True
    return ~suppressed


def nms(boxes: Tensor, scores: Tensor, classes: Tensor | None, thresh: float) -> Tensor:
    """Indices of the boxes greedy NMS keeps, best score first (torchvision's ``nms`` when
    ``classes`` is None, else per class as ``batched_nms``).

    Args:
        boxes: ``(M, 4)`` x1 y1 x2 y2; scores: ``(M,)``; classes: ``(M,)`` or None.
        thresh: IoU above which the lower-scored box is dropped.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    cpu_order = order.cpu()
    sorted_boxes = boxes.detach().float().cpu()[cpu_order].numpy()
    if classes is None:
        sorted_classes = np.zeros(len(cpu_order), np.int64)
    else:
        sorted_classes = classes.detach().cpu()[cpu_order].numpy().astype(np.int64)
    keep = _greedy_nms(np.ascontiguousarray(sorted_boxes), sorted_classes, float(thresh))
    return order[torch.from_numpy(keep).to(order.device)]


def postprocess_yolox(
    decoded: Tensor,
    conf_thresh: float,
    nms_thresh: float,
    *,
    class_agnostic: bool = False,
) -> list[Tensor]:
    """Detections per image from YOLOX's decoded output (``yolox/utils/boxes.py: postprocess``).

    Args:
        decoded: ``(N, A, 5 + nc)``: cx, cy, w, h, objectness, class scores (``decode_yolox``).
        conf_thresh: keep anchors whose objectness x best class score is at least this.
        nms_thresh: NMS IoU threshold.
        class_agnostic: one NMS over all classes instead of one per class.

    Returns:
        Per image a ``(M, 7)`` tensor ``x1 y1 x2 y2 obj cls_conf class``, best score first
        (empty where nothing passes; the reference returns None there).
    """
    cx, cy, w, h = decoded[..., 0], decoded[..., 1], decoded[..., 2], decoded[..., 3]
    corners = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
    class_conf, class_pred = decoded[..., 5:].max(dim=-1, keepdim=True)
    rows = torch.cat([corners, decoded[..., 4:5], class_conf, class_pred.to(decoded.dtype)], -1)
    out = []
    for image_rows in rows:
        dets = image_rows[image_rows[:, 4] * image_rows[:, 5] >= conf_thresh]
        classes = None if class_agnostic else dets[:, 6]
        out.append(dets[nms(dets[:, :4], dets[:, 4] * dets[:, 5], classes, nms_thresh)])
    return out
