"""Detection heads: ``[yolo]``, ``[Gaussian_yolo]`` and ``[region]``.

Each section is parsed once into a frozen options record (:class:`YoloOptions`,
:class:`GaussianYoloOptions`, :class:`RegionOptions`, defined with their parsing in
:mod:`darknetpy.model.heads.options` and re-exported here); the layer, the loss and the
post-processing all read that record. A layer's ``forward`` is darknet's inference-time
``l.output`` (``yolo_layer.c: forward_yolo_layer``, ``gaussian_yolo_layer.c:
forward_gaussian_yolo_layer``, ``region_layer.c: forward_region_layer``); decoding boxes from it
lives in :mod:`darknetpy.inference.postprocess`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ...errors import CfgError
from ..cfg import Options, Section
from ..layers.base import BuildContext, DarknetLayer, Shape
from .options import (
    FLT_MAX,
    GAUSSIAN_NMS_KINDS,
    NMS_KINDS,
    YOLO_POINTS,
    BaseYoloOptions,
    GaussianYoloOptions,
    IouLoss,
    NmsKind,
    RegionOptions,
    YoloOptions,
    YoloPoint,
    classes_multipliers,
    parse_gaussian_yolo_options,
    parse_region_options,
    parse_yolo_options,
)

__all__ = [
    "FLT_MAX",
    "GAUSSIAN_NMS_KINDS",
    "NMS_KINDS",
    "YOLO_POINTS",
    "BaseYoloOptions",
    "GaussianYoloLayer",
    "GaussianYoloOptions",
    "IouLoss",
    "NmsKind",
    "RegionLayer",
    "RegionOptions",
    "SoftmaxTree",
    "YoloLayer",
    "YoloOptions",
    "YoloPoint",
    "build_gaussian_yolo",
    "build_region",
    "build_yolo",
    "classes_multipliers",
    "parse_gaussian_yolo_options",
    "parse_region_options",
    "parse_yolo_options",
    "read_class_map",
    "read_tree",
]


# ---- files named by the options ----
@dataclass(frozen=True)
class SoftmaxTree:
    """A YOLO9000 class hierarchy (``tree.c: read_tree``).

    ``parent[i]`` is -1 for roots. ``group[i]`` numbers the run of consecutive lines sharing one
    parent that node ``i`` belongs to; darknet applies a softmax inside each such group.
    """

    names: tuple[str, ...]
    parent: tuple[int, ...]
    group: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.parent)

    @cached_property
    def depth(self) -> tuple[int, ...]:
        """Distance of each node from its root (roots 0)."""
        out: list[int] = []
        for p in self.parent:
            out.append(0 if p < 0 else out[p] + 1)
        return tuple(out)


def read_tree(path: Path, where: str = "") -> SoftmaxTree:
    """Read a darknet tree file: one ``name parent_index`` per line (``tree.c: read_tree``).

    Raises:
        CfgError: unreadable file, or a parent index that does not come before its child
            (darknetpy's vectorised hierarchy needs parents first, as darknet's own trees have).
    """
    prefix = f"{where}: " if where else ""
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise CfgError(
            f"{prefix}tree={path}: cannot read the softmax tree file ({exc.strerror or exc}); "
            "darknet opens it relative to the working directory"
        ) from None
    names: list[str] = []
    parents: list[int] = []
    groups: list[int] = []
    last_parent, group = -1, 0
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        names.append(fields[0] if fields else "")
        try:
            parent = int(fields[1]) if len(fields) > 1 else -1
        except ValueError:
            parent = -1
        if parent >= len(parents) or parent < -1:
            raise CfgError(
                f"{prefix}{path}:{number}: parent {parent} of {names[-1]!r} must be -1 or the "
                "index of an "
                "earlier line"
            )
        if parent != last_parent:
            group += 1
            last_parent = parent
        parents.append(parent)
        groups.append(group)
    return SoftmaxTree(tuple(names), tuple(parents), tuple(groups))


def read_class_map(path: Path) -> tuple[int, ...]:
    """A ``map=`` file: one class id per line, read with ``atoi`` (``utils.c: read_map``).

    Raises:
        CfgError: the file cannot be read.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise CfgError(
            f"map={path}: cannot read the class map file ({exc.strerror or exc})"
        ) from None
    out = []
    for line in lines:
        digits = line.strip()
        sign = -1 if digits.startswith("-") else 1
        digits = digits.lstrip("+-")
        count = len(digits) - len(digits.lstrip("0123456789"))
        out.append(sign * int(digits[:count]) if count else 0)
    return tuple(out)


# ---- layers ----
def _scale_xy(xy: torch.Tensor, scale: float) -> torch.Tensor:
    """``x * s - 0.5 * (s - 1)`` in float32 (``forward_yolo_layer``'s ``scal_add_cpu``)."""
    if scale == 1.0:
        return xy  # darknet's x * 1 + (-0.0) is x exactly
    beta = float(np.float32(-0.5 * float(np.float32(np.float32(scale) - np.float32(1)))))
    return xy * scale + beta


class YoloLayer(DarknetLayer):
    """``[yolo]``: darknet's ``l.output`` (``yolo_layer.c: forward_yolo_layer``).

    new_coords=0 applies the logistic to x, y, objectness and classes, *not* to w and h;
    new_coords=1 applies none (the conv before it is logistic). Then x and y become
    ``s * x - (s - 1) / 2`` with ``s = scale_x_y``. Channel ``a * (5 + classes) + e`` of anchor slot
    ``a`` holds entry ``e`` (x, y, w, h, objectness, classes).
    """

    darknet_name: ClassVar[str] = "yolo"

    def __init__(
        self,
        section: Section,
        index: int,
        sources: Sequence[int],
        in_shape: Shape,
        out_shape: Shape,
        options: YoloOptions,
    ) -> None:
        super().__init__(section, index, sources, in_shape, out_shape)
        self.options = options

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.options
        n, _, h, w = x.shape
        v = x.view(n, o.num, o.entries, h, w)
        if o.new_coords:
            xy, rest = v[:, :, :2], v[:, :, 2:]
        else:
            xy = torch.sigmoid(v[:, :, :2])
            rest = torch.cat((v[:, :, 2:4], torch.sigmoid(v[:, :, 4:])), 2)
        return torch.cat((_scale_xy(xy, o.scale_x_y), rest), 2).view(x.shape)

    def extra_repr(self) -> str:
        o = self.options
        return f"{super().extra_repr()}, classes={o.classes}, mask={o.mask}"


class GaussianYoloLayer(DarknetLayer):
    """``[Gaussian_yolo]``: darknet's ``l.output`` (``forward_gaussian_yolo_layer``).

    Per anchor slot the ``9 + classes`` channels are x, σx, y, σy, w, σw, h, σh, objectness,
    classes. The logistic applies to all but w and h; x and y are then scaled by ``scale_x_y``.
    """

    darknet_name: ClassVar[str] = "Gaussian_yolo"

    def __init__(
        self,
        section: Section,
        index: int,
        sources: Sequence[int],
        in_shape: Shape,
        out_shape: Shape,
        options: GaussianYoloOptions,
    ) -> None:
        super().__init__(section, index, sources, in_shape, out_shape)
        self.options = options

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.options
        n, _, h, w = x.shape
        v = x.view(n, o.num, o.entries, h, w)
        s = torch.sigmoid(v)
        parts = (
            _scale_xy(s[:, :, 0:1], o.scale_x_y),
            s[:, :, 1:2],  # x, σx
            _scale_xy(s[:, :, 2:3], o.scale_x_y),
            s[:, :, 3:4],  # y, σy
            v[:, :, 4:5],
            s[:, :, 5:6],
            v[:, :, 6:7],
            s[:, :, 7:],  # w, σw, h, σh, obj, classes
        )
        return torch.cat(parts, 2).view(x.shape)

    def extra_repr(self) -> str:
        o = self.options
        return f"{super().extra_repr()}, classes={o.classes}, mask={o.mask}"


class RegionLayer(DarknetLayer):
    """``[region]`` (YOLOv2): darknet's ``l.output`` (``region_layer.c: forward_region_layer``).

    Darknet first transposes the input to cell-major order (``blas.c: flatten``): the buffer holds,
    for each cell ``i = row * W + col``, for each anchor ``n``, the ``5 + classes`` values
    x, y, w, h, objectness, classes. Objectness gets the logistic, classes a softmax (or the
    softmax of each group of the ``tree=`` hierarchy); x, y, w, h stay raw (the logistic on x, y is
    applied when decoding). The returned tensor has the layer's (N, C, H, W) shape with exactly
    that memory order, so it equals darknet's buffer element for element.
    """

    darknet_name: ClassVar[str] = "region"

    def __init__(
        self,
        section: Section,
        index: int,
        sources: Sequence[int],
        in_shape: Shape,
        out_shape: Shape,
        options: RegionOptions,
    ) -> None:
        super().__init__(section, index, sources, in_shape, out_shape)
        self.options = options
        self._tree: SoftmaxTree | None = None

    @property
    def tree(self) -> SoftmaxTree | None:
        """The ``tree=`` hierarchy, read on first use (darknet reads it while parsing)."""
        if self.options.tree is None:
            return None
        if self._tree is None:
            self._tree = read_tree(self.options.tree, self.where())
            if len(self._tree) != self.options.classes:
                raise CfgError(
                    f"{self.where()}: tree={self.options.tree} has {len(self._tree)} nodes but "
                    f"classes={self.options.classes}; they must be equal"
                )
        return self._tree

    def cells(self, output: torch.Tensor) -> torch.Tensor:
        """View ``output`` (this layer's) as (N, H*W, num, 5 + classes), darknet's indexing."""
        o = self.options
        return output.reshape(output.shape[0], -1, o.num, o.entries)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.options
        n, c, h, w = x.shape
        v = x.reshape(n, c, h * w).transpose(1, 2).reshape(n, h * w, o.num, o.entries)
        classes = v[..., 5:]
        tree = self.tree
        if tree is not None:
            classes = _group_softmax(classes, tree)
        elif o.softmax:
            classes = torch.softmax(classes, -1)
        out = torch.cat((v[..., :4], torch.sigmoid(v[..., 4:5]), classes), -1)
        return out.reshape(n, c, h, w)

    def extra_repr(self) -> str:
        o = self.options
        return f"{super().extra_repr()}, classes={o.classes}, num={o.num}"


def _group_softmax(x: torch.Tensor, tree: SoftmaxTree) -> torch.Tensor:
    """Softmax in each group of ``tree`` on the last axis (``softmax_layer.c: softmax_tree``)."""
    group = torch.tensor(tree.group, device=x.device)
    flat = x.reshape(-1, x.shape[-1])
    index = group.expand_as(flat)
    ngroups = int(group.max()) + 1
    largest = flat.new_full((flat.shape[0], ngroups), -torch.inf)
    largest = largest.scatter_reduce(1, index, flat, "amax", include_self=True)
    e = torch.exp(flat - largest.gather(1, index))
    total = flat.new_zeros((flat.shape[0], ngroups)).scatter_add(1, index, e)
    return (e / total.gather(1, index)).reshape(x.shape)


# ---- builders ----
def _check_channels(opts: Options, ctx: BuildContext, expected: int, why: str, keys: str) -> Shape:
    prev = ctx.prev_shape
    if ctx.index == 0:
        raise opts.error(
            f"[{opts.section.name}] cannot be the first layer: it decodes the "
            f"output of a [convolutional] with filters={expected}"
        )
    if prev.channels != expected:
        above = ctx.layers[ctx.index - 1]
        raise opts.error(
            f"{why} needs filters={expected} in the layer just above ({above.where()}), "
            "which gives "
            f"{prev.channels} channels; darknet: \"filters= in the [convolutional]-layer doesn't "
            f'correspond to {keys} in [{opts.section.name}]-layer"'
        )
    return prev


def _build_head(opts: Options, ctx: BuildContext, cls: type, options: Any, formula: str,
                keys: str) -> Any:
    """A detection layer on the layer just above, once its channels fit ``num * entries``."""
    prev = _check_channels(opts, ctx, options.num * options.entries, formula, keys)
    return cls(opts.section, ctx.index, (ctx.index - 1,), prev, prev, options)


def build_yolo(opts: Options, ctx: BuildContext) -> YoloLayer:
    """``[yolo]`` (``parser.c: parse_yolo``, ``yolo_layer.c: make_yolo_layer``)."""
    o = parse_yolo_options(opts)
    formula = f"classes={o.classes} with {o.num} masks ({o.num}*({o.classes}+5))"
    return _build_head(opts, ctx, YoloLayer, o, formula, "classes= or mask=")


def build_gaussian_yolo(opts: Options, ctx: BuildContext) -> GaussianYoloLayer:
    """``[Gaussian_yolo]`` (``parser.c: parse_gaussian_yolo``)."""
    o = parse_gaussian_yolo_options(opts)
    formula = f"classes={o.classes} with {o.num} masks ({o.num}*({o.classes}+9))"
    return _build_head(opts, ctx, GaussianYoloLayer, o, formula, "classes= or mask=")


def build_region(opts: Options, ctx: BuildContext) -> RegionLayer:
    """``[region]`` (``parser.c: parse_region``, ``region_layer.c: make_region_layer``)."""
    o = parse_region_options(opts)
    formula = f"classes={o.classes} with num={o.num} ({o.num}*(4+1+{o.classes}))"
    return _build_head(opts, ctx, RegionLayer, o, formula, "classes= or num=")
