"""Detector evaluation: Darknet's ``detector map`` / ``valid`` / ``recall``, and COCO metrics.

* :mod:`.records`: :class:`ScoredBox`, :class:`Truth`, :class:`MapResult`, :class:`Metrics`, ...
* :mod:`.darknet_map`: :func:`darknet_map` (``validate_detector_map`` on plain data), ``box_iou``,
  ``average_precision``;
* :mod:`.coco`: :func:`coco_metrics` through pycocotools;
* :mod:`.report`: PR-curve plots and the ``--json`` interface;
* :mod:`.valid`: ``detector valid`` result files (COCO json, VOC text);
* :mod:`.run`: running the network over a ``.data`` file's list as Darknet's commands do;
* :mod:`.commands`: :func:`evaluate` (:func:`evaluate_network` for a network in memory),
  :func:`validate`, :func:`recall` end to end.

``darknetpy.evaluation`` re-exports the same names.
"""

from __future__ import annotations

from .coco import coco_metrics
from .commands import RecallRow, evaluate, evaluate_network, iter_recall, recall, validate
from .darknet_map import average_precision, box_iou, darknet_map
from .records import (
    COCO_KEYS,
    MAP_DETECTION_THRESH,
    MAP_NMS,
    RECALL_DETECTION_THRESH,
    RECALL_IOU_THRESH,
    RECALL_NMS,
    VALID_DETECTION_THRESH,
    VALID_NMS,
    CocoMetrics,
    ScoredBox,
    MapResult,
    Metrics,
    PRCurve,
    Truth,
)
from .report import metrics_to_dict, plot_pr_curves, write_metrics_json
from .run import (
    DetectorFacts,
    class_names,
    detector_facts,
    detect_images,
    difficult_label_paths,
    group_detections,
    load_detector,
    run_detector,
    valid_images,
)
from .valid import (
    COCO_IDS,
    basecfg,
    coco_image_id,
    format_coco_results,
    format_voc_results,
    read_coco_category_ids,
    read_coco_image_ids,
)

__all__ = [
    "COCO_IDS", "COCO_KEYS", "MAP_DETECTION_THRESH", "MAP_NMS", "RECALL_DETECTION_THRESH",
    "RECALL_IOU_THRESH", "RECALL_NMS", "VALID_DETECTION_THRESH", "VALID_NMS", "CocoMetrics",
    "ScoredBox", "DetectorFacts", "MapResult", "Metrics", "PRCurve", "RecallRow", "Truth",
    "average_precision", "basecfg", "box_iou", "class_names", "coco_image_id", "coco_metrics",
    "darknet_map", "detect_images", "detector_facts", "difficult_label_paths", "evaluate",
    "evaluate_network", "format_coco_results",
    "format_voc_results", "group_detections", "iter_recall", "load_detector", "metrics_to_dict",
    "plot_pr_curves", "read_coco_category_ids", "read_coco_image_ids", "recall", "run_detector",
    "valid_images", "validate", "write_metrics_json",
]  # fmt: skip
