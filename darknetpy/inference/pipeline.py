"""The one image -> detections pipeline: what ``predict``, ``detect``, ``map`` / ``valid`` /
``recall`` and training's mAP all run.

1. prepare the input (:func:`prepare_image`): decode (OpenCV, as Darknet's ``load_image``), then
   Darknet's ``resize_image`` or ``letterbox_image`` to the network size
   (:func:`~darknetpy.data.image.prepare_test_input`);
2. run the network, batch by batch (:func:`detect_images`), through the detector's
   ``detections``: :meth:`Network.detections <darknetpy.model.network.Network.detections>` (the
   network as built or trained, in memory) or :meth:`InferenceModel.detections
   <darknetpy.inference.inference_model.InferenceModel.detections>` (batch norm folded);
3. both end in :func:`~darknetpy.model.heads.detections.network_detections`: each head's
   detections (its own decode and threshold rule), joined, moved from the network input to the
   image (``correct_yolo_boxes``, letterbox included), then the last head's NMS;
4. records: the detection arrays per image (:class:`ImageDetections`), which ``predict`` turns into
   :class:`~darknetpy.inference.records.Prediction` and the evaluation into
   :class:`~darknetpy.evaluation.records.ScoredBox` lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

from ..data.image import letterbox_image, load_image, prepare_test_input, resize_image
from ..errors import DataError, UsageError
from ..model.heads.detections import Detections

__all__ = [
    "COLOR_ORDERS",
    "Detector",
    "ImageDetections",
    "ImageInput",
    "PreparedImage",
    "as_image_list",
    "batch_tensor",
    "detect_images",
    "image_pixels",
    "prepare_image",
]

ImageInput = str | Path | np.ndarray | torch.Tensor

#: How a numpy array's channels are read: OpenCV's ``cv2.imread`` gives BGR (the default),
#: PIL / matplotlib / imageio give RGB.
COLOR_ORDERS = MappingProxyType({"bgr": (2, 1, 0), "rgb": (0, 1, 2)})


class Detector(Protocol):
    """What runs step 2-3: :class:`~darknetpy.model.network.Network` or
    :class:`~darknetpy.inference.inference_model.InferenceModel`."""

    def detections(self, x: torch.Tensor, image_size: Sequence[tuple[int, int]], *, thresh: float,
                   nms: float, letter_box: bool | None,
                   hier_thresh: float) -> list[Detections]: ...


class PreparedImage(NamedTuple):
    """One image as the network takes it."""

    input: np.ndarray  # (3, H, W) float32 RGB in [0, 1] at the network size
    size: tuple[int, int]  # the original image's (width, height)
    source: str  # the path, or <array i> / <tensor i>


class ImageDetections(NamedTuple):
    """One image's result: the item given, its name and size, its detection arrays after NMS
    (boxes relative to the image)."""

    image: Any
    source: str
    size: tuple[int, int]
    detections: Detections


def prepare_image(image: ImageInput, net_size: tuple[int, int], letter_box: bool, *,
                  color: str = "bgr", index: int = 0,
                  channels_last: bool = False) -> PreparedImage:
    """One image as darknet's ``test_detector`` / ``validate_detector_map`` feed it.

    uint8 pixels (paths, numpy arrays, uint8 tensors) go to the network input in one pass
    (:func:`~darknetpy.data.image.prepare_test_input`: no full-size float copy), bit for bit
    what ``to_chw_float`` then ``resize_image`` / ``letterbox_image`` give; float tensors are
    resized as they are.

    Args:
        net_size: the network input (width, height).
        letter_box: letterbox instead of stretching.
        color: how numpy arrays store their channels (a key of :data:`COLOR_ORDERS`).
        index: the image's position, for names and messages of in-memory images.
        channels_last: uint8 pixels land in an (H, W, 3) buffer, ``input`` being its (3, H, W)
            view (same values): a channels-last network then takes them without a copy.
    """
    pixels, channels, source = image_pixels(image, color, index)
    w, h = net_size
    if channels is not None:  # uint8 (H, W, C)
        x = prepare_test_input(pixels, w, h, letter_box, channels=channels,
                               channels_last=channels_last)
        return PreparedImage(x, (pixels.shape[1], pixels.shape[0]), source)
    x = letterbox_image(pixels, w, h) if letter_box else resize_image(pixels, w, h)
    return PreparedImage(x, (pixels.shape[2], pixels.shape[1]), source)


def detect_images(detector: Detector, images: Iterable[ImageInput], *,
                  net_size: tuple[int, int], letter_box: bool, thresh: float, nms: float,
                  batch: int = 8, color: str = "bgr", device: torch.device | str | None = None,
                  hier_thresh: float = 0.5) -> Iterator[ImageDetections]:
    """Steps 1-4 over ``images``, ``batch`` images per forward pass, in order.

    Darknet predicts one image at a time; a batch gives the same outputs (inference batch norm) up
    to float rounding, faster. Images are read as the batches fill (an iterable is consumed
    lazily).

    Args:
        detector: the network (:class:`Detector`).
        net_size, letter_box, color: see :func:`prepare_image`.
        thresh: the heads' detection threshold; nms: the NMS IoU threshold (0: none).
        device: where the inputs go (None: as they are; the inference model moves them itself).

    Raises:
        DataError: an unreadable image or an array of an unusable shape or dtype.
    """
    if batch < 1:
        raise UsageError(f"batch={batch}: must be at least 1")
    if color not in COLOR_ORDERS:
        raise UsageError(f"color={color!r}: choose one of {', '.join(COLOR_ORDERS)}")
    pending: list[tuple[Any, PreparedImage]] = []
    # A channels-last detector (the CPU inference model) gets its input in that layout from the
    # resize itself: no NCHW -> NHWC copy of the batch (bench/bench_runtimes.py); one whose
    # network runs in onnxruntime / OpenVINO (a `runner`) takes NCHW.
    channels_last = bool(getattr(detector, "channels_last", False)) and getattr(
        detector, "runner", None) is None

    def flush() -> Iterator[ImageDetections]:
        x = batch_tensor([p.input for _, p in pending], channels_last)
        if device is not None:
            x = x.to(device)
        found = detector.detections(x, [p.size for _, p in pending], thresh=thresh, nms=nms,
                                    letter_box=letter_box, hier_thresh=hier_thresh)
        done = [ImageDetections(item, p.source, p.size, d) for (item, p), d in zip(pending, found)]
        pending.clear()
        yield from done

    for index, image in enumerate(images):
        pending.append((image, prepare_image(image, net_size, letter_box, color=color,
                                             index=index, channels_last=channels_last)))
        if len(pending) >= batch:
            yield from flush()
    if pending:
        yield from flush()


def batch_tensor(inputs: Sequence[np.ndarray], channels_last: bool) -> torch.Tensor:
    """(N, 3, H, W) float32 from prepared inputs: channels-last memory when asked (one image:
    its buffer itself where it is already laid out so), else contiguous."""
    if not channels_last:
        return torch.from_numpy(np.stack(inputs))
    if len(inputs) == 1 and inputs[0].strides[0] == inputs[0].itemsize:
        return torch.from_numpy(inputs[0][None])  # (1, 3, H, W) view of (H, W, 3): NHWC
    hwc = np.stack([x.transpose(1, 2, 0) for x in inputs])
    return torch.from_numpy(hwc).permute(0, 3, 1, 2)


def as_image_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    if isinstance(images, (str, Path, np.ndarray)):
        return [images]
    if isinstance(images, torch.Tensor):
        if images.dim() == 4:
            return list(images.unbind(0))
        return [images]
    return list(images)


#: Which channels of a one-channel (H, W, 1) image become R, G, B.
_GREY = (0, 0, 0)


def image_pixels(
    image: ImageInput, color: str, index: int
) -> tuple[np.ndarray, tuple[int, ...] | None, str]:
    """Any supported image as the pixels it holds, and a name for messages.

    Returns ``(pixels, channels, name)``: uint8 (H, W, C) pixels and the channels that are R, G, B
    (paths, numpy arrays, uint8 tensors; for ``prepare_test_input``), or, for float tensors,
    float32 (3, H, W) RGB in [0, 1] and ``channels=None``.
    """
    if isinstance(image, (str, Path)):
        return load_image(image), COLOR_ORDERS["rgb"], str(image)
    if isinstance(image, np.ndarray):
        name = f"<array {index}>"
        if image.dtype != np.uint8:
            raise DataError(
                f"{name}: numpy images must be uint8 (H, W, 3) as cv2.imread gives, "
                f"got {image.dtype}; for float data pass a torch tensor (3, H, W) in [0, 1]"
            )
        grey = image.ndim == 2
        # the shape the checks (and the message) see: grey is read as three equal channels
        shape = (*image.shape, 3) if grey else image.shape
        if len(shape) != 3 or shape[2] not in (3, 4) or 0 in shape:
            raise DataError(f"{name}: expected an (H, W, 3) array, got shape {shape}")
        if grey:
            return image[:, :, None], _GREY, name
        return image, COLOR_ORDERS[color], name  # channels 0-2 only: an alpha channel is dropped
    if isinstance(image, torch.Tensor):
        name = f"<tensor {index}>"
        if image.dim() != 3 or image.shape[0] != 3 or 0 in image.shape:
            raise DataError(
                f"{name}: expected a (3, H, W) RGB tensor, got shape {tuple(image.shape)}"
            )
        t = image.detach().cpu()
        if t.dtype == torch.uint8:
            return t.permute(1, 2, 0).numpy(), COLOR_ORDERS["rgb"], name
        pixels = np.ascontiguousarray(t.float().numpy())
        if pixels.size and (top := float(pixels.max())) > 1.0 + 1e-3:  # 0-255 floats
            raise DataError(
                f"{name}: float tensors must hold RGB in [0, 1], this one reaches {top:g}; "
                "divide by 255 (or pass a uint8 tensor)"
            )
        return pixels, None, name
    raise DataError(
        f"image {index}: unsupported type {type(image).__name__}; give a path, a numpy "
        "uint8 (H, W, 3) array or a torch (3, H, W) tensor"
    )
