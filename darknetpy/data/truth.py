"""Truth rows of an augmented image, as Darknet's OpenCV build (no torch, no model).

Mirrors ``data.c: fill_truth_detection, randomize_boxes, correct_boxes, blend_truth``. The per-box
arithmetic is float32 as in C (compiled with numba: it runs for every box of every image).
A truth array is float32 (max_boxes, 5) with rows ``x, y, w, h, class`` packed from row 0; the
first row with ``x == 0`` ends the list, as in Darknet.
"""

from __future__ import annotations

import numpy as np

from ..jit import jit
from .augment import Crop

__all__ = ["blend_truth", "correct_boxes", "fill_truth_detection", "truth_count"]

F32 = np.float32


@jit
def _correct_box(
    x: float, y: float, w: float, h: float, dx: float, dy: float, sx: float, sy: float, flip: bool
) -> tuple[float, float, float, float, bool]:
    """``correct_boxes`` for one box, all float32 (see :func:`correct_boxes`)."""
    zero, one, two = np.float32(0), np.float32(1), np.float32(2)
    half_w, half_h = w / two, h / two
    if (x == zero and y == zero) or x + half_w < zero or y + half_h < zero or (
        x - half_w > one or y - half_h > one
    ):
        return x, y, w, h, False
    left, right = (x - half_w) * sx - dx, (x + half_w) * sx - dx
    top, bottom = (y - half_h) * sy - dy, (y + half_h) * sy - dy
    if flip:
        left, right = one - right, one - left
    left, right = min(max(left, zero), one), min(max(right, zero), one)
    top, bottom = min(max(top, zero), one), min(max(bottom, zero), one)
    bw = min(max(right - left, zero), one)
    bh = min(max(bottom - top, zero), one)
    return (left + right) / two, (top + bottom) / two, bw, bh, True


def correct_boxes(
    boxes: np.ndarray, dx: float, dy: float, sx: float, sy: float, flip: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``correct_boxes``: move label boxes into the augmented image's frame.

    Edges are ``left*sx - dx`` etc., mirrored when flipped (``left' = 1 - right``), clamped to
    [0, 1]; then x, y, w, h are recomputed (w, h clamped to [0, 1]).

    Args:
        boxes: float32 (N, 5) rows ``class, x, y, w, h`` relative to the source image.
        dx, dy, sx, sy: the transform of :meth:`Crop.box_transform`.
        flip: the image is mirrored.

    Returns:
        ``(xywh, valid)``: float32 (N, 4) relative to the augmented image; ``valid`` is False
        where Darknet marks the box 999999 (``x == y == 0``, or entirely outside the source).
    """
    out = np.zeros((len(boxes), 4), F32)
    valid = np.zeros(len(boxes), bool)
    for i, (_, x, y, w, h) in enumerate(np.asarray(boxes, F32)):
        *out[i], valid[i] = _correct_box(x, y, w, h, F32(dx), F32(dy), F32(sx), F32(sy), flip)
    return out, valid


@jit
def _fill_truth_kernel(
    boxes: np.ndarray, swaps: np.ndarray, dx: float, dy: float, sx: float, sy: float,
    flip: bool, classes: int, max_boxes: int, net_w: int, net_h: int,
) -> tuple[np.ndarray, int]:
    b = boxes.copy()
    n = b.shape[0]
    for i in range(n):  # randomize_boxes: swap row i with a uniformly drawn row
        j = swaps[i]
        for k in range(5):
            b[i, k], b[j, k] = b[j, k], b[i, k]
    truth = np.zeros((max_boxes, 5), np.float32)
    lowest_w = np.float32(1) / np.float32(net_w)
    lowest_h = np.float32(1) / np.float32(net_h)
    zero, one = np.float32(0), np.float32(1)
    count, min_w_h = 0, 0
    for i in range(min(n, max_boxes)):  # truncated to max BEFORE filtering
        x, y, w, h, valid = _correct_box(b[i, 1], b[i, 2], b[i, 3], b[i, 4], dx, dy, sx, sy, flip)
        if int(b[i, 0]) >= classes or not valid:
            continue
        if w < lowest_w or h < lowest_h:
            continue
        if x <= zero or x > one or y <= zero or y > one:
            continue
        w, h = min(w, one), min(h, one)
        truth[count, 0], truth[count, 1], truth[count, 2], truth[count, 3] = x, y, w, h
        truth[count, 4] = b[i, 0]
        count += 1
        pw, ph = w * np.float32(net_w), h * np.float32(net_h)
        if min_w_h == 0:
            min_w_h = int(pw)
        if np.float32(min_w_h) > pw:
            min_w_h = int(pw)
        if np.float32(min_w_h) > ph:
            min_w_h = int(ph)
    return truth, min_w_h


def fill_truth_detection(
    boxes: np.ndarray,
    crop: Crop,
    classes: int,
    max_boxes: int,
    net_w: int,
    net_h: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, int]:
    """``fill_truth_detection``: the truth rows of one augmented image.

    Shuffles (``randomize_boxes``: row i swapped with a uniformly drawn row, for each i),
    transforms (:func:`correct_boxes`), truncates to ``max_boxes`` BEFORE filtering, then drops
    boxes with ``class >= classes``, invalid ones, those under one pixel of the current network
    input (``w < 1/net_w`` or ``h < 1/net_h``) and those with x or y outside (0, 1]; w and h are
    capped at 1.

    Args:
        boxes: float32 (N, 5) rows ``class, x, y, w, h`` (:func:`~darknetpy.data.labels.read_labels`).

    Returns:
        ``(truth, min_w_h)``: float32 (max_boxes, 5) rows ``x, y, w, h, class``, packed from row 0
        and zero-padded; and the smallest kept box side in network pixels (int; 0 if none), which
        limits ``blur``.
    """
    boxes = np.ascontiguousarray(boxes, dtype=F32).reshape(-1, 5)
    if len(boxes) == 0:
        return np.zeros((max_boxes, 5), F32), 0
    swaps = rng.integers(0, len(boxes), size=len(boxes))
    dx, dy, sx, sy = crop.box_transform()
    return _fill_truth_kernel(
        boxes, swaps, dx, dy, sx, sy, crop.flip, classes, max_boxes, net_w, net_h
    )


def truth_count(truth: np.ndarray) -> int:
    """Rows before the first ``x == 0`` (how Darknet finds the end of a truth list)."""
    zero = np.flatnonzero(truth[:, 0] == 0)
    return int(zero[0]) if len(zero) else len(truth)


def blend_truth(truth: np.ndarray, new_truth: np.ndarray) -> np.ndarray:
    """``blend_truth`` (mixup): append ``new_truth``'s rows after ``truth``'s, up to its length."""
    out = truth.copy()
    start = truth_count(out)
    add = new_truth[: truth_count(new_truth)][: len(out) - start]
    out[start : start + len(add)] = add
    return out
