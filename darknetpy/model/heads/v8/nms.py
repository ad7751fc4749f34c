"""Ultralytics-style NMS for the YOLOv8 head (``utils/nms.py: non_max_suppression`` of 8.4.190,
``multi_label=False``, ``agnostic=False`` by default).

Per image: keep anchors whose best class score is above ``conf_thres`` (strictly, as ultralytics),
label each with that class, keep the ``max_nms`` best, run greedy NMS within each class, keep at
most ``max_det``, best first. The greedy pass is a numba kernel with torchvision's rule (a box
survives when its IoU with every kept, better box of its class is ``<= iou_thres``), in float32.

One deliberate difference: ultralytics separates the classes by shifting each box by
``class * 7680`` pixels and running one class-blind NMS; the shift costs float32 precision (about
1e-3 pixel at class 2, 0.06 pixel at class 80), so IoUs on the threshold may fall on the other
side. darknetpy compares boxes of the same class only, on the unshifted coordinates: the same rule
without the rounding, and usable on boxes relative to the image (where a pixel shift would be
meaningless).
"""

from __future__ import annotations

import numpy as np
import torch

from ....jit import jit
from .geometry import xywh_to_xyxy

__all__ = ["MAX_NMS", "greedy_nms", "nms_v8"]

MAX_NMS = 30000  # ultralytics' max_nms: at most this many boxes (the best) enter the NMS


@jit
def _greedy_keep(
    boxes: np.ndarray, classes: np.ndarray, iou_thres: float
) -> np.ndarray:  # pragma: no cover - numba
    """Indices kept by greedy NMS of ``boxes`` (m, 4) corner boxes sorted best first; a box only
    suppresses boxes of its own class (``classes`` (m,) int64)."""
    m = boxes.shape[0]
    thres = np.float32(iou_thres)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    dead = np.zeros(m, np.bool_)
    keep = np.empty(m, np.int64)
    k = 0
    for i in range(m):
        if dead[i]:
            continue
        keep[k] = i
        k += 1
        for j in range(i + 1, m):
            if dead[j] or classes[j] != classes[i]:
                continue
            w = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])
            h = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])
            if w <= 0 or h <= 0:
                continue
            inter = w * h
            if inter / (areas[i] + areas[j] - inter) > thres:
                dead[j] = True
    return keep[:k]


def greedy_nms(
    boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_thres: float
) -> torch.Tensor:
    """Indices (int64) kept by class-aware greedy NMS over corner ``boxes`` (m, 4), best score
    first (``utils/nms.py: TorchNMS.nms`` / ``torchvision.ops.nms`` on class-separated boxes; a box
    suppresses only boxes of its own ``classes`` entry). Equal scores are taken in the
    order ``scores.argsort(descending=True)`` gives, the call ultralytics makes: with random or
    untrained weights many scores tie to the last bit, and the order decides which survive."""
    order = scores.argsort(descending=True)
    sorted_boxes = boxes[order].detach().to("cpu", torch.float32).numpy()
    sorted_classes = classes[order].detach().to("cpu", torch.int64).numpy()
    keep = _greedy_keep(
        np.ascontiguousarray(sorted_boxes), np.ascontiguousarray(sorted_classes), float(iou_thres)
    )
    return order[torch.from_numpy(keep).to(order.device)]


def nms_v8(
    decoded: torch.Tensor,
    conf_thres: float,
    iou_thres: float,
    *,
    max_det: int = 300,
    max_nms: int = MAX_NMS,
    agnostic: bool = False,
) -> list[torch.Tensor]:
    """Detections per image from decoded predictions.

    Args:
        decoded: (N, A, 4 + nc) or (A, 4 + nc): ``cx, cy, w, h`` in input pixels, class scores
            (what :func:`decode_v8` returns).

    Returns:
        per image a (k, 7) float32 tensor of rows ``x1, y1, x2, y2, score, class, anchor``
        (the anchor index each row came from), best score first, k <= ``max_det``.
    """
    if decoded.dim() == 2:
        decoded = decoded[None]
    out = []
    for x in decoded.detach():
        score, cls = x[:, 4:].max(1)
        anchor = torch.nonzero(score > conf_thres).view(-1)
        score, cls = score[anchor], cls[anchor].to(x.dtype)
        boxes = xywh_to_xyxy(x[anchor, :4])
        if anchor.numel() > max_nms:
            best = score.argsort(descending=True, stable=True)[:max_nms]
            anchor, score, cls, boxes = anchor[best], score[best], cls[best], boxes[best]
        keep = greedy_nms(boxes, score, cls * (0 if agnostic else 1), iou_thres)[:max_det]
        rows = torch.cat(
            (boxes[keep], score[keep, None], cls[keep, None], anchor[keep, None].to(x.dtype)), 1
        )
        out.append(rows.float())
    return out
