"""The YOLOX head's math (Megvii's ``yolox/models/yolo_head.py``, ``losses.py``,
``utils/boxes.py``), as pure functions: decode (``decode.py``), SimOTA assignment
(``assign.py``), loss (``loss.py``), post-processing with class-aware NMS (``postprocess.py``)."""

from __future__ import annotations

from .assign import Assignment, assign_image, simota_matching
from .decode import anchor_points, decode_yolox, flatten_levels
from .loss import YoloxLoss, yolox_loss
from .postprocess import nms, postprocess_yolox

__all__ = [
    "Assignment",
    "YoloxLoss",
    "anchor_points",
    "assign_image",
    "decode_yolox",
    "flatten_levels",
    "nms",
    "postprocess_yolox",
    "simota_matching",
    "yolox_loss",
]
