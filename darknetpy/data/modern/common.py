"""What the YOLOv8 (ultralytics) and YOLOX training pipelines share: boxes, mosaic layout, flip.

Boxes inside these pipelines are float32 ``(N, 5)`` rows ``x1, y1, x2, y2, class`` in pixels of
the image they belong to (YOLOX's own label layout); darknetpy's label rows (``class, x, y, w, h``
relative) come in through :func:`pixel_boxes` and leave through :func:`to_truth` as darknetpy's
truth rows (``x, y, w, h, class`` relative to the network input, zero-padded), the format the
Darknet path hands to the loss.

Images are uint8 ``(H, W, 3)`` RGB, as :func:`darknetpy.data.image.load_image` returns them. The
references hold BGR; every step here is either channel-blind (geometry, fill 114 on all channels)
or converts with the RGB flavour of the same OpenCV code (HSV), so the results are the same.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = [
    "FILL",
    "clip_boxes",
    "empty_boxes",
    "hflip",
    "mosaic_layout",
    "paste_mosaic",
    "pixel_boxes",
    "resize",
    "to_truth",
    "warp_boxes",
]

#: The grey both references pad with (``np.full(..., 114)``, ``borderValue=(114, 114, 114)``).
FILL = 114


def empty_boxes() -> np.ndarray:
    """No boxes: float32 (0, 5)."""
    return np.zeros((0, 5), np.float32)


def pixel_boxes(labels: np.ndarray, w: float, h: float) -> np.ndarray:
    """darknetpy label rows ``class, x, y, w, h`` (relative) -> ``x1, y1, x2, y2, class`` in
    pixels of a ``w`` x ``h`` image (ultralytics ``Instances.convert_bbox('xyxy')`` +
    ``denormalize``)."""
    labels = np.asarray(labels, np.float32).reshape(-1, 5)
    out = np.empty_like(labels)
    half_w, half_h = labels[:, 3] / 2, labels[:, 4] / 2
    out[:, 0] = (labels[:, 1] - half_w) * np.float32(w)
    out[:, 1] = (labels[:, 2] - half_h) * np.float32(h)
    out[:, 2] = (labels[:, 1] + half_w) * np.float32(w)
    out[:, 3] = (labels[:, 2] + half_h) * np.float32(h)
    out[:, 4] = labels[:, 0]
    return out


def clip_boxes(boxes: np.ndarray, w: float, h: float) -> np.ndarray:
    """Corners clipped to ``[0, w] x [0, h]`` (ultralytics ``Instances.clip``; YOLOX ``np.clip``)."""
    out = boxes.copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out


def warp_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The axis-aligned hull of each box's four warped corners.

    ultralytics ``RandomPerspective.apply_bboxes`` (with the perspective divide when the last row
    of the 3x3 ``matrix`` is not ``0, 0, 1``) and YOLOX ``apply_affine_to_bboxes`` (2x3 matrix).
    """
    n = len(boxes)
    if n == 0:
        return boxes.copy()
    corners = np.ones((n * 4, 3), np.float64)
    corners[:, :2] = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)
    warped = corners @ np.asarray(matrix, np.float64).T
    if warped.shape[1] == 3:
        warped = warped[:, :2] / warped[:, 2:3]
    xs, ys = warped[:, 0].reshape(n, 4), warped[:, 1].reshape(n, 4)
    out = boxes.copy()
    out[:, 0], out[:, 1], out[:, 2], out[:, 3] = xs.min(1), ys.min(1), xs.max(1), ys.max(1)
    return out


def mosaic_layout(
    index: int, xc: int, yc: int, w: int, h: int, canvas_w: int, canvas_h: int
) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """Where piece ``index`` (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) of size
    ``w`` x ``h`` goes around the centre ``(xc, yc)`` of a ``canvas_w`` x ``canvas_h`` canvas.

    Returns ``(dst, src)`` regions ``(x1, y1, x2, y2)`` (exclusive ends): canvas and piece. The
    same rule in ultralytics ``Mosaic.get_params`` (n=4) and YOLOX ``get_mosaic_coordinate``.
    """
    if index == 0:
        dst = max(xc - w, 0), max(yc - h, 0), xc, yc
        src = w - (dst[2] - dst[0]), h - (dst[3] - dst[1]), w, h
    elif index == 1:
        dst = xc, max(yc - h, 0), min(xc + w, canvas_w), yc
        src = 0, h - (dst[3] - dst[1]), min(w, dst[2] - dst[0]), h
    elif index == 2:
        dst = max(xc - w, 0), yc, xc, min(canvas_h, yc + h)
        src = w - (dst[2] - dst[0]), 0, w, min(dst[3] - dst[1], h)
    elif index == 3:
        dst = xc, yc, min(xc + w, canvas_w), min(canvas_h, yc + h)
        src = 0, 0, min(w, dst[2] - dst[0]), min(dst[3] - dst[1], h)
    else:
        raise ValueError(f"mosaic piece index {index} is not 0-3")
    return dst, src


def paste_mosaic(
    pieces: list[tuple[np.ndarray, np.ndarray]], xc: int, yc: int, canvas_w: int, canvas_h: int
) -> tuple[np.ndarray, np.ndarray]:
    """Four ``(image, pixel boxes)`` pieces pasted around ``(xc, yc)`` on a canvas of grey 114.

    Returns the canvas and every piece's boxes shifted by its offset (``padw``, ``padh``), not yet
    clipped (ultralytics ``Mosaic.apply_image`` / ``_update_labels``; YOLOX mosaic loop).
    """
    canvas = np.full((canvas_h, canvas_w, 3), FILL, np.uint8)
    shifted = []
    for index, (image, boxes) in enumerate(pieces):
        h, w = image.shape[:2]
        (x1a, y1a, x2a, y2a), (x1b, y1b, x2b, y2b) = mosaic_layout(
            index, xc, yc, w, h, canvas_w, canvas_h
        )
        canvas[y1a:y2a, x1a:x2a] = image[y1b:y2b, x1b:x2b]
        moved = boxes.copy()
        moved[:, [0, 2]] += np.float32(x1a - x1b)
        moved[:, [1, 3]] += np.float32(y1a - y1b)
        shifted.append(moved)
    return canvas, np.concatenate(shifted, 0) if shifted else empty_boxes()


def hflip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right: ``x -> w - x`` (ultralytics ``RandomFlip`` horizontal, YOLOX ``_mirror``)."""
    w = image.shape[1]
    out = boxes.copy()
    out[:, 0], out[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
    return cv2.flip(image, 1), out


def to_truth(boxes: np.ndarray, w: int, h: int, max_boxes: int) -> np.ndarray:
    """Pixel boxes of a ``w`` x ``h`` network input -> darknetpy truth: float32 ``(max_boxes, 5)``
    rows ``x, y, w, h, class`` relative, zero rows after the last (the first ``max_boxes`` kept,
    as YOLOX's ``padded_labels[:max_labels]``).

    Boxes are clipped to the image first; a box with no width or height left is dropped (it
    could not be written: a zero row ends the list).
    """
    boxes = clip_boxes(boxes, w, h)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes = boxes[keep][:max_boxes]
    truth = np.zeros((max_boxes, 5), np.float32)
    n = len(boxes)
    truth[:n, 0] = (boxes[:, 0] + boxes[:, 2]) / (2 * w)
    truth[:n, 1] = (boxes[:, 1] + boxes[:, 3]) / (2 * h)
    truth[:n, 2] = (boxes[:, 2] - boxes[:, 0]) / w
    truth[:n, 3] = (boxes[:, 3] - boxes[:, 1]) / h
    truth[:n, 4] = boxes[:, 4]
    return truth


def resize(image: np.ndarray, w: int, h: int) -> np.ndarray:
    """``cv2.resize(INTER_LINEAR)`` to ``w`` x ``h`` (a no-op copy-free view when equal)."""
    if image.shape[1] == w and image.shape[0] == h:
        return image
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
