"""The records of an evaluation: detections, ground truth, Darknet's ``detector map`` result and
the COCO summary, with the constants of ``validate_detector_map`` / ``validate_detector``.

Units: a detection box and a ground-truth box are ``(x, y, w, h)`` with ``(x, y)`` the centre, in any
one unit (Darknet's map uses units relative to the image).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..errors import UsageError

MAP_DETECTION_THRESH = 0.005  # validate_detector_map: get_network_boxes threshold
MAP_NMS = 0.45  # validate_detector_map: do_nms_sort threshold
VALID_DETECTION_THRESH = 0.001  # validate_detector
VALID_NMS = 0.6  # validate_detector
RECALL_DETECTION_THRESH = 0.001  # validate_detector_recall
RECALL_NMS = 0.4  # validate_detector_recall: do_nms_obj threshold
RECALL_IOU_THRESH = 0.5  # validate_detector_recall: a truth is found above this IoU

COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


class ScoredBox(NamedTuple):
    """What the evaluation scores: one box after NMS, its centre box and the probability of every
    class (0 where suppressed); any ``(box, probs)`` pair does."""

    box: Sequence[float]
    probs: Sequence[float]


class Truth(NamedTuple):
    """One ground-truth box, as a Darknet label line: class id and centre box."""

    class_id: int
    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class PRCurve:
    """Precision/recall after each of one class's ranked entries (Darknet's ``pr[class][rank]``)."""

    prob: np.ndarray
    precision: np.ndarray
    recall: np.ndarray


@dataclass(frozen=True)
class MapResult:
    """What ``darknet detector map`` prints, as numbers (NaN where Darknet prints ``-nan``)."""

    map: float
    ap: tuple[float, ...]
    tp_per_class: tuple[int, ...]  # at conf_thresh
    fp_per_class: tuple[int, ...]  # at conf_thresh
    avg_iou_per_class: tuple[float, ...]
    truth_per_class: tuple[int, ...]
    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    average_iou: float
    detections_count: int
    unique_truth_count: int
    conf_thresh: float
    iou_thresh: float
    points: int
    pr_curves: tuple[PRCurve, ...] = field(repr=False, compare=False)

    @property
    def classes(self) -> int:
        return len(self.ap)

    def report(self, names: Sequence[str] | None = None) -> str:
        """The result in the words and number formats of ``validate_detector_map``'s output."""
        names = _names_or_ids(names, self.classes)
        counts = f"detections_count = {self.detections_count}, "
        lines = [f" {counts}unique_truth_count = {self.unique_truth_count}  "]
        for k in range(self.classes):
            lines.append(
                f"class_id = {k}, name = {names[k]}, ap = {_c(self.ap[k] * 100, '2.2f')}%   \t "
                f"(TP = {self.tp_per_class[k]}, FP = {self.fp_per_class[k]}) "
            )
        t = self.conf_thresh
        method = (
            f"used {self.points} Recall-points "
            if self.points
            else "used Area-Under-Curve for each unique Recall "
        )
        lines.append("")
        lines.append(
            f" for conf_thresh = {_c(t, '1.2f')}, precision = {_c(self.precision, '1.2f')}, "
            f"recall = {_c(self.recall, '1.2f')}, F1-score = {_c(self.f1, '1.2f')} "
        )
        lines.append(
            f" for conf_thresh = {_c(t, '0.2f')}, TP = {self.tp}, FP = {self.fp}, FN = {self.fn}, "
            f"average IoU = {_c(self.average_iou * 100, '2.2f')} % "
        )
        lines.append("")
        lines.append(f" IoU threshold = {_c(self.iou_thresh * 100, '2.0f')} %, {method}")
        lines.append(
            f" mean average precision (mAP@{_c(self.iou_thresh, '0.2f')}) = "
            f"{_c(self.map, 'f')}, or {_c(self.map * 100, '2.2f')} % "
        )
        return "\n".join(lines)


@dataclass(frozen=True)
class CocoMetrics:
    """pycocotools' COCOeval summary (bbox, IoU .50:.95), NaN where COCOeval reports -1."""

    AP: float
    AP50: float
    AP75: float
    APs: float
    APm: float
    APl: float

    def as_dict(self) -> dict[str, float]:
        return {key: getattr(self, key) for key in COCO_KEYS}


@dataclass(frozen=True)
class Metrics:
    """Result of :func:`evaluate`: Darknet's mAP figures, COCO figures, and the class names."""

    map: MapResult
    coco: CocoMetrics | None
    names: tuple[str, ...]
    images: int
    # with evaluate(keep_detections=True): per image its detections and ground truth, to re-score
    # at other thresholds with darknet_map without running the network again
    detections: tuple[tuple[ScoredBox, ...], ...] | None = field(
        default=None, repr=False, compare=False
    )
    truths: tuple[tuple[Truth, ...], ...] | None = field(default=None, repr=False, compare=False)

    @property
    def map50(self) -> float:
        return self.map.map


def _c(value: float, spec: str) -> str:
    """C printf of a float: NaN prints as ``-nan`` like glibc does for 0.f/0.f."""
    return "-nan" if math.isnan(value) else format(value, spec)


def _names_or_ids(names: Sequence[str] | None, classes: int) -> list[str]:
    if names is None:
        return [str(k) for k in range(classes)]
    if len(names) != classes:
        raise UsageError(f"{len(names)} class names given for {classes} classes")
    return list(names)
