"""ONNX export of a darknet network: the head outputs as darknet computes them, optionally decoded.

The exported graph is the fused inference network (batch norm folded, ``network.c:
fuse_conv_batchnorm``). Its outputs are, in layer order, every detection head's ``l.output``
(``head_<i>`` for darknet layer ``i``; the last layer's output, ``output``, for a network without
heads). ``with_decode`` adds three outputs that put every head's boxes in darknet's detection
order (heads in layer order; each head's own order, for Darknet's cells row-major, anchor slots
innermost), as each head gives them (:meth:`DetectionHead.export_outputs`):

* ``boxes`` (N, B, 4): centre x, y, width, height relative to the *network input*
  (``yolo_layer.c: get_yolo_box``, ``region_layer.c: get_region_box``,
  ``gaussian_yolo_layer.c: get_gaussian_yolo_box``); map them to the image with
  :func:`darknetpy.model.heads.detections.correct_yolo_boxes` when the input was letterboxed, or
  multiply by the image size when it was stretched;
* ``objectness`` (N, B): darknet's ``det.objectness`` (1 for ``[region]`` heads);
* ``scores`` (N, B, classes): darknet's ``prob`` before thresholding (objectness × class,
  × (1 - mean σ) for ``[Gaussian_yolo]``).

A detection above ``thresh`` is ``objectness > thresh`` and ``scores > thresh`` (darknet zeroes the
rest); NMS is left to the consumer (darknet's is greedy per class: ``box.c: do_nms_sort``).

The exporter is PyTorch's TorchScript-based one (``dynamo=False``): it needs only ``onnx``, not
``onnxscript``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import UsageError
from ..files import require_folder
from ..model.heads import DetectionHead
from ..model.network import Network
from .export_layouts import (
    LAYOUTS,
    NmsOptions,
    check_layout,
    decoded,
    decoded_t,
    layout_output_names,
    nms_rows,
)
from .fuse import fuse_conv_batchnorm

__all__ = [
    "DEFAULT_OPSET", "LAYOUTS", "DecodedHeads", "NmsOptions", "decode_heads", "export_onnx",
    "output_names",
]

DEFAULT_OPSET = 17
MIN_OPSET = 11  # the first opset the exporter supports for every op the layers use


def decode_heads(
    heads: Sequence[DetectionHead], outputs: Sequence[Tensor], net_size: tuple[int, int]
) -> tuple[Tensor, Tensor, Tensor]:
    """Every head's boxes in one tensor each, in detection order (traceable: no data-dependent
    control flow): each head's :meth:`DetectionHead.export_outputs`, joined in layer order. See the
    module docstring for the three outputs.

    Args:
        heads: the detection layers, in layer order.
        outputs: their outputs.
        net_size: the network input (width, height) the anchors are divided by.
    """
    parts = [layer.export_outputs(out, net_size) for layer, out in zip(heads, outputs)]
    boxes, objectness, scores = (torch.cat([p[k] for p in parts], 1) for k in range(3))
    return boxes, objectness, scores


DecodedHeads = tuple[Tensor, Tensor, Tensor]


class _Exported(nn.Module):
    """The module traced for ONNX: the fused network, plus the decoding when asked."""

    def __init__(self, network: Network, with_decode: bool, all_layers: bool = False,
                 layout: str = "raw", nms: NmsOptions | None = None) -> None:
        super().__init__()
        self.network = network
        self.with_decode = with_decode
        self.all_layers = all_layers
        self.layout = layout
        self.nms = nms or NmsOptions()

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        if self.layout != "raw":  # export_layouts: one decoded output
            heads = self.network.head_layers()
            net_size = (int(x.shape[-1]), int(x.shape[-2]))
            boxes, objectness, scores = decode_heads(heads, self.network(x), net_size)
            if self.layout == "decoded":
                return (decoded(boxes, objectness, scores),)
            if self.layout == "decoded-t":
                return (decoded_t(boxes, scores, net_size),)
            best_only = not hasattr(heads[-1], "nms_settings")  # YOLOv8/YOLOX: best class
            return (nms_rows(boxes, scores, net_size, self.nms, best_only),)
        if self.all_layers:
            layers = self.network.forward_layers(x)
            outputs = [layers[i] for i in self.network.heads] or [layers[-1]]
            if not self.with_decode:
                return tuple(layers)
            heads = self.network.head_layers()
            return (*layers, *decode_heads(heads, outputs, (int(x.shape[-1]), int(x.shape[-2]))))
        outputs = self.network(x)
        if not self.with_decode:
            return tuple(outputs)
        heads = self.network.head_layers()
        net_size = (int(x.shape[-1]), int(x.shape[-2]))
        return (*outputs, *decode_heads(heads, outputs, net_size))


def output_names(
    network: Network, with_decode: bool = False, all_layers: bool = False, layout: str = "raw"
) -> list[str]:
    """The ONNX output names: ``head_<i>`` per detection layer (``output`` without heads), or
    ``layer_<i>`` for every layer with ``all_layers``; then ``boxes``, ``objectness``, ``scores``
    with ``with_decode``. A decoded ``layout`` has one output (:mod:`.export_layouts`)."""
    if layout != "raw":
        return layout_output_names(layout)
    if all_layers:
        names = [f"layer_{i}" for i in range(len(network.layers))]
    else:
        names = [f"head_{i}" for i in network.heads] or ["output"]
    return names + (["boxes", "objectness", "scores"] if with_decode else [])


def export_onnx(
    network: Network,
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
    with_decode: bool = False,
    fuse: bool = True,
    all_layers: bool = False,
    layout: str = "raw",
    nms: NmsOptions | None = None,
) -> Path:
    """Write ``network`` as an ONNX model (input ``images``: (N, C, H, W) float32 RGB in [0, 1] at
    the cfg's size; outputs: :func:`output_names`).

    Args:
        network: the network with its weights.
        path: the ``.onnx`` file to write.
        opset: the ONNX opset (11 or later).
        dynamic_batch: a symbolic batch dimension (otherwise the batch is 1).
        with_decode: add the decoded ``boxes``, ``objectness`` and ``scores`` outputs.
        fuse: fold batch norm into the convolutions first (darknet's ``fuse_conv_batchnorm``).
        all_layers: output every layer (``layer_<i>``), to compare a runtime with darknet's
            layer buffers or with :meth:`Network.forward_layers` one layer at a time.
        layout: ``raw`` (the heads, as above), ``decoded``, ``decoded-t`` or ``nms``: one output
            laid out as :mod:`darknetpy.inference.export_layouts` describes.
        nms: the in-graph NMS settings of ``layout="nms"`` (:class:`NmsOptions`' defaults).

    Raises:
        UsageError: an opset below 11, ``with_decode`` on a network without detection heads, no
            ``onnx`` package, or a missing folder.
    """
    if opset < MIN_OPSET:
        raise UsageError(f"--opset {opset}: darknetpy exports with opset {MIN_OPSET} or later")
    if with_decode and not network.heads:
        raise UsageError(
            f"{network.where()}: --with-decode needs a [yolo], [region], [Gaussian_yolo] or "
            "other detection layer; this network has none"
        )
    check_layout(layout, network.head_layers(), network.where(), nms)
    if layout != "raw" and (with_decode or all_layers):
        raise UsageError(f"--layout {layout} has one output: leave out --with-decode/--all-layers")
    path = Path(path)
    _check_can_write(path)
    # a copy either way: the caller's network keeps its device, dtype and train/eval mode
    runtime = fuse_conv_batchnorm(network) if fuse else copy.deepcopy(network)
    runtime = runtime.to("cpu", torch.float32).eval()
    module = _Exported(runtime, with_decode, all_layers, layout, nms).eval()
    net = network.net
    x = torch.rand(
        2 if dynamic_batch else 1,
        net.channels,
        net.height,
        net.width,
        generator=torch.Generator().manual_seed(0),
    )
    names = output_names(network, with_decode, all_layers, layout)
    axes = {name: {0: "batch"} for name in ["images", *names]} if dynamic_batch else None
    if layout == "nms":  # K rows, however many boxes NMS keeps
        axes = {**(axes or {}), "detections": {0: "rows"}}
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        with torch.no_grad():
            torch.onnx.export(
                module,
                (x,),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=["images"],
                output_names=names,
                dynamic_axes=axes,
                do_constant_folding=True,
            )
    tmp.replace(path)
    return path


def _check_can_write(path: Path) -> None:
    """The ``onnx`` package is there and ``path``'s folder exists (no folder is made silently).

    Raises:
        UsageError: naming what to install, or the missing folder.
    """
    try:
        import onnx  # noqa: F401  (torch.onnx.export writes the model through it)
    except ImportError:
        raise UsageError(
            "ONNX export needs the onnx package, which the plain install leaves out: "
            'pip install -e ".[onnx]" (or pip install onnx)'
        ) from None
    require_folder(path)
