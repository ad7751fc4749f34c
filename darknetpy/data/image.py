"""Image decoding and Darknet's test-time resizing (no torch, no model).

Mirrors:

* ``image_opencv.cpp: load_image_mat_cv, load_image_cv, mat_to_image``: ``cv::imread(IMREAD_COLOR)``
  (so greyscale, alpha, 16-bit and palette images all become 8-bit, 3 channels; EXIF orientation
  applied), then BGR -> RGB, then ``/255.f`` in CHW order;
* ``image.c: resize_image``: Darknet's own separable bilinear with *align-corners* sampling
  (scale ``(in-1)/(out-1)``), in :mod:`.darknet_resize` (``resize_image`` is re-exported here);
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
from .darknet_resize import check_sizes, read_only, resize_hwc_kernel, resize_image, sampling

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
    channels_last: bool = False,
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
        channels_last: the (3, net_h, net_w) result as a view of an (net_h, net_w, 3) array (the
            same values; what a channels-last network takes without a copy).

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
    src = read_only(np.ascontiguousarray(image))
    in_h, in_w = src.shape[:2]
    check_sizes(in_w, in_h, net_w, net_h, "prepare_test_input")
    new_w, new_h = letterbox_size(in_w, in_h, net_w, net_h) if letter_box else (net_w, net_h)
    check_sizes(in_w, in_h, new_w, new_h, "resize_image")
    if new_w > net_w or new_h > net_h:  # pragma: no cover - the kernel writes unchecked
        raise ValueError(f"letterbox {new_w}x{new_h} does not fit in {net_w}x{net_h}")
    shape = (net_h, net_w, order.size) if channels_last else (order.size, net_h, net_w)
    if letter_box:
        out = np.full(shape, 0.5, dtype=np.float32)
    else:
        out = np.empty(shape, np.float32)
    if channels_last:
        out = out.transpose(2, 0, 1)  # the kernel writes out[c, y, x] whatever the strides
    x0, y0 = (net_w - new_w) // 2, (net_h - new_h) // 2
    # Same sizes: the kernel's 1*x + 0*y is x exactly (finite, non-negative values), as the copy.
    weights = sampling(in_w, in_h, new_w, new_h)
    resize_hwc_kernel(src, order, _BYTE_TO_FLOAT, *weights, out, x0, y0)
    return out
