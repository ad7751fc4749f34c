"""COCO bbox AP through pycocotools, on the same detections :func:`darknet_map` scores.

pycocotools' AP50 is not Darknet's mAP@0.5 even on identical detections: COCOeval interpolates
precision at 101 fixed recall points (``R = 0, 0.01, ..., 1``) and takes, at each, the best
precision at that recall or above; Darknet's default (``-points 0``) is the exact area under the
monotone envelope. COCOeval also keeps at most 100 detections per image (``maxDets``), matches
greedily per image by score, and splits by area for APs/APm/APl.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence

import numpy as np

from ..errors import UsageError
from .records import COCO_KEYS, CocoMetrics, ScoredBox, Truth


def _pixel_box(box: Sequence[float], size: tuple[int, int], relative: bool) -> np.ndarray:
    x, y, w, h = (float(v) for v in box)
    if relative:
        x, w = x * size[0], w * size[0]
        y, h = y * size[1], h * size[1]
    return np.array([x - w / 2, y - h / 2, w, h])


def coco_metrics(
    detections: Sequence[Sequence[ScoredBox]],
    truths: Sequence[Sequence[Truth]],
    image_sizes: Sequence[tuple[int, int]],
    classes: int,
    *,
    relative: bool = True,
) -> CocoMetrics:
    """COCO bbox AP (pycocotools ``COCOeval``) of the detections that :func:`darknet_map` scores.

    Ground truth and detections are turned into in-memory COCO dicts (boxes in pixels; each
    (detection, class) with ``prob > 0`` is one result, clipped to the image like ``print_cocos``).

    Args:
        image_sizes: per image ``(width, height)`` in pixels.
        relative: boxes are relative to the image (Darknet labels); False: already in pixels.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not len(detections) == len(truths) == len(image_sizes):
        raise UsageError("detections, truths and image_sizes must have one entry per image")
    images, annotations, results = [], [], []
    for index, (dets, gts, size) in enumerate(zip(detections, truths, image_sizes)):
        image_id = index + 1
        images.append({"id": image_id, "width": int(size[0]), "height": int(size[1])})
        for truth in gts:
            bbox = _pixel_box(truth[1:5], size, relative)
            annotation = {"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0}
            annotation["category_id"] = int(truth[0]) + 1
            annotation["bbox"] = bbox.tolist()
            annotation["area"] = float(bbox[2] * bbox[3])
            annotations.append(annotation)
        for box, probs in dets:
            x0, y0, w, h = _pixel_box(box, size, relative)
            x1, y1 = min(x0 + w, size[0]), min(y0 + h, size[1])
            x0, y0 = max(x0, 0.0), max(y0, 0.0)
            for k, prob in enumerate(probs):
                if prob > 0:
                    results.append(
                        {
                            "image_id": image_id,
                            "category_id": k + 1,
                            "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "score": float(prob),
                        }
                    )
    if not results or not annotations:
        nan_or_zero = 0.0 if annotations else math.nan
        return CocoMetrics(*(nan_or_zero,) * len(COCO_KEYS))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": k + 1, "name": str(k)} for k in range(classes)],
        }
        gt.createIndex()
        dt = gt.loadRes(results)
        coco_eval = COCOeval(gt, dt, "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    stats = [float(v) if v >= 0 else math.nan for v in coco_eval.stats[:6]]
    return CocoMetrics(*stats)
