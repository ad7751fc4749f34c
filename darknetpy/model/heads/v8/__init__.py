"""The YOLOv8 head (ultralytics' anchor-free ``Detect``): its math as pure functions.

* :mod:`.geometry`: anchor points, the DFL read-out, distances <-> boxes, CIoU;
* :mod:`.decode`: per-level raw maps -> ``(N, A, 4 + nc)`` decoded boxes and scores;
* :mod:`.assign`: task-aligned assignment (TAL);
* :mod:`.loss`: BCE + CIoU + DFL, as ultralytics back-propagates it;
* :mod:`.nms`: ultralytics' class-aware NMS for this head.

Each reproduces ultralytics 8.4.190 (AGPL-3.0; read, not copied), checked against
``golden/modern/yolov8n`` in ``tests/model/heads/test_v8_math.py``.
"""

from __future__ import annotations

from .assign import Assignment, task_aligned_assign
from .decode import decode_v8, flatten_levels
from .loss import V8Loss, V8LossOptions, dfl_loss, v8_loss
from .nms import nms_v8

__all__ = [
    "Assignment",
    "V8Loss",
    "V8LossOptions",
    "decode_v8",
    "dfl_loss",
    "flatten_levels",
    "nms_v8",
    "task_aligned_assign",
    "v8_loss",
]
