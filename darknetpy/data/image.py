"""Image decoding and Darknet's test-time resizing (no torch, no model).

Mirrors:

* ``image_opencv.cpp: load_image_mat_cv, load_image_cv, mat_to_image``: ``cv::imread(IMREAD_COLOR)``
  (so greyscale, alpha, 16-bit and palette images all become 8-bit, 3 channels; EXIF orientation
  applied), then BGR -> RGB, then ``/255.f`` in CHW order;
* ``image.c: resize_image``: Darknet's own separable bilinear with *align-corners* sampling
  (scale ``(in-1)/(out-1)``), computed in float32 in the same order as the C loops, including its
  quirk that the last output row is ``(1-dy)*row[iy]`` with no second term (numba kernels, equal
  bit for bit to the numpy reference ``_resize_image_numpy``);
* ``image.c: letterbox_image``: integer ``new_w``/``new_h``, a canvas of 0.5, integer offsets;
* ``detector.c: test_detector, validate_detector_map``: :func:`prepare_test_input`.

Note: the golden ``input.npy`` files in ``../shared/golden`` were NOT made with ``resize_image``:
they are ``cv::resize(INTER_LINEAR)`` of the float image (bit for bit), which
``prepare_test_input(..., method="opencv")`` reproduces. Darknet's own commands use
``resize_image`` (``method="darknet"``, the default); the two differ by up to ~0.5 on dog.jpg.

Training uses ``cv::resize(INTER_LINEAR)`` instead (see :mod:`darknetpy.data.augment`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np

from ..errors import DataError
from ..jit import jit

__all__ = [
    "TEST_RESIZERS",
    "letterbox_image",
    "letterbox_size",
    "load_image",
    "prepare_test_input",
    "resize_image",
    "resize_image_opencv",
    "to_chw_float",
]

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _why_undecodable(data: bytes) -> str:
    """A short diagnosis for bytes OpenCV could not decode."""
    if not data:
        return "the file is empty"
    if data.startswith(_JPEG_SOI) and _JPEG_EOI not in data[-1024:]:
        return "truncated JPEG (no end-of-image marker); re-download or re-encode it"
    if data.startswith(_PNG_MAGIC) and b"IEND" not in data[-64:]:
        return "truncated PNG (no IEND chunk); re-download or re-encode it"
    return "OpenCV cannot decode it (not an image, a corrupt file, or an unsupported format)"


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image file as Darknet's OpenCV build does (``load_image_mat_cv`` with IMREAD_COLOR).

    Args:
        path: an image file in any format OpenCV reads.

    Returns:
        uint8 array (H, W, 3), RGB. Greyscale is replicated, alpha dropped, 16-bit scaled to
        8-bit, palettes expanded, EXIF orientation applied (all by ``IMREAD_COLOR``).

    Raises:
        DataError: the file is missing, unreadable, empty, truncated or not decodable; the
            message names the file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such image file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected an image file") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise DataError(f"{path}: cannot read image ({getattr(exc, 'strerror', None) or exc})") from None
    image = None
    if data:
        try:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        except cv2.error:
            image = None
    if image is None or image.size == 0:
        raise DataError(f"{path}: unusable image: {_why_undecodable(data)}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:  # pragma: no cover
        raise DataError(f"{path}: OpenCV returned an unexpected {image.dtype} {image.shape} image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def to_chw_float(image: np.ndarray) -> np.ndarray:
    """uint8 HWC -> float32 CHW in [0, 1], as ``mat_to_image`` (``value / 255.f``)."""
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


#: uint8 value -> float32 exactly as :func:`to_chw_float` (``mat_to_image``'s ``/255.f``) maps it.
_BYTE_TO_FLOAT = to_chw_float(np.arange(256, dtype=np.uint8).reshape(1, 256, 1))[0, 0]
_BYTE_TO_FLOAT.flags.writeable = False


def _axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
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


def _resize_image_numpy(image: np.ndarray, w: int, h: int) -> np.ndarray:
    """Darknet's ``resize_image`` (src/image.c) in numpy: the reference :func:`resize_image` must
    equal bit for bit (tests/data/test_image.py checks it; it is several times slower).

    The horizontal pass sets the last column to the last source column exactly; the vertical pass
    writes ``(1-dy)*part[iy]`` and then adds ``dy*part[iy+1]`` except on the last row (where, by
    float rounding, ``dy`` can be close to 1 and the row is then darker, as in Darknet).

    Args:
        image: float32 array (C, H, W) (or (H, W) for one channel).
        w, h: output width and height.

    Returns:
        float32 array (C, h, w).
    """
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

    ix, dx = _axis_weights(in_w, w)
    if in_w == 1:
        part = np.repeat(image[:, :, :1], w, axis=2)
    else:
        ix1 = np.minimum(ix + 1, in_w - 1)
        part = (np.float32(1) - dx) * image[:, :, ix] + dx * image[:, :, ix1]
        part[:, :, w - 1] = image[:, :, in_w - 1]
    part = part.astype(np.float32, copy=False)

    iy, dy = _axis_weights(in_h, h)
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
# below do the same float32 operations in the same order on the same weights (_sampling calls
# _axis_weights; no fastmath, so no FMA contraction or reassociation): their output equals
# _resize_image_numpy bit for bit (tests/data/test_image.py). They compute only the source rows the
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
def _resize_chw_kernel(src, ix, ix1, one_minus_dx, dx, iy, iy1, one_minus_dy, dy, out, x0, y0):
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
def _resize_hwc_kernel(src, channels, lut, ix, ix1, one_minus_dx, dx, iy, iy1, one_minus_dy, dy,
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


def _sampling(in_w: int, in_h: int, w: int, h: int) -> tuple[np.ndarray, ...]:
    """The kernels' weights: what _resize_image_numpy computes, as contiguous arrays."""
    ix, dx = _axis_weights(in_w, w)
    iy, dy = _axis_weights(in_h, h)
    one = np.float32(1)
    return (ix.astype(np.int64), np.minimum(ix + 1, in_w - 1).astype(np.int64), one - dx, dx,
            iy.astype(np.int64), np.minimum(iy + 1, in_h - 1).astype(np.int64), one - dy, dy)


def _read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view: numba types writable and read-only arrays apart, so the kernels always
    get read-only sources and are compiled once, not once per kind of caller array."""
    view = array.view()
    view.flags.writeable = False
    return view


def _check_sizes(in_w: int, in_h: int, w: int, h: int, what: str) -> None:
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
    Compiled with numba; equal bit for bit to :func:`_resize_image_numpy`.

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
    _check_sizes(in_w, in_h, w, h, "resize_image")
    if (in_w, in_h) == (w, h):
        out = image.copy()
    else:
        out = np.empty((c, h, w), np.float32)
        _resize_chw_kernel(_read_only(image), *_sampling(in_w, in_h, w, h), out, 0, 0)
    return out[0] if squeeze else out


def letterbox_size(im_w: int, im_h: int, w: int, h: int) -> tuple[int, int]:
    """(new_w, new_h) of the resized image inside a w x h letterbox (``letterbox_image``).

    The ratio test is done in float32, the size with integer arithmetic, as in Darknet.
    """
    if np.float32(w) / np.float32(im_w) < np.float32(h) / np.float32(im_h):
        return w, (im_h * w) // im_w
    return (im_w * h) // im_h, h


def resize_image_opencv(image: np.ndarray, w: int, h: int) -> np.ndarray:
    """``cv::resize(INTER_LINEAR)`` (pixel-centre aligned) of a float32 (C, H, W) image.

    Not what Darknet's test path does; it is how ``../shared/golden/*/input.npy`` were made
    (see :data:`TEST_RESIZERS`).
    """
    image = np.asarray(image, dtype=np.float32)
    hwc = np.ascontiguousarray(image.transpose(1, 2, 0))
    out = cv2.resize(hwc, (w, h), interpolation=cv2.INTER_LINEAR)
    if out.ndim == 2:
        out = out[:, :, None]
    return np.ascontiguousarray(out.transpose(2, 0, 1))


#: How a test image is brought to the network size. ``darknet`` is Darknet's own
#: ``resize_image`` (align-corners), what ``detector test/map/valid`` do. ``opencv`` is
#: ``cv::resize(INTER_LINEAR)`` on the float image: the golden ``input.npy`` files were produced
#: that way (bit for bit) and fed to Darknet directly.
TEST_RESIZERS = MappingProxyType({"darknet": resize_image, "opencv": resize_image_opencv})


def letterbox_image(image: np.ndarray, w: int, h: int, method: str = "darknet") -> np.ndarray:
    """Darknet's ``letterbox_image`` (src/image.c) on a float32 (C, H, W) image.

    Resizes to :func:`letterbox_size` (with :func:`resize_image`, or another entry of
    :data:`TEST_RESIZERS`) and embeds the result at the integer offset
    ``((w-new_w)/2, (h-new_h)/2)`` on a canvas filled with 0.5.
    """
    resize = _resizer(method)
    image = np.asarray(image, dtype=np.float32)
    c, im_h, im_w = image.shape
    new_w, new_h = letterbox_size(im_w, im_h, w, h)
    resized = resize(image, new_w, new_h)
    boxed = np.full((c, h, w), 0.5, dtype=np.float32)
    dx, dy = (w - new_w) // 2, (h - new_h) // 2
    boxed[:, dy : dy + new_h, dx : dx + new_w] = resized
    return boxed


def _resizer(method: str) -> Callable[[np.ndarray, int, int], np.ndarray]:
    try:
        return TEST_RESIZERS[method]
    except KeyError:
        raise ValueError(
            f"unknown resize method {method!r}; choose one of {', '.join(TEST_RESIZERS)}"
        ) from None


def prepare_test_input(
    image: np.ndarray,
    net_w: int,
    net_h: int,
    letter_box: bool,
    method: str = "darknet",
    *,
    channels: Sequence[int] = (0, 1, 2),
) -> np.ndarray:
    """The network input Darknet's ``test_detector`` / ``validate_detector_map`` builds.

    Equal to ``letterbox_image(to_chw_float(image[:, :, channels]), net_w, net_h, method)`` (or
    ``resize_image``), bit for bit; with ``method="darknet"`` and a uint8 image the compiled kernel
    reads the uint8 pixels directly (no full-size float copy).

    Args:
        image: uint8 (H, W, C) with C >= 3, RGB as :func:`load_image` returns it (or another
            order, see ``channels``).
        net_w, net_h: the network input size.
        letter_box: letterbox (keep the aspect ratio, 0.5 grey borders) instead of a plain resize.
        method: a key of :data:`TEST_RESIZERS`; ``"opencv"`` reproduces the golden ``input.npy``.
        channels: the source channels that become R, G, B: ``(2, 1, 0)`` for OpenCV's BGR,
            ``(0, 0, 0)`` for grey (H, W, 1); other channels (alpha) are ignored.

    Returns:
        float32 array (3, net_h, net_w), RGB in [0, 1].
    """
    resize = _resizer(method)
    order = np.asarray(channels, dtype=np.int64)
    if image.ndim != 3 or order.ndim != 1 or order.size == 0 or not (
        (order >= 0) & (order < image.shape[2])
    ).all():
        raise ValueError(
            f"prepare_test_input: channels {tuple(channels)} do not index an (H, W, C) image "
            f"of shape {image.shape}"
        )
    if resize is not resize_image or image.dtype != np.uint8:
        chw = to_chw_float(image[:, :, order])
        if letter_box:
            return letterbox_image(chw, net_w, net_h, method)
        return resize(chw, net_w, net_h)
    src = _read_only(np.ascontiguousarray(image))
    in_h, in_w = src.shape[:2]
    _check_sizes(in_w, in_h, net_w, net_h, "prepare_test_input")
    new_w, new_h = letterbox_size(in_w, in_h, net_w, net_h) if letter_box else (net_w, net_h)
    _check_sizes(in_w, in_h, new_w, new_h, "resize_image")
    if new_w > net_w or new_h > net_h:  # pragma: no cover - the kernel writes unchecked
        raise ValueError(f"letterbox {new_w}x{new_h} does not fit in {net_w}x{net_h}")
    if letter_box:
        out = np.full((order.size, net_h, net_w), 0.5, dtype=np.float32)
    else:
        out = np.empty((order.size, net_h, net_w), np.float32)
    x0, y0 = (net_w - new_w) // 2, (net_h - new_h) // 2
    # Same sizes: the kernel's 1*x + 0*y is x exactly (finite, non-negative values), as the copy.
    weights = _sampling(in_w, in_h, new_w, new_h)
    _resize_hwc_kernel(src, order, _BYTE_TO_FLOAT, *weights, out, x0, y0)
    return out
