"""From a network's head outputs to detections: the inference stage's entry points.

Each head decodes its own candidates and owns its NMS (:mod:`darknetpy.model.heads`); the path
that joins them (``network.c: get_network_boxes``, ``yolo_layer.c: correct_yolo_boxes``, then the
last head's NMS) is :func:`darknetpy.model.heads.detections.network_detections`, which
:meth:`Network.detections` runs. This module gathers those names for inference code: the
detection arrays, Darknet's NMS (``box.c: do_nms_sort, diounms_sort, do_nms_obj``) and the
network-level :func:`detections` / :func:`detect`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..model.heads.darknet_head import nms_settings
from ..model.heads.darknet_nms import apply_nms, diounms_sort, do_nms_obj, do_nms_sort
from ..model.heads.detections import (
    DarknetDetection,
    DetectionRow,
    Detections,
    correct_yolo_boxes,
    get_network_boxes,
    network_detections,
)
from ..model.network import Network

Size = tuple[int, int]

__all__ = [
    "DarknetDetection",
    "DetectionRow",
    "Detections",
    "apply_nms",
    "correct_yolo_boxes",
    "detect",
    "detections",
    "diounms_sort",
    "do_nms_obj",
    "do_nms_sort",
    "get_network_boxes",
    "network_detections",
    "nms_settings",
]


def detections(net: Network, x: torch.Tensor, image_size: Size | Sequence[Size],
               thresh: float = 0.25, nms: float = 0.45, letter_box: bool | None = None,
               hier_thresh: float = 0.5) -> list[Detections]:
    """:meth:`Network.detections`: each image's detection arrays after the heads' NMS."""
    return net.detections(x, image_size, thresh=thresh, nms=nms, letter_box=letter_box,
                          hier_thresh=hier_thresh)


def detect(net: Network, x: torch.Tensor, image_size: Size | Sequence[Size], thresh: float = 0.25,
           nms: float = 0.45, letter_box: bool | None = None,
           hier_thresh: float = 0.5) -> list[list[DetectionRow]]:
    """:meth:`Network.detect`: Darknet's ``detector test`` rows per image."""
    return net.detect(x, image_size, thresh=thresh, nms=nms, letter_box=letter_box,
                      hier_thresh=hier_thresh)
