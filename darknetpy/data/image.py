"""Image decoding and Darknet's test-time resizing (no torch, no model).

Mirrors:

* ``image_opencv.cpp: load_image_mat_cv, load_image_cv, mat_to_image``: ``cv::imread(IMREAD_COLOR)``
  (so greyscale, alpha, 16-bit and palette images all become 8-bit, 3 channels; EXIF orientation
  applied), then BGR -> RGB, then ``/255.f`` in CHW order;
* ``image.c: resize_image``: Darknet's own separable bilinear with *align-corners* sampling
  (scale ``(in-1)/(out-1)``), computed in float32 in the same order as the C loops, including its
  quirk that the last output row is ``(1-dy)*row[iy]`` with no second term;
* ``image.c: letterbox_image``: integer ``new_w``/``new_h``, a canvas of 0.5, integer offsets;
* ``detector.c: test_detector, validate_detector_map``: :func:`prepare_test_input`.

Note: the golden ``input.npy`` files in ``../shared/golden`` were NOT made with ``resize_image``:
they are ``cv::resize(INTER_LINEAR)`` of the float image (bit for bit), which
``prepare_test_input(..., method="opencv")`` reproduces. Darknet's own commands use
``resize_image`` (``method="darknet"``, the default); the two differ by up to ~0.5 on dog.jpg.

Training uses ``cv::resize(INTER_LINEAR)`` instead (see :mod:`darknetpy.data.augment`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np

from ..errors import DataError

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


def resize_image(image: np.ndarray, w: int, h: int) -> np.ndarray:
    """Darknet's ``resize_image`` (src/image.c): align-corners bilinear, float32, CHW.

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
    image: np.ndarray, net_w: int, net_h: int, letter_box: bool, method: str = "darknet"
) -> np.ndarray:
    """The network input Darknet's ``test_detector`` / ``validate_detector_map`` builds.

    Args:
        image: uint8 (H, W, 3) RGB, as :func:`load_image` returns.
        net_w, net_h: the network input size.
        letter_box: letterbox (keep the aspect ratio, 0.5 grey borders) instead of a plain resize.
        method: a key of :data:`TEST_RESIZERS`; ``"opencv"`` reproduces the golden ``input.npy``.

    Returns:
        float32 array (3, net_h, net_w), RGB in [0, 1].
    """
    chw = to_chw_float(image)
    if letter_box:
        return letterbox_image(chw, net_w, net_h, method)
    return _resizer(method)(chw, net_w, net_h)
