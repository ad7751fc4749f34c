"""Darknet's ``detector map`` (``src/detector.c: validate_detector_map``) as pure functions.

mAP, per-class AP, TP/FP at a confidence threshold and average IoU, computed from per-image
detections and ground truth. IoU is Darknet's float32 ``box_iou`` (``src/box.c``), so a boundary
case such as IoU exactly equal to ``iou_thresh`` behaves as in C.

Quirks of ``validate_detector_map`` kept on purpose (each one changes published numbers):

* every (detection, class) pair with ``prob > 0`` is one entry; it is matched to the ground truth of
  the same class with the highest IoU, which must be ``> iou_thresh`` (strict); an entry whose best
  candidate is taken by another entry is *not* moved to its second-best ground truth;
* the TP/FP/average-IoU printed "for conf_thresh" count an entry as TP only if no *earlier* entry of
  the same image (in the detections' order, whatever its probability) matched the same ground truth;
  the average IoU divides by TP + FP, so false positives count as IoU 0;
* an unmatched entry overlapping a ``difficult`` ground truth is dropped from the AP ranking but still
  counts as an FP at the confidence threshold;
* entries are ranked by probability, ties kept in input order (glibc's ``qsort`` is a merge sort);
* ``points=0`` is the area under the monotone precision envelope over every rank; ``points=N`` averages
  the best precision at recall >= ``i/(N-1)``; classes without ground truth count as AP 0 in the mAP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import DataError, UsageError
from .records import MapResult, PRCurve, ScoredBox, Truth

# Darknet formulas


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every centre box in ``a`` (n, 4) with every one in ``b`` (m, 4), shape (n, m).

    Darknet's ``box.c: box_iou`` / ``box_intersection`` / ``overlap`` in float32: a negative overlap
    gives intersection 0, and the IoU is 0 when the intersection or the union is 0.
    """
    a = np.asarray(a, dtype=np.float32).reshape(-1, 1, 4)
    b = np.asarray(b, dtype=np.float32).reshape(1, -1, 4)

    def overlap(x1: np.ndarray, w1: np.ndarray, x2: np.ndarray, w2: np.ndarray) -> np.ndarray:
        left = np.maximum(x1 - w1 / 2, x2 - w2 / 2)
        right = np.minimum(x1 + w1 / 2, x2 + w2 / 2)
        return right - left

    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        w = overlap(a[..., 0], a[..., 2], b[..., 0], b[..., 2])
        h = overlap(a[..., 1], a[..., 3], b[..., 1], b[..., 3])
        inter = np.where((w < 0) | (h < 0), np.float32(0), w * h)
        union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
        iou = np.where((inter == 0) | (union == 0), np.float32(0), inter / union)
    return iou.astype(np.float32, copy=False)


def average_precision(precision: np.ndarray, recall: np.ndarray, points: int = 0) -> float:
    """AP of one class from its precision/recall after each ranked entry (``validate_detector_map``).

    ``points=0``: from the last rank to the first, keep the running maximum precision and add
    Δrecall × that maximum, then the remaining segment down to recall 0 (area under the monotone
    envelope). ``points=N``: mean over r = i/(N-1), i = 0..N-1, of the largest precision among ranks
    with recall >= r (0 if none). An empty ranking gives 0.
    """
    p = np.asarray(precision, dtype=np.float64)
    r = np.asarray(recall, dtype=np.float64)
    if p.size == 0:
        return 0.0
    if points == 0:
        envelope = np.maximum.accumulate(p[::-1])[::-1]  # max precision over ranks >= i
        terms = (r[1:] - r[:-1]) * envelope[:-1]
        # summed from the last rank to the first like the C loop, then the segment down to 0
        total = float(np.cumsum(terms[::-1])[-1]) if terms.size else 0.0
        return total + float(r[0] * envelope[0])
    if points < 2:
        raise UsageError(f"points={points}: use 0 (area under the curve) or at least 2 points")
    total = 0.0
    for point in range(points):
        cur_recall = point * 1.0 / (points - 1)
        reached = p[r >= cur_recall]
        total += max(0.0, float(reached.max())) if reached.size else 0.0
    return total / points


def _f32_ratio(num: float, den: float) -> float:
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.float32(num) / np.float32(den))


# ----------------------------------------------------------------------------------------------
# validate_detector_map on plain data


def _as_dets(dets: Sequence[Any], classes: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.zeros((len(dets), 4), dtype=np.float32)
    probs = np.zeros((len(dets), classes), dtype=np.float32)
    for i, (box, prob) in enumerate(dets):
        boxes[i] = box
        prob = np.asarray(prob, dtype=np.float32)
        if prob.shape != (classes,):
            raise UsageError(
                f"{where}: detection {i} has {prob.size} class probabilities, expected {classes}"
            )
        probs[i] = prob
    return boxes, probs


def _as_truths(truths: Sequence[Any], classes: int | None, where: str) -> tuple[np.ndarray, ...]:
    ids = np.array([int(t[0]) for t in truths], dtype=np.int64)
    boxes = np.array([t[1:5] for t in truths], dtype=np.float32).reshape(-1, 4)
    if classes is not None and ids.size and (ids.min() < 0 or ids.max() >= classes):
        bad = int(ids[(ids < 0) | (ids >= classes)][0])
        raise DataError(
            f"{where}: ground-truth class id {bad} is outside 0..{classes - 1}; "
            "fix the label file (darknetpy check lists every such line)"
        )
    return ids, boxes


def _best_truth(
    iou: np.ndarray,
    truth_ids: np.ndarray,
    entry_det: np.ndarray,
    entry_cls: np.ndarray,
    iou_thresh: np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Per entry: index of the same-class truth with the highest IoU > iou_thresh (-1), and that IoU."""
    if truth_ids.size == 0 or entry_det.size == 0:
        return np.full(entry_det.size, -1, dtype=np.int64), np.zeros(entry_det.size, np.float32)
    cand = iou[entry_det]
    ok = (truth_ids[None, :] == entry_cls[:, None]) & (cand > iou_thresh)
    cand = np.where(ok, cand, np.float32(-1))
    best = np.argmax(cand, axis=1)  # first of equal maxima: the C loop updates on strict '>'
    best_iou = cand[np.arange(best.size), best]
    matched = ok.any(axis=1)
    return np.where(matched, best, -1), np.where(matched, best_iou, np.float32(0))


def darknet_map(
    detections: Sequence[Sequence[ScoredBox]],
    truths: Sequence[Sequence[Truth]],
    classes: int,
    *,
    thresh: float = 0.25,
    iou_thresh: float = 0.5,
    points: int = 0,
    difficult: Sequence[Sequence[Truth]] | None = None,
) -> MapResult:
    """Darknet's ``detector map`` (``validate_detector_map``) on already computed detections.

    Args:
        detections: per image, its detections after NMS in Darknet's order (the ``dets`` array
            after ``do_nms_sort``), each ``(box, probs)`` with ``probs`` one value per class.
        truths: per image, its ground truth ``(class_id, x, y, w, h)`` in the detections' unit.
        classes: number of classes (the cfg's last detection layer).
        thresh: confidence threshold for TP/FP/precision/recall/F1/average IoU (``-thresh``).
        iou_thresh: a match needs IoU strictly above this (``-iou_thresh``).
        points: 0 for the area under the curve, 11 (VOC2007) or 101 (COCO) for N-point AP.
        difficult: per image, ground truth whose unmatched detections are ignored (``difficult=``).

    Returns:
        MapResult with NaN where Darknet divides 0 by 0.

    Raises:
        UsageError: lists of different lengths, a probability vector of the wrong size, bad points.
        DataError: a ground-truth class id outside ``0..classes-1`` (Darknet would write out of bounds).
    """
    if len(detections) != len(truths):
        raise UsageError(
            f"{len(detections)} images of detections but {len(truths)} of ground truth"
        )
    if difficult is not None and len(difficult) != len(truths):
        raise UsageError(f"difficult list has {len(difficult)} images, expected {len(truths)}")
    if points < 0 or points == 1:
        raise UsageError(f"points={points}: use 0 (area under the curve) or at least 2 points")
    thr = np.float32(thresh)
    iou_thr = np.float32(iou_thresh)

    truth_count = np.zeros(classes, dtype=np.int64)
    ent_p: list[np.ndarray] = []  # kept entries, all images, in Darknet's insertion order
    ent_c: list[np.ndarray] = []
    ent_t: list[np.ndarray] = []  # global truth index or -1
    tp_ious: list[np.ndarray] = []
    tp_cls: list[np.ndarray] = []
    fp_cls: list[np.ndarray] = []
    unique_truth_count = 0
    for index, (dets, gts) in enumerate(zip(detections, truths)):
        where = f"image {index}"
        boxes, probs = _as_dets(dets, classes, where)
        truth_ids, truth_boxes = _as_truths(gts, classes, where)
        truth_count += np.bincount(truth_ids, minlength=classes)
        det_idx, cls_idx = np.nonzero(probs > 0)  # row-major: detection, then class, as the C loops
        p = probs[det_idx, cls_idx]
        iou = box_iou(boxes, truth_boxes)
        best, best_iou = _best_truth(iou, truth_ids, det_idx, cls_idx, iou_thr)
        kept = np.ones(p.size, dtype=bool)
        if difficult is not None and len(difficult[index]):
            dif_ids, dif_boxes = _as_truths(difficult[index], None, where)
            dif_hit, _ = _best_truth(box_iou(boxes, dif_boxes), dif_ids, det_idx, cls_idx, iou_thr)
            kept = ~((best < 0) & (dif_hit >= 0))
        # TP at conf_thresh: no earlier kept entry of this image matched the same truth
        first = np.zeros(p.size, dtype=bool)
        kept_matched = np.flatnonzero(kept & (best >= 0))
        if kept_matched.size:
            _, first_pos = np.unique(best[kept_matched], return_index=True)
            first[kept_matched[first_pos]] = True
        above = p > thr
        is_tp = above & first
        is_fp = above & ~is_tp  # includes dropped "difficult" entries, as in the C code
        tp_ious.append(best_iou[is_tp])
        tp_cls.append(cls_idx[is_tp])
        fp_cls.append(cls_idx[is_fp])
        ent_p.append(p[kept])
        ent_c.append(cls_idx[kept])
        ent_t.append(np.where(best >= 0, best + unique_truth_count, -1)[kept])
        unique_truth_count += truth_ids.size

    p_all = np.concatenate(ent_p) if ent_p else np.zeros(0, np.float32)
    c_all = np.concatenate(ent_c) if ent_c else np.zeros(0, np.int64)
    t_all = np.concatenate(ent_t) if ent_t else np.zeros(0, np.int64)
    order = np.argsort(-p_all, kind="stable")  # qsort(detections_comparator); glibc's is stable
    p_all, c_all, t_all = p_all[order], c_all[order], t_all[order]
    rank_tp = np.zeros(p_all.size, dtype=bool)
    matched = np.flatnonzero(t_all >= 0)
    if matched.size:
        _, first_pos = np.unique(t_all[matched], return_index=True)
        rank_tp[matched[first_pos]] = True

    aps: list[float] = []
    curves: list[PRCurve] = []
    for k in range(classes):
        mine = c_all == k
        tp_cum = np.cumsum(rank_tp[mine])
        fp_cum = np.cumsum(~rank_tp[mine])
        precision = tp_cum / np.maximum(tp_cum + fp_cum, 1)
        n_gt = int(truth_count[k])
        recall = tp_cum / n_gt if n_gt > 0 else np.zeros(tp_cum.size)
        curves.append(PRCurve(p_all[mine].astype(np.float64), precision, recall))
        aps.append(average_precision(precision, recall, points) if p_all.size else 0.0)

    tp_c = np.concatenate(tp_cls) if tp_cls else np.zeros(0, np.int64)
    fp_c = np.concatenate(fp_cls) if fp_cls else np.zeros(0, np.int64)
    ious = np.concatenate(tp_ious) if tp_ious else np.zeros(0, np.float32)
    tp_k = np.bincount(tp_c, minlength=classes)
    fp_k = np.bincount(fp_c, minlength=classes)
    tp, fp = int(tp_k.sum()), int(fp_k.sum())
    # float32 running sums in Darknet's order; divided by TP + FP (FPs count as IoU 0)
    iou_sum = float(np.cumsum(ious, dtype=np.float32)[-1]) if ious.size else 0.0
    avg_iou = _f32_ratio(iou_sum, tp + fp) if tp + fp else 0.0
    avg_iou_k = []
    for k in range(classes):
        s = ious[tp_c == k]
        total = float(np.cumsum(s, dtype=np.float32)[-1]) if s.size else 0.0
        n = int(tp_k[k] + fp_k[k])
        avg_iou_k.append(_f32_ratio(total, n) if n else 0.0)
    precision_t = _f32_ratio(tp, tp + fp)
    recall_t = _f32_ratio(tp, unique_truth_count)
    with np.errstate(invalid="ignore", divide="ignore"):
        pr, rc = np.float32(precision_t), np.float32(recall_t)
        f1 = float(np.float32(2) * pr * rc / (pr + rc))
    return MapResult(
        map=float(sum(aps) / classes) if classes else 0.0,
        ap=tuple(aps),
        tp_per_class=tuple(int(v) for v in tp_k),
        fp_per_class=tuple(int(v) for v in fp_k),
        avg_iou_per_class=tuple(avg_iou_k),
        truth_per_class=tuple(int(v) for v in truth_count),
        precision=precision_t,
        recall=recall_t,
        f1=f1,
        tp=tp,
        fp=fp,
        fn=unique_truth_count - tp,
        average_iou=avg_iou,
        detections_count=int(p_all.size),
        unique_truth_count=unique_truth_count,
        conf_thresh=float(thresh),
        iou_thresh=float(iou_thresh),
        points=points,
        pr_curves=tuple(curves),
    )
