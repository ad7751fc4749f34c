"""``[upsample]``, ``[reorg3d]`` and ``[reorg]`` (``parser.c: parse_upsample, parse_reorg,
parse_reorg_old``; ``upsample_layer.c``, ``reorg_layer.c``, ``reorg_old_layer.c``;
``blas.c: upsample_cpu, reorg_cpu``).

Darknet computes these on flat buffers; the functions below reproduce the index arithmetic with
views and permutes, including what it does to buffers whose sizes do not divide.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from ..cfg import Options, Section
from .base import BuildContext, DarknetLayer, Shape
from .common import checked_shape, get_c_int, require_image


def space_to_depth(big: Tensor, stride: int) -> Tensor:
    """``reorg_cpu(forward=0)``: (N, C, H·s, W·s) -> (N, s²·C, H, W) with
    ``out[(dy·s + dx)·C + c, j, i] = in[c, j·s + dy, i·s + dx]``."""
    n, c, hs, ws = big.shape
    h, w = hs // stride, ws // stride
    x = big.reshape(n, c, h, stride, w, stride).permute(0, 3, 5, 1, 2, 4)
    return x.reshape(n, stride * stride * c, h, w)


def depth_to_space(small: Tensor, stride: int) -> Tensor:
    """``reorg_cpu(forward=1)``: the inverse of :func:`space_to_depth`,
    (N, s²·C, H, W) -> (N, C, H·s, W·s)."""
    n, cs, h, w = small.shape
    c = cs // (stride * stride)
    x = small.reshape(n, stride, stride, c, h, w).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(n, c, h * stride, w * stride)


def reorg_cpu(x: Tensor, out_w: int, out_h: int, out_c: int, stride: int, forward: bool) -> Tensor:
    """``blas.c: reorg_cpu(x, out_w, out_h, out_c, batch, stride, forward, out)`` on flat buffers.

    The "small" layout is (out_c, out_h, out_w), the "big" one (out_c/s², out_h·s, out_w·s), both
    read from the same flat per-batch buffer. ``forward=False`` writes small from big
    (space-to-depth), ``forward=True`` big from small (depth-to-space). Returns a flat
    (N, out_c·out_h·out_w) tensor.
    """
    n = x.shape[0]
    flat = x.reshape(n, -1)
    if forward:
        small = flat.reshape(n, out_c, out_h, out_w)
        return depth_to_space(small, stride).reshape(n, -1)
    big = flat.reshape(n, out_c // (stride * stride), out_h * stride, out_w * stride)
    return space_to_depth(big, stride).reshape(n, -1)


class Upsample(DarknetLayer):
    """``[upsample]``: stride s > 0 repeats each pixel s×s times; stride -s sums each s×s block
    (``upsample_cpu`` run backwards); both times ``scale``."""

    darknet_name = "none"  # UPSAMPLE has no case in get_layer_string

    def __init__(self, section: Section, index: int, in_shape: Shape, out_shape: Shape,
                 stride: int, scale: float) -> None:
        super().__init__(section, index, (index - 1,), in_shape, out_shape)
        self.stride = stride
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        s = abs(self.stride)
        n, c, h, w = x.shape
        if self.stride > 0:
            y = x[:, :, :, None, :, None].expand(n, c, h, s, w, s).reshape(n, c, h * s, w * s)
        else:
            # upsample_cpu(l.output, out_w, out_h, c, batch, s, 0, scale, net.input) indexes the input
            # as (batch, c, out_h·s, out_w·s) flat: with sizes that s does not divide, rows wrap.
            oh, ow = h // s, w // s
            flat = x.reshape(-1)[: n * c * oh * s * ow * s]
            y = flat.view(n, c, oh, s, ow, s).sum(dim=(3, 5))
        return y * self.scale if self.scale != 1 else y

    def summary_extra(self) -> str:
        return f"{self.stride:2d}x" if self.stride > 0 else f"sum /{-self.stride}"


class Reorg(DarknetLayer):
    """``[reorg3d]`` (:class:`Reorg3d`) and the old YOLOv2 ``[reorg]`` (:class:`ReorgOld`).

    * reorg3d: space-to-depth (``reorg_cpu`` on the output dims); ``reverse=1`` runs it backwards
      on the output dims, which reads the input as (C/s², H·s, W·s) (darknet's own quirk).
    * reorg (old): ``reorg_cpu`` on the input dims: the input buffer is read as (C/s², H·s, W·s),
      turned into (C, H, W) by space-to-depth, and that buffer is the (C·s², H/s, W/s) output.
      ``reverse=1`` is a true depth-to-space.
    """

    old: ClassVar[bool] = False

    def __init__(self, section: Section, index: int, in_shape: Shape, out_shape: Shape,
                 stride: int, reverse: bool) -> None:
        super().__init__(section, index, (index - 1,), in_shape, out_shape)
        self.stride = stride
        self.reverse = reverse

    def forward(self, x: Tensor) -> Tensor:
        dims = self.in_shape if self.old else self.out_shape
        y = reorg_cpu(x, dims.width, dims.height, dims.channels, self.stride, self.reverse)
        out = self.out_shape
        return y.view(x.shape[0], out.channels, out.height, out.width)

    def summary_extra(self) -> str:
        return f"{'reorg_old' if self.old else 'reorg'} /{self.stride:2d}"


class Reorg3d(Reorg):
    """``[reorg3d]`` (``reorg_layer.c``)."""

    darknet_name = "reorg"
    old = False


class ReorgOld(Reorg):
    """``[reorg]`` (``reorg_old_layer.c``)."""

    darknet_name = "none"  # REORG_OLD has no case in get_layer_string
    old = True


def build_upsample(opts: Options, ctx: BuildContext) -> Upsample:
    """``parse_upsample``: ``stride`` (2; negative downsamples), ``scale`` (1)."""
    in_shape = ctx.prev_shape
    stride = get_c_int(opts, "stride", 2)
    scale = opts.get_float("scale", 1.0)
    require_image(opts, in_shape, "[upsample]")
    if stride == 0:
        raise opts.error("stride=0: use a positive stride to upsample, a negative one to downsample",
                         "stride")
    if stride > 0:
        out = Shape(in_shape.channels, in_shape.height * stride, in_shape.width * stride)
    else:
        out = Shape(in_shape.channels, in_shape.height // -stride, in_shape.width // -stride)
        if out.height == 0 or out.width == 0:
            raise opts.error(f"stride={stride} is larger than the input {in_shape}", "stride")
    return Upsample(opts.section, ctx.index, in_shape, checked_shape(opts, out, "stride"), stride,
                    scale)


def _build_reorg(opts: Options, ctx: BuildContext, old: bool) -> Reorg:
    """``parse_reorg`` / ``parse_reorg_old``: ``stride`` (1), ``reverse`` (0)."""
    in_shape = ctx.prev_shape
    stride = get_c_int(opts, "stride", 1)
    reverse = opts.get_bool("reverse", False)
    name = "[reorg]" if old else "[reorg3d]"
    require_image(opts, in_shape, name)
    if stride < 1:
        raise opts.error(f"stride={stride} must be at least 1", "stride")
    s2 = stride * stride
    c, h, w = in_shape.channels, in_shape.height, in_shape.width
    if reverse:
        out = Shape(c // s2, h * stride, w * stride)
        # reorg_cpu reads C/s² channels of the big layout: old on the input, reorg3d on the output.
        needed = s2 if old else s2 * s2
        if c % needed:
            raise opts.error(f"reverse=1 with stride={stride} needs input channels ({c}) divisible "
                             f"by {needed}", "stride")
    else:
        if h % stride or w % stride:
            raise opts.error(f"stride={stride} does not divide the input {w} x {h}", "stride")
        if old and c % s2:
            raise opts.error(f"the old [reorg] with stride={stride} needs input channels ({c}) "
                             f"divisible by {s2} (use [reorg3d] for a plain space-to-depth)", "stride")
        out = Shape(c * s2, h // stride, w // stride)
    cls = ReorgOld if old else Reorg3d
    return cls(opts.section, ctx.index, in_shape, out, stride, reverse)


def build_reorg3d(opts: Options, ctx: BuildContext) -> Reorg:
    return _build_reorg(opts, ctx, old=False)


def build_reorg(opts: Options, ctx: BuildContext) -> Reorg:
    return _build_reorg(opts, ctx, old=True)
