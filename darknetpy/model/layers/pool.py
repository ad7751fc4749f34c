"""``[maxpool]``, ``[local_avgpool]`` and ``[avgpool]`` (``parser.c: parse_maxpool,
parse_local_avgpool, parse_avgpool``; ``maxpool_layer.c: make_maxpool_layer, forward_maxpool_layer,
forward_local_avgpool_layer``; ``avgpool_layer.c: forward_avgpool_layer``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cfg import Options, Section
from .base import BuildContext, DarknetLayer, Shape
from .common import blur_kernel, blur_out, c_div, checked_shape, get_c_int, require_image

FLT_MAX = float(torch.finfo(torch.float32).max)


def _lowest(x: torch.Tensor) -> float:
    """Darknet's -FLT_MAX padding, as the lowest value of ``x``'s dtype (float16 overflows -FLT_MAX)."""
    return float(torch.finfo(x.dtype).min) if x.dtype.is_floating_point else -FLT_MAX


def darknet_pad(padding: int) -> tuple[int, int, int, int]:
    """``F.pad`` widths for darknet's pooling offset ``-padding/2``: ``padding//2`` on the left/top,
    the rest on the right/bottom (``forward_maxpool_layer``: ``w_offset = -l.pad / 2``)."""
    before = padding // 2
    return (before, padding - before, before, padding - before)


def read_pad(x: Tensor, size: int, stride_y: int, stride_x: int,
             padding: int) -> tuple[int, int, int, int]:
    """:func:`darknet_pad` less the right/bottom padding no window reads (``size=2 stride=2`` on
    an even size reads none of it): the same outputs, and an exported graph without a ``Pad`` of
    ``-FLT_MAX`` that INT8 quantizers cannot range (OpenVINO then left the next convolution in
    float32)."""
    left, right, top, bottom = darknet_pad(padding)

    def after(size_in: int, stride: int, most: int, before: int) -> int:
        count = c_div(size_in + padding - size, stride) + 1
        return min(most, max(0, (count - 1) * stride + size - before - size_in))

    return (left, after(int(x.shape[3]), stride_x, right, left), top,
            after(int(x.shape[2]), stride_y, bottom, top))


def windows(size_in: int, size: int, stride: int, padding: int) -> list[tuple[int, int]]:
    """The in-image range ``[lo, hi)`` each window covers along one axis (darknet's loops:
    window ``i`` starts at ``i·stride - padding/2``); empty when a window is all padding."""
    before = padding // 2
    count = c_div(size_in + padding - size, stride) + 1
    ranges = []
    for i in range(max(count, 0)):
        lo = max(0, i * stride - before)
        ranges.append((lo, max(lo, min(size_in, i * stride - before + size))))
    return ranges


def reduce_windows(x: Tensor, dim: int, ranges: list[tuple[int, int]], average: bool) -> Tensor:
    """Max (or sum) of ``x`` over each range along ``dim``; an empty range gives -FLT_MAX (or 0).

    Used instead of padding when a window is larger than the image or the padding is larger than
    a window (the padded tensor could be huge); max and sum are separable over rows and columns.
    """
    parts = []
    for lo, hi in ranges:
        if hi > lo:
            part = x.narrow(dim, lo, hi - lo)
            parts.append(part.sum(dim, keepdim=True) if average else part.amax(dim, keepdim=True))
        else:
            shape = list(x.shape)
            shape[dim] = 1
            parts.append(x.new_full(shape, 0.0 if average else _lowest(x)))
    return torch.cat(parts, dim)


def pool_by_windows(x: Tensor, size: int, stride_y: int, stride_x: int, padding: int,
                    average: bool) -> Tensor:
    """Darknet's pooling computed window range by window range (see :func:`reduce_windows`)."""
    rows = windows(int(x.shape[2]), size, stride_y, padding)  # int(): static under tracing
    cols = windows(int(x.shape[3]), size, stride_x, padding)
    y = reduce_windows(reduce_windows(x, 3, cols, average), 2, rows, average)
    if not average:
        return y
    counts = torch.tensor([float(hi - lo) for lo, hi in rows], dtype=x.dtype, device=x.device)
    counts = counts[:, None] * torch.tensor([float(hi - lo) for lo, hi in cols], dtype=x.dtype,
                                            device=x.device)
    return y / counts  # 0/0 = NaN for an all-padding window, like darknet


def use_padding(x: Tensor, size: int, padding: int) -> bool:
    """Whether padding the input is cheap: the usual windows no larger than the image."""
    return padding < size <= max(int(x.shape[2]), int(x.shape[3]))


class MaxPool(DarknetLayer):
    """``[maxpool]``: max over ``size``×``size`` windows, out-of-image positions counting as
    ``-FLT_MAX``, with darknet's asymmetric padding (``size=2 stride=1`` keeps H×W; nn.MaxPool2d
    alone cannot express that); or, with ``maxpool_depth=1``, the max over every
    ``out_channels``-th channel; then the optional antialiasing blur."""

    darknet_name = "maxpool"

    def __init__(self, section: Section, index: int, in_shape: Shape, out_shape: Shape, *,
                 size: int, stride_y: int, stride_x: int, padding: int, depth: bool,
                 out_channels: int, antialiasing: int, pool_out: tuple[int, int]) -> None:
        super().__init__(section, index, (index - 1,), in_shape, out_shape)
        self.size = size
        self.stride_y = stride_y
        self.stride_x = stride_x
        self.padding = padding
        self.depth = depth
        self.out_channels = out_channels
        self.antialiasing = antialiasing
        self._pool_out = pool_out
        if antialiasing:
            kernel, pad = blur_kernel(out_shape.channels, antialiasing)
            self.register_buffer("blur", kernel, persistent=False)
            self.blur_pad = pad
        else:
            self.blur = None

    def forward(self, x: Tensor) -> Tensor:
        if self.depth:
            return self._depth_max(x)
        stride_y, stride_x = (1, 1) if self.antialiasing else (self.stride_y, self.stride_x)
        if not use_padding(x, self.size, self.padding):
            y = pool_by_windows(x, self.size, stride_y, stride_x, self.padding, average=False)
        else:
            if self.padding and any(pad := read_pad(x, self.size, stride_y, stride_x,
                                                    self.padding)):
                x = F.pad(x, pad, value=_lowest(x))
            y = F.max_pool2d(x, self.size, (stride_y, stride_x))
        if self.blur is not None:
            y = F.conv2d(y, self.blur.to(y.dtype), None, (self.stride_y, self.stride_x),
                         self.blur_pad, 1, y.shape[1])
        return y

    def _depth_max(self, x: Tensor) -> Tensor:
        """``maxpool_depth=1``: output channel g is the max over input channels k ≡ g (mod out_c)."""
        n, c, h, w = x.shape
        groups = -(-c // self.out_channels)
        if groups * self.out_channels != c:
            fill = x.new_full((n, groups * self.out_channels - c, h, w), _lowest(x))
            x = torch.cat([x, fill], dim=1)
        return x.view(n, groups, self.out_channels, h, w).amax(dim=1)

    def bflops(self) -> float:
        """``size·size·c·out_h·out_w / 1e9`` (``make_maxpool_layer``, before the blur)."""
        h, w = self._pool_out
        return self.size * self.size * self.in_shape.channels * h * w / 1e9

    def summary_extra(self) -> str:
        if self.stride_x == self.stride_y:
            text = f"{self.size:2d}x{self.size:2d}/{self.stride_x:2d}"
        else:
            text = f"{self.size:2d}x{self.size:2d}/{self.stride_x:2d}x{self.stride_y:2d}"
        if self.depth:
            text = "depth " + text
        return text + (f" AA{self.antialiasing}" if self.antialiasing else "")


class LocalAvgPool(DarknetLayer):
    """``[local_avgpool]``: maxpool's geometry, the mean over the in-image positions of each window
    (count_include_pad=False; an all-padding window gives 0/0 like darknet)."""

    darknet_name = "none"  # LOCAL_AVGPOOL has no case in get_layer_string

    def __init__(self, section: Section, index: int, in_shape: Shape, out_shape: Shape, *,
                 size: int, stride_y: int, stride_x: int, padding: int) -> None:
        super().__init__(section, index, (index - 1,), in_shape, out_shape)
        self.size = size
        self.stride_y = stride_y
        self.stride_x = stride_x
        self.padding = padding
        self._counts: dict[tuple[int, int, torch.device, torch.dtype], Tensor] = {}

    def forward(self, x: Tensor) -> Tensor:
        if not use_padding(x, self.size, self.padding):
            return pool_by_windows(x, self.size, self.stride_y, self.stride_x, self.padding,
                                   average=True)
        stride = (self.stride_y, self.stride_x)
        pad = darknet_pad(self.padding)
        total = F.avg_pool2d(F.pad(x, pad), self.size, stride, divisor_override=1)
        if not self.padding:
            return total / (self.size * self.size)
        return total / self._count(x.shape[2], x.shape[3], x.device, x.dtype)

    def _count(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        key = (h, w, device, dtype)
        if key not in self._counts:
            ones = torch.ones(1, 1, h, w, device=device, dtype=dtype)
            self._counts[key] = F.avg_pool2d(F.pad(ones, darknet_pad(self.padding)), self.size,
                                             (self.stride_y, self.stride_x), divisor_override=1)
        return self._counts[key]

    def bflops(self) -> float:
        out = self.out_shape
        return self.size * self.size * self.in_shape.channels * out.height * out.width / 1e9

    def summary_extra(self) -> str:
        return f"avg {self.size:2d}x{self.size:2d}/{self.stride_x:2d}"


class AvgPool(DarknetLayer):
    """``[avgpool]``: global average over H×W, output 1×1×C."""

    darknet_name = "avgpool"

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


def _pool_geometry(opts: Options, ctx: BuildContext,
                   what: str) -> tuple[Shape, int, int, int, int]:
    """Keys shared by parse_maxpool and parse_local_avgpool: stride, stride_x/y, size, padding."""
    in_shape = ctx.prev_shape
    stride = get_c_int(opts, "stride", 1)
    stride_x = get_c_int(opts, "stride_x", stride)
    stride_y = get_c_int(opts, "stride_y", stride)
    size = get_c_int(opts, "size", stride)
    padding = get_c_int(opts, "padding", size - 1)
    require_image(opts, in_shape, what)
    for key, value in (("size", size), ("stride", min(stride_x, stride_y))):
        if value < 1:
            raise opts.error(f"{key}={value} must be at least 1", key)
    if padding < 0:
        raise opts.error(f"padding={padding} must not be negative", "padding")
    return in_shape, size, stride_y, stride_x, padding


def _pool_out(opts: Options, in_shape: Shape, size: int, stride_y: int, stride_x: int,
              padding: int) -> tuple[int, int]:
    """``(h + padding - size)/stride + 1`` (C division), checked to be a real window count."""
    out_h = c_div(in_shape.height + padding - size, stride_y) + 1
    out_w = c_div(in_shape.width + padding - size, stride_x) + 1
    if in_shape.height + padding < size or in_shape.width + padding < size or out_h <= 0 or out_w <= 0:
        raise opts.error(
            f"size={size} is larger than the input {in_shape.width} x {in_shape.height} plus "
            f"padding={padding}", "size",
        )
    return out_h, out_w


def build_maxpool(opts: Options, ctx: BuildContext) -> MaxPool:
    """``parse_maxpool``: ``padding`` (total, default size-1), ``maxpool_depth``, ``antialiasing``."""
    in_shape, size, stride_y, stride_x, padding = _pool_geometry(opts, ctx, "[maxpool]")
    depth = opts.get_bool("maxpool_depth", False)
    out_channels = get_c_int(opts, "out_channels", 1)
    antialiasing = get_c_int(opts, "antialiasing", 0)
    opts.ignore("maxpool_zero_nonmax")  # GPU kernel only; darknet's CPU forward ignores it
    if depth:
        if out_channels < 1:
            raise opts.error(f"out_channels={out_channels} must be at least 1", "out_channels")
        out = checked_shape(opts, Shape(out_channels, in_shape.height, in_shape.width),
                            "out_channels")
        return MaxPool(opts.section, ctx.index, in_shape, out, size=size, stride_y=stride_y,
                       stride_x=stride_x, padding=padding, depth=True, out_channels=out_channels,
                       antialiasing=0, pool_out=(in_shape.height, in_shape.width))
    pool_stride = (1, 1) if antialiasing else (stride_y, stride_x)
    pool_out = _pool_out(opts, in_shape, size, *pool_stride, padding)
    out_h, out_w = pool_out
    if antialiasing:
        kernel = 2 if antialiasing == 2 else 3
        pad = 0 if antialiasing == 2 else 1
        out_h = blur_out(out_h, kernel, pad, stride_y)
        out_w = blur_out(out_w, kernel, pad, stride_x)
    out = checked_shape(opts, Shape(in_shape.channels, out_h, out_w), "size")
    return MaxPool(opts.section, ctx.index, in_shape, out,
                   size=size, stride_y=stride_y, stride_x=stride_x, padding=padding, depth=False,
                   out_channels=out_channels, antialiasing=antialiasing, pool_out=pool_out)


def build_local_avgpool(opts: Options, ctx: BuildContext) -> LocalAvgPool:
    """``parse_local_avgpool``: maxpool's keys without depth or antialiasing."""
    in_shape, size, stride_y, stride_x, padding = _pool_geometry(opts, ctx, "[local_avgpool]")
    out_h, out_w = _pool_out(opts, in_shape, size, stride_y, stride_x, padding)
    out = checked_shape(opts, Shape(in_shape.channels, out_h, out_w), "padding")
    return LocalAvgPool(opts.section, ctx.index, in_shape, out,
                        size=size, stride_y=stride_y, stride_x=stride_x, padding=padding)


def build_avgpool(opts: Options, ctx: BuildContext) -> AvgPool:
    """``parse_avgpool``: no keys."""
    in_shape = ctx.prev_shape
    require_image(opts, in_shape, "[avgpool]")
    return AvgPool(opts.section, ctx.index, (ctx.index - 1,), in_shape,
                   Shape(in_shape.channels, 1, 1))
