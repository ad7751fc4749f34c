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
from torch import Tensor, nn

from .layers.activation import ActivationPath
from .layers.base import DarknetLayer
from .layers.conv import Conv

__all__ = [
    "FUSED_ACTIVATIONS", "PackedConv", "mish_", "packing_available", "prepack_convolutions",
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
