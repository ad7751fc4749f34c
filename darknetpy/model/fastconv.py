"""Prepacked oneDNN convolutions for CPU inference: the weights reordered once, the activation fused.

``F.conv2d`` on the CPU hands every call to oneDNN (``mkldnn_convolution``), which first *reorders
the weights* into its blocked layout: for yolov4 that is 257 MB of weights copied per forward pass,
and 1x1 convolutions with a batch of one take PyTorch's slower im2col path instead. This module
replaces the ``[convolutional]`` layers of an inference network (batch norm already folded, see
:func:`darknetpy.inference.inference_model.fuse_conv_batchnorm`) by :class:`PackedConv`: the weight reordered once
(``torch.ops.mkldnn._reorder_convolution_weight``) and the convolution, bias and activation in one
oneDNN primitive (``torch.ops.mkldnn._convolution_pointwise``, the kernel ``torch.compile``'s CPU
backend emits for frozen convolutions). Activations oneDNN cannot fuse (mish, ...) run in place
right after; mish (yolov4's backbone) in :func:`mish_`, about twice as fast as ``F.mish`` on the
CPU. Outputs are channels-last tensors; values equal ``F.conv2d`` up to float rounding.

Only for float32 CPU inference (no autograd through the packed weights). Where the oneDNN ops are
missing (a PyTorch build without mkldnn) :func:`prepack_convolutions` changes nothing.

Example:
    >>> from darknetpy.inference.inference_model import load                           # doctest: +SKIP
    >>> model = load("yolov4.cfg", "yolov4.weights")
    >>> prepack_convolutions(model.fused)                              # layers replaced
    110
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers.activation import ActivationPath
from .layers.base import DarknetLayer
from .layers.conv import Conv
from .layers.pool import MaxPool, use_padding
from .layers.resample import Upsample

__all__ = [
    "FUSED_ACTIVATIONS", "FastMaxPool", "FastUpsample", "PackedConv", "fast_pool_layers", "mish_",
    "packing_available", "prepack_convolutions",
]

#: Darknet activations oneDNN applies inside the convolution: name -> (post-op, its scalars).
#: The others (mish, hard_mish, elu, ...) run after it, as :class:`Conv` runs them.
FUSED_ACTIVATIONS: MappingProxyType[str, tuple[str, tuple[float, ...]]] = MappingProxyType({
    "linear": ("none", ()),
    "leaky": ("leaky_relu", (0.1,)),
    "revleaky": ("leaky_relu", (0.1,)),
    "relie": ("leaky_relu", (0.01,)),
    "relu": ("relu", ()),
    "logistic": ("sigmoid", ()),
    "tanh": ("tanh", ()),
    "swish": ("swish", ()),
    "hardtan": ("hardtanh", (-1.0, 1.0)),
})


_MISH_CHUNK = 1 << 20  # values per step of mish_: temporaries of 4 MB stay in cache, no page faults


def mish_(x: Tensor) -> Tensor:
    """Darknet's ``mish_yashas`` (``x·tanh(softplus(x))``) in place, from the logistic function:
    with ``s = σ(x)`` and ``n = s·(2 - s)``, ``tanh(log(1 + eˣ)) = n / (2 - n)``.

    (``1 + eˣ = 1/(1 - s)``, so the tanh is ``(1 - (1-s)²) / (1 + (1-s)²)``.) No cancellation
    where ``x`` is very negative (``n ≈ 2s``) and no overflow where it is large (``n → 1``);
    within 1.9e-6 absolute of the float64 formula (``F.mish``: 7e-7). PyTorch's CPU ``mish``,
    ``tanh`` and ``exp`` kernels cost 4-10 ns per value on AVX-512 here, its logistic 0.3 ns: this
    takes under 2 ns instead of 7. Large tensors go in chunks of ``_MISH_CHUNK`` values so that
    the two temporaries stay small. No autograd: inference only.
    """
    flat = _flat_view(x)
    if flat is None or flat.numel() <= _MISH_CHUNK:
        _mish_block(x)
    else:
        for block in flat.split(_MISH_CHUNK):
            _mish_block(block)
    return x


def _flat_view(x: Tensor) -> Tensor | None:
    """A 1-d view of all of ``x``'s values (contiguous or channels-last), else None."""
    if x.is_contiguous():
        return x.view(-1)
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).view(-1)
    return None


def _mish_block(x: Tensor) -> None:
    n = torch.sigmoid(x)
    d = torch.rsub(n, 2)  # 2 - s
    n.mul_(d)  # n = s(2 - s)
    torch.neg(n, out=d).add_(2)  # 2 - n
    x.mul_(n.div_(d))


def packing_available() -> bool:
    """Whether this PyTorch has the oneDNN ops :class:`PackedConv` uses."""
    if not torch.backends.mkldnn.is_available():
        return False
    ops = torch.ops.mkldnn
    try:
        return bool(ops._reorder_convolution_weight) and bool(ops._convolution_pointwise)
    except (AttributeError, RuntimeError):
        return False


class PackedConv(DarknetLayer):
    """A ``[convolutional]`` layer for CPU inference: prepacked weight, bias and activation fused.

    Built from a :class:`Conv` without ``xnor`` nor ``antialiasing`` (its batch norm is folded in
    here if the layer still has one); keeps its index, sources, shapes and section.
    """

    darknet_name = "convolutional"

    def __init__(self, conv: Conv, input_size: Sequence[int]) -> None:
        super().__init__(conv.section, conv.index, conv.sources, conv.in_shape, conv.out_shape)
        self.training_opts = conv.training_opts
        self.spec = conv.spec
        self.activation = conv.activation
        c = conv.conv
        self._stride = list(c.stride)
        self._padding = list(c.padding)
        self._dilation = list(c.dilation)
        self._groups = c.groups
        with torch.no_grad():
            if conv.bn is not None:
                weight, bias = conv._fused_weights()
            else:
                weight, bias = c.weight, c.bias
            weight = weight.detach().float().contiguous()
            self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
            self._input_size = list(input_size)
            self._packed = self._pack(weight)
        name = conv.activation.name
        if name in FUSED_ACTIVATIONS and ActivationPath.CONV in conv.activation.paths:
            self._attr, scalars = FUSED_ACTIVATIONS[name]
            self._scalars = list(scalars)
            self._after = False
        else:
            self._attr, self._scalars, self._after = "none", [], True
        self._mish = name == "mish"

    def _pack(self, weight: Tensor) -> Tensor:
        """The weight in oneDNN's layout: an opaque tensor, kept as a plain attribute (not in the
        state dict, not moved by ``.to()``; pickled and deep-copied as a dense tensor)."""
        return torch.ops.mkldnn._reorder_convolution_weight(
            weight, self._padding, self._stride, self._dilation, self._groups, self._input_size
        )

    def __getstate__(self) -> dict[str, object]:
        state = dict(super().__getstate__())
        state["_packed"] = self._packed.to_dense()
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        super().__setstate__(state)
        self._packed = self._pack(state["_packed"])  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> Tensor:
        shape = list(x.shape)
        if shape != self._input_size:
            # oneDNN picks the weight layout for the input shape (batch 1 and batch 8 differ);
            # a weight packed for another shape would be reordered at every call (yolov4 at
            # batch 8: 15 % slower than F.conv2d). Repack once per change of shape.
            dense = self._packed.to_dense()
            self._input_size = shape
            self._packed = self._pack(dense)
        y = torch.ops.mkldnn._convolution_pointwise(
            x, self._packed, self.bias, self._padding, self._stride, self._dilation, self._groups,
            self._attr, self._scalars, "",
        )
        if self._mish and not torch.is_grad_enabled():
            return mish_(y)
        if self._after:
            y = self.activation.apply(y, ActivationPath.CONV)
        return y

    def bflops(self) -> float:
        spec = self.spec
        nweights = (self.in_shape.channels // spec.groups) * spec.filters * spec.size * spec.size
        return 2.0 * nweights * self.out_shape.height * self.out_shape.width / 1e9

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, packed, post-op={self._attr}"


def _eligible(layer: nn.Module) -> bool:
    if not isinstance(layer, Conv) or layer.spec.xnor or layer.spec.antialiasing:
        return False
    weight = layer.conv.weight
    return weight.device.type == "cpu" and weight.dtype == torch.float32


def prepack_convolutions(network: nn.Module, batch: int = 1) -> int:
    """Replace, in place, every eligible ``[convolutional]`` layer of ``network`` (a
    :class:`~darknetpy.model.network.Network` in eval mode, normally with batch norm folded) by a
    :class:`PackedConv`; returns how many were replaced (0 without oneDNN).

    Args:
        network: the network; its ``layers`` list is modified.
        batch: the batch size the weight layout is first tuned for (another input shape repacks
            the weights once, at its first call).
    """
    if not packing_available() or network.training:
        return 0
    layers = network.layers
    count = 0
    for i, layer in enumerate(layers):
        if _eligible(layer):
            shape = layer.in_shape
            layers[i] = PackedConv(layer, (batch, shape.channels, shape.height, shape.width))
            count += 1
    return count


# ---------------------------------------------------------------- pooling and upsampling
#
# Profiled on yolov4-tiny 416 (prepacked, one thread): the maxpool's F.pad (a -FLT_MAX copy of the
# whole input, 1 px larger) took about 6 % of the forward pass, the upsample's expand + reshape
# an NCHW copy that the next route and convolution turn back to channels-last. The layers below
# give the same values bit for bit without those copies (max and copy are exact).


def _torch_pool_len(n: int, size: int, stride: int, pad: int, ceil: bool) -> int:
    """Output length of ``F.max_pool2d`` (PyTorch's ``pooling_output_shape``)."""
    span = n + 2 * pad - size
    out = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (out - 1) * stride >= n + pad:
        out -= 1
    return out


def _darknet_pool_len(n: int, size: int, stride: int, padding: int) -> int:
    """Darknet's maxpool output length (``make_maxpool_layer``: ``(w + padding - size)/stride + 1``)."""
    return (n + padding - size) // stride + 1


def pool_arguments(layer: MaxPool) -> tuple[int, bool] | None:
    """``(padding, ceil_mode)`` for which ``F.max_pool2d`` gives Darknet's maxpool of ``layer``
    exactly at its cfg input size, or None. Darknet pads ``padding//2`` before and the rest after
    with ``-FLT_MAX``; with ``padding < size`` every window holds an image pixel, so the max is the
    same whenever PyTorch's windows (symmetric ``padding//2``, -inf) start at the same places and
    are as many."""
    if layer.depth or layer.antialiasing or layer.padding >= layer.size:
        return None
    pad = layer.padding // 2
    if 2 * pad > layer.size:
        return None
    shape = layer.in_shape
    for ceil in (False, True):
        if all(_torch_pool_len(n, layer.size, s, pad, ceil)
               == _darknet_pool_len(n, layer.size, s, layer.padding)
               for n, s in ((shape.height, layer.stride_y), (shape.width, layer.stride_x))):
            return pad, ceil
    return None


class FastMaxPool(DarknetLayer):
    """A ``[maxpool]`` as one ``F.max_pool2d`` with implicit padding (no padded copy of the
    input); other input sizes run the original layer."""

    darknet_name = "maxpool"

    def __init__(self, layer: MaxPool, pad: int, ceil: bool) -> None:
        super().__init__(layer.section, layer.index, layer.sources, layer.in_shape,
                         layer.out_shape)
        self.inner = layer
        self._args = (layer.size, (layer.stride_y, layer.stride_x), pad, 1, ceil)
        self._hw = (layer.in_shape.height, layer.in_shape.width)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[2:]) != self._hw or torch.is_grad_enabled():
            return self.inner(x)
        return F.max_pool2d(x, *self._args)

    def bflops(self) -> float:
        return self.inner.bflops()

    def summary_extra(self) -> str:
        return self.inner.summary_extra()


class FastUpsample(DarknetLayer):
    """An ``[upsample]`` with a power-of-two stride and ``scale=1`` as ``F.interpolate``
    (nearest; the source index ``floor(i / 2^k)`` is exact), which keeps channels-last."""

    darknet_name = "none"

    def __init__(self, layer: Upsample) -> None:
        super().__init__(layer.section, layer.index, layer.sources, layer.in_shape,
                         layer.out_shape)
        self.inner = layer
        self._stride = layer.stride

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            return self.inner(x)
        s = self._stride
        return F.interpolate(x, size=(x.shape[2] * s, x.shape[3] * s), mode="nearest")

    def bflops(self) -> float:
        return self.inner.bflops()

    def summary_extra(self) -> str:
        return self.inner.summary_extra()


def _fast_upsample_ok(layer: Upsample) -> bool:
    s = layer.stride
    return s > 1 and s & (s - 1) == 0 and layer.scale == 1


def fast_pool_layers(network: nn.Module) -> int:
    """Replace, in place, the ``[maxpool]`` and ``[upsample]`` layers of an inference network
    (eval mode) that :class:`FastMaxPool` / :class:`FastUpsample` compute exactly; returns how
    many. Under autograd they run the original layers."""
    if network.training:
        return 0
    layers = network.layers
    count = 0
    for i, layer in enumerate(layers):
        if type(layer) is MaxPool and use_padding_at_cfg_size(layer):
            args = pool_arguments(layer)
            if args is not None:
                layers[i] = FastMaxPool(layer, *args)
                count += 1
        elif type(layer) is Upsample and _fast_upsample_ok(layer):
            layers[i] = FastUpsample(layer)
            count += 1
    return count


def use_padding_at_cfg_size(layer: MaxPool) -> bool:
    """Whether the original layer takes its padded path at the cfg's input size."""
    shape = layer.in_shape
    return use_padding(torch.empty(0, 0, shape.height, shape.width), layer.size, layer.padding)
