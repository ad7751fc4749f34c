"""Darknet's ``image.c: resize_image`` (no torch, no model): align-corners bilinear in float32,
computed in the same order as the C loops, including its quirk that the last output row is
``(1-dy)*row[iy]`` with no second term. :func:`resize_image_numpy` is the numpy reference;
:func:`resize_image` and the uint8 path of :func:`darknetpy.data.image.prepare_test_input` run
numba kernels equal to it bit for bit.
"""

from __future__ import annotations

import numpy as np

from ..jit import jit

def axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Source index and fraction for every output position, as ``resize_image`` computes them.

    ``scale = (float)(n_in - 1) / (n_out - 1)``, ``s = i*scale`` (float32), ``ix = (int)s``,
    ``d = s - ix``, all in float32.
    """
    if n_out == 1:
        return np.zeros(1, np.intp), np.zeros(1, np.float32)
    scale = np.float32(n_in - 1) / np.float32(n_out - 1)
    s = np.arange(n_out, dtype=np.float32) * scale
    index = s.astype(np.intp)  # truncation toward zero, s >= 0
    frac = (s - index.astype(np.float32)).astype(np.float32)
    return np.minimum(index, n_in - 1), frac


def resize_image_numpy(image: np.ndarray, w: int, h: int) -> np.ndarray:
    """Darknet's ``resize_image`` (src/image.c) in numpy, with :func:`resize_image`'s arguments and
    result: the reference the compiled :func:`resize_image` must equal bit for bit
    (tests/data/test_image.py checks it; it is several times slower)."""
    image = np.asarray(image, dtype=np.float32)
    squeeze = image.ndim == 2
    if squeeze:
        image = image[None]
    _, in_h, in_w = image.shape
    if w < 1 or h < 1:
        raise ValueError(f"resize_image: target size {w}x{h} must be positive")
    if (in_w, in_h) == (w, h):
        out = image.copy()
        return out[0] if squeeze else out

    ix, dx = axis_weights(in_w, w)
    if in_w == 1:
        part = np.repeat(image[:, :, :1], w, axis=2)
    else:
        ix1 = np.minimum(ix + 1, in_w - 1)
        part = (np.float32(1) - dx) * image[:, :, ix] + dx * image[:, :, ix1]
        part[:, :, w - 1] = image[:, :, in_w - 1]
    part = part.astype(np.float32, copy=False)

    iy, dy = axis_weights(in_h, h)
    out = (np.float32(1) - dy)[None, :, None] * part[:, iy, :]
    if in_h != 1:
        rows = np.arange(h - 1)  # the last row gets no second term
        iy1 = np.minimum(iy[rows] + 1, in_h - 1)
        out[:, rows, :] += dy[rows][None, :, None] * part[:, iy1, :]
    out = out.astype(np.float32, copy=False)
    return out[0] if squeeze else out


# ---------------------------------------------------------------- compiled resize_image
#
# Why hand-written: Darknet's resize_image is no library's bilinear (align-corners scale
# (in-1)/(out-1) in float32, truncated source indices, an exact last column, a last row with no
# second term), so cv2.resize cannot stand in for it, and the numpy version above spends its time
# gathering whole float32 planes (image[:, :, ix], part[:, iy, :]) into temporaries. The kernels
# below do the same float32 operations in the same order on the same weights (sampling calls
# axis_weights; no fastmath, so no FMA contraction or reassociation): their output equals
# resize_image_numpy bit for bit (tests/data/test_image.py). They compute only the source rows the
# vertical pass reads, two at a time in a ring, and prepare_test_input reads the uint8 HWC pixels
# directly (mat_to_image's /255.f is a 256-entry table made by to_chw_float, the channel order an
# index list) instead of converting the whole photo to float CHW first.
# Measured (2-core machine shared with other jobs, load ~4, best of 60 interleaved rounds, 416x416
# from a 768x576 / 1920x1080 photo): resize_image 3.9 / 8.6 ms in numpy, 0.83 / 2.2 ms compiled;
# uint8 BGR photo -> input (to_chw_float + resize) 6.0 / 17.6 ms, 0.74 / 1.5 ms fused
# (cv2.dnn.blobFromImage: 0.54 / 0.79 ms). Serial: a parallel=True build (prange over row blocks,
# 2 threads) was no faster at these sizes and would compete with PyTorch's OpenMP threads.
# First use in a process: numba's own start-up (its typing registries, and scipy.linalg, which
# numba imports for its BLAS check) takes 0.6-0.9 s once per process whichever kernel runs first;
# then about 15 ms to load each kernel from numba's cache (cache=True), or 1.5-1.7 s to compile it
# where the cache is cold or no cache directory is writable (see darknetpy.jit).


@jit
def _ring_slots(held: np.ndarray, a: int, b: int, second: bool) -> tuple[int, bool, int, bool]:
    """Which of the two ring rows hold source rows ``a`` and ``b`` (``b`` only when ``second``),
    and whether each must be (re)computed. Rows arrive in non-decreasing order, so an evicted row
    is never needed again (correctness does not depend on it: a missing row is recomputed)."""
    if held[0] == a:
        sa, fill_a = 0, False
    elif held[1] == a:
        sa, fill_a = 1, False
    else:
        sa, fill_a = (1 if second and held[0] == b else 0), True
        held[sa] = a
    sb, fill_b = sa, False
    if second and b != a:
        sb = 1 - sa
        if held[sb] != b:
            fill_b = True
            held[sb] = b
    return sa, fill_a, sb, fill_b


@jit
def _vertical_row(p0: np.ndarray, p1: np.ndarray, one_minus_dy: np.float32, dy: np.float32,
                  second: bool, out: np.ndarray, y: int, x0: int) -> None:
    """One output row of the vertical pass: ``(1-dy)*p0 [+ dy*p1]``, float32, into
    ``out[:, y, x0:x0+w]``."""
    w = p0.shape[1]
    for k in range(p0.shape[0]):
        dst, a, b = out[k, y, x0 : x0 + w], p0[k], p1[k]
        if second:
            for c in range(w):
                dst[c] = one_minus_dy * a[c] + dy * b[c]
        else:
            for c in range(w):
                dst[c] = one_minus_dy * a[c]


@jit
def _horizontal_row_chw(src: np.ndarray, row: int, ix: np.ndarray, ix1: np.ndarray,
                        one_minus_dx: np.ndarray, dx: np.ndarray, part: np.ndarray) -> None:
    """Row ``row`` of the horizontal pass of a float32 (C, H, W) image into ``part`` (C, w)."""
    in_w = src.shape[2]
    w = part.shape[1]
    for k in range(src.shape[0]):
        s, dst = src[k, row], part[k]
        if in_w == 1:
            for c in range(w):
                dst[c] = s[0]
        else:
            for c in range(w):
                dst[c] = one_minus_dx[c] * s[ix[c]] + dx[c] * s[ix1[c]]
            dst[w - 1] = s[in_w - 1]


@jit
def _horizontal_row_hwc(src: np.ndarray, row: int, channels: np.ndarray, lut: np.ndarray,
                        ix: np.ndarray, ix1: np.ndarray, one_minus_dx: np.ndarray, dx: np.ndarray,
                        part: np.ndarray) -> None:
    """The same for a uint8 (H, W, C) image read through ``lut`` (value -> float32) in the
    channel order ``channels``."""
    in_w = src.shape[1]
    w = part.shape[1]
    s = src[row]
    for k in range(channels.shape[0]):
        ch, dst = channels[k], part[k]
        if in_w == 1:
            for c in range(w):
                dst[c] = lut[s[0, ch]]
        else:
            for c in range(w):
                dst[c] = one_minus_dx[c] * lut[s[ix[c], ch]] + dx[c] * lut[s[ix1[c], ch]]
            dst[w - 1] = lut[s[in_w - 1, ch]]


@jit
def resize_chw_kernel(src, ix, ix1, one_minus_dx, dx, iy, iy1, one_minus_dy, dy, out, x0, y0):
    """resize_image of a float32 (C, H, W) image into ``out[:, y0:y0+h, x0:x0+w]``."""
    in_h = src.shape[1]
    h = iy.shape[0]
    ring = np.empty((2, src.shape[0], ix.shape[0]), np.float32)
    held = np.full(2, -1, np.int64)
    for r in range(h):
        second = in_h != 1 and r != h - 1
        sa, fill_a, sb, fill_b = _ring_slots(held, iy[r], iy1[r], second)
        if fill_a:
            _horizontal_row_chw(src, iy[r], ix, ix1, one_minus_dx, dx, ring[sa])
        if fill_b:
            _horizontal_row_chw(src, iy1[r], ix, ix1, one_minus_dx, dx, ring[sb])
        _vertical_row(ring[sa], ring[sb], one_minus_dy[r], dy[r], second, out, y0 + r, x0)


@jit
def resize_hwc_kernel(src, channels, lut, ix, ix1, one_minus_dx, dx, iy, iy1, one_minus_dy, dy,
                       out, x0, y0):
    """resize_image of ``lut[src[:, :, channels]]`` (uint8 HWC) into ``out[:, y0:y0+h, ...]``."""
    in_h = src.shape[0]
    h = iy.shape[0]
    ring = np.empty((2, channels.shape[0], ix.shape[0]), np.float32)
    held = np.full(2, -1, np.int64)
    for r in range(h):
        second = in_h != 1 and r != h - 1
        sa, fill_a, sb, fill_b = _ring_slots(held, iy[r], iy1[r], second)
        if fill_a:
            _horizontal_row_hwc(src, iy[r], channels, lut, ix, ix1, one_minus_dx, dx, ring[sa])
        if fill_b:
            _horizontal_row_hwc(src, iy1[r], channels, lut, ix, ix1, one_minus_dx, dx, ring[sb])
        _vertical_row(ring[sa], ring[sb], one_minus_dy[r], dy[r], second, out, y0 + r, x0)


def sampling(in_w: int, in_h: int, w: int, h: int) -> tuple[np.ndarray, ...]:
    """The kernels' weights: what resize_image_numpy computes, as contiguous arrays."""
    ix, dx = axis_weights(in_w, w)
    iy, dy = axis_weights(in_h, h)
    one = np.float32(1)
    return (ix.astype(np.int64), np.minimum(ix + 1, in_w - 1).astype(np.int64), one - dx, dx,
            iy.astype(np.int64), np.minimum(iy + 1, in_h - 1).astype(np.int64), one - dy, dy)


def read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view: numba types writable and read-only arrays apart, so the kernels always
    get read-only sources and are compiled once, not once per kind of caller array."""
    view = array.view()
    view.flags.writeable = False
    return view


def check_sizes(in_w: int, in_h: int, w: int, h: int, what: str) -> None:
    """Sizes the kernels can take (they do not check their indices)."""
    if w < 1 or h < 1:
        raise ValueError(f"{what}: target size {w}x{h} must be positive")
    if in_w < 1 or in_h < 1:
        raise ValueError(f"{what}: empty {in_w}x{in_h} image")


def resize_image(image: np.ndarray, w: int, h: int) -> np.ndarray:
    """Darknet's ``resize_image`` (src/image.c): align-corners bilinear, float32, CHW.

    The horizontal pass sets the last column to the last source column exactly; the vertical pass
    writes ``(1-dy)*part[iy]`` and then adds ``dy*part[iy+1]`` except on the last row (where, by
    float rounding, ``dy`` can be close to 1 and the row is then darker, as in Darknet).
    Compiled with numba; equal bit for bit to :func:`resize_image_numpy`.

    Args:
        image: float32 array (C, H, W) (or (H, W) for one channel).
        w, h: output width and height.

    Returns:
        float32 array (C, h, w).
    """
    image = np.ascontiguousarray(image, dtype=np.float32)
    squeeze = image.ndim == 2
    if squeeze:
        image = image[None]
    c, in_h, in_w = image.shape
    check_sizes(in_w, in_h, w, h, "resize_image")
    if (in_w, in_h) == (w, h):
        out = image.copy()
    else:
        out = np.empty((c, h, w), np.float32)
        resize_chw_kernel(read_only(image), *sampling(in_w, in_h, w, h), out, 0, 0)
    return out[0] if squeeze else out
