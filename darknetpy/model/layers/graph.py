"""Layers that read other layers: ``[route]``, ``[shortcut]``, ``[sam]``, ``[scale_channels]``
(``parser.c: parse_route, parse_shortcut, parse_sam, parse_scale_channels``; ``route_layer.c``,
``shortcut_layer.c``, ``blas.c: shortcut_multilayer_cpu``, ``sam_layer.c``,
``scale_channels_layer.c``).
"""

from __future__ import annotations

from enum import Enum
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cfg import Options, Section
from .activation import Activation, ActivationPath, get_activation
from .base import BuildContext, DarknetLayer, Shape
from .common import checked_shape, get_c_int, require_image


def _references(opts: Options, ctx: BuildContext, key: str) -> tuple[int, ...]:
    """A comma list of layer references as absolute indices (darknet's ``atoi`` + ``strchr(',')``)."""
    return tuple(ctx.resolve(opts, key, ref) for ref in opts.get_ints(key))


class Route(DarknetLayer):
    """``[route]``: channel chunk ``group_id`` of ``groups`` from each listed layer, concatenated
    (``forward_route_layer`` copies ``outputs_i/groups`` values at offset ``group_id·outputs_i/groups``
    of every input, which is that channel slice because the layout is CHW)."""

    darknet_name = "route"

    def __init__(self, section: Section, index: int, sources: tuple[int, ...],
                 in_shapes: tuple[Shape, ...], out_shape: Shape, groups: int, group_id: int) -> None:
        super().__init__(section, index, sources, in_shapes[0], out_shape)
        self.in_shapes = in_shapes
        self.groups = groups
        self.group_id = group_id

    def forward(self, *inputs: Tensor) -> Tensor:
        if self.groups > 1:
            parts = []
            for x in inputs:
                part = x.shape[1] // self.groups
                parts.append(x.narrow(1, self.group_id * part, part))
            inputs = tuple(parts)
        if len(inputs) == 1:
            return inputs[0]
        return torch.cat(inputs, dim=1)

    def summary_extra(self) -> str:
        text = " ".join(str(i) for i in self.sources)
        if self.groups > 1:
            text += f" {self.group_id}/{self.groups}"
        return text


class WeightsType(Enum):
    """``[shortcut] weights_type`` (``parse_shortcut``)."""

    NONE = "none"
    PER_FEATURE = "per_feature"  # one weight per input
    PER_CHANNEL = "per_channel"  # one weight per input and channel


class WeightsNormalization(Enum):
    """``[shortcut] weights_normalization`` (``parse_shortcut``)."""

    NONE = "none"
    RELU = "relu"
    SOFTMAX = "softmax"


WEIGHTS_TYPES = MappingProxyType({
    "none": WeightsType.NONE, "per_feature": WeightsType.PER_FEATURE,
    "per_layer": WeightsType.PER_FEATURE, "per_channel": WeightsType.PER_CHANNEL,
})
WEIGHTS_NORMALIZATIONS = MappingProxyType({
    "none": WeightsNormalization.NONE, "relu": WeightsNormalization.RELU,
    "avg_relu": WeightsNormalization.RELU, "softmax": WeightsNormalization.SOFTMAX,
})


def normalize_shortcut_weights(weight: Tensor, kind: WeightsNormalization) -> Tensor:
    """``shortcut_multilayer_cpu``'s weight normalisation over the inputs (dim 0):
    relu: relu(w)/(1e-4 + Σ relu(w)); softmax: e^(w-max)/(1e-4 + Σ e^(w-max))."""
    if kind is WeightsNormalization.RELU:
        w = F.relu(weight)
        return w / (1e-4 + w.sum(dim=0, keepdim=True))
    if kind is WeightsNormalization.SOFTMAX:
        e = torch.exp(weight - weight.amax(dim=0, keepdim=True))
        return e / (1e-4 + e.sum(dim=0, keepdim=True))
    return weight


class Shortcut(DarknetLayer):
    """``[shortcut]``: the previous layer's output plus every ``from`` layer, optionally weighted,
    then the activation.

    The output has the previous layer's shape. A ``from`` layer with other channel counts adds only
    the channels both have (darknet compares flat indices with that layer's size; no projection).
    Weights (``weights_type``) are stored [input][channel] and initialised to 1.
    """

    darknet_name = "shortcut"

    def __init__(self, section: Section, index: int, sources: tuple[int, ...], in_shape: Shape,
                 from_channels: tuple[int, ...], activation: Activation, weights_type: WeightsType,
                 normalization: WeightsNormalization) -> None:
        super().__init__(section, index, sources, in_shape, in_shape)
        self.from_channels = from_channels
        self.activation = activation
        self.weights_type = weights_type
        self.normalization = normalization
        inputs = len(from_channels) + 1
        if weights_type is WeightsType.PER_FEATURE:
            self.weight: nn.Parameter | None = nn.Parameter(torch.ones(inputs, 1))
        elif weights_type is WeightsType.PER_CHANNEL:
            self.weight = nn.Parameter(torch.ones(inputs, in_shape.channels))
        else:
            self.weight = None

    def forward(self, x: Tensor, *others: Tensor) -> Tensor:
        channels = x.shape[1]
        weights = None
        if self.weight is not None:
            weights = normalize_shortcut_weights(self.weight, self.normalization)
            weights = weights.view(weights.shape[0], 1, -1, 1, 1).to(x.dtype)  # (inputs, 1, C|1, 1, 1)
            out = x * weights[0]
        else:
            out = x
        for i, other in enumerate(others, start=1):
            if other.shape[1] > channels:
                other = other[:, :channels]
            if weights is not None:
                w = weights[i]
                other = other * (w[:, : other.shape[1]] if w.shape[1] > other.shape[1] else w)
            if other.shape[1] < channels:
                other = F.pad(other, (0, 0, 0, 0, 0, channels - other.shape[1]))
            out = out + other
        return self.activation.apply(out, ActivationPath.SHORTCUT)

    def bflops(self) -> float:
        """``out_w·out_h·out_c·n / 1e9``, doubled with weights (``make_shortcut_layer``)."""
        flops = self.out_shape.numel * len(self.from_channels) / 1e9
        return 2 * flops if self.weight is not None else flops

    def summary_extra(self) -> str:
        return " ".join(str(i) for i in self.sources[1:])

    def darknet_tensors(self) -> list[Tensor]:
        """``load_shortcut_weights``: (n+1) or (n+1)·C weights, [input][channel]."""
        return [self.weight] if self.weight is not None else []


class Sam(DarknetLayer):
    """``[sam]``: previous output × ``from`` output, elementwise, then the activation
    (``forward_sam_layer``; swish/mish/hard_mish give 0 there)."""

    darknet_name = "sam"

    def __init__(self, section: Section, index: int, sources: tuple[int, ...], in_shape: Shape,
                 out_shape: Shape, activation: Activation) -> None:
        super().__init__(section, index, sources, in_shape, out_shape)
        self.activation = activation

    def forward(self, x: Tensor, other: Tensor) -> Tensor:
        return self.activation.apply(x * other, ActivationPath.GENERIC)

    def summary_extra(self) -> str:
        return str(self.sources[1])


class ScaleChannels(DarknetLayer):
    """``[scale_channels]``: the ``from`` output scaled per channel by the previous 1×1×C output, or
    (``scale_wh=1``) per pixel by the previous H×W×1 output; then the activation."""

    darknet_name = "scale_channels"

    def __init__(self, section: Section, index: int, sources: tuple[int, ...], in_shape: Shape,
                 out_shape: Shape, activation: Activation, scale_wh: bool) -> None:
        super().__init__(section, index, sources, in_shape, out_shape)
        self.activation = activation
        self.scale_wh = scale_wh

    def forward(self, scale: Tensor, other: Tensor) -> Tensor:
        return self.activation.apply(other * scale, ActivationPath.GENERIC)

    def summary_extra(self) -> str:
        return str(self.sources[1]) + (" wh" if self.scale_wh else "")


def build_route(opts: Options, ctx: BuildContext) -> Route:
    """``parse_route``: ``layers`` (required), ``groups`` (1), ``group_id`` (0)."""
    if not opts.has("layers"):
        raise opts.error("[route] needs layers= (darknet: 'Route Layer must specify input layers')")
    sources = _references(opts, ctx, "layers")
    groups = get_c_int(opts, "groups", 1)
    group_id = get_c_int(opts, "group_id", 0)
    opts.ignore("stream", "wait_stream")  # GPU streams
    shapes = tuple(ctx.shape_of(i) for i in sources)
    first = shapes[0]
    for source, shape in zip(sources[1:], shapes[1:]):
        if (shape.height, shape.width) != (first.height, first.width):
            raise opts.error(
                f"layers: layer {source} outputs {shape} but layer {sources[0]} outputs {first}; "
                "routed layers must have the same width and height", "layers",
            )
    if groups < 1 or not 0 <= group_id < groups:
        raise opts.error(f"groups={groups} group_id={group_id}: need groups >= 1 and "
                         "0 <= group_id < groups", "group_id" if groups >= 1 else "groups")
    for source, shape in zip(sources, shapes):
        if shape.channels % groups:
            raise opts.error(f"groups={groups} does not divide the {shape.channels} channels of "
                             f"layer {source}", "groups")
    channels = sum(shape.channels for shape in shapes) // groups
    out = checked_shape(opts, Shape(channels, first.height, first.width), "layers")
    return Route(opts.section, ctx.index, sources, shapes, out, groups, group_id)


def build_shortcut(opts: Options, ctx: BuildContext) -> Shortcut:
    """``parse_shortcut``: ``from`` (required, a list), ``activation`` (linear), ``weights_type``,
    ``weights_normalization``."""
    activation = get_activation(opts, "linear")
    weights_type = opts.get_choice("weights_type", WEIGHTS_TYPES, "none")
    normalization = opts.get_choice("weights_normalization", WEIGHTS_NORMALIZATIONS, "none")
    if not opts.has("from"):
        raise opts.error("[shortcut] needs from= (the layer to add)")
    froms = _references(opts, ctx, "from")
    in_shape = ctx.prev_shape
    require_image(opts, in_shape, "[shortcut]")
    for source in froms:
        shape = ctx.shape_of(source)
        if (shape.height, shape.width) != (in_shape.height, in_shape.width):
            raise opts.error(
                f"from: layer {source} outputs {shape} but the previous layer outputs {in_shape}; "
                "a shortcut needs the same width and height (darknet asserts)", "from",
            )
    return Shortcut(opts.section, ctx.index, (ctx.index - 1, *froms), in_shape,
                    tuple(ctx.shape_of(i).channels for i in froms), activation, weights_type,
                    normalization)


def _single_from(opts: Options, ctx: BuildContext, what: str) -> int:
    if not opts.has("from"):
        raise opts.error(f"{what} needs from= (the layer to multiply)")
    return ctx.resolve(opts, "from", opts.get_int("from"))


def build_sam(opts: Options, ctx: BuildContext) -> Sam:
    """``parse_sam``: ``from`` and ``activation`` (linear); both shapes must be equal."""
    source = _single_from(opts, ctx, "[sam]")
    activation = get_activation(opts, "linear")
    in_shape, other = ctx.prev_shape, ctx.shape_of(source)
    if in_shape != other:
        raise opts.error(f"from: layer {source} outputs {other} but the previous layer outputs "
                         f"{in_shape}; [sam] multiplies equal shapes (darknet asserts)", "from")
    return Sam(opts.section, ctx.index, (ctx.index - 1, source), in_shape, other, activation)


def build_scale_channels(opts: Options, ctx: BuildContext) -> ScaleChannels:
    """``parse_scale_channels``: ``from``, ``scale_wh`` (0), ``activation`` (linear)."""
    source = _single_from(opts, ctx, "[scale_channels]")
    scale_wh = opts.get_bool("scale_wh", False)
    activation = get_activation(opts, "linear")
    in_shape, other = ctx.prev_shape, ctx.shape_of(source)
    if scale_wh:
        ok = in_shape.channels == 1 and (in_shape.height, in_shape.width) == (other.height, other.width)
        need = f"1 channel of {other.width} x {other.height}"
    else:
        ok = in_shape.height == 1 and in_shape.width == 1 and in_shape.channels == other.channels
        need = f"1 x 1 x {other.channels}"
    if not ok:
        raise opts.error(
            f"the previous layer outputs {in_shape} but scaling layer {source} ({other}) needs "
            f"{need} (darknet asserts)", "from",
        )
    return ScaleChannels(opts.section, ctx.index, (ctx.index - 1, source), in_shape, other,
                         activation, scale_wh)
