"""From head outputs to detections: decoding, letterbox correction and NMS, as darknet does them.

Reproduces ``network.c: get_network_boxes`` (``make_network_boxes``, ``fill_network_boxes``,
``custom_get_region_detections``), ``yolo_layer.c: get_yolo_box, get_yolo_detections,
correct_yolo_boxes``, ``region_layer.c: get_region_box, get_region_boxes``,
``gaussian_yolo_layer.c: get_gaussian_yolo_box, get_gaussian_yolo_detections`` and
``box.c: do_nms_sort, diounms_sort, do_nms_obj``.

Darknet's order is kept everywhere: heads in layer order, cells row-major, anchor slots innermost;
NMS re-sorts the array per class with a stable sort (glibc's ``qsort`` is a merge sort), so ties
resolve as in darknet. Thresholds are compared as C ``float``: strictly greater than
``float32(thresh)``. Candidate selection and box decoding are vectorised; the greedy NMS loop runs
over the thresholded candidates only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from ..errors import CfgError, UsageError
from ..model.boxes import box_diou, box_diounms, box_iou
from ..model.heads.darknet import (
    GaussianYoloLayer,
    GaussianYoloOptions,
    NmsKind,
    RegionLayer,
    RegionOptions,
    SoftmaxTree,
    YoloLayer,
    YoloOptions,
    YoloPoint,
)

if TYPE_CHECKING:
    from ..model.network import Network

HeadLayer = YoloLayer | GaussianYoloLayer | RegionLayer
Size = tuple[int, int]

__all__ = [
    "Detection",
    "DetectionRow",
    "Detections",
    "apply_nms",
    "correct_yolo_boxes",
    "decode_gaussian_yolo",
    "decode_region",
    "decode_yolo",
    "detect",
    "detections",
    "diounms_sort",
    "do_nms_obj",
    "do_nms_sort",
    "get_network_boxes",
    "nms_settings",
]


class DetectionRow(NamedTuple):
    """One (box, class) pair above the threshold; the box is relative to the image."""

    class_id: int
    prob: float
    x: float
    y: float
    w: float
    h: float
    objectness: float


@dataclass(frozen=True, eq=False)
class Detection:
    """One darknet ``detection``: box (x, y, w, h), objectness and the per-class prob vector."""

    bbox: tuple[float, float, float, float]
    objectness: float
    probs: np.ndarray  # (classes,) float32; 0 where <= thresh or suppressed by NMS
    uncertainty: tuple[float, float, float, float] | None = None  # [Gaussian_yolo] σ of x, y, w, h

    @property
    def best_class(self) -> int:
        """Index of the highest class probability."""
        return int(np.argmax(self.probs))


@dataclass(frozen=True, eq=False)
class Detections:
    """darknet's ``detection`` array for one image, as parallel arrays in darknet's order.

    Attributes:
        boxes: (n, 4) float32 ``x, y, w, h`` (centre and size).
        objectness: (n,) float32.
        probs: (n, classes) float32, ``objectness * class`` zeroed where <= thresh.
        uncertainty: (n, 4) float32 for ``[Gaussian_yolo]`` heads, else None.
    """

    boxes: np.ndarray
    objectness: np.ndarray
    probs: np.ndarray
    uncertainty: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.objectness)

    def __getitem__(self, i: int) -> Detection:
        uc = None if self.uncertainty is None else tuple(float(v) for v in self.uncertainty[i])
        return Detection(
            tuple(float(v) for v in self.boxes[i]),  # type: ignore[arg-type]
            float(self.objectness[i]),
            self.probs[i],
            uc,
        )  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Detection]:
        return (self[i] for i in range(len(self)))

    @property
    def classes(self) -> int:
        return self.probs.shape[1]

    def take(self, index: np.ndarray) -> Detections:
        """The detections at ``index`` (an integer array), in that order."""
        uc = None if self.uncertainty is None else self.uncertainty[index]
        return Detections(self.boxes[index], self.objectness[index], self.probs[index], uc)

    def with_boxes(self, boxes: np.ndarray) -> Detections:
        return Detections(boxes, self.objectness, self.probs, self.uncertainty)

    @staticmethod
    def empty(classes: int) -> Detections:
        return Detections(
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.float32),
            np.zeros((0, classes), np.float32),
        )

    @staticmethod
    def concat(parts: Sequence[Detections], classes: int) -> Detections:
        """Join the detections of several heads (darknet's ``dets += count``)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return Detections.empty(classes)
        uc = None
        if any(p.uncertainty is not None for p in parts):
            uc = np.concatenate(
                [
                    p.uncertainty
                    if p.uncertainty is not None
                    else np.zeros((len(p), 4), np.float32)
                    for p in parts
                ]
            )
        return Detections(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.objectness for p in parts]),
            np.concatenate([p.probs for p in parts]),
            uc,
        )

    def rows(self, thresh: float) -> list[DetectionRow]:
        """Every (detection, class) with prob > thresh, in array order then class order
        (what ``draw_detections_v3`` prints)."""
        det, cls = np.nonzero(self.probs > np.float32(thresh))
        return [
            DetectionRow(
                int(c),
                float(self.probs[d, c]),
                *(float(v) for v in self.boxes[d]),
                float(self.objectness[d]),
            )
            for d, c in zip(det, cls)
        ]


# ---- decoding ----
def _exp_times(t: np.ndarray, anchor: np.ndarray, size: int) -> np.ndarray:
    """``exp(t) * anchor / size`` in double, stored as float (darknet's ``exp()`` is double,
    so huge ``t`` stays finite when the quotient fits a float)."""
    with np.errstate(over="ignore"):
        return (np.exp(t.astype(np.float64)) * anchor.astype(np.float64) / size).astype(np.float32)


def _cells(keep: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, col, slot) of the true entries of a (H, W, A) mask, row-major with slots innermost."""
    idx = keep.nonzero().cpu().numpy()
    return idx[:, 0], idx[:, 1], idx[:, 2]


def _by_cell(output: torch.Tensor, options: YoloOptions | GaussianYoloOptions) -> torch.Tensor:
    """A [yolo]-style output (N, A*entries, H, W) as (N, H, W, A, entries), float32, detached:
    darknet's ``entry_index`` layout seen cell by cell."""
    n, _, h, w = output.shape
    return output.detach().float().reshape(n, options.num, options.entries, h, w).permute(0, 3, 4, 1, 2)


def decode_yolo(
    output: torch.Tensor, options: YoloOptions, net_size: Size, thresh: float
) -> list[Detections]:
    """One ``[yolo]`` head's detections per image, boxes relative to the network input
    (``yolo_layer.c: get_yolo_detections`` without the final ``correct_yolo_boxes``).

    Args:
        output: the layer's output (N, A*(5+classes), H, W), i.e. darknet's ``l.output``.
        options: the head's options.
        net_size: the *current* network input (width, height); anchors are divided by it.
        thresh: a detection needs objectness > thresh; class probs <= thresh are zeroed.
    """
    n, _, h, w = output.shape
    v = _by_cell(output, options)
    t = np.float32(thresh)
    keep = v[..., 4] > float(t)
    anchors = np.asarray(options.masked_anchors, np.float32).reshape(-1, 2)
    out = []
    for b in range(n):
        row, col, slot = _cells(keep[b])
        sel = v[b][keep[b]].cpu().numpy()  # same order as _cells
        x = (col.astype(np.float32) + sel[:, 0]) / np.float32(w)
        y = (row.astype(np.float32) + sel[:, 1]) / np.float32(h)
        aw, ah = anchors[slot, 0], anchors[slot, 1]
        if options.new_coords:
            bw = sel[:, 2] * sel[:, 2] * np.float32(4) * aw / np.float32(net_size[0])
            bh = sel[:, 3] * sel[:, 3] * np.float32(4) * ah / np.float32(net_size[1])
        else:
            bw = _exp_times(sel[:, 2], aw, net_size[0])
            bh = _exp_times(sel[:, 3], ah, net_size[1])
        obj = sel[:, 4]
        prob = obj[:, None] * sel[:, 5:]
        prob = np.where(prob > t, prob, np.float32(0))
        out.append(Detections(np.stack((x, y, bw, bh), 1), obj.copy(), prob))
    return out


def decode_gaussian_yolo(
    output: torch.Tensor, options: GaussianYoloOptions, net_size: Size, thresh: float
) -> list[Detections]:
    """One ``[Gaussian_yolo]`` head's detections per image, relative to the network input
    (``gaussian_yolo_layer.c: get_gaussian_yolo_detections, get_gaussian_yolo_box``).

    The class prob is ``objectness * class * (1 - mean(σx, σy, σw, σh))``.
    """
    n, _, h, w = output.shape
    v = _by_cell(output, options)
    t = np.float32(thresh)
    keep = v[..., 8] > float(t)
    anchors = np.asarray(options.masked_anchors, np.float32).reshape(-1, 2)
    out = []
    for b in range(n):
        row, col, slot = _cells(keep[b])
        sel = v[b][keep[b]].cpu().numpy()
        bw = _exp_times(sel[:, 4], anchors[slot, 0], net_size[0])
        bh = _exp_times(sel[:, 6], anchors[slot, 1], net_size[1])
        x = (col.astype(np.float32) + sel[:, 0]) / np.float32(w)
        y = (row.astype(np.float32) + sel[:, 2]) / np.float32(h)
        if options.yolo_point is YoloPoint.LEFT_TOP:
            x, y = x + bw / np.float32(2), y + bh / np.float32(2)
        elif options.yolo_point is YoloPoint.RIGHT_BOTTOM:
            x, y = x - bw / np.float32(2), y - bh / np.float32(2)
        uc = sel[:, [1, 3, 5, 7]]
        uc_aver = ((((uc[:, 0] + uc[:, 1]) + uc[:, 2]) + uc[:, 3]).astype(np.float64) / 4.0).astype(
            np.float32
        )
        obj = sel[:, 8]
        base = obj[:, None] * sel[:, 9:]
        prob = (base.astype(np.float64) * (1.0 - uc_aver.astype(np.float64))[:, None]).astype(
            np.float32
        )
        prob = np.where(prob > t, prob, np.float32(0))
        out.append(Detections(np.stack((x, y, bw, bh), 1), obj.copy(), prob, uc.copy()))
    return out


def _logistic(x: np.ndarray) -> np.ndarray:
    """``1.f / (1.f + expf(-x))`` (``activations.h: logistic_activate``)."""
    with np.errstate(over="ignore"):
        return (np.float32(1) / (np.float32(1) + np.exp(-x))).astype(np.float32)


def decode_region(
    output: torch.Tensor, options: RegionOptions, thresh: float, tree: SoftmaxTree | None = None
) -> list[Detections]:
    """One ``[region]`` head's detections per image: *every* cell and anchor, objectness 1, boxes
    relative to the network input (``network.c: custom_get_region_detections``,
    ``region_layer.c: get_region_boxes`` with DOABS).

    Class probs are ``objectness * class`` zeroed where <= thresh; with a ``tree=`` only the
    deepest class whose hierarchical probability exceeds .5 keeps its (hierarchical) probability,
    provided objectness > thresh. ``classfix=-1`` zeroes objectness below .5.
    """
    n, _, h, w = output.shape
    o = options
    cells = output.detach().float().reshape(n, h * w, o.num, o.entries).cpu().numpy()
    t = np.float32(thresh)
    col = np.tile(np.repeat(np.arange(w, dtype=np.float32), o.num), h)
    row = np.repeat(np.arange(h, dtype=np.float32), w * o.num)
    anchors = np.asarray(o.anchors, np.float32).reshape(-1, 2)
    aw = np.tile(anchors[:, 0], h * w)
    ah = np.tile(anchors[:, 1], h * w)
    out = []
    for b in range(n):
        p = cells[b].reshape(h * w * o.num, o.entries)
        scale = p[:, 4].copy()
        if o.classfix == -1:
            scale[scale < 0.5] = 0
        x = (col + _logistic(p[:, 0])) / np.float32(w)
        y = (row + _logistic(p[:, 1])) / np.float32(h)
        bw = _exp_times(p[:, 2], aw, w)
        bh = _exp_times(p[:, 3], ah, h)
        if tree is not None:
            prob = _tree_probs(p[:, 5:], tree, scale, t)
        else:
            prob = scale[:, None] * p[:, 5:]
            prob = np.where(prob > t, prob, np.float32(0))
        out.append(Detections(np.stack((x, y, bw, bh), 1), np.ones(len(p), np.float32), prob))
    return out


def _tree_probs(
    classes: np.ndarray, tree: SoftmaxTree, scale: np.ndarray, thresh: np.float32
) -> np.ndarray:
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


def correct_yolo_boxes(
    boxes: np.ndarray, image_size: Size, net_size: Size, letter_box: bool, relative: bool = True
) -> np.ndarray:
    """Network-relative boxes to image-relative ones (``yolo_layer.c: correct_yolo_boxes``).

    With ``letter_box`` the image occupied ``new_w x new_h`` of the input, computed with integer
    division, and offsets use float halves; without it the correction is the identity. Boxes are
    not clipped. ``relative=False`` gives pixels.
    """
    w, h = image_size
    netw, neth = net_size
    if letter_box:
        if np.float32(netw) / np.float32(w) < np.float32(neth) / np.float32(h):
            new_w, new_h = netw, (h * netw) // w
        else:
            new_w, new_h = (w * neth) // h, neth
    else:
        new_w, new_h = netw, neth
    deltaw, deltah = np.float32(netw - new_w), np.float32(neth - new_h)
    out = boxes.astype(np.float32, copy=True)
    with np.errstate(all="ignore"):  # a letterbox with new_w or new_h 0 gives inf, as in C
        ratiow = np.float32(new_w) / np.float32(netw)
        ratioh = np.float32(new_h) / np.float32(neth)
        out[:, 0] = (out[:, 0].astype(np.float64) - float(deltaw) / 2.0 / netw) / np.float64(ratiow)
        out[:, 1] = (out[:, 1].astype(np.float64) - float(deltah) / 2.0 / neth) / np.float64(ratioh)
        out[:, 2] *= np.float32(1) / ratiow
        out[:, 3] *= np.float32(1) / ratioh
        if not relative:
            out[:, 0] *= np.float32(w)
            out[:, 2] *= np.float32(w)
            out[:, 1] *= np.float32(h)
            out[:, 3] *= np.float32(h)
    return out


def _head_classes(heads: Sequence[HeadLayer]) -> int:
    classes = {layer.options.classes for layer in heads}
    if len(classes) > 1:
        listing = ", ".join(f"{layer.where()} classes={layer.options.classes}" for layer in heads)
        raise CfgError(
            f"detection layers disagree on classes= ({listing}); darknet sizes every "
            "detection by the first one: give all heads the same classes="
        )
    return classes.pop()


def _image_sizes(image_size: Size | Sequence[Size], batch: int) -> list[Size]:
    if len(image_size) == 2 and all(isinstance(v, (int, np.integer)) for v in image_size):
        sizes = [(int(image_size[0]), int(image_size[1]))] * batch  # type: ignore[arg-type]
    else:
        sizes = [(int(s[0]), int(s[1])) for s in image_size]  # type: ignore[index]
        if len(sizes) != batch:
            raise UsageError(
                f"got {len(sizes)} image sizes for a batch of {batch} images; give one "
                "(width, height) for all or one per image"
            )
    for w, h in sizes:
        if w <= 0 or h <= 0:
            raise UsageError(f"image size ({w}, {h}) must be positive (width, height) in pixels")
    return sizes


def get_network_boxes(
    heads: Sequence[HeadLayer],
    outputs: Sequence[torch.Tensor],
    image_size: Size | Sequence[Size],
    net_size: Size,
    thresh: float = 0.25,
    hier_thresh: float = 0.5,
    letter_box: bool = False,
    relative: bool = True,
) -> list[Detections]:
    """Every head's detections per image, boxes relative to the image (``get_network_boxes``).

    Args:
        heads: the detection layers, in layer order (``Network.heads``).
        outputs: their outputs, in the same order.
        image_size: the original image's (width, height), one for all images or one per image.
        net_size: the network input (width, height) the outputs were computed at.
        thresh: objectness and class-probability threshold.
        hier_thresh: accepted for darknet's signature; its ``[region]`` path does not use it.
        letter_box: whether the image was letterboxed into the input.
        relative: False gives pixels (darknet's ``relative=0``).

    Raises:
        CfgError: heads with different ``classes=``.
    """
    del hier_thresh
    if len(heads) != len(outputs):
        raise UsageError(f"{len(outputs)} outputs for {len(heads)} detection layers")
    classes = _head_classes(heads)
    batch = outputs[0].shape[0] if outputs else 0
    sizes = _image_sizes(image_size, batch)
    per_head: list[list[Detections]] = []
    for layer, output in zip(heads, outputs):
        if isinstance(layer, RegionLayer):
            per_head.append(decode_region(output, layer.options, thresh, layer.tree))
        elif isinstance(layer, GaussianYoloLayer):
            per_head.append(decode_gaussian_yolo(output, layer.options, net_size, thresh))
        else:
            per_head.append(decode_yolo(output, layer.options, net_size, thresh))
    result = []
    for b in range(batch):
        dets = Detections.concat([head[b] for head in per_head], classes)
        boxes = correct_yolo_boxes(dets.boxes, sizes[b], net_size, letter_box, relative)
        result.append(dets.with_boxes(boxes))
    return result


# ---- NMS ----
Suppress = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _live_order(objectness: np.ndarray) -> tuple[np.ndarray, int]:
    """Darknet's first NMS step: swap every zero-objectness detection to the end (the same
    swaps as the C loop, so the order matches); returns the order and the live count."""
    order = np.arange(len(objectness))
    zero = objectness == 0
    if not zero.any():
        return order, len(order)
    i, k = 0, len(order) - 1
    while i <= k:
        if zero[order[i]]:
            order[i], order[k] = order[k], order[i]
            k -= 1
        else:
            i += 1
    return order, k + 1


def _greedy(boxes: np.ndarray, thresh: np.float32, suppress: Suppress) -> np.ndarray:
    """Keep-mask of greedy NMS over ``boxes`` sorted best first: box ``j`` dies when a live
    ``i < j`` has ``suppress(box_i, box_j) > thresh``."""
    m = len(boxes)
    if m <= _PAIRWISE_MAX:
        if m < 2:
            return np.ones(m, bool)
        return _greedy_hits(suppress(boxes[:, None], boxes[None, :]) > thresh)
    alive = np.ones(m, bool)
    for i in range(m - 1):
        if alive[i]:
            alive[i + 1 :] &= ~(suppress(boxes[i], boxes[i + 1 :]) > thresh)
    return alive


_PAIRWISE_MAX = 2048  # up to this many boxes, NMS computes the whole (m, m) suppression matrix


def _greedy_hits(hit: np.ndarray) -> np.ndarray:
    """Keep-mask of greedy NMS given ``hit[i, j]``: box ``i`` suppresses box ``j`` (best first)."""
    m = len(hit)
    alive = np.ones(m, bool)
    for i in range(m - 1):
        if alive[i]:
            alive[i + 1 :] &= ~hit[i, i + 1 :]
    return alive


def _nms_per_class(dets: Detections, thresh: float, suppress: Suppress) -> Detections:
    probs = dets.probs.copy()
    order, total = _live_order(dets.objectness)
    t = np.float32(thresh)
    # A class whose probs are all 0 on the live detections changes nothing: its stable sort by
    # -prob keeps the order and it has no candidate. The live *set* is fixed (only its order
    # changes), so those classes are found once; typically most of the 80 are skipped.
    nonzero = probs[order[:total]] != 0
    present = np.flatnonzero(nonzero.any(axis=0))
    # Every candidate of every class is among `union`: the suppression test of each pair is
    # computed once for all classes (same arguments, same order, so the same values).
    union = order[:total][nonzero.any(axis=1)]
    hits = None
    if 2 <= len(union) <= _PAIRWISE_MAX and len(present) > 1:
        where = np.full(len(probs), -1, np.intp)
        where[union] = np.arange(len(union))
        boxes = dets.boxes[union]
        hits = suppress(boxes[:, None], boxes[None, :]) > t
    for k in present.tolist():
        live = order[:total]
        live = live[np.argsort(-probs[live, k], kind="stable")]  # qsort by prob desc (merge sort)
        order[:total] = live
        candidates = live[probs[live, k] != 0]
        if hits is not None:
            at = where[candidates]
            alive = _greedy_hits(hits[np.ix_(at, at)])
        else:
            alive = _greedy(dets.boxes[candidates], t, suppress)
        probs[candidates[~alive], k] = 0
    out = Detections(dets.boxes, dets.objectness, probs, dets.uncertainty)
    return out.take(order)


def do_nms_sort(dets: Detections, thresh: float) -> Detections:
    """Per-class greedy NMS with plain IoU > thresh (``box.c: do_nms_sort``).

    Only probabilities are zeroed; nothing is removed. Returns the detections in darknet's final
    array order (sorted by the last class).
    """
    return _nms_per_class(dets, thresh, box_iou)


def diounms_sort(
    dets: Detections, thresh: float, kind: NmsKind, beta_nms: float = 0.6
) -> Detections:
    """``box.c: diounms_sort``: ``greedynms`` suppresses when ``box_diou`` (DIoU with darknet's
    fixed 0.6 exponent) > thresh, ``diounms`` when ``box_diounms(beta_nms)`` > thresh,
    ``cornersnms`` with plain IoU; ``default`` suppresses nothing here."""
    beta = float(np.float32(beta_nms))
    suppress: Suppress
    if kind is NmsKind.GREEDY:
        suppress = box_diou
    elif kind is NmsKind.DIOU:

        def suppress(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return box_diounms(a, b, beta)
    elif kind is NmsKind.CORNERS:
        suppress = box_iou
    else:

        def suppress(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return np.zeros(np.broadcast_shapes(a.shape[:-1], b.shape[:-1]), np.float32)

    return _nms_per_class(dets, thresh, suppress)


def do_nms_obj(dets: Detections, thresh: float) -> Detections:
    """Class-agnostic NMS by objectness (``box.c: do_nms_obj``, the ``recall`` command): a
    suppressed detection gets objectness 0 and all its probs 0."""
    probs = dets.probs.copy()
    objectness = dets.objectness.copy()
    order, total = _live_order(objectness)
    live = order[:total]
    live = live[np.argsort(-objectness[live], kind="stable")]
    order[:total] = live
    alive = _greedy(dets.boxes[live], np.float32(thresh), box_iou)
    objectness[live[~alive]] = 0
    probs[live[~alive]] = 0
    return Detections(dets.boxes, objectness, probs, dets.uncertainty).take(order)


def nms_settings(heads: Sequence[HeadLayer]) -> tuple[NmsKind, float]:
    """``(nms_kind, beta_nms)`` of the last detection layer, which darknet's commands use."""
    last = heads[-1].options
    if isinstance(last, RegionOptions):
        return NmsKind.DEFAULT, 0.6
    return last.nms_kind, last.beta_nms


def apply_nms(
    dets: Detections, thresh: float, kind: NmsKind = NmsKind.DEFAULT, beta_nms: float = 0.6
) -> Detections:
    """``do_nms_sort`` for the default kind, else ``diounms_sort`` (``test_detector``)."""
    if kind is NmsKind.DEFAULT:
        return do_nms_sort(dets, thresh)
    return diounms_sort(dets, thresh, kind, beta_nms)


# ---- the network entry points ----
def _heads(net: Network) -> list[HeadLayer]:
    if not net.heads:
        raise CfgError(
            f"{net.where()}: the network has no [yolo], [Gaussian_yolo] or [region] layer "
            "to detect with"
        )
    return [net.layers[i] for i in net.heads]  # type: ignore[misc]


def detections(
    net: Network,
    x: torch.Tensor,
    image_size: Size | Sequence[Size],
    thresh: float = 0.25,
    nms: float = 0.45,
    letter_box: bool | None = None,
    hier_thresh: float = 0.5,
) -> list[Detections]:
    """Run ``net`` in inference mode and return each image's :class:`Detections` after NMS
    (full per-class prob vectors, as darknet's ``map`` command uses them).

    Args:
        net: the network.
        x: (N, C, H, W) or (C, H, W) input in [0, 1]; its H, W are the current network size.
        image_size: the original images' (width, height): one for all, or one per image.
        thresh: detection threshold (objectness and class probability).
        nms: NMS IoU threshold; 0 skips NMS as darknet does.
        letter_box: whether the inputs were letterboxed; None takes ``[net] letter_box``.
        hier_thresh: unused by darknet's current code path (kept for its signature).
    """
    heads = _heads(net)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    net_size = (int(x.shape[-1]), int(x.shape[-2]))
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            outputs = net(x)
    finally:
        net.train(was_training)
    letter = net.net.letter_box if letter_box is None else letter_box
    dets = get_network_boxes(heads, outputs, image_size, net_size, thresh, hier_thresh, letter)
    if nms:
        kind, beta = nms_settings(heads)
        dets = [apply_nms(d, nms, kind, beta) for d in dets]
    return dets


def detect(
    net: Network,
    x: torch.Tensor,
    image_size: Size | Sequence[Size],
    thresh: float = 0.25,
    nms: float = 0.45,
    letter_box: bool | None = None,
    hier_thresh: float = 0.5,
) -> list[list[DetectionRow]]:
    """Darknet's ``detector test``: per image, one ``(class, prob, x, y, w, h, objectness)`` row per
    (box, class) with prob > thresh, relative to the image, in darknet's final array order.

    See :func:`detections` for the arguments.
    """
    dets = detections(
        net, x, image_size, thresh=thresh, nms=nms, letter_box=letter_box, hier_thresh=hier_thresh
    )
    return [d.rows(thresh) for d in dets]
