"""Classifier and utility layers: ``[connected]``, ``[softmax]``, ``[dropout]``, ``[batchnorm]``,
``[activation]``, ``[crop]``, ``[cost]``, ``[empty]``/``[silence]``, ``[implicit]``,
``[contrastive]`` (``parser.c: parse_connected, parse_softmax, parse_dropout, parse_batchnorm,
parse_activation, parse_crop, parse_cost, parse_implicit, parse_contrastive``, the EMPTY case of
``parse_network_cfg_custom``; ``connected_layer.c``, ``softmax_layer.c``, ``dropout_layer.c``,
``batchnorm_layer.c``, ``activation_layer.c``, ``crop_layer.c``, ``cost_layer.c``,
``representation_layer.c``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import Enum
from types import MappingProxyType
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from ..cfg import Options, Section
from .activation import Activation, ActivationPath, get_activation
from .base import BuildContext, DarknetLayer, Shape
from .common import (
    allocate,
    batch_norm,
    check_count,
    copy_values,
    empty_module,
    get_c_int,
    require_image,
)


class Connected(DarknetLayer):
    """``[connected]``: ``y = W·x`` on the flattened input, then batch norm (γ, rolling statistics)
    and **then** the bias, then the activation (``forward_connected_layer``). Output 1×1×output.

    File order (``load_connected_weights``): biases, weights [outputs][inputs], then, with batch
    norm, scales, rolling mean, rolling variance. A header with major or minor > 1000 stores the
    weights [inputs][outputs] (``transpose``).
    """

    darknet_name = "connected"

    def __init__(self, section: Section, index: int, in_shape: Shape, outputs: int,
                 activation: Activation, batch_normalize: bool) -> None:
        super().__init__(section, index, (index - 1,), in_shape, Shape(outputs, 1, 1))
        self.activation = activation
        inputs = in_shape.numel
        self.linear = empty_module(nn.Linear, inputs, outputs, bias=not batch_normalize)
        # With batch norm, darknet's `biases` are added after normalising: they are the BN β.
        self.bn = batch_norm(outputs, dims=1) if batch_normalize else None
        with torch.no_grad():
            scale = math.sqrt(2.0 / inputs)
            self.linear.weight.uniform_(-scale, scale)
            if self.linear.bias is not None:
                self.linear.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        y = self.linear(x.reshape(x.shape[0], -1))
        if self.bn is not None:
            y = self.bn(y)
        y = self.activation.apply(y, ActivationPath.GENERIC)
        return y.view(y.shape[0], -1, 1, 1)

    def summary_extra(self) -> str:
        return f"{self.in_shape.numel:4d} -> {self.out_shape.channels:4d}"

    def _bias(self) -> Tensor:
        bias = self.bn.bias if self.bn is not None else self.linear.bias
        assert bias is not None
        return bias

    def darknet_tensors(self) -> list[Tensor]:
        if self.bn is None:
            return [self._bias(), self.linear.weight]
        bn = self.bn
        return [bn.bias, self.linear.weight, bn.weight, bn.running_mean, bn.running_var]

    def read_darknet(self, read: Callable[[int, str], np.ndarray], transpose: bool) -> None:
        """``load_connected_weights``, honouring ``transpose`` and ``dontloadscales``."""
        outputs, inputs = self.linear.weight.shape
        with torch.no_grad():
            copy_values(self._bias(), read(outputs, "biases"))
            weights = read(outputs * inputs, "weights")
            if transpose:
                weights = weights.reshape(inputs, outputs).T
            copy_values(self.linear.weight, weights)
            if self.bn is not None and not self.training_opts.dontloadscales:
                copy_values(self.bn.weight, read(outputs, "scales"))
                copy_values(self.bn.running_mean, read(outputs, "rolling_mean"))
                copy_values(self.bn.running_var, read(outputs, "rolling_variance"))

    def write_darknet(self, transpose: bool) -> list[np.ndarray]:
        arrays = super().write_darknet(False)
        if transpose:
            outputs, inputs = self.linear.weight.shape
            arrays[1] = np.ascontiguousarray(arrays[1].reshape(outputs, inputs).T).ravel()
        return arrays


class Softmax(DarknetLayer):
    """``[softmax]``: softmax(x / temperature) over ``groups`` contiguous chunks of the flattened
    input (``softmax_cpu``); with ``spatial=1``, over the channels of each pixel (darknet's GPU
    kernel; its CPU build ignores ``spatial``). The output keeps the input's shape."""

    darknet_name = "softmax"
    darknet_sized: ClassVar[bool] = False  # make_softmax_layer leaves out_w/h/c at 0

    def __init__(self, section: Section, index: int, in_shape: Shape, groups: int,
                 temperature: float, spatial: bool) -> None:
        super().__init__(section, index, (index - 1,), in_shape, in_shape)
        self.groups = groups
        self.temperature = temperature
        self.spatial = spatial

    def forward(self, x: Tensor) -> Tensor:
        scaled = x / self.temperature if self.temperature != 1 else x
        if self.spatial:
            return torch.softmax(scaled, dim=1)
        n = x.shape[0]
        return torch.softmax(scaled.reshape(n, self.groups, -1), dim=2).view(x.shape)

    def summary_extra(self) -> str:
        return f"{self.in_shape.numel:4d}" + (f" groups {self.groups}" if self.groups > 1 else "")


class Dropout(DarknetLayer):
    """``[dropout]``: identity at inference; in training each value is zeroed where a uniform draw
    is below p and the rest scaled by 1/(1-p) (``forward_dropout_layer``; the CPU build ignores
    dropblock). Draws come from :attr:`generator` (``None``: torch's default generator).

    Darknet drops values in place, in the previous layer's buffer, so a later [route] to that layer
    sees them dropped too; here only this layer's output is."""

    darknet_name = "dropout"

    def __init__(self, section: Section, index: int, in_shape: Shape, probability: float) -> None:
        super().__init__(section, index, (index - 1,), in_shape, in_shape)
        self.probability = probability
        self.generator: torch.Generator | None = None

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.probability <= 0:
            return x
        draws = torch.rand(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        return torch.where(draws < self.probability, torch.zeros_like(x),
                           x * (1.0 / (1.0 - self.probability)))

    def summary_extra(self) -> str:
        return f"p = {self.probability:.3f}"


class BatchNorm(DarknetLayer):
    """``[batchnorm]``: batch norm over channels with its own β, γ, rolling mean and variance
    (file order: biases, scales, rolling_mean, rolling_variance)."""

    darknet_name = "batchnorm"

    def __init__(self, section: Section, index: int, in_shape: Shape) -> None:
        super().__init__(section, index, (index - 1,), in_shape, in_shape)
        self.bn = batch_norm(in_shape.channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(x)

    def darknet_tensors(self) -> list[Tensor]:
        return [self.bn.bias, self.bn.weight, self.bn.running_mean, self.bn.running_var]


class ActivationLayer(DarknetLayer):
    """``[activation]``: darknet's generic ``activate()`` (swish, mish, hard_mish, relu6 give 0)."""

    darknet_name = "activation"

    def __init__(self, section: Section, index: int, in_shape: Shape,
                 activation: Activation) -> None:
        super().__init__(section, index, (index - 1,), in_shape, in_shape)
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        return self.activation.for_layer(ActivationPath.GENERIC)(x)

    def summary_extra(self) -> str:
        return self.activation.name


class Crop(DarknetLayer):
    """``[crop]``: at inference the centre ``crop_height``×``crop_width`` window; in training a random
    window and a random horizontal flip (``flip=1``), the same for the whole batch, drawn from
    :attr:`rng`. Values become ``2x - 1`` unless ``noadjust=1`` (``forward_crop_layer``; the CPU
    build ignores angle, saturation and exposure)."""

    darknet_name = "crop"

    def __init__(self, section: Section, index: int, in_shape: Shape, out_shape: Shape,
                 flip: bool, noadjust: bool) -> None:
        super().__init__(section, index, (index - 1,), in_shape, out_shape)
        self.flip = flip
        self.noadjust = noadjust
        self.rng = np.random.default_rng()

    def forward(self, x: Tensor) -> Tensor:
        out = self.out_shape
        h, w = x.shape[2], x.shape[3]
        flip = False
        if self.training:
            flip = self.flip and bool(self.rng.integers(2))
            dh = int(self.rng.integers(h - out.height + 1))
            dw = int(self.rng.integers(w - out.width + 1))
        else:
            dh, dw = (h - out.height) // 2, (w - out.width) // 2
        if flip:
            y = x[:, :, dh:dh + out.height, w - dw - out.width: w - dw].flip(3)
        else:
            y = x[:, :, dh:dh + out.height, dw:dw + out.width]
        return y if self.noadjust else y * 2 - 1


class Cost(DarknetLayer):
    """``[cost]``: passes its input through. Darknet's cost layer outputs the per-value loss against
    a truth, which detection and classification never feed it; ``get_network_output`` skips it."""

    darknet_name = "cost"
    darknet_sized: ClassVar[bool] = False  # make_cost_layer leaves out_w/h/c at 0

    def forward(self, x: Tensor) -> Tensor:
        return x


class Empty(DarknetLayer):
    """``[empty]`` / ``[silence]``: identity (darknet shares the previous layer's buffer)."""

    darknet_name = "none"

    def forward(self, x: Tensor) -> Tensor:
        return x


class Implicit(DarknetLayer):
    """``[implicit]`` (YOLOR): a learned (filters, atoms, 1) tensor, the same for every image,
    initialised to ``mean + U(-std, std)``. Its only source is the previous layer, for the batch size."""

    darknet_name = "none"

    def __init__(self, section: Section, index: int, in_shape: Shape, filters: int, atoms: int,
                 mean: float, std: float) -> None:
        super().__init__(section, index, (index - 1,), in_shape, Shape(filters, atoms, 1))
        self.weight = nn.Parameter(torch.empty(filters, atoms, 1))
        with torch.no_grad():
            self.weight.uniform_(mean - std, mean + std)

    def forward(self, x: Tensor) -> Tensor:
        return self.weight.unsqueeze(0).expand(x.shape[0], *self.weight.shape)

    def darknet_tensors(self) -> list[Tensor]:
        return [self.weight]


class Contrastive(DarknetLayer):
    """``[contrastive]``: passes its input through (darknet's contrastive loss is for training
    with tracking, which darknetpy does not do)."""

    darknet_name = "none"
    darknet_sized: ClassVar[bool] = False  # make_contrastive_layer leaves out_w/h/c at 0

    def forward(self, x: Tensor) -> Tensor:
        return x


class CostType(Enum):
    """``cost_layer.c: get_cost_type``."""

    SSE = "sse"
    MASKED = "masked"
    SMOOTH = "smooth"


COST_TYPES = MappingProxyType({t.value: t for t in CostType})


def build_connected(opts: Options, ctx: BuildContext) -> Connected:
    """``parse_connected``: ``output`` (1), ``activation`` (logistic), ``batch_normalize``."""
    outputs = get_c_int(opts, "output", 1)
    activation = get_activation(opts, "logistic")
    batch_normalize = opts.get_bool("batch_normalize", False)
    in_shape = ctx.prev_shape
    if outputs < 1:
        raise opts.error(f"output={outputs} must be at least 1", "output")
    if in_shape.numel <= 0:
        where = "the [net] input" if ctx.index == 0 else "the previous layer"
        raise opts.error(f"{where} is empty ({in_shape}); [connected] needs its values "
                         "(darknetpy needs [net] width, height and channels)")
    check_count(opts, in_shape.numel * outputs, f"the weights ({outputs} x {in_shape.numel})",
                "output")
    return allocate(opts, lambda: Connected(opts.section, ctx.index, in_shape, outputs, activation,
                                            batch_normalize), f"{outputs} x {in_shape.numel} weights")


def build_softmax(opts: Options, ctx: BuildContext) -> Softmax:
    """``parse_softmax``: ``groups`` (1), ``temperature`` (1), ``spatial``, ``noloss``, ``tree``."""
    groups = get_c_int(opts, "groups", 1)
    temperature = opts.get_float("temperature", 1.0)
    if opts.has("tree"):
        raise opts.error("tree= (hierarchical softmax) is not supported by darknetpy", "tree")
    spatial = opts.get_float("spatial", 0.0) != 0
    opts.ignore("noloss")  # training only
    in_shape = ctx.prev_shape
    if groups < 1 or in_shape.numel % groups:
        raise opts.error(f"groups={groups} must divide the {in_shape.numel} inputs", "groups")
    if temperature == 0:
        raise opts.error("temperature=0 divides by zero", "temperature")
    return Softmax(opts.section, ctx.index, in_shape, groups, temperature, spatial)


def build_dropout(opts: Options, ctx: BuildContext) -> Dropout:
    """``parse_dropout``: ``probability`` (0.2); the dropblock keys are GPU-only."""
    probability = opts.get_float("probability", 0.2)
    opts.ignore("dropblock", "dropblock_size_rel", "dropblock_size_abs")
    if not 0 <= probability <= 1:
        raise opts.error(f"probability={probability} must be between 0 and 1", "probability")
    return Dropout(opts.section, ctx.index, ctx.prev_shape, probability)


def build_batchnorm(opts: Options, ctx: BuildContext) -> BatchNorm:
    """``parse_batchnorm``: no keys."""
    require_image(opts, ctx.prev_shape, "[batchnorm]")
    return BatchNorm(opts.section, ctx.index, ctx.prev_shape)


def build_activation(opts: Options, ctx: BuildContext) -> ActivationLayer:
    """``parse_activation``: ``activation`` (linear)."""
    return ActivationLayer(opts.section, ctx.index, ctx.prev_shape, get_activation(opts, "linear"))


def build_crop(opts: Options, ctx: BuildContext) -> Crop:
    """``parse_crop``: ``crop_height``, ``crop_width`` (1), ``flip``, ``noadjust``; ``angle``,
    ``saturation``, ``exposure`` and ``shift`` are read but unused by darknet's CPU forward."""
    crop_height = get_c_int(opts, "crop_height", 1)
    crop_width = get_c_int(opts, "crop_width", 1)
    flip = opts.get_bool("flip", False)
    opts.ignore("angle", "saturation", "exposure", "shift")
    noadjust = opts.get_bool("noadjust", False)
    in_shape = ctx.prev_shape
    require_image(opts, in_shape, "[crop]")
    if not (0 < crop_height <= in_shape.height and 0 < crop_width <= in_shape.width):
        raise opts.error(f"crop {crop_width} x {crop_height} does not fit the input {in_shape}",
                         "crop_height")
    return Crop(opts.section, ctx.index, in_shape,
                Shape(in_shape.channels, crop_height, crop_width), flip, noadjust)


def build_cost(opts: Options, ctx: BuildContext) -> Cost:
    """``parse_cost``: ``type`` (sse), ``scale``, ``ratio`` (training only)."""
    opts.get_choice("type", COST_TYPES, "sse")
    opts.ignore("scale", "ratio")
    return Cost(opts.section, ctx.index, (ctx.index - 1,), ctx.prev_shape, ctx.prev_shape)


def build_empty(opts: Options, ctx: BuildContext) -> Empty:
    """``[empty]`` / ``[silence]``: no keys."""
    return Empty(opts.section, ctx.index, (ctx.index - 1,), ctx.prev_shape, ctx.prev_shape)


def build_implicit(opts: Options, ctx: BuildContext) -> Implicit:
    """``parse_implicit``: ``mean`` (0), ``std`` (0.2), ``filters`` (128), ``atoms`` (1)."""
    mean = opts.get_float("mean", 0.0)
    std = opts.get_float("std", 0.2)
    filters = get_c_int(opts, "filters", 128)
    atoms = get_c_int(opts, "atoms", 1)
    if filters < 1 or atoms < 1:
        raise opts.error(f"filters={filters} and atoms={atoms} must be at least 1", "filters")
    check_count(opts, filters * atoms, "the implicit tensor", "filters")
    return allocate(opts, lambda: Implicit(opts.section, ctx.index, ctx.prev_shape, filters, atoms,
                                           mean, std), f"{filters} x {atoms} values")


def build_contrastive(opts: Options, ctx: BuildContext) -> Contrastive:
    """``parse_contrastive``: ``yolo_layer`` must point at a [yolo] layer; the loss keys are
    training-only."""
    get_c_int(opts, "classes", 1000)
    reference = get_c_int(opts, "yolo_layer", 0)
    opts.ignore("temperature", "cls_normalizer", "max_delta", "contrastive_neg_max")
    index = ctx.index + reference if reference < 0 else reference
    if reference == 0 or not 0 <= index < ctx.index or ctx.layers[index].darknet_name != "yolo":
        raise opts.error(
            f"yolo_layer={reference} must point at a [yolo] layer (darknet: '[contrastive] layer "
            "should point to the [yolo] layer')", "yolo_layer",
        )
    return Contrastive(opts.section, ctx.index, (ctx.index - 1,), ctx.prev_shape, ctx.prev_shape)
