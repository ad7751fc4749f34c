"""Darknet's 4-image mosaic (``mosaic=1``), the geometry and the labels (no torch, no model).

Mirrors the ``use_mixup == 3`` branches of ``data.c: load_data_detection`` [OpenCV version] and
``data.c: blend_truth_mosaic`` (spec §8.9). Piece ``i`` (0 TL, 1 TR, 2 BL, 3 BR) is a full w x h
augmented image; the part of it that lands in quadrant ``i`` is chosen so that, where jitter padded
the image, the padding is skipped (``*_shift``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..jit import jit
from .augment import Crop
from .truth import truth_count

__all__ = ["MosaicPiece", "blend_truth_mosaic", "cut_points", "mosaic_piece"]

F32 = np.float32
MIN_OFFSET = F32(0.2)  # load_data_detection: cut points lie in [20%, 80%] of the size


def cut_points(rng: np.random.Generator, w: int, h: int) -> tuple[int, int]:
    """``cut_x = rand_int(w*0.2, w*0.8)``, same for y; C truncates the float bounds to int."""
    lo_x, hi_x = int(F32(w) * MIN_OFFSET), int(F32(w) * (F32(1) - MIN_OFFSET))
    lo_y, hi_y = int(F32(h) * MIN_OFFSET), int(F32(h) * (F32(1) - MIN_OFFSET))
    return int(rng.integers(lo_x, hi_x + 1)), int(rng.integers(lo_y, hi_y + 1))


@dataclass(frozen=True)
class MosaicPiece:
    """Where piece ``index`` goes: ``src`` region of the augmented piece -> ``dst`` of the mosaic.

    Regions are ``(x0, y0, x1, y1)`` in network pixels, x1/y1 exclusive. ``shifts`` are
    ``(left, right, top, bot)`` as Darknet computes them (used by :func:`blend_truth_mosaic`).
    """

    index: int
    src: tuple[int, int, int, int]
    dst: tuple[int, int, int, int]
    shifts: tuple[int, int, int, int]


def _c_div(a: int, b: int) -> int:
    """C integer division (truncation toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def mosaic_piece(index: int, crop: Crop, w: int, h: int, cut_x: int, cut_y: int) -> MosaicPiece:
    """The shifts and the copied regions of piece ``index`` (spec §8.9).

    After augmentation Darknet swaps pleft/pright when the piece is flipped, then
    ``left_shift = min(cut_x, max(0, -pleft*w/ow))`` (integer arithmetic), and likewise
    ``top_shift`` (cut_y), ``right_shift`` (w - cut_x), ``bot_shift`` (h - cut_y).
    """
    pleft, pright = (crop.pright, crop.pleft) if crop.flip else (crop.pleft, crop.pright)
    left = min(cut_x, max(0, _c_div(-pleft * w, crop.ow)))
    top = min(cut_y, max(0, _c_div(-crop.ptop * h, crop.oh)))
    right = min(w - cut_x, max(0, _c_div(-pright * w, crop.ow)))
    bot = min(h - cut_y, max(0, _c_div(-crop.pbot * h, crop.oh)))
    # source x / y origin per piece: left pieces take the right part of their image, etc.
    sx = w - cut_x - right if index in (0, 2) else left
    sy = h - cut_y - bot if index in (0, 1) else top
    dst_x0, dst_x1 = (0, cut_x) if index in (0, 2) else (cut_x, w)
    dst_y0, dst_y1 = (0, cut_y) if index in (0, 1) else (cut_y, h)
    src = (sx, sy, sx + dst_x1 - dst_x0, sy + dst_y1 - dst_y0)
    return MosaicPiece(index, src, (dst_x0, dst_y0, dst_x1, dst_y1), (left, right, top, bot))


@jit
def _blend_mosaic_kernel(
    out: np.ndarray, start: int, old: np.ndarray, index: int, shifts: tuple,
    w: int, h: int, cut_x: int, cut_y: int, net_w: int, net_h: int, mosaic_bound: bool,
) -> None:
    left_shift, right_shift, top_shift, bot_shift = shifts
    f0, f1, f2 = np.float32(0), np.float32(1), np.float32(2)
    wf, hf, cxf, cyf = np.float32(w), np.float32(h), np.float32(cut_x), np.float32(cut_y)
    lowest_w, lowest_h = f1 / np.float32(net_w), f1 / np.float32(net_h)
    new_t = start
    for t in range(old.shape[0]):
        xb, yb, wb, hb = old[t, 0], old[t, 1], old[t, 2], old[t, 3]
        if index == 0 or index == 2:
            xb = xb - (wf - cxf - np.float32(right_shift)) / wf
        else:
            xb = xb + (cxf - np.float32(left_shift)) / wf
        if index == 0 or index == 1:
            yb = yb - (hf - cyf - np.float32(bot_shift)) / hf
        else:
            yb = yb + (cyf - np.float32(top_shift)) / hf
        left, right = int((xb - wb / f2) * wf), int((xb + wb / f2) * wf)
        top, bot = int((yb - hb / f2) * hf), int((yb + hb / f2) * hf)
        if mosaic_bound:  # clip to the piece's own quadrant
            lb, rb = (0, cut_x) if index == 0 or index == 2 else (cut_x, w)
            tb, bb = (0, cut_y) if index == 0 or index == 1 else (cut_y, h)
            left, right = max(left, lb), min(right, rb)
            top, bot = max(top, tb), min(bot, bb)
            xb = (np.float32(right + left) / f2) / wf
            wb = np.float32(right - left) / wf
            yb = (np.float32(bot + top) / f2) / hf
            hb = np.float32(bot - top) / hf
        else:  # clip to the whole image only
            if left < 0:
                diff = np.float32(left) / wf
                xb, wb = xb - diff / f2, wb + diff
            if right > w:
                diff = np.float32(right - w) / wf
                xb, wb = xb - diff / f2, wb - diff
            if top < 0:
                diff = np.float32(top) / hf
                yb, hb = yb - diff / f2, hb + diff
            if bot > h:
                diff = np.float32(bot - h) / hf
                yb, hb = yb - diff / f2, hb - diff
            left, right = int((xb - wb / f2) * wf), int((xb + wb / f2) * wf)
            top, bot = int((yb - hb / f2) * hf), int((yb + hb / f2) * hf)
        if (
            left >= 0 and right <= w and top >= 0 and bot <= h
            and f0 < wb < f1 and f0 < hb < f1 and f0 < xb < f1 and f0 < yb < f1
            and wb > lowest_w and hb > lowest_h
        ):
            out[new_t, 0], out[new_t, 1], out[new_t, 2], out[new_t, 3] = xb, yb, wb, hb
            out[new_t, 4] = old[t, 4]
            new_t += 1


def blend_truth_mosaic(
    truth: np.ndarray,
    piece_truth: np.ndarray,
    piece: MosaicPiece,
    w: int,
    h: int,
    cut_x: int,
    cut_y: int,
    net_w: int,
    net_h: int,
    mosaic_bound: bool,
) -> np.ndarray:
    """``blend_truth_mosaic``: append a piece's boxes, moved into the mosaic, to ``truth``.

    The piece's boxes (as many as ``truth`` has free slots, in order) are shifted by the piece's
    offset, turned into integer pixel edges (C truncation), clipped to the piece's quadrant
    (``mosaic_bound``) or only to the whole image (a box may then cover pixels of a neighbouring
    piece), and kept if inside the image with ``0 < x, y, w, h < 1``, ``w > 1/net_w`` and
    ``h > 1/net_h``. All arithmetic in float32, as Darknet.

    Args:
        truth: float32 (max, 5) rows ``x, y, w, h, class`` of the mosaic so far.
        piece_truth: the piece's own truth, same layout.

    Returns:
        the new truth array (``truth`` is not modified).
    """
    out = np.array(truth, dtype=F32, copy=True)
    start = truth_count(out)
    old = np.ascontiguousarray(piece_truth[: truth_count(piece_truth)][: len(out) - start], F32)
    if len(old):
        _blend_mosaic_kernel(
            out, start, old, piece.index, piece.shifts, w, h, cut_x, cut_y, net_w, net_h,
            bool(mosaic_bound),
        )
    return out
