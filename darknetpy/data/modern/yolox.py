"""The YOLOX training augmentation, step by step (no torch, no model).

One training image as YOLOX builds it (``yolox/data/datasets/mosaicdetection.py:
MosaicDetection.__getitem__`` with ``yolox/data/data_augment.py: TrainTransform`` and the defaults
of ``yolox/exp/yolox_base.py``; :func:`darknetpy.data.modern.sample.build_yolox_sample` chains them):

1. :func:`fit_image`: the dataset's ``load_resized_img`` (fit into the input size, truncated).
2. with probability ``mosaic_prob`` (and while mosaic is on, i.e. not in the last ``no_aug``
   epochs): :func:`yolox_mosaic` on a 2h x 2w canvas, then :func:`yolox_random_affine` (rotation,
   scale ``mosaic_scale`` and shear about the canvas origin, translation) to the input size, then
   with probability ``mixup_prob`` :func:`yolox_mixup` with another (labelled) image;
3. :func:`train_transform` (``TrainTransform``): HSV (:func:`augment_hsv`), flip, top-left
   letterbox with 114 (:func:`preproc`), boxes under 1 pixel dropped (none left: the
   un-augmented image instead).

Randomness comes from an explicit ``np.random.Generator`` (YOLOX draws from Python's ``random``
and NumPy's global state; the distributions are the same, the streams are not).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .common import FILL, clip_boxes, empty_boxes, hflip, paste_mosaic, resize, warp_boxes

__all__ = [
    "affine_matrix",
    "augment_hsv",
    "fit_image",
    "preproc",
    "train_transform",
    "yolox_mixup",
    "yolox_mosaic",
    "yolox_random_affine",
]

_BORDER = (FILL, FILL, FILL)


def fit_image(image: np.ndarray, w: int, h: int) -> tuple[np.ndarray, float]:
    """``COCODataset.load_resized_img``: ``r = min(h/h0, w/w0)``, resized to
    ``(int(w0 r), int(h0 r))`` with ``INTER_LINEAR``. Returns the image and ``r``."""
    h0, w0 = image.shape[:2]
    r = min(h / h0, w / w0)
    return resize(image, max(int(w0 * r), 1), max(int(h0 * r), 1)), r


def yolox_mosaic(
    pieces: list[tuple[np.ndarray, np.ndarray]], w: int, h: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``MosaicDetection.__getitem__`` (mosaic branch): centre ``int(U(h/2, 3h/2))``,
    ``int(U(w/2, 3w/2))``; each piece fitted again (:func:`fit_image`: a no-op for pieces already
    fitted to ``w`` x ``h``), pasted as ``get_mosaic_coordinate`` says, boxes clipped to the canvas
    (none dropped)."""
    yc = int(rng.uniform(0.5 * h, 1.5 * h))
    xc = int(rng.uniform(0.5 * w, 1.5 * w))
    fitted = []
    for image, boxes in pieces:
        resized, r = fit_image(image, w, h)
        scaled = boxes.copy()
        scaled[:, :4] *= np.float32(r)
        fitted.append((resized, scaled))
    canvas, boxes = paste_mosaic(fitted, xc, yc, 2 * w, 2 * h)
    return canvas, clip_boxes(boxes, 2 * w, 2 * h)


def _uniform(rng: np.random.Generator, value: float | tuple[float, float], center: float = 0.0) -> float:
    """``get_aug_params``: ``U(center - v, center + v)`` for a number, ``U(lo, hi)`` for a pair."""
    if isinstance(value, (tuple, list)):
        return float(rng.uniform(value[0], value[1]))
    return float(rng.uniform(center - value, center + value))


def affine_matrix(
    rng: np.random.Generator, w: int, h: int, *, degrees: float,
    translate: float, scales: float | tuple[float, float], shear: float,
) -> tuple[np.ndarray, float]:
    """``get_affine_matrix``: rotation ``U(±degrees)`` and scale about the origin (not the
    centre), shear ``tan(U(±shear)°)`` mixed into the rows, translation ``U(±translate)`` times the
    output size. Returns the 2x3 float64 matrix and the scale."""
    angle = _uniform(rng, degrees)
    scale = _uniform(rng, scales, center=1.0)
    if scale <= 0:
        raise ValueError(f"affine scale {scale} must be positive (check mosaic_scale)")
    r = cv2.getRotationMatrix2D(angle=angle, center=(0, 0), scale=scale)
    m = np.ones((2, 3))
    shear_x = math.tan(_uniform(rng, shear) * math.pi / 180)
    shear_y = math.tan(_uniform(rng, shear) * math.pi / 180)
    m[0] = r[0] + shear_y * r[1]
    m[1] = r[1] + shear_x * r[0]
    m[0, 2] = _uniform(rng, translate) * w
    m[1, 2] = _uniform(rng, translate) * h
    return m, scale


def yolox_random_affine(
    image: np.ndarray, boxes: np.ndarray, w: int, h: int, rng: np.random.Generator, *,
    degrees: float = 10.0, translate: float = 0.1,
    scales: float | tuple[float, float] = (0.1, 2.0), shear: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``random_affine``: ``warpAffine`` to ``w`` x ``h`` (fill 114); boxes warped
    (``apply_affine_to_bboxes``) and clipped, none dropped (``TrainTransform`` filters later)."""
    m, _ = affine_matrix(rng, w, h, degrees=degrees, translate=translate, scales=scales, shear=shear)
    out = cv2.warpAffine(image, m, dsize=(w, h), borderValue=_BORDER)
    if len(boxes) == 0:
        return out, boxes
    return out, clip_boxes(warp_boxes(boxes, m), w, h)


def yolox_mixup(
    image: np.ndarray, boxes: np.ndarray, other: np.ndarray, other_boxes: np.ndarray,
    rng: np.random.Generator, mixup_scale: tuple[float, float] = (0.5, 1.5),
) -> tuple[np.ndarray, np.ndarray]:
    """``MosaicDetection.mixup``: ``other`` (pixel boxes ``other_boxes``, at least one) fitted
    top-left into a 114 canvas of ``image``'s size, the whole canvas scaled by ``U(mixup_scale)``,
    mirrored with probability 1/2, placed on a black canvas at least ``image``'s size, cropped at
    a random offset to ``image``'s size and blended 0.5/0.5 (``astype(uint8)``); its boxes follow
    (clipped, none dropped) and are appended."""
    jit = rng.uniform(mixup_scale[0], mixup_scale[1])
    flip = rng.uniform(0, 1) > 0.5
    th, tw = image.shape[:2]
    cp = np.full((th, tw, 3), FILL, np.uint8)
    ratio = min(th / other.shape[0], tw / other.shape[1])
    rw, rh = int(other.shape[1] * ratio), int(other.shape[0] * ratio)
    cp[:rh, :rw] = resize(other, rw, rh)
    cp = resize(cp, int(tw * jit), int(th * jit))
    ratio *= jit
    if flip:
        cp = cv2.flip(cp, 1)
    oh, ow = cp.shape[:2]
    y_off = int(rng.integers(0, oh - th)) if oh > th else 0
    x_off = int(rng.integers(0, ow - tw)) if ow > tw else 0
    # the reference pastes cp on a black canvas of at least th x tw and crops th x tw at the offset
    cropped = np.zeros((th, tw, 3), np.uint8)
    part = cp[y_off : y_off + th, x_off : x_off + tw]
    cropped[: part.shape[0], : part.shape[1]] = part
    moved = other_boxes.copy()  # adjust_box_anns: scale, clip to the scaled canvas
    moved[:, [0, 2]] = np.clip(other_boxes[:, [0, 2]] * ratio, 0, ow)
    moved[:, [1, 3]] = np.clip(other_boxes[:, [1, 3]] * ratio, 0, oh)
    if flip:
        moved[:, 0], moved[:, 2] = ow - moved[:, 2], ow - moved[:, 0]
    moved[:, [0, 2]] = np.clip(moved[:, [0, 2]] - x_off, 0, tw)
    moved[:, [1, 3]] = np.clip(moved[:, [1, 3]] - y_off, 0, th)
    # 0.5 a + 0.5 b truncated to uint8 (the reference, in float) is exactly (a + b) >> 1
    blended = ((image.astype(np.uint16) + cropped) >> 1).astype(np.uint8)
    return blended, np.concatenate([boxes, moved], 0)


def augment_hsv(
    image: np.ndarray, rng: np.random.Generator, hgain: float = 5, sgain: float = 30,
    vgain: float = 30,
) -> np.ndarray:
    """``augment_hsv``: offsets ``U(-gain, gain)``, each kept with probability 1/2, truncated to
    integers, added to OpenCV's 8-bit HSV (hue mod 180, saturation and value clipped to 0-255).
    Done with one LUT, which gives the reference's int16 arithmetic exactly. RGB in and out."""
    offsets = rng.uniform(-1, 1, 3) * [hgain, sgain, vgain]
    offsets *= rng.integers(0, 2, 3)
    dh, ds, dv = (int(v) for v in offsets.astype(np.int16))
    x = np.arange(256, dtype=np.int16)
    lut = np.stack(
        ((x + dh) % 180, np.clip(x + ds, 0, 255), np.clip(x + dv, 0, 255)), -1
    ).astype(np.uint8).reshape(1, 256, 3)
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    return cv2.cvtColor(cv2.LUT(hsv, lut), cv2.COLOR_HSV2RGB)


def preproc(image: np.ndarray, w: int, h: int) -> tuple[np.ndarray, float]:
    """``preproc`` (without the CHW float conversion): resized by ``r = min(h/h0, w/w0)``
    (truncated sizes, ``INTER_LINEAR``) into the top-left corner of a 114 canvas."""
    h0, w0 = image.shape[:2]
    r = min(h / h0, w / w0)
    rw, rh = int(w0 * r), int(h0 * r)
    if (rw, rh) == (w, h):
        return resize(image, w, h), r
    out = np.full((h, w, 3), FILL, np.uint8)
    out[:rh, :rw] = resize(image, rw, rh)
    return out, r


def train_transform(
    image: np.ndarray, boxes: np.ndarray, w: int, h: int, rng: np.random.Generator, *,
    flip_prob: float = 0.5, hsv_prob: float = 1.0, hsv: tuple[float, float, float] = (5, 30, 30),
) -> tuple[np.ndarray, np.ndarray]:
    """``TrainTransform.__call__``: no boxes: :func:`preproc` only. Else HSV (probability
    ``hsv_prob``), mirror (``flip_prob``), :func:`preproc`, boxes scaled and those whose width or
    height is not over 1 pixel dropped; if none is left, the un-augmented image and all its
    boxes instead. Returns the ``w`` x ``h`` image and pixel boxes."""
    if len(boxes) == 0:
        return preproc(image, w, h)[0], empty_boxes()
    original, original_boxes = image, boxes
    if rng.random() < hsv_prob:
        image = augment_hsv(image, rng, *hsv)
    if rng.random() < flip_prob:
        image, boxes = hflip(image, boxes)
    out, r = preproc(image, w, h)
    scaled = boxes.copy()
    scaled[:, :4] *= np.float32(r)
    keep = np.minimum(scaled[:, 2] - scaled[:, 0], scaled[:, 3] - scaled[:, 1]) > 1
    if keep.any():
        return out, scaled[keep]
    out, r = preproc(original, w, h)
    scaled = original_boxes.copy()
    scaled[:, :4] *= np.float32(r)
    return out, scaled
