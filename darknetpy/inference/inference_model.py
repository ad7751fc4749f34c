"""The fast inference model: ``darknetpy.load(cfg, weights)`` and ``model.predict(images)``.

What ``detector test`` does (``detector.c: test_detector``), as a PyTorch module:

* batch norm folded into the convolutions (``network.c: fuse_conv_batchnorm``, in double);
* ``torch.inference_mode``; half precision on CUDA; channels-last memory where it is faster;
* images prepared as darknet prepares them (``image.c: resize_image`` / ``letterbox_image``,
  :mod:`darknetpy.data.image`), then ``get_network_boxes`` and NMS (:mod:`darknetpy.inference.postprocess`).

``model(x)`` returns the head outputs exactly as darknet computes them (``l.output`` of every
``[yolo]``/``[region]``/``[Gaussian_yolo]``, float32); ``model.network`` is the unfused
:class:`~darknetpy.model.network.Network` (for training, parity checks, saving), unless the model was
loaded with ``keep_unfused=False`` (one copy of the weights instead of two).

Example:
    >>> import darknetpy                                                    # doctest: +SKIP
    >>> model = darknetpy.load("yolov4-tiny.cfg", "yolov4-tiny.weights", names="coco.names")
    >>> [p.detections for p in model.predict(["dog.jpg", cv2.imread("horses.jpg")])]
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.datafile import DataConfig, read_names
from ..data.image import letterbox_image, load_image, prepare_test_input, resize_image
from ..errors import DataError, UsageError
from ..model.fastconv import packing_available, prepack_convolutions
from ..model.heads.detections import network_detections
from ..model.layers.conv import Conv
from ..model.network import Network
from ..model.pt_checkpoint import is_checkpoint, network_from_checkpoint

__all__ = [
    "COLOR_ORDERS",
    "Box",
    "Detection",
    "ImageInput",
    "InferenceModel",
    "Prediction",
    "fold_batchnorm",
    "fuse_conv_batchnorm",
    "load",
]

ImageInput = str | Path | np.ndarray | torch.Tensor

#: How ``predict`` reads a numpy array's channels: OpenCV's ``cv2.imread`` gives BGR (the default),
#: PIL / matplotlib / imageio give RGB.
COLOR_ORDERS = MappingProxyType({"bgr": (2, 1, 0), "rgb": (0, 1, 2)})


# ---------------------------------------------------------------- results
@dataclass(frozen=True)
class Box:
    """A box in pixels of the original image: darknet's ``(x - w/2) * im.w`` etc., not rounded,
    not clipped (boxes may extend past the image, as darknet's do)."""

    left: float
    top: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height

    @property
    def center(self) -> tuple[float, float]:
        return self.left + self.width / 2, self.top + self.height / 2

    def xyxy(self) -> tuple[float, float, float, float]:
        """``(left, top, right, bottom)``."""
        return self.left, self.top, self.right, self.bottom

    def xywh(self) -> tuple[float, float, float, float]:
        """``(left, top, width, height)`` (COCO's order)."""
        return self.left, self.top, self.width, self.height


@dataclass(frozen=True)
class Detection:
    """One (box, class) pair above the threshold, as darknet lists it.

    Attributes:
        class_id: the class index.
        name: the class name (the id as text when the model has no names).
        score: darknet's ``prob``: objectness × class probability.
        box: the box in pixels of the original image.
        objectness: the box's objectness (1 for ``[region]`` heads, as in darknet).
        relative: darknet's ``(x, y, w, h)``: centre and size relative to the image.
        box_index: position of the box in darknet's detection array after NMS; detections of
            several classes on one box share it.
    """

    class_id: int
    name: str
    score: float
    box: Box
    objectness: float
    relative: tuple[float, float, float, float]
    box_index: int

    def to_dict(self) -> dict[str, Any]:
        x, y, w, h = self.relative
        b = self.box
        return {
            "class_id": self.class_id,
            "name": self.name,
            "confidence": self.score,
            "objectness": self.objectness,
            "box": {"left": b.left, "top": b.top, "width": b.width, "height": b.height},
            "relative_coordinates": {"center_x": x, "center_y": y, "width": w, "height": h},
        }


@dataclass(frozen=True)
class Prediction:
    """The detections of one image, best score first.

    Attributes:
        source: the path, or ``<array i>`` / ``<tensor i>`` for in-memory images.
        width, height: the original image size in pixels.
        detections: every (box, class) pair above the threshold after NMS.
    """

    source: str
    width: int
    height: int
    detections: tuple[Detection, ...]

    def __len__(self) -> int:
        return len(self.detections)

    def __iter__(self) -> Iterator[Detection]:
        return iter(self.detections)

    def __getitem__(self, i: int) -> Detection:
        return self.detections[i]

    def to_dict(self) -> dict[str, Any]:
        return {
            "filename": self.source,
            "width": self.width,
            "height": self.height,
            "objects": [d.to_dict() for d in self.detections],
        }


# ---------------------------------------------------------------- fusing
def fold_batchnorm(
    weight: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an inference batch norm into the convolution before it (``network.c:
    fuse_conv_batchnorm``), in double precision, results in the weight's dtype.

    ``b = β - γ·mean/sqrt(var + eps)``; ``W_f = W_f · γ_f/sqrt(var_f + eps)``.
    """
    with torch.no_grad():
        scale = gamma.double() / torch.sqrt(var.double() + eps)
        shape = (-1,) + (1,) * (weight.dim() - 1)
        folded = (weight.double() * scale.view(shape)).to(weight.dtype)
        bias = beta.double() - gamma.double() * mean.double() / torch.sqrt(var.double() + eps)
    return folded, bias.to(beta.dtype)


def fuse_conv_batchnorm(network: Network, *, inplace: bool = False) -> Network:
    """A copy of ``network`` in eval mode whose ``[convolutional]`` layers carry their batch norm in
    the convolution (weights and a bias) and have ``bn = None``; with ``inplace``, ``network``
    itself, changed so (no copy: each layer's original tensors are freed as it is folded).

    ``xnor`` convolutions keep their batch norm (it follows the binarised convolution). Layers
    sharing weights (``share_index``) are each folded from the original tensors, so the fused
    network computes what the unfused one does (darknet's ``fuse_conv_batchnorm`` instead drops the
    batch norm of the sharing layer). Other layers with batch norm ([connected], [batchnorm]) are
    not fused, as in darknet. The copy is not meant for ``save_weights``.
    """
    fused = (network if inplace else copy.deepcopy(network)).eval()
    for layer in fused.layers:
        if isinstance(layer, Conv) and layer.bn is not None and not layer.spec.xnor:
            bn = layer.bn
            weight, bias = fold_batchnorm(
                layer.conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps
            )
            # New tensors replace the layer's own references only: a later layer sharing these
            # (share_index) still holds the original weight and batch norm, and folds from them.
            layer.conv.weight = nn.Parameter(weight, requires_grad=False)
            layer.conv.bias = nn.Parameter(bias, requires_grad=False)
            layer.bn = None
            layer._fused = None
    for p in fused.parameters():
        p.requires_grad_(False)
    return fused


# ---------------------------------------------------------------- the model
def _resolve_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(
            f"device {device!r} is not a torch device; use cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            f"device {device!r}: CUDA is not available on this machine; use --device cpu"
        )
    return dev


class InferenceModel(nn.Module):
    """A darknet network prepared for inference; build it with :func:`load`.

    ``keep_unfused=False`` builds the runtime from ``network`` itself, in place (batch norm
    folded, moved, prepacked): one copy of the weights instead of two, but ``network`` must not be
    used afterwards and :attr:`network` raises :class:`UsageError`.

    Attributes:
        network: the unfused :class:`Network` as loaded (CPU, float32, eval mode); only with
            ``keep_unfused=True`` (the default).
        fused: the module that runs (batch norm folded, on ``device``, in ``dtype``).
        names: class names (ids as text when none were given).
        letter_box: the cfg's ``[net] letter_box`` (``predict`` default).
    """

    def __init__(
        self,
        network: Network,
        *,
        device: str | torch.device = "cpu",
        half: bool | None = None,
        fuse: bool = True,
        channels_last: bool | None = None,
        names: Sequence[str] | None = None,
        prepack: bool | None = None,
        keep_unfused: bool = True,
    ) -> None:
        super().__init__()
        dev = _resolve_device(device)
        half = dev.type == "cuda" if half is None else bool(half)
        if channels_last is None:
            # Measured (torch 2.13, oneDNN, one thread, CPU time): channels-last takes 0.57-1.03x
            # the time of the golden networks, 0.76x on yolov4-tiny 416, 0.91x on yolov3 416 and
            # yolov4 608. On CUDA it feeds the fp16 tensor cores; fp32 CUDA keeps NCHW.
            channels_last = dev.type == "cpu" or half
        classes = _classes(network)
        if names is None:
            names = [str(i) for i in range(classes or 0)]
        elif classes is not None and len(names) != classes:
            raise DataError(
                f"{len(names)} class names given, but the last detection layer of "
                f"{network.where()} has classes={classes}; make them agree"
            )
        self.names = tuple(names)
        network.eval()
        if keep_unfused:
            self._modules["network"] = network  # a submodule, read by the `network` property
        if fuse:
            runtime = fuse_conv_batchnorm(network, inplace=not keep_unfused)
        else:
            runtime = copy.deepcopy(network) if keep_unfused else network
        runtime = runtime.to(device=dev, dtype=torch.float16 if half else torch.float32)
        if channels_last:
            runtime = runtime.to(memory_format=torch.channels_last)
        if prepack is None:
            prepack = dev.type == "cpu" and not half and fuse and packing_available()
        if prepack:
            # oneDNN weights reordered once, bias + activation inside the convolution
            # (bench/bench_inference.py: 0.53x OpenCV's time on yolov4-tiny 416, 0.48x on yolov4)

            prepack_convolutions(runtime)
        self.prepacked = bool(prepack)
        self.fused = runtime
        self.keep_unfused = keep_unfused
        self.is_fused = fuse
        self.half = half
        self.channels_last = channels_last
        self.device = dev
        self.dtype = torch.float16 if half else torch.float32
        self.letter_box = network.net.letter_box

    # ---- facts ----
    @property
    def network(self) -> Network:
        """The unfused :class:`Network` (CPU, float32, eval mode).

        Raises:
            UsageError: the model was built with ``keep_unfused=False``.
        """
        network = self._modules.get("network")
        if network is None:
            raise UsageError(
                f"{self.fused.where()}: this inference model was loaded with keep_unfused=False "
                "and holds only the fused network (model.fused); load it again with "
                "keep_unfused=True (the default) for the unfused network (training, saving "
                ".weights, parity checks)"
            )
        assert isinstance(network, Network)
        return network

    @property
    def classes(self) -> int | None:
        """``classes=`` of the last detection layer (None without one)."""
        return _classes(self.fused)

    @property
    def input_size(self) -> tuple[int, int]:
        """The cfg's network input (width, height)."""
        return self.fused.net.width, self.fused.net.height

    # ---- tensors in, tensors out ----
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Head outputs (darknet's ``l.output``), float32, in layer order.

        Args:
            x: (N, C, H, W) or (C, H, W) float RGB in [0, 1] at the network size (another size
                works where the cfg allows it, like darknet's resized networks).
        """
        if x.dim() == 3:
            x = x.unsqueeze(0)
        channels = self.fused.net.channels
        if x.dim() != 4 or x.shape[1] != channels:
            raise UsageError(
                f"expected an input of shape (N, {channels}, H, W), got {tuple(x.shape)}"
            )
        x = x.to(self.device, self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            outputs = self.fused(x)
            return [o.float().contiguous() for o in outputs]

    def detections(
        self,
        x: torch.Tensor,
        image_size: tuple[int, int] | Sequence[tuple[int, int]],
        *,
        thresh: float = 0.25,
        nms: float = 0.45,
        letter_box: bool | None = None,
        hier_thresh: float = 0.5,
    ) -> list[Any]:
        """Darknet's detection arrays (:class:`darknetpy.model.heads.detections.Detections`) after NMS, one
        per image, boxes relative to the image of size ``image_size`` (width, height)."""
        heads = self.fused.head_layers()
        if not heads:
            raise UsageError(
                f"{self.fused.where()}: no [yolo], [region], [Gaussian_yolo] or other detection layer: "
                "this network classifies, it does not detect"
            )
        if x.dim() == 3:
            x = x.unsqueeze(0)
        outputs = self(x)
        net_size = (int(x.shape[-1]), int(x.shape[-2]))
        letter = self.letter_box if letter_box is None else letter_box
        return network_detections(heads, outputs, image_size, net_size, thresh, nms, letter, hier_thresh)

    def detect(
        self,
        x: torch.Tensor,
        image_size: tuple[int, int] | Sequence[tuple[int, int]],
        *,
        thresh: float = 0.25,
        nms: float = 0.45,
        letter_box: bool | None = None,
        hier_thresh: float = 0.5,
    ) -> list[list[Any]]:
        """:meth:`Network.detect` on the fast path: per image, ``(class, prob, x, y, w, h,
        objectness)`` rows relative to the image, in darknet's order."""
        dets = self.detections(
            x, image_size, thresh=thresh, nms=nms, letter_box=letter_box, hier_thresh=hier_thresh
        )
        return [d.rows(thresh) for d in dets]

    # ---- images in, detections out ----
    def prepare(
        self,
        image: ImageInput,
        *,
        color: str = "bgr",
        letter_box: bool | None = None,
        index: int = 0,
    ) -> tuple[np.ndarray, tuple[int, int], str]:
        """One image as darknet's ``test_detector`` feeds it: ``(input (3, H, W) float32,
        (width, height) of the original, source name)``.

        uint8 pixels (paths, numpy arrays, uint8 tensors) go to the network input in one pass
        (:func:`~darknetpy.data.image.prepare_test_input`: no full-size float copy), bit for bit
        what ``to_chw_float`` then ``resize_image`` / ``letterbox_image`` give; float tensors are
        resized as they are.
        """
        pixels, channels, source = _to_pixels(image, color, index)
        letter = self.letter_box if letter_box is None else letter_box
        w, h = self.input_size
        if channels is not None:  # uint8 (H, W, C)
            x = prepare_test_input(pixels, w, h, letter, channels=channels)
            return x, (pixels.shape[1], pixels.shape[0]), source
        x = letterbox_image(pixels, w, h) if letter else resize_image(pixels, w, h)
        return x, (pixels.shape[2], pixels.shape[1]), source

    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        thresh: float = 0.25,
        nms: float = 0.45,
        letter_box: bool | None = None,
        color: str = "bgr",
        batch_size: int = 8,
        hier_thresh: float = 0.5,
    ) -> list[Prediction]:
        """Detect objects in images; one :class:`Prediction` per image, in input order.

        Args:
            images: one image or a list of: paths (decoded by OpenCV, as darknet does), numpy
                arrays (H, W, 3) or (H, W) uint8 in the channel order ``color``, or torch tensors
                (3, H, W) / (N, 3, H, W), RGB, float in [0, 1] or uint8.
            thresh: darknet's ``-thresh``.
            nms: NMS threshold (0 skips NMS); the kind is the last head's ``nms_kind``.
            letter_box: letterbox instead of stretching; None takes ``[net] letter_box``.
            color: ``"bgr"`` (OpenCV, the default) or ``"rgb"``: how numpy arrays store channels.
            batch_size: images per forward pass.

        Raises:
            DataError: an unreadable image or an array of an unusable shape or dtype.
        """
        if color not in COLOR_ORDERS:
            raise UsageError(f"color={color!r}: choose one of {', '.join(COLOR_ORDERS)}")
        items = _as_list(images)
        results: list[Prediction] = []
        for start in range(0, len(items), max(1, batch_size)):
            chunk = items[start : start + max(1, batch_size)]
            prepared = [
                self.prepare(img, color=color, letter_box=letter_box, index=start + i)
                for i, img in enumerate(chunk)
            ]
            x = torch.from_numpy(np.stack([p[0] for p in prepared]))
            sizes = [p[1] for p in prepared]
            dets = self.detections(
                x, sizes, thresh=thresh, nms=nms, letter_box=letter_box, hier_thresh=hier_thresh
            )
            for (_, size, source), d in zip(prepared, dets):
                results.append(self._prediction(source, size, d, thresh))
        return results

    def _prediction(
        self, source: str, size: tuple[int, int], dets: Any, thresh: float
    ) -> Prediction:
        w, h = size
        t = np.float32(thresh)
        box_ids, class_ids = np.nonzero(dets.probs > t)
        boxes = dets.boxes.astype(np.float32)
        out = []
        for b, c in zip(box_ids.tolist(), class_ids.tolist()):
            x, y, bw, bh = (float(v) for v in boxes[b])
            pixel = Box((x - bw / 2) * w, (y - bh / 2) * h, bw * w, bh * h)
            name = self.names[c] if c < len(self.names) else str(c)
            out.append(
                Detection(
                    c,
                    name,
                    float(dets.probs[b, c]),
                    pixel,
                    float(dets.objectness[b]),
                    (x, y, bw, bh),
                    b,
                )
            )
        out.sort(key=lambda d: -d.score)  # stable: ties keep darknet's order
        return Prediction(source, w, h, tuple(out))

    def extra_repr(self) -> str:
        return (
            f"cfg={self.fused.where()}, device={self.device}, dtype={self.dtype}, "
            f"fused={self.is_fused}, channels_last={self.channels_last}, "
            f"keep_unfused={self.keep_unfused}"
        )


def _classes(network: Network) -> int | None:
    if not network.heads:
        return None
    return int(network.layers[network.heads[-1]].options.classes)


def _as_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    if isinstance(images, (str, Path, np.ndarray)):
        return [images]
    if isinstance(images, torch.Tensor):
        if images.dim() == 4:
            return list(images.unbind(0))
        return [images]
    return list(images)


#: Which channels of a one-channel (H, W, 1) image become R, G, B.
_GREY = (0, 0, 0)


def _to_pixels(
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
        return np.ascontiguousarray(t.float().numpy()), None, name
    raise DataError(
        f"image {index}: unsupported type {type(image).__name__}; give a path, a numpy "
        "uint8 (H, W, 3) array or a torch (3, H, W) tensor"
    )


# ---------------------------------------------------------------- loading
def load(
    cfg: str | Path,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    half: bool | None = None,
    fuse: bool = True,
    *,
    names: str | Path | Sequence[str] | None = None,
    channels_last: bool | None = None,
    strict: bool = False,
    prepack: bool | None = None,
    keep_unfused: bool = True,
) -> InferenceModel:
    """Build the inference model of a darknet network.

    Args:
        cfg: the ``.cfg`` file, or a darknetpy ``.pt`` checkpoint (then ``weights`` stays None).
        weights: a darknet ``.weights`` file or a ``.pt`` checkpoint (told apart by content);
            None keeps darknet's random initialisation.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        half: float16 weights and activations; default: on CUDA only.
        fuse: fold batch norm into the convolutions (darknet's ``fuse_conv_batchnorm``).
        names: class names: a ``.names`` file, a ``.data`` file naming one, or a list.
        channels_last: channels-last memory format; default: on the CPU, and on CUDA in half
            precision.
        strict: unused cfg keys are errors instead of warnings.
        prepack: prepack the convolutions for oneDNN (:mod:`darknetpy.model.fastconv`); default: on
            the CPU in float32 with batch norm folded.
        keep_unfused: keep the unfused network as ``model.network`` beside the fused copy that
            runs (for training, saving ``.weights``, parity checks). False when you only run
            inference: the fused network is built in place, without a second copy of the
            weights (yolov4: about half the memory), and ``model.network`` raises UsageError.

    Raises:
        CfgError, WeightsError, DataError, UsageError: naming the file and the problem.
    """
    cfg = Path(cfg)
    if is_checkpoint(cfg):
        if weights is not None:
            raise UsageError(
                f"{cfg} is a checkpoint holding its cfg and weights; pass it alone "
                f"(darknetpy.load({str(cfg)!r}))"
            )
        network = network_from_checkpoint(cfg)
    elif weights is not None and is_checkpoint(weights):
        network = network_from_checkpoint(weights, cfg)
    else:
        network = Network.from_cfg(cfg, strict=strict)
        if weights is not None:
            network.load_weights(weights)
    return InferenceModel(
        network,
        device=device,
        half=half,
        fuse=fuse,
        channels_last=channels_last,
        names=read_class_names(names),
        prepack=prepack,
        keep_unfused=keep_unfused,
    )


def read_class_names(names: str | Path | Sequence[str] | None) -> tuple[str, ...] | None:
    """Class names from a ``.names`` file, a ``.data`` file (its ``names=``), or a list."""
    if names is None:
        return None
    if isinstance(names, (str, Path)):
        path = Path(names)
        if path.suffix == ".data":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data = DataConfig.from_file(path)
            if data.names is None:
                raise DataError(
                    f"{path}: no names= line; add names=<file with one class name per line>"
                )
            return read_names(data.names, where=data.where("names"))
        return read_names(path)
    return tuple(str(n) for n in names)
