"""ONNX export of a darknet network: the head outputs as darknet computes them, optionally decoded.

The exported graph is the fused inference network (batch norm folded, ``network.c:
fuse_conv_batchnorm``). Its outputs are, in layer order, every detection head's ``l.output``
(``head_<i>`` for darknet layer ``i``; the last layer's output, ``output``, for a network without
heads). ``with_decode`` adds three outputs that put every head's boxes in darknet's detection
order (heads in layer order, cells row-major, anchor slots innermost):

* ``boxes`` (N, B, 4): centre x, y, width, height relative to the *network input*
  (``yolo_layer.c: get_yolo_box``, ``region_layer.c: get_region_box``,
  ``gaussian_yolo_layer.c: get_gaussian_yolo_box``); map them to the image with
  :func:`darknetpy.inference.postprocess.correct_yolo_boxes` when the input was letterboxed, or multiply
  by the image size when it was stretched;
* ``objectness`` (N, B): darknet's ``det.objectness`` (1 for ``[region]`` heads);
* ``scores`` (N, B, classes): darknet's ``prob`` before thresholding (objectness × class,
  × (1 - mean σ) for ``[Gaussian_yolo]``).

A detection above ``thresh`` is ``objectness > thresh`` and ``scores > thresh`` (darknet zeroes the
rest); NMS is left to the consumer (darknet's is greedy per class: ``box.c: do_nms_sort``).

The exporter is PyTorch's TorchScript-based one (``dynamo=False``): it needs only ``onnx``, not
``onnxscript``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import UsageError
from ..model.heads.darknet import YoloPoint
from ..model.network import Network
from .inference_model import fuse_conv_batchnorm

__all__ = ["DEFAULT_OPSET", "DecodedHeads", "decode_heads", "export_onnx", "output_names"]

DEFAULT_OPSET = 17
MIN_OPSET = 11  # the first opset the exporter supports for every op the layers use


def _grid(h: int, w: int, a: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Column and row of every (cell, slot) in darknet's order: row-major cells, slots innermost."""
    col = torch.arange(w, dtype=like.dtype, device=like.device).view(1, w, 1).expand(h, w, a)
    row = torch.arange(h, dtype=like.dtype, device=like.device).view(h, 1, 1).expand(h, w, a)
    return col.reshape(-1), row.reshape(-1)


def _exp_scaled(t: Tensor, scale: Tensor) -> Tensor:
    """``exp(t) * scale`` as ``exp(t + log(scale))``: finite wherever the product fits a float
    (darknet evaluates ``exp`` in double, so its boxes stay finite for large ``t``)."""
    return torch.exp(t + torch.log(scale))


def _decode_yolo(out: Tensor, layer: nn.Module, net_size: tuple[int, int]) -> tuple[Tensor, ...]:
    o = layer.options
    n, _, h, w = out.shape
    v = (
        out.reshape(n, o.num, o.entries, h, w)
        .permute(0, 3, 4, 1, 2)
        .reshape(n, h * w * o.num, o.entries)
    )
    col, row = _grid(h, w, o.num, v)
    anchors = torch.tensor(o.masked_anchors, dtype=v.dtype, device=v.device).repeat(h * w, 1)
    x = (col + v[..., 0]) / w
    y = (row + v[..., 1]) / h
    if o.new_coords:
        bw = v[..., 2] * v[..., 2] * 4 * anchors[:, 0] / net_size[0]
        bh = v[..., 3] * v[..., 3] * 4 * anchors[:, 1] / net_size[1]
    else:
        bw = _exp_scaled(v[..., 2], anchors[:, 0] / net_size[0])
        bh = _exp_scaled(v[..., 3], anchors[:, 1] / net_size[1])
    obj = v[..., 4]
    return torch.stack((x, y, bw, bh), -1), obj, obj.unsqueeze(-1) * v[..., 5:]


def _decode_gaussian(
    out: Tensor, layer: nn.Module, net_size: tuple[int, int]
) -> tuple[Tensor, ...]:
    o = layer.options
    n, _, h, w = out.shape
    v = (
        out.reshape(n, o.num, o.entries, h, w)
        .permute(0, 3, 4, 1, 2)
        .reshape(n, h * w * o.num, o.entries)
    )
    col, row = _grid(h, w, o.num, v)
    anchors = torch.tensor(o.masked_anchors, dtype=v.dtype, device=v.device).repeat(h * w, 1)
    bw = _exp_scaled(v[..., 4], anchors[:, 0] / net_size[0])
    bh = _exp_scaled(v[..., 6], anchors[:, 1] / net_size[1])
    x = (col + v[..., 0]) / w
    y = (row + v[..., 2]) / h
    if o.yolo_point is YoloPoint.LEFT_TOP:
        x, y = x + bw / 2, y + bh / 2
    elif o.yolo_point is YoloPoint.RIGHT_BOTTOM:
        x, y = x - bw / 2, y - bh / 2
    uc = (v[..., 1] + v[..., 3] + v[..., 5] + v[..., 7]) / 4
    obj = v[..., 8]
    scores = obj.unsqueeze(-1) * v[..., 9:] * (1 - uc).unsqueeze(-1)
    return torch.stack((x, y, bw, bh), -1), obj, scores


def _decode_region(out: Tensor, layer: nn.Module, net_size: tuple[int, int]) -> tuple[Tensor, ...]:
    del net_size  # [region] anchors are in grid cells
    o = layer.options
    if o.tree is not None:
        raise UsageError(
            f"{layer.where()}: decoding a tree= (YOLO9000) [region] head is not "
            "supported in ONNX; export without --with-decode"
        )
    n, _, h, w = out.shape
    p = out.reshape(n, h * w * o.num, o.entries)  # l.output is already cell-major
    col, row = _grid(h, w, o.num, p)
    anchors = torch.tensor(o.anchors, dtype=p.dtype, device=p.device).repeat(h * w, 1)
    x = (col + torch.sigmoid(p[..., 0])) / w
    y = (row + torch.sigmoid(p[..., 1])) / h
    bw = _exp_scaled(p[..., 2], anchors[:, 0] / w)
    bh = _exp_scaled(p[..., 3], anchors[:, 1] / h)
    scale = p[..., 4]
    if o.classfix == -1:
        scale = torch.where(scale < 0.5, torch.zeros_like(scale), scale)
    return torch.stack((x, y, bw, bh), -1), torch.ones_like(scale), scale.unsqueeze(-1) * p[..., 5:]


_DECODERS = {"yolo": _decode_yolo, "Gaussian_yolo": _decode_gaussian, "region": _decode_region}


def decode_heads(
    heads: Sequence[nn.Module], outputs: Sequence[Tensor], net_size: tuple[int, int]
) -> tuple[Tensor, Tensor, Tensor]:
    """Every head's boxes in one tensor each, in darknet's order (traceable: no data-dependent
    control flow). See the module docstring for the three outputs.

    Args:
        heads: the detection layers, in layer order.
        outputs: their outputs (N, C, H, W).
        net_size: the network input (width, height) the anchors are divided by.
    """
    parts = [
        _DECODERS[layer.darknet_name](out.float(), layer, net_size)
        for layer, out in zip(heads, outputs)
    ]
    boxes, objectness, scores = (torch.cat([p[k] for p in parts], 1) for k in range(3))
    return boxes, objectness, scores


DecodedHeads = tuple[Tensor, Tensor, Tensor]


class _Exported(nn.Module):
    """The module traced for ONNX: the fused network, plus the decoding when asked."""

    def __init__(self, network: Network, with_decode: bool, all_layers: bool = False) -> None:
        super().__init__()
        self.network = network
        self.with_decode = with_decode
        self.all_layers = all_layers

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        if self.all_layers:
            layers = self.network.forward_layers(x)
            outputs = [layers[i] for i in self.network.heads] or [layers[-1]]
            if not self.with_decode:
                return tuple(layers)
            heads = [self.network.layers[i] for i in self.network.heads]
            return (*layers, *decode_heads(heads, outputs, (int(x.shape[-1]), int(x.shape[-2]))))
        outputs = self.network(x)
        if not self.with_decode:
            return tuple(outputs)
        heads = [self.network.layers[i] for i in self.network.heads]
        net_size = (int(x.shape[-1]), int(x.shape[-2]))
        return (*outputs, *decode_heads(heads, outputs, net_size))


def output_names(
    network: Network, with_decode: bool = False, all_layers: bool = False
) -> list[str]:
    """The ONNX output names: ``head_<i>`` per detection layer (``output`` without heads), or
    ``layer_<i>`` for every layer with ``all_layers``; then ``boxes``, ``objectness``, ``scores``
    with ``with_decode``."""
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

    Raises:
        UsageError: an opset below 11, or ``with_decode`` on a network without detection heads.
    """
    if opset < MIN_OPSET:
        raise UsageError(f"--opset {opset}: darknetpy exports with opset {MIN_OPSET} or later")
    if with_decode and not network.heads:
        raise UsageError(
            f"{network.where()}: --with-decode needs a [yolo], [region] or "
            "[Gaussian_yolo] layer; this network has none"
        )
    path = Path(path)
    runtime = fuse_conv_batchnorm(network) if fuse else network
    runtime = runtime.to("cpu", torch.float32).eval()
    module = _Exported(runtime, with_decode, all_layers).eval()
    net = network.net
    x = torch.rand(
        2 if dynamic_batch else 1,
        net.channels,
        net.height,
        net.width,
        generator=torch.Generator().manual_seed(0),
    )
    names = output_names(network, with_decode, all_layers)
    axes = {name: {0: "batch"} for name in ["images", *names]} if dynamic_batch else None
    path.parent.mkdir(parents=True, exist_ok=True)
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
