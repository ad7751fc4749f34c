"""Training's mAP: ``validate_detector_map`` on the network being trained, as it is in memory.

Darknet's ``-map`` copies the training network's weights into a second network and evaluates it
(``detector.c: train_detector`` -> ``validate_detector_map(..., &net_map)``); here the network
itself runs in eval mode (inference batch norm, no gradient) through the one image -> detections
pipeline (:func:`darknetpy.evaluation.evaluate_network`), so no weights file is written and no cfg
re-parsed. A loop with EMA weights evaluates those: swap them in around the call.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..evaluation import evaluate_network
from ..model.network import Network

__all__ = ["network_map"]


def network_map(net: Network, data: str | Path, *, thresh: float = 0.25, iou_thresh: float = 0.5,
                device: str | torch.device | None = None) -> float:
    """mAP@``iou_thresh`` (area under the curve: Darknet's ``-map``, points 0, no COCO AP) of
    ``net`` on the ``valid=`` list of ``data``; equals ``darknetpy map`` on the weights ``net``
    would save.

    Args:
        thresh: the confidence threshold of the TP/FP figures (not of the mAP).
        device: where the images go; None: where the network's parameters are.
    """
    metrics = evaluate_network(net, data, thresh=thresh, iou_thresh=iou_thresh, points=0,
                               coco=False, device=device)
    return float(metrics.map50)
