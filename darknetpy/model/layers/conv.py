"""``[convolutional]`` / ``[conv]`` (``parser.c: parse_convolutional``,
``convolutional_layer.c: make_convolutional_layer, forward_convolutional_layer``,
``parser.c: load_convolutional_weights, save_convolutional_weights``).

The helpers every layer module shares are in :mod:`.common`.

One key is darknetpy's own: ``bn_eps`` (with ``batch_normalize=1``), the batch norm's eps, for networks
imported from frameworks whose batch norm differs from Darknet's 1e-5 (ultralytics YOLOv8 and YOLOX use
1e-3). Without it a layer is Darknet's, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cfg import Options, Section
from .activation import Activation, ActivationPath, get_activation
from .base import BuildContext, DarknetLayer, Shape
from .common import (
    BN_EPS,
    allocate,
    batch_norm,
    blur_kernel,
    blur_out,
    c_div,
    check_count,
    checked_shape,
    copy_values,
    empty_module,
    get_c_int,
    require_image,
)

NO_SHARE = -1000000000  # parse_convolutional's "no share_index" sentinel


@dataclass(frozen=True)
class ConvSpec:
    """The geometry of one ``[convolutional]`` section after darknet's defaulting rules."""

    filters: int
    size: int
    stride_y: int
    stride_x: int
    padding: int  # per side, before dilation (darknet's l.pad)
    dilation: int
    groups: int
    batch_normalize: bool
    antialiasing: int
    xnor: bool
    flipped: bool
    bn_eps: float = BN_EPS  # darknetpy's bn_eps key: the eps of sqrt(variance + eps)


class Conv(DarknetLayer):
    """``[convolutional]``: conv, then batch norm (whose β is darknet's ``biases``) or a bias, then
    the activation, then (``antialiasing``) a fixed blur carrying the stride. The batch norm's eps is
    ``bn_eps`` (default Darknet's 1e-5) in training, inference and the folded weights alike.

    Parameters keep stable names, the state-dict contract: ``conv.weight``, ``conv.bias`` (no BN),
    ``bn.weight`` (γ, darknet's ``scales``), ``bn.bias`` (β), ``bn.running_mean``, ``bn.running_var``.
    """

    darknet_name = "convolutional"

    def __init__(self, section: Section, index: int, in_shape: Shape, out_shape: Shape,
                 spec: ConvSpec, activation: Activation, shared: Conv | None = None,
                 conv_out: tuple[int, int] | None = None) -> None:
        super().__init__(section, index, (index - 1,), in_shape, out_shape)
        self.spec = spec
        self.activation = activation
        self.share_index = shared.index if shared is not None else None
        conv_stride = (1, 1) if spec.antialiasing else (spec.stride_y, spec.stride_x)
        self.conv = empty_module(
            nn.Conv2d, in_shape.channels, spec.filters, spec.size, stride=conv_stride,
            padding=spec.padding * spec.dilation, dilation=spec.dilation, groups=spec.groups,
            bias=not spec.batch_normalize,
        )
        self.bn = batch_norm(spec.filters, eps=spec.bn_eps) if spec.batch_normalize else None
        self._conv_out = conv_out or (out_shape.height, out_shape.width)
        if shared is not None:
            self.conv.weight = shared.conv.weight
            if spec.batch_normalize:
                self.bn = shared.bn
            else:
                self.conv.bias = shared.conv.bias
        else:
            self.reset_parameters()
        if spec.antialiasing:
            kernel, pad = blur_kernel(spec.filters, spec.antialiasing)
            self.register_buffer("blur", kernel, persistent=False)  # not in .weights nor state dict
            self.blur_pad = pad
        else:
            self.blur = None
        self._fused: tuple[tuple[int, ...], Tensor, Tensor] | None = None

    def reset_parameters(self) -> None:
        """Darknet's initialisation (``make_convolutional_layer``): weights scale·U(-1, 1),
        scale = sqrt(2 / (size²·c/groups)); biases 0; BN scales 1, rolling mean and variance 0.
        The same for every convolution: the one before a detection layer gets nothing special, and
        Darknet's branch giving ``normalize_channels*`` convolutions weights 1 never runs (it tests
        ``l.activation`` before assigning it). Compared with Darknet's own files in
        ``tests/model/test_init_darknet_stats.py``."""
        spec = self.spec
        fan_in = spec.size * spec.size * self.in_shape.channels // spec.groups
        with torch.no_grad():
            scale = math.sqrt(2.0 / fan_in)
            self.conv.weight.uniform_(-scale, scale)
            if self.conv.bias is not None:
                self.conv.bias.zero_()
            if self.bn is not None:
                self.bn.weight.fill_(1.0)
                self.bn.bias.zero_()
                self.bn.running_mean.zero_()
                self.bn.running_var.zero_()

    def __getstate__(self) -> dict[str, object]:
        state = dict(super().__getstate__())
        state["_fused"] = None  # a cache: never pickled nor deep-copied
        return state

    # ---- forward ----
    def forward(self, x: Tensor) -> Tensor:
        spec = self.spec
        if spec.xnor:
            y = self._xnor_conv(x)
        elif self.bn is not None and not self.training and not torch.is_grad_enabled():
            weight, bias = self._fused_weights()
            y = F.conv2d(x, weight, bias, self.conv.stride, self.conv.padding, self.conv.dilation,
                         self.conv.groups)
        else:
            y = self.conv(x)
            if self.bn is not None:
                y = self.bn(y)
        y = self.activation.apply(y, ActivationPath.CONV)
        if self.blur is not None:
            y = F.conv2d(y, self.blur.to(y.dtype), None, (spec.stride_y, spec.stride_x),
                         self.blur_pad, 1, spec.filters)
        return y

    def _fused_weights(self) -> tuple[Tensor, Tensor]:
        """Conv weights with the inference batch norm folded in, as darknet's
        ``fuse_conv_batchnorm`` (in double precision); cached until a parameter changes."""
        bn = self.bn
        assert bn is not None
        tensors = (self.conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var)
        key = tuple(v for t in tensors for v in (t._version, t.data_ptr()))
        if self._fused is None or self._fused[0] != key:
            with torch.no_grad():
                scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
                weight = (self.conv.weight.double() * scale.view(-1, 1, 1, 1)).to(self.conv.weight.dtype)
                bias = (bn.bias.double() - bn.running_mean.double() * scale).to(bn.bias.dtype)
            self._fused = (key, weight, bias)
        return self._fused[1], self._fused[2]

    def _xnor_conv(self, x: Tensor) -> Tensor:
        """XNOR-net (``xnor=1``): the sign of the input (+1 where > 0, else -1) convolved with the
        sign of each filter times its mean absolute weight (``binarize_cpu``, ``binarize_weights``),
        then bias or batch norm. Darknet's bit-packed inference GEMM is not reproduced bit for bit."""
        weight = self.conv.weight
        mean = weight.abs().mean(dim=(1, 2, 3), keepdim=True)
        binary_weight = torch.where(weight > 0, mean, -mean)
        binary_input = torch.where(x > 0, torch.ones_like(x), -torch.ones_like(x))
        y = F.conv2d(binary_input, binary_weight, self.conv.bias, self.conv.stride,
                     self.conv.padding, self.conv.dilation, self.conv.groups)
        return self.bn(y) if self.bn is not None else y

    # ---- table ----
    def bflops(self) -> float:
        """``2·nweights·out_h·out_w / 1e9`` (before the blur), ÷32 with xnor (``make_convolutional_layer``)."""
        spec = self.spec
        nweights = (self.in_shape.channels // spec.groups) * spec.filters * spec.size * spec.size
        flops = 2.0 * nweights * self._conv_out[0] * self._conv_out[1] / 1e9
        return flops / 32 if spec.xnor else flops

    def summary_extra(self) -> str:
        spec = self.spec
        text = f"{spec.filters:5d}/{spec.groups:4d} " if spec.groups > 1 else f"{spec.filters:5d}      "
        if spec.stride_x != spec.stride_y:
            text += f"{spec.size:2d}x{spec.size:2d}/{spec.stride_x:2d}x{spec.stride_y:2d} "
        elif spec.dilation > 1:
            text += f"{spec.size:2d} x{spec.size:2d}/{spec.stride_x:2d}({spec.dilation:1d})"
        else:
            text += f"{spec.size:2d} x{spec.size:2d}/{spec.stride_x:2d}   "
        if spec.xnor:
            text += " xnor"
        if spec.antialiasing:
            text += f" AA{spec.antialiasing}"
        if self.share_index is not None:
            text += f" shares {self.share_index}"
        return text.rstrip()

    # ---- .weights ----
    def darknet_tensors(self) -> list[Tensor]:
        """``biases, [scales, rolling_mean, rolling_variance], weights``; nothing with share_index."""
        if self.share_index is not None:
            return []
        if self.bn is None:
            assert self.conv.bias is not None
            return [self.conv.bias, self.conv.weight]
        bn = self.bn
        return [bn.bias, bn.weight, bn.running_mean, bn.running_var, self.conv.weight]

    def darknet_read_byte_count(self) -> int:
        if self.bn is not None and self.training_opts.dontloadscales:
            return self.darknet_byte_count() - 3 * 4 * self.bn.weight.numel()
        return self.darknet_byte_count()

    def read_darknet(self, read: Callable[[int, str], np.ndarray], transpose: bool) -> None:
        """``load_convolutional_weights``: ``dontloadscales`` skips γ/mean/var without reading bytes;
        ``flipped=1`` transposes the weights from [c/groups·size·size][filters]."""
        del transpose  # only [connected] weights are transposed by the header flag
        if self.share_index is not None:
            return
        with torch.no_grad():
            if self.bn is None:
                assert self.conv.bias is not None
                copy_values(self.conv.bias, read(self.spec.filters, "biases"))
            else:
                bn = self.bn
                copy_values(bn.bias, read(self.spec.filters, "biases"))
                if not self.training_opts.dontloadscales:
                    copy_values(bn.weight, read(self.spec.filters, "scales"))
                    copy_values(bn.running_mean, read(self.spec.filters, "rolling_mean"))
                    copy_values(bn.running_var, read(self.spec.filters, "rolling_variance"))
            weight = self.conv.weight
            values = read(weight.numel(), "weights")
            if self.spec.flipped:
                values = values.reshape(-1, self.spec.filters).T
            copy_values(weight, values)

    def write_darknet(self, transpose: bool) -> list[np.ndarray]:
        """The arrays :meth:`read_darknet` reads (``flipped`` weights transposed back, so that a
        file read and written again is identical)."""
        arrays = super().write_darknet(transpose)
        if self.spec.flipped and arrays:
            arrays[-1] = np.ascontiguousarray(arrays[-1].reshape(self.spec.filters, -1).T).ravel()
        return arrays


def build_conv(opts: Options, ctx: BuildContext) -> Conv:
    """``parse_convolutional``: every key darknet reads, with its defaults and overrides."""
    in_shape = ctx.prev_shape
    filters = get_c_int(opts, "filters", 1)
    groups = max(1, get_c_int(opts, "groups", 1))
    size = get_c_int(opts, "size", 1)
    stride_x = get_c_int(opts, "stride_x", -1)
    stride_y = get_c_int(opts, "stride_y", -1)
    stride = get_c_int(opts, "stride", 1)
    stride_x = stride if stride_x < 1 else stride_x
    stride_y = stride if stride_y < 1 else stride_y
    dilation = get_c_int(opts, "dilation", 1)
    antialiasing = get_c_int(opts, "antialiasing", 0)
    if size == 1:
        dilation = 1
    pad = get_c_int(opts, "pad", 0)
    padding = get_c_int(opts, "padding", 0)
    if pad:
        padding = c_div(size, 2)
    activation = get_activation(opts, "logistic")
    share_index = get_c_int(opts, "share_index", NO_SHARE)
    batch_normalize = get_c_int(opts, "batch_normalize", 0) != 0
    if get_c_int(opts, "cbn", 0):  # cross-batch norm (GPU training only): plain batch norm here
        batch_normalize = True
    bn_eps = _bn_eps(opts) if batch_normalize else BN_EPS  # without batch norm the key is unused
    xnor = opts.get_bool("xnor", False)
    flipped = opts.get_bool("flipped", False)
    _refuse(opts, ("binary",), "binary weights (binary=1) are not supported by darknetpy")
    _refuse(opts, ("sway", "rotate", "stretch", "stretch_sway"),
            "deformable convolution (sway/rotate/stretch) is not supported by darknetpy")
    if opts.get_float("assisted_excitation", 0.0):
        raise opts.error("assisted_excitation is not supported by darknetpy", "assisted_excitation")
    # GPU scheduling, training extras and outputs darknet's CPU forward ignores.
    opts.ignore("bin_output", "dot", "angle", "grad_centr", "reverse", "coordconv", "stream",
                "wait_stream")
    if xnor:
        groups = 1  # make_convolutional_layer: "disable groups for XNOR-net"

    require_image(opts, in_shape, "[convolutional]")
    for key, value in (("filters", filters), ("size", size), ("stride", min(stride_x, stride_y)),
                       ("dilation", dilation)):
        if value < 1:
            raise opts.error(f"{key}={value} must be at least 1", key)
    if padding < 0:
        raise opts.error(f"padding={padding} must not be negative", "padding")
    if in_shape.channels % groups or filters % groups:
        raise opts.error(
            f"groups={groups} must divide both the input channels ({in_shape.channels}) and "
            f"filters={filters}", "groups",
        )
    spec = ConvSpec(filters, size, stride_y, stride_x, padding, dilation, groups, batch_normalize,
                    antialiasing, xnor, flipped, bn_eps)
    conv_stride_y, conv_stride_x = (1, 1) if antialiasing else (stride_y, stride_x)
    out_h = _conv_out(opts, in_shape.height, spec, conv_stride_y, "height")
    out_w = _conv_out(opts, in_shape.width, spec, conv_stride_x, "width")
    conv_out = (out_h, out_w)
    if antialiasing:
        kernel = 2 if antialiasing == 2 else 3
        blur_pad = 0 if antialiasing == 2 else 1
        out_h = blur_out(out_h, kernel, blur_pad, stride_y)
        out_w = blur_out(out_w, kernel, blur_pad, stride_x)
        if out_h <= 0 or out_w <= 0:
            raise opts.error(f"the antialiasing blur leaves an empty output ({out_w} x {out_h})",
                             "antialiasing")
    shared = _shared_layer(opts, ctx, share_index, spec, in_shape)
    nweights = in_shape.channels // groups * filters * size * size
    check_count(opts, nweights, f"the weights ({filters} filters of {size} x {size} x "
                f"{in_shape.channels // groups})", "filters")
    out = checked_shape(opts, Shape(filters, out_h, out_w), "filters")
    check_count(opts, filters * conv_out[0] * conv_out[1], "the output before the blur", "filters")
    return allocate(opts, lambda: Conv(opts.section, ctx.index, in_shape, out, spec, activation,
                                       shared, conv_out), f"{nweights} weights")


def _bn_eps(opts: Options) -> float:
    """``bn_eps`` (darknetpy's key; Darknet has none): the batch norm's ``eps`` in
    ``(x - mean) / sqrt(variance + eps)``, in training, inference, the folded weights and ONNX.
    Absent: Darknet's own 1e-5 (``blas.c: normalize_cpu``). Imported models use their framework's
    value (ultralytics and YOLOX: 1e-3)."""
    eps = opts.get_float("bn_eps", BN_EPS)
    if not (math.isfinite(eps) and eps > 0):
        raise opts.error(f"bn_eps={eps} must be a positive number (Darknet's is 0.00001)", "bn_eps")
    return eps


def _refuse(opts: Options, keys: tuple[str, ...], message: str) -> None:
    for key in keys:
        if get_c_int(opts, key, 0):
            raise opts.error(message, key)


def _conv_out(opts: Options, size_in: int, spec: ConvSpec, stride: int, what: str) -> int:
    """``convolutional_out_height/width`` (dilation ignored), checked against the size the real
    convolution (padding·dilation, dilation) produces."""
    darknet = c_div(size_in + 2 * spec.padding - spec.size, stride) + 1
    span = spec.dilation * (spec.size - 1) + 1
    real = (size_in + 2 * spec.padding * spec.dilation - span) // stride + 1
    if darknet <= 0 or real <= 0:
        raise opts.error(
            f"size={spec.size} with padding {spec.padding}, dilation {spec.dilation} and stride "
            f"{stride} leaves no output on an input {what} of {size_in}", "size",
        )
    if darknet != real:
        raise opts.error(
            f"darknet computes an output {what} of {darknet} (its formula ignores dilation), but the "
            f"convolution with size={spec.size}, dilation={spec.dilation}, padding "
            f"{spec.padding}·{spec.dilation} produces {real}; use pad=1 with an odd size", "dilation",
        )
    return darknet


def _shared_layer(opts: Options, ctx: BuildContext, share_index: int, spec: ConvSpec,
                  in_shape: Shape) -> Conv | None:
    """The layer ``share_index=`` points at (negative: relative), checked like darknet does."""
    if share_index == NO_SHARE:
        return None
    other = ctx.layers[ctx.resolve(opts, "share_index", share_index)]
    if not isinstance(other, Conv):
        raise opts.error(f"share_index={share_index} must point at a [convolutional] layer, not "
                         f"{other.where()}", "share_index")
    o = other.spec
    if (o.size, o.filters, o.groups, other.in_shape.channels) != (
            spec.size, spec.filters, spec.groups, in_shape.channels):
        raise opts.error(
            f"share_index={share_index}: size, filters, groups or input channels differ from "
            f"{other.where()} (darknet: \"Layer size, nweights, channels or filters don't match\")",
            "share_index",
        )
    if o.batch_normalize != spec.batch_normalize:
        raise opts.error(f"share_index={share_index}: batch_normalize differs from {other.where()}",
                         "share_index")
    if o.bn_eps != spec.bn_eps:
        raise opts.error(f"share_index={share_index}: bn_eps differs from {other.where()} (the batch "
                         "norm is shared)", "bn_eps")
    return other
