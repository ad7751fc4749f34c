"""The fast inference model: ``darknetpy.load(cfg, weights)`` and ``model.predict(images)``.

What ``detector test`` does (``detector.c: test_detector``), as a PyTorch module:

* batch norm folded into the convolutions (``network.c: fuse_conv_batchnorm``, in double;
  :mod:`.fuse`);
* ``torch.inference_mode``; half precision on CUDA; channels-last memory where it is faster;
* ``predict``: the one image -> detections pipeline (:mod:`.pipeline`: images prepared as darknet
  prepares them, ``get_network_boxes`` and the last head's NMS), records of :mod:`.records`.

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.datafile import DataConfig, read_names
from ..devices import parse_device
from ..errors import DataError, UsageError
from ..model.fastconv import fast_pool_layers, packing_available, prepack_convolutions
from ..model.heads.detections import network_detections
from ..model.network import Network
from ..model.pt_checkpoint import is_checkpoint, network_from_checkpoint
from .backend_cache import BackendPlan
from .fuse import fold_batchnorm, fuse_conv_batchnorm
from .pipeline import (
    COLOR_ORDERS,
    ImageInput,
    PreparedImage,
    as_image_list,
    detect_images,
    prepare_image,
)
from .records import Box, Detection, Prediction, prediction

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

# ---------------------------------------------------------------- the model
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
        backend: str | None = "torch",
    ) -> None:
        super().__init__()
        dev = parse_device(device, what="device")  # cuda:9: one line, not "invalid device ordinal"
        half = dev.type == "cuda" if half is None else bool(half)
        plan = BackendPlan(backend, network, device=dev, half=half, fuse=fuse)
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
            fast_pool_layers(runtime)  # maxpool/upsample without padded or NCHW copies (exact)
        self.prepacked = bool(prepack)
        self.fused = runtime
        self.keep_unfused = keep_unfused
        self.is_fused = fuse
        self.half = half
        self.channels_last = channels_last
        self.device = dev
        self.dtype = torch.float16 if half else torch.float32
        self.letter_box = network.net.letter_box
        self.runner_shape = plan.input_shape
        self.backend, self.runner = plan.open(self._torch_forward)

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
        if self.runner is not None and tuple(x.shape[1:]) == self.runner_shape:
            return self.runner(x)  # onnxruntime / openvino at the size exported
        return self._torch_forward(x)

    def _torch_forward(self, x: torch.Tensor) -> list[torch.Tensor]:
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
        kept = self.fused.head_layers()[-1].score_kept  # the last head's threshold rule
        return [d.rows(thresh, kept) for d in dets]

    # ---- images in, detections out ----
    def prepare(
        self,
        image: ImageInput,
        *,
        color: str = "bgr",
        letter_box: bool | None = None,
        index: int = 0,
    ) -> PreparedImage:
        """One image as darknet's ``test_detector`` feeds it: ``(input (3, H, W) float32,
        (width, height) of the original, source name)`` (:func:`~.pipeline.prepare_image`).

        uint8 pixels (paths, numpy arrays, uint8 tensors) go to the network input in one pass
        (:func:`~darknetpy.data.image.prepare_test_input`: no full-size float copy), bit for bit
        what ``to_chw_float`` then ``resize_image`` / ``letterbox_image`` give; float tensors are
        resized as they are.
        """
        letter = self.letter_box if letter_box is None else letter_box
        return prepare_image(image, self.input_size, letter, color=color, index=index)

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
        letter = self.letter_box if letter_box is None else letter_box
        kept = self.fused.head_layers()[-1].score_kept if self.fused.heads else None
        found = detect_images(self, as_image_list(images), net_size=self.input_size,
                              letter_box=letter, thresh=thresh, nms=nms,
                              batch=max(1, batch_size), color=color, hier_thresh=hier_thresh)
        return [prediction(f.source, f.size, f.detections, thresh, self.names, kept)
                for f in found]

    def extra_repr(self) -> str:
        return (
            f"cfg={self.fused.where()}, device={self.device}, dtype={self.dtype}, "
            f"fused={self.is_fused}, channels_last={self.channels_last}, "
            f"keep_unfused={self.keep_unfused}, backend={self.backend}"
        )


def _classes(network: Network) -> int | None:
    if not network.heads:
        return None
    return int(network.layers[network.heads[-1]].options.classes)


# ---------------------------------------------------------------- loading
_NO_WEIGHTS: Any = object()  # load(cfg)'s default: no weights mentioned (warned), unlike None


def load(
    cfg: str | Path,
    weights: str | Path | None = _NO_WEIGHTS,
    device: str | torch.device = "cpu",
    half: bool | None = None,
    fuse: bool = True,
    *,
    names: str | Path | Sequence[str] | None = None,
    channels_last: bool | None = None,
    strict: bool = False,
    prepack: bool | None = None,
    keep_unfused: bool = True,
    lenient: bool = False,
    backend: str | None = None,
) -> InferenceModel:
    """Build the inference model of a darknet network.

    Args:
        cfg: the ``.cfg`` file, or a darknetpy ``.pt`` checkpoint (then ``weights`` stays None).
        weights: a darknet ``.weights`` file or a ``.pt`` checkpoint (told apart by content);
            ``None`` keeps darknet's random initialisation; left out, the same with a UserWarning.
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
        lenient: load a damaged ``.weights`` file as Darknet does (a warning instead of an error).
        backend: what runs ``model(x)`` (:mod:`.backends`): torch, onnxruntime, openvino, auto;
            None: $DARKNETPY_BACKEND, else auto. Preparation, decode and NMS stay darknetpy's.

    Raises:
        CfgError, WeightsError, DataError, UsageError: naming the file and the problem.
    """
    cfg = Path(cfg)
    if weights is _NO_WEIGHTS:
        weights = None
        if not is_checkpoint(cfg):
            warnings.warn(f"{cfg}: no weights given, so they are random (Darknet's init); pass "
                          "a .weights/.pt file, or weights=None to mean it", stacklevel=2)
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
            network.load_weights(weights, lenient=lenient)
    return InferenceModel(
        network,
        device=device,
        half=half,
        fuse=fuse,
        channels_last=channels_last,
        names=read_class_names(names),
        prepack=prepack,
        keep_unfused=keep_unfused,
        backend=backend,
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
