"""The pixel side of Darknet's ``image_data_augmentation`` (src/image_opencv.cpp), uint8 RGB.

Crop with mean-colour padding, ``cv::resize(INTER_LINEAR)``, flip, HSV in uint8 with saturation,
blur, non-negative Gaussian noise, in that order (spec §8.3-8.6). No torch, no model.
"""

from __future__ import annotations

import cv2
import numpy as np

from .augment import Crop, Draws
from .truth import truth_count

__all__ = [
    "augment_image", "blur_image", "crop_and_resize", "gaussian_noise", "hsv_shift",
    "hsv_shift_region",
]

F32 = np.float32


def crop_and_resize(image: np.ndarray, crop: Crop, w: int, h: int) -> np.ndarray:
    """The crop + resize of ``image_data_augmentation``.

    The part of the crop rectangle outside the image is filled with the image's per-channel mean
    colour (``cv::mean``, rounded), then the rectangle is resized to (w, h) with
    ``cv::resize(INTER_LINEAR)``.
    """
    if crop.is_full_image:
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    x0, y0 = max(crop.pleft, 0), max(crop.ptop, 0)
    x1 = min(crop.pleft + crop.swidth, crop.ow)
    y1 = min(crop.ptop + crop.sheight, crop.oh)
    pad_left, pad_top = x0 - crop.pleft, y0 - crop.ptop
    pad_right = crop.pleft + crop.swidth - x1
    pad_bottom = crop.ptop + crop.sheight - y1
    if not (pad_left or pad_top or pad_right or pad_bottom):
        cropped = image[y0:y1, x0:x1]  # entirely inside: no padding, no copy
    else:
        mean = [float(v) for v in np.rint(cv2.mean(image)[:3])]
        if x1 > x0 and y1 > y0:
            cropped = cv2.copyMakeBorder(
                image[y0:y1, x0:x1], pad_top, pad_bottom, pad_left, pad_right,
                cv2.BORDER_CONSTANT, value=mean,
            )
        else:  # the rectangle misses the image entirely: all padding
            cropped = np.empty((crop.sheight, crop.swidth, 3), np.uint8)
            cropped[:] = np.asarray(mean, np.uint8)
    return cv2.resize(cropped, (w, h), interpolation=cv2.INTER_LINEAR)


def hsv_shift(image: np.ndarray, dhue: float, dsat: float, dexp: float) -> np.ndarray:
    """The HSV augmentation of ``image_data_augmentation`` on a uint8 RGB image.

    OpenCV HSV (H in [0, 180)); ``S *= dsat``, ``V *= dexp``, ``H += 179*dhue``, each rounded
    and saturated to uint8 (a negative hue shift clips at 0; H >= 180 wraps in HSV -> RGB).
    Skipped when nothing changes, as in Darknet.
    """
    if dsat == 1 and dexp == 1 and dhue == 0:
        return image
    levels = np.arange(256, dtype=F32)
    lut = np.stack(
        [
            levels + F32(179 * dhue),
            levels * F32(dsat),
            levels * F32(dexp),
        ],
        axis=1,
    )
    lut = np.clip(np.rint(lut), 0, 255).astype(np.uint8).reshape(256, 1, 3)
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    return cv2.cvtColor(cv2.LUT(hsv, lut), cv2.COLOR_HSV2RGB)


def hsv_shift_region(
    image: np.ndarray, region: tuple[int, int, int, int], dhue: float, dsat: float, dexp: float
) -> np.ndarray:
    """:func:`hsv_shift` of the part ``region`` = ``(x0, y0, x1, y1)`` of ``image`` (a mosaic
    piece's quadrant), with the pixels ``image_data_augmentation`` gives there: it converts the
    whole image.

    OpenCV's RGB <-> HSV conversion works row by row, and the last pixels of a row (those after
    its vector loop's last full block, under 32 here) take another code path that can round by 1
    differently. Converting only the region's columns moved that tail into the region (measured
    against Darknet's mosaics: up to 15% of an unblurred piece's pixels off by 1); converting
    the region's rows at full width keeps every row end where Darknet has it.
    """
    x0, y0, x1, y1 = region
    return hsv_shift(image[y0:y1], dhue, dsat, dexp)[:, x0:x1]


def blur_image(image: np.ndarray, blur: int, truth: np.ndarray) -> np.ndarray:
    """The blur of ``image_data_augmentation``.

    ``blur == 1``: Gaussian 17x17 on the whole image, then the unblurred pixels inside every truth
    box are pasted back (only the background is blurred). ``blur > 1``: Gaussian with kernel
    ``(blur/2)*2 + 1`` everywhere.
    """
    if not blur:
        return image
    if blur > 1:
        k = (blur // 2) * 2 + 1
        return cv2.GaussianBlur(image, (k, k), 0)
    out = cv2.GaussianBlur(image, (17, 17), 0)
    rows, cols = image.shape[:2]
    for x, y, w, h, _ in truth[: truth_count(truth)].astype(np.float64):
        left, top = int((x - w / 2.0) * cols), int((y - h / 2.0) * rows)
        right, bottom = left + int(w * cols), top + int(h * rows)
        left, top = max(left, 0), max(top, 0)
        right, bottom = min(right, cols), min(bottom, rows)
        if right > left and bottom > top:
            out[top:bottom, left:right] = image[top:bottom, left:right]
    return out


def gaussian_noise(image: np.ndarray, sigma: int, rng: np.random.Generator) -> np.ndarray:
    """``cv::randn`` into a uint8 matrix (negative samples saturate to 0) added with saturation."""
    sigma = min(max(int(sigma), 0), 127)
    if sigma == 0:
        return image
    noise = rng.standard_normal(image.shape, dtype=F32) * F32(sigma)
    noise = np.clip(np.rint(noise), 0, 255).astype(np.uint8)
    return cv2.add(image, noise)


def augment_image(
    image: np.ndarray,
    crop: Crop,
    w: int,
    h: int,
    draws: Draws,
    blur: int,
    truth: np.ndarray,
    rng: np.random.Generator,
    region: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """``image_data_augmentation``: crop/resize, flip, HSV, blur, noise of one uint8 RGB image.

    Args:
        image: source uint8 (H, W, 3) RGB.
        crop: from :func:`jitter_crop`.
        w, h: network size.
        draws: the image's :class:`Draws` (flip, colour, noise).
        blur: the blur to apply (``draws.blur`` after ``fill_truth_detection``'s limit).
        truth: the image's truth (x, y, w, h, class) in the augmented frame (for ``blur == 1``).
        rng: for the noise.
        region: ``(x0, y0, x1, y1)`` of the output that is actually needed (mosaic). Without
            blur the colour step then runs on the region's rows only (:func:`hsv_shift_region`),
            which gives the same pixels.

    Returns:
        uint8 (h, w, 3) RGB, or the region of it.
    """
    sized = crop_and_resize(image, crop, w, h)
    if draws.flip:
        sized = cv2.flip(sized, 1)
    if blur:  # a neighbourhood operation: run it on the whole image first
        sized = hsv_shift(sized, draws.dhue, draws.dsat, draws.dexp)
        sized = blur_image(sized, blur, truth)
        if region is not None:
            sized = sized[region[1] : region[3], region[0] : region[2]]
    elif region is not None:
        sized = hsv_shift_region(sized, region, draws.dhue, draws.dsat, draws.dexp)
    else:
        sized = hsv_shift(sized, draws.dhue, draws.dsat, draws.dexp)
    return gaussian_noise(sized, draws.gaussian_noise, rng)
