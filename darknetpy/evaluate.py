"""Detector evaluation, the public module: Darknet's ``detector map`` / ``valid`` / ``recall`` and
COCO metrics. The code lives in :mod:`darknetpy.evaluation`; this module re-exports its names.

Example:
    >>> from darknetpy.evaluate import evaluate                         # doctest: +SKIP
    >>> metrics = evaluate("yolov4-tiny.cfg", "obj.data", "yolov4-tiny_final.weights")
    >>> print(metrics.map.report(metrics.names)); metrics.map50, metrics.coco.AP50
"""

from __future__ import annotations

from .evaluation import *
from .evaluation import __all__  # noqa: F401
