"""Darknet's NMS over a :class:`~darknetpy.model.heads.detections.Detections` array
(``box.c: do_nms_sort, diounms_sort, do_nms_obj``).

NMS re-sorts the array per class with a stable sort (glibc's ``qsort`` is a merge sort), so ties
resolve as in darknet; the greedy loop runs over the thresholded candidates only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ...jit import jit
from ..boxes import box_diou, box_diounms, box_iou
from .detections import Detections
from .options import NmsKind

__all__ = ["apply_nms", "diounms_sort", "do_nms_obj", "do_nms_sort"]

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
    if hits is not None and not np.isnan(probs).any():
        _classes_greedy(probs, order, total, present, hits, where)  # the loop below, compiled
        present = present[:0]
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


@jit
def _classes_greedy(probs: np.ndarray, order: np.ndarray, total: int, present: np.ndarray,
                    hits: np.ndarray, where: np.ndarray) -> None:
    """The per-class loop of :func:`_nms_per_class` given the suppression matrix ``hits`` of the
    union of candidates (``where``: detection -> its row there), in place on ``probs`` and
    ``order``: for each class in turn, the live detections re-sorted by that class's prob
    (a stable merge sort, as glibc's qsort; probs hold no NaN), then greedy NMS over its
    candidates. Integer and boolean work only: the same result as the numpy loop, without its
    per-class Python overhead (about 0.2 ms a class)."""
    keys = np.empty(total, np.float32)
    alive = np.empty(total, np.bool_)
    for k in present:
        for i in range(total):
            keys[i] = -probs[order[i], k]
        perm = np.argsort(keys, kind="mergesort")
        live = order[:total][perm]
        order[:total] = live
        m = 0
        for i in range(total):
            if probs[live[i], k] != 0:
                live[m] = live[i]
                m += 1
        for i in range(m):
            alive[i] = True
        for i in range(m - 1):
            if alive[i]:
                row = where[live[i]]
                for j in range(i + 1, m):
                    if hits[row, where[live[j]]]:
                        alive[j] = False
        for i in range(m):
            if not alive[i]:
                probs[live[i], k] = 0


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


def apply_nms(
    dets: Detections, thresh: float, kind: NmsKind = NmsKind.DEFAULT, beta_nms: float = 0.6
) -> Detections:
    """``do_nms_sort`` for the default kind, else ``diounms_sort`` (``test_detector``)."""
    if kind is NmsKind.DEFAULT:
        return do_nms_sort(dets, thresh)
    return diounms_sort(dets, thresh, kind, beta_nms)
