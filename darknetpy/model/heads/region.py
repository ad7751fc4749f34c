"""``[region]``: the YOLOv2 head (``region_layer.c``), with YOLO9000's ``tree=`` hierarchy, and its
options record (``parser.c: parse_region``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from ...errors import CfgError, UsageError
from ..cfg import Options
from ..layers.base import DarknetLayer
from .base import Candidates
from .darknet_head import DarknetHead, grid_cells, precise
from .darknet_loss import cached_spec, region_loss, region_spec
from .detections import Detections
from .option_readers import anchor_pairs, c_float, check_positive, path_option
from .options import NmsKind
from .records import HeadLoss
from .yolo_box import exp_times_double, exp_times_traceable, get_yolo_box

__all__ = ["RegionLayer", "RegionOptions", "SoftmaxTree", "parse_region_options", "read_tree"]


@dataclass(frozen=True)
class RegionOptions:
    """``[region]`` (YOLOv2, ``parser.c: parse_region``). Anchors are in grid cells."""

    classes: int = 20
    coords: int = 4
    num: int = 1
    anchors: tuple[tuple[float, float], ...] = ((0.5, 0.5),)
    max_boxes: int = 200
    log: int = 0
    sqrt: int = 0
    softmax: bool = False
    focal_loss: bool = False
    jitter: float = 0.2
    resize: float = 1.0
    rescore: bool = False
    thresh: float = 0.5
    classfix: int = 0  # -1: objectness below .5 is zeroed when decoding
    absolute: int = 0
    random: float = 0.0
    coord_scale: float = 1.0
    object_scale: float = 1.0
    noobject_scale: float = 1.0
    mask_scale: float = 1.0
    class_scale: float = 1.0
    bias_match: bool = False
    tree: Path | None = None  # softmax tree file (YOLO9000), read when the layer first runs
    map: Path | None = None  # class-id remapping file (training only)

    @property
    def entries(self) -> int:
        """Values per anchor: x, y, w, h, objectness, classes."""
        return self.coords + 1 + self.classes


def parse_region_options(opts: Options) -> RegionOptions:
    """``[region]`` keys into :class:`RegionOptions` (``parser.c: parse_region``)."""
    coords = opts.get_int("coords", 4)
    if coords != 4:
        raise opts.error(
            f"coords={coords}: darknet's region decoding assumes 4 box coordinates "
            "(get_region_boxes strides by classes+5); use coords=4",
            "coords",
        )
    classes = opts.get_int("classes", 20)
    check_positive(opts, "classes", classes)
    num = opts.get_int("num", 1)
    check_positive(opts, "num", num)
    return RegionOptions(
        classes=classes,
        coords=coords,
        num=num,
        anchors=anchor_pairs(opts, num, overflow_is_error=False),
        max_boxes=opts.get_int("max", 200),
        log=opts.get_int("log", 0),
        sqrt=opts.get_int("sqrt", 0),
        softmax=opts.get_bool("softmax", False),
        focal_loss=opts.get_bool("focal_loss", False),
        jitter=c_float(opts.get_float("jitter", 0.2)),
        resize=c_float(opts.get_float("resize", 1.0)),
        rescore=opts.get_bool("rescore", False),
        thresh=c_float(opts.get_float("thresh", 0.5)),
        classfix=opts.get_int("classfix", 0),
        absolute=opts.get_int("absolute", 0),
        random=c_float(opts.get_float("random", 0.0)),
        coord_scale=c_float(opts.get_float("coord_scale", 1.0)),
        object_scale=c_float(opts.get_float("object_scale", 1.0)),
        noobject_scale=c_float(opts.get_float("noobject_scale", 1.0)),
        mask_scale=c_float(opts.get_float("mask_scale", 1.0)),
        class_scale=c_float(opts.get_float("class_scale", 1.0)),
        bias_match=opts.get_bool("bias_match", False),
        tree=path_option(opts, "tree"),
        map=path_option(opts, "map"),
    )


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
                "index of an earlier line"
            )
        if parent != last_parent:
            group += 1
            last_parent = parent
        parents.append(parent)
        groups.append(group)
    return SoftmaxTree(tuple(names), tuple(parents), tuple(groups))


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


def _logistic(x: torch.Tensor) -> torch.Tensor:
    """``1.f / (1.f + expf(-x))`` (``activations.h: logistic_activate``), in float32 on the CPU."""
    with np.errstate(over="ignore"):
        a = x.numpy()
        return torch.from_numpy((np.float32(1) / (np.float32(1) + np.exp(-a))).astype(np.float32))


def _tree_probs(classes: np.ndarray, tree: SoftmaxTree, scale: np.ndarray,
                thresh: np.float32) -> np.ndarray:
    """``tree.c: hierarchy_predictions``, then ``get_region_boxes``' deepest class above .5."""
    pred = classes.copy()
    parent = np.asarray(tree.parent)
    depth = np.asarray(tree.depth)
    for level in range(1, int(depth.max(initial=0)) + 1):
        nodes = np.nonzero(depth == level)[0]
        pred[:, nodes] *= pred[:, parent[nodes]]
    above = pred > 0.5
    last = pred.shape[1] - 1 - np.argmax(above[:, ::-1], axis=1)
    rows = np.nonzero(above.any(1) & (scale > thresh))[0]
    prob = np.zeros_like(pred)
    prob[rows, last[rows]] = pred[rows, last[rows]]
    return prob


class RegionLayer(DarknetHead):
    """``[region]`` (YOLOv2): darknet's ``l.output`` (``region_layer.c: forward_region_layer``).

    Darknet first transposes the input to cell-major order (``blas.c: flatten``): the buffer holds,
    for each cell ``i = row * W + col``, for each anchor ``n``, the ``5 + classes`` values
    x, y, w, h, objectness, classes. Objectness gets the logistic, classes a softmax (or the
    softmax of each group of the ``tree=`` hierarchy); x, y, w, h stay raw (the logistic on x, y is
    applied when decoding). The returned tensor has the layer's (N, C, H, W) shape with exactly
    that memory order, so it equals darknet's buffer element for element.
    """

    darknet_name: ClassVar[str] = "region"
    reads: ClassVar[str] = "classes= or num="
    options: RegionOptions
    _tree: SoftmaxTree | None = None

    @classmethod
    def parse(cls, opts: Options) -> RegionOptions:
        """``parser.c: parse_region``."""
        return parse_region_options(opts)

    @classmethod
    def formula(cls, o: RegionOptions) -> str:
        return f"classes={o.classes} with num={o.num} ({o.num}*(4+1+{o.classes}))"

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

    def decode(self, output: torch.Tensor, net_size: tuple[int, int], *,
               traceable: bool = False) -> Candidates:
        """``region_layer.c: get_region_box`` (anchors in grid cells) for every cell and anchor;
        objectness 1 and prob = objectness x class (``get_region_boxes`` with DOABS);
        ``classfix=-1`` zeroes objectness below .5.

        Raises:
            UsageError: ``traceable`` with a ``tree=`` hierarchy (not expressible in ONNX).
        """
        del net_size  # [region] anchors are in grid cells
        o = self.options
        if traceable and o.tree is not None:
            raise UsageError(
                f"{self.where()}: decoding a tree= (YOLO9000) [region] head is not "
                "supported in ONNX; export without --with-decode"
            )
        n, _, h, w = output.shape
        p = precise(output, traceable).reshape(n, h * w * o.num, o.entries)  # already cell-major
        col, row = grid_cells(h, w, o.num, p)
        anchors = torch.tensor(o.anchors, dtype=p.dtype, device=p.device).reshape(-1, 2)
        anchors = anchors.repeat(h * w, 1)
        logistic = torch.sigmoid if traceable else _logistic
        box = get_yolo_box(logistic(p[..., 0]), logistic(p[..., 1]), p[..., 2], p[..., 3], col, row,
                           anchors[:, 0], anchors[:, 1], (w, h), (w, h),
                           exp_times=exp_times_traceable if traceable else exp_times_double)
        scale = p[..., 4]
        if o.classfix == -1:
            scale = torch.where(scale < 0.5, torch.zeros_like(scale), scale)
        scores = scale.unsqueeze(-1) * p[..., 5:]
        return Candidates(torch.stack(box, -1), torch.ones_like(scale), scores)

    def detections(self, output: torch.Tensor, net_size: tuple[int, int],
                   thresh: float) -> list[Detections]:
        """*Every* cell and anchor, objectness 1 (``network.c: custom_get_region_detections``).

        Class probs are ``objectness * class`` zeroed where <= thresh; with a ``tree=`` only the
        deepest class whose hierarchical probability exceeds .5 keeps its (hierarchical)
        probability, provided objectness > thresh.
        """
        c = self.decode(output, net_size)
        t = np.float32(thresh)
        tree = self.tree
        n = output.shape[0]
        raw = output.detach().float().cpu().reshape(n, -1, self.options.entries).numpy()
        out = []
        for b in range(n):
            if tree is not None:
                scale = raw[b][:, 4].copy()
                if self.options.classfix == -1:
                    scale[scale < 0.5] = 0
                prob = _tree_probs(raw[b][:, 5:], tree, scale, t)
            else:
                prob = c.scores[b].numpy()
                prob = np.where(prob > t, prob, np.float32(0))
            out.append(Detections(c.boxes[b].numpy(), c.objectness[b].numpy(), prob))
        return out

    def nms_settings(self) -> tuple[NmsKind, float]:
        """``[region]`` has no ``nms_kind``: ``do_nms_sort``."""
        return NmsKind.DEFAULT, 0.6

    def darknet_loss(self, z: torch.Tensor, truth: torch.Tensor | np.ndarray, *,
                     input_size: tuple[int, int], seen: int) -> HeadLoss:
        del input_size
        spec = cached_spec(self.options, region_spec)
        return region_loss(z, truth, spec, seen=seen, index=self.index)

    def extra_repr(self) -> str:
        o = self.options
        return f"{DarknetLayer.extra_repr(self)}, classes={o.classes}, num={o.num}"
