"""``[local]`` (locally connected: a convolution whose weights differ at every output position) and
``[normalization]``/``[lrn]`` (local response normalisation across channels)
(``parser.c: parse_local, parse_normalization``; ``local_layer.c``, ``normalization_layer.c``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cfg import Options, Section
from .activation import Activation, ActivationPath, get_activation
from .base import BuildContext, DarknetLayer, Shape
from .common import allocate, c_div, check_count, checked_shape, copy_values, get_c_int, require_image

__all__ = ["Local", "LocalResponseNorm", "build_local", "build_normalization", "darknet_lrn_norms",
           "local_out_size"]


def local_out_size(size_in: int, size: int, stride: int, pad: int) -> int:
    """``local_layer.c: local_out_height``: ``(h - (pad ? 1 : size)) / stride + 1`` (C division).

    ``pad`` is a flag here, but the forward pads ``pad`` pixels (``im2col_cpu``): the two agree
    only for ``pad=0`` or ``size=2*pad+1`` (see :func:`build_local`).
    """
    return c_div(size_in - (1 if pad else size), stride) + 1


class Local(DarknetLayer):
    """``[local]``: for every output position ``j`` its own ``filters x (c*size*size)`` matrix and,
    for every output value, its own bias (``forward_local_layer``): ``out[f, j] = bias[f, j] +
    W[j][f] · im2col(x)[:, j]``, then the activation (darknet's ``activate_array``).

    File order (``load_weights_upto``, the LOCAL case): biases (``filters * out_h * out_w``, as
    (f, y, x)), then weights (``out_h*out_w * filters * c*size*size``: position-major, then filter,
    then im2col's (channel, ky, kx)). Darknet's BFLOPs for it are 0 (``make_local_layer`` does not
    count them).
    """

    darknet_name = "local"

    def __init__(self, section: Section, index: int, in_shape: Shape, out_shape: Shape, size: int,
                 stride: int, pad: int, activation: Activation) -> None:
        super().__init__(section, index, (index - 1,), in_shape, out_shape)
        self.size, self.stride, self.pad = size, stride, pad
        self.activation = activation
        locations = out_shape.height * out_shape.width
        k = in_shape.channels * size * size
        self.weight = nn.Parameter(torch.zeros(locations, out_shape.channels, k))
        self.bias = nn.Parameter(torch.zeros(out_shape.channels, out_shape.height, out_shape.width))
        with torch.no_grad():
            # make_local_layer: scale*U(-1, 1) for the first c*n*size*size values only (the first
            # position's matrix; the others start at 0), biases 0.
            scale = math.sqrt(2.0 / k)
            self.weight[0].uniform_(-scale, scale)

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        out = self.out_shape
        cols = F.unfold(x, self.size, padding=self.pad, stride=self.stride)  # (N, c*s*s, L): im2col
        y = torch.einsum("nkl,lfk->nfl", cols, self.weight)
        y = y.reshape(n, out.channels, out.height, out.width) + self.bias
        return self.activation.for_layer(ActivationPath.GENERIC)(y)

    def summary_extra(self) -> str:
        return f"{self.out_shape.channels} {self.size} x {self.size}/{self.stride:2d}"

    def darknet_tensors(self) -> list[Tensor]:
        return [self.bias, self.weight]

    def read_darknet(self, read: Callable[[int, str], np.ndarray], transpose: bool) -> None:
        del transpose
        with torch.no_grad():
            copy_values(self.bias, read(self.bias.numel(), "biases"))
            copy_values(self.weight, read(self.weight.numel(), "weights"))


def build_local(opts: Options, ctx: BuildContext) -> Local:
    """``parse_local``: ``filters`` (1), ``size`` (1), ``stride`` (1), ``pad`` (0), ``activation``
    (logistic).

    Raises:
        CfgError: no image input, an empty output, or a ``pad``/``size`` pair for which darknet's
            output size and its im2col disagree (it then reads or writes past its buffers).
    """
    filters = get_c_int(opts, "filters", 1)
    size = get_c_int(opts, "size", 1)
    stride = get_c_int(opts, "stride", 1)
    pad = get_c_int(opts, "pad", 0)
    activation = get_activation(opts, "logistic")
    in_shape = ctx.prev_shape
    require_image(opts, in_shape, "[local]")
    for key, value, low in (("filters", filters, 1), ("size", size, 1), ("stride", stride, 1),
                            ("pad", pad, 0)):
        if value < low:
            raise opts.error(f"{key}={value} must be at least {low}", key)
    out_h = local_out_size(in_shape.height, size, stride, pad)
    out_w = local_out_size(in_shape.width, size, stride, pad)
    if out_h < 1 or out_w < 1:
        raise opts.error(f"size={size} stride={stride} pad={pad} leaves no output position on the "
                         f"{in_shape} input (w x h x c)", "size")
    cols_h = c_div(in_shape.height + 2 * pad - size, stride) + 1
    cols_w = c_div(in_shape.width + 2 * pad - size, stride) + 1
    if (cols_h, cols_w) != (out_h, out_w):
        raise opts.error(
            f"pad={pad} with size={size}: darknet sizes the output {out_w} x {out_h} (pad is a "
            f"flag) but pads {pad} pixels in im2col, which gives {cols_w} x {cols_h}; its forward "
            f"then runs past its buffers. Use pad=0, or size={2 * pad + 1} with pad={pad}", "pad")
    out_shape = checked_shape(opts, Shape(filters, out_h, out_w), "filters")
    count = out_h * out_w * filters * in_shape.channels * size * size
    check_count(opts, count, "the weights", "filters")
    return allocate(opts, lambda: Local(opts.section, ctx.index, in_shape, out_shape, size, stride,
                                        pad, activation), f"{count} weights")


def darknet_lrn_norms(squared: Tensor, size: int, alpha: float, kappa: float) -> Tensor:
    """The ``norms`` of ``normalization_layer.c: forward_normalization_layer``, channels on dim 1.

    Darknet starts channel 0 at ``kappa + alpha * (x_0² + ... + x_{size/2-1}²)`` and slides:
    ``norms[k] = norms[k-1] - alpha x²[k-(size-1)/2-1] + alpha x²[k+size/2]``. Its start misses
    channel ``size/2``, which the slide later subtracts, so every channel gets
    ``kappa + alpha * (Σ_{j=k-(size-1)/2}^{k+size/2} x_j² - x_{size/2}²)`` (terms outside
    0..c-1 left out): not the textbook LRN window, and negative (then NaN output) far from channel
    ``size/2`` when channel ``size/2`` is large. Reproduced as Darknet computes it.
    """
    c = squared.shape[1]
    before, after = (size - 1) // 2, size // 2
    padded = F.pad(squared, (0, 0, 0, 0, before, after))
    window = sum(padded[:, t:t + c] for t in range(size))
    if after < c:
        window = window - squared[:, after:after + 1]
    return kappa + alpha * window


class LocalResponseNorm(DarknetLayer):
    """``[normalization]``/``[lrn]``: ``out = x * norms^-beta`` with darknet's ``norms``
    (:func:`darknet_lrn_norms`).

    Backward is darknet's ``backward_normalization_layer``, which it calls approximate:
    ``delta_in = norms^-beta * delta``, the norms held constant (they are detached here).
    """

    darknet_name = "normalization"

    def __init__(self, section: Section, index: int, in_shape: Shape, size: int, alpha: float,
                 beta: float, kappa: float) -> None:
        super().__init__(section, index, (index - 1,), in_shape, in_shape)
        self.size, self.alpha, self.beta, self.kappa = size, alpha, beta, kappa

    def forward(self, x: Tensor) -> Tensor:
        norms = darknet_lrn_norms(x.detach() * x.detach(), self.size, self.alpha, self.kappa)
        return x * norms.pow(-self.beta)

    def summary_extra(self) -> str:
        return f"size {self.size}"


def build_normalization(opts: Options, ctx: BuildContext) -> LocalResponseNorm:
    """``parse_normalization``: ``alpha`` (.0001), ``beta`` (.75), ``kappa`` (1), ``size`` (5)."""
    alpha = float(np.float32(opts.get_float("alpha", 0.0001)))
    beta = float(np.float32(opts.get_float("beta", 0.75)))
    kappa = float(np.float32(opts.get_float("kappa", 1.0)))
    size = get_c_int(opts, "size", 5)
    in_shape = ctx.prev_shape
    require_image(opts, in_shape, f"[{opts.section.name}]")
    if size < 1:
        raise opts.error(f"size={size} must be at least 1 (channels in the window)", "size")
    return LocalResponseNorm(opts.section, ctx.index, in_shape, size, alpha, beta, kappa)
