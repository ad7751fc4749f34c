"""The YOLOv8 (ultralytics 8.4.190) training augmentation, step by step (no torch, no model).

One training image, as ``ultralytics/data/augment.py: v8_transforms`` composes it with the
defaults of ``ultralytics/cfg/default.yaml`` (:func:`darknetpy.data.modern.sample.build_v8_sample`
chains the steps):

1. :func:`load_fit`: ``BaseDataset.load_image`` (long side to the input size, ``INTER_LINEAR``).
2. with probability ``mosaic``: :func:`ultralytics_mosaic` (``Mosaic``, n=4) on a 2h x 2w canvas;
3. :func:`random_perspective` (``RandomPerspective``) back to the input size: on the mosaic with
   its border of -s/2, or (``close_mosaic``) on the single image, which it centres (the
   letterbox of 8.4.190's training path); :func:`box_candidates` drops crushed boxes;
4. with probability ``mixup``: :func:`ultralytics_mixup` (``MixUp``) with another image of steps 1-3;
5. :func:`random_hsv` (``RandomHSV``), :func:`random_flip` (``RandomFlip``, up-down then left-right).

:func:`letterbox` (``LetterBox``) is the validation resize, kept for callers that want it.
Randomness comes from an explicit ``np.random.Generator`` (ultralytics draws from Python's
``random`` and the global NumPy state; the distributions are the same, the streams are not).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .common import FILL, clip_boxes, empty_boxes, hflip, paste_mosaic, resize, warp_boxes

__all__ = [
    "box_candidates",
    "letterbox",
    "load_fit",
    "perspective_matrix",
    "random_flip",
    "random_hsv",
    "random_perspective",
    "ultralytics_mixup",
    "ultralytics_mosaic",
]

_BORDER = (FILL, FILL, FILL, FILL)


def load_fit(image: np.ndarray, w: int, h: int) -> np.ndarray:
    """``BaseDataset.load_image`` (``rect_mode``): resized by ``r = min(w/w0, h/h0)`` to
    ``(min(ceil(w0 r), w), min(ceil(h0 r), h))`` with ``INTER_LINEAR``; unchanged when ``r == 1``.

    For a square input this is ultralytics' "long side to imgsz".
    """
    h0, w0 = image.shape[:2]
    r = min(w / w0, h / h0)
    if r == 1:
        return image
    return resize(image, min(math.ceil(w0 * r), w), min(math.ceil(h0 * r), h))


def ultralytics_mosaic(
    pieces: list[tuple[np.ndarray, np.ndarray]], w: int, h: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``Mosaic`` (n=4): four ``(image, pixel boxes)`` around a random centre of a 2h x 2w canvas.

    The centre is ``int(U(s/2, 3s/2))`` per axis (border ``-s // 2``); the images (each already
    :func:`load_fit`) go top-left, top-right, bottom-left, bottom-right of it. Boxes are clipped to
    the canvas and those of zero area dropped (``_cat_labels``).
    """
    bw, bh = (-w) // 2, (-h) // 2
    yc = int(rng.uniform(-bh, 2 * h + bh))
    xc = int(rng.uniform(-bw, 2 * w + bw))
    canvas, boxes = paste_mosaic(pieces, xc, yc, 2 * w, 2 * h)
    boxes = clip_boxes(boxes, 2 * w, 2 * h)
    keep = (boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0)
    return canvas, boxes[keep]


def perspective_matrix(
    rng: np.random.Generator, in_w: int, in_h: int, out_w: int, out_h: int, *,
    degrees: float, translate: float, scale: tuple[float, float], shear: float, perspective: float,
) -> tuple[np.ndarray, float]:
    """``RandomPerspective._compute_affine_matrix``: ``M = T @ S @ R @ P @ C`` and the scale drawn.

    C moves the input's centre to the origin, P perspective ``U(±perspective)``, R rotation
    ``U(±degrees)`` with scale ``U(scale)``, S shear ``tan(U(±shear)°)``, T moves the origin to
    ``U(0.5 ± translate)`` of the output size. float32 matrices, as the reference.
    """
    c = np.eye(3, dtype=np.float32)
    c[0, 2], c[1, 2] = -in_w / 2, -in_h / 2
    p = np.eye(3, dtype=np.float32)
    p[2, 0] = rng.uniform(-perspective, perspective)
    p[2, 1] = rng.uniform(-perspective, perspective)
    r = np.eye(3, dtype=np.float32)
    angle = rng.uniform(-degrees, degrees)
    s = float(rng.uniform(scale[0], scale[1]))
    r[:2] = cv2.getRotationMatrix2D(angle=angle, center=(0, 0), scale=s)
    sh = np.eye(3, dtype=np.float32)
    sh[0, 1] = math.tan(rng.uniform(-shear, shear) * math.pi / 180)
    sh[1, 0] = math.tan(rng.uniform(-shear, shear) * math.pi / 180)
    t = np.eye(3, dtype=np.float32)
    t[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_w
    t[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_h
    return t @ sh @ r @ p @ c, s


def box_candidates(
    before: np.ndarray, after: np.ndarray, wh_thr: float = 2, ar_thr: float = 100,
    area_thr: float = 0.1, eps: float = 1e-16,
) -> np.ndarray:
    """``RandomPerspective.box_candidates``: keep boxes wider and taller than ``wh_thr`` pixels,
    with aspect ratio below ``ar_thr`` and at least ``area_thr`` of their (scaled) area left.

    ``before``/``after``: ``(N, >=4)`` ``x1, y1, x2, y2`` (``before`` already times the scale).
    """
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr)


def random_perspective(
    image: np.ndarray, boxes: np.ndarray, out_w: int, out_h: int, rng: np.random.Generator, *,
    degrees: float = 0.0, translate: float = 0.1, scale: tuple[float, float] = (0.5, 1.5),
    shear: float = 0.0, perspective: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``RandomPerspective`` with ``size=(out_w, out_h)``: warp (``warpAffine``, or
    ``warpPerspective`` when ``perspective``; fill 114), boxes warped, clipped to the output, and
    filtered by :func:`box_candidates` against the input boxes times the scale."""
    in_h, in_w = image.shape[:2]
    m, s = perspective_matrix(
        rng, in_w, in_h, out_w, out_h, degrees=degrees, translate=translate, scale=scale,
        shear=shear, perspective=perspective,
    )
    if perspective:
        out = cv2.warpPerspective(image, m, dsize=(out_w, out_h), borderValue=_BORDER)
    else:
        out = cv2.warpAffine(image, m[:2], dsize=(out_w, out_h), borderValue=_BORDER)
    if len(boxes) == 0:
        return out, empty_boxes()
    warped = clip_boxes(warp_boxes(boxes, m if perspective else m[:2]), out_w, out_h)
    keep = box_candidates(boxes[:, :4] * np.float32(s), warped)
    return out, warped[keep]


def ultralytics_mixup(
    first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """``MixUp``: ``(a r + b (1 - r)).astype(uint8)`` with ``r ~ Beta(32, 32)``; boxes of both."""
    r = rng.beta(32.0, 32.0)
    image = (first[0] * r + second[0] * (1 - r)).astype(np.uint8)
    return image, np.concatenate([first[1], second[1]], 0)


def random_hsv(
    image: np.ndarray, rng: np.random.Generator, hgain: float, sgain: float, vgain: float
) -> np.ndarray:
    """``RandomHSV``: one LUT on OpenCV's 8-bit HSV (hue 0-179): hue ``+ r_h 180`` (mod 180),
    saturation and value ``x (1 + r)`` clipped, with ``r ~ U(-gain, gain)``; saturation 0 stays
    0. All gains zero: the image itself (no draw). RGB in and out (RGB2HSV gives the same HSV
    as the reference's BGR2HSV on the BGR image)."""
    if not (hgain or sgain or vgain):
        return image
    r = rng.uniform(-1, 1, 3) * [hgain, sgain, vgain]
    x = np.arange(0, 256, dtype=r.dtype)
    lut_hue = ((x + r[0] * 180) % 180).astype(np.uint8)
    lut_sat = np.clip(x * (r[1] + 1), 0, 255).astype(np.uint8)
    lut_val = np.clip(x * (r[2] + 1), 0, 255).astype(np.uint8)
    lut_sat[0] = 0
    lut = np.stack((lut_hue, lut_sat, lut_val), -1).reshape(1, 256, 3)
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    return cv2.cvtColor(cv2.LUT(hsv, lut), cv2.COLOR_HSV2RGB)


def random_flip(
    image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, lr: float, ud: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """``RandomFlip`` vertical (probability ``ud``) then horizontal (``lr``), as v8_transforms
    chains them. A probability of 0 draws nothing."""
    if ud > 0 and rng.random() < ud:
        boxes = boxes.copy()
        height = image.shape[0]
        boxes[:, 1], boxes[:, 3] = height - boxes[:, 3], height - boxes[:, 1]
        image = cv2.flip(image, 0)
    if lr > 0 and rng.random() < lr:
        image, boxes = hflip(image, boxes)
    return image, boxes


def letterbox(
    image: np.ndarray, boxes: np.ndarray, w: int, h: int, center: bool = True,
    scaleup: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """``LetterBox`` (``auto=False``): resize by ``min(h/h0, w/w0)`` (rounded, at least 1 pixel,
    ``INTER_LINEAR``), pad with 114 (centred: ``round(d - 0.1)`` before, ``round(d + 0.1)`` after);
    boxes scaled and shifted."""
    h0, w0 = image.shape[:2]
    r = min(h / h0, w / w0)
    if not scaleup:
        r = min(r, 1.0)
    new_w, new_h = max(round(w0 * r), 1), max(round(h0 * r), 1)
    dw, dh = (w - new_w) / 2, (h - new_h) / 2
    if not center:
        dw, dh = dw * 2, dh * 2
    top, bottom = (round(dh - 0.1) if center else 0), round(dh + 0.1)
    left, right = (round(dw - 0.1) if center else 0), round(dw + 0.1)
    out = resize(image, new_w, new_h)
    out = cv2.copyMakeBorder(out, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(FILL,) * 3)
    moved = boxes.copy()
    moved[:, [0, 2]] = boxes[:, [0, 2]] * np.float32(r) + left
    moved[:, [1, 3]] = boxes[:, [1, 3]] * np.float32(r) + top
    return out, moved
