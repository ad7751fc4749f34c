"""What ``predict`` and ``detect`` return: :class:`Prediction` (one image) of :class:`Detection`
records (one (box, class) pair in pixels of the original image), built from the detection arrays by
:func:`prediction` (the last step of :mod:`darknetpy.inference.pipeline`).

:class:`Detection` is the one record of that name in darknetpy: the detection arrays' entries are
:class:`~darknetpy.model.heads.detections.DarknetDetection`, the evaluation's inputs
:class:`~darknetpy.evaluation.records.ScoredBox`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..model.heads.detections import Detections

__all__ = ["Box", "Detection", "Prediction", "prediction"]


@dataclass(frozen=True)
class Box:
    """A box in pixels of the original image: darknet's ``(x - w/2) * im.w`` etc., not rounded,
    not clipped (boxes may extend past the image, as darknet's do)."""

    left: float
    top: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height

    @property
    def center(self) -> tuple[float, float]:
        return self.left + self.width / 2, self.top + self.height / 2

    def xyxy(self) -> tuple[float, float, float, float]:
        """``(left, top, right, bottom)``."""
        return self.left, self.top, self.right, self.bottom

    def xywh(self) -> tuple[float, float, float, float]:
        """``(left, top, width, height)`` (COCO's order)."""
        return self.left, self.top, self.width, self.height


@dataclass(frozen=True)
class Detection:
    """One (box, class) pair above the threshold, as darknet lists it.

    Attributes:
        class_id: the class index.
        name: the class name (the id as text when the model has no names).
        score: darknet's ``prob``: objectness × class probability.
        box: the box in pixels of the original image.
        objectness: the box's objectness (1 for ``[region]`` heads, as in darknet).
        relative: darknet's ``(x, y, w, h)``: centre and size relative to the image.
        box_index: position of the box in darknet's detection array after NMS; detections of
            several classes on one box share it.
    """

    class_id: int
    name: str
    score: float
    box: Box
    objectness: float
    relative: tuple[float, float, float, float]
    box_index: int

    def to_dict(self) -> dict[str, Any]:
        x, y, w, h = self.relative
        b = self.box
        return {
            "class_id": self.class_id,
            "name": self.name,
            "confidence": self.score,
            "objectness": self.objectness,
            "box": {"left": b.left, "top": b.top, "width": b.width, "height": b.height},
            "relative_coordinates": {"center_x": x, "center_y": y, "width": w, "height": h},
        }


@dataclass(frozen=True)
class Prediction:
    """The detections of one image, best score first.

    Attributes:
        source: the path, or ``<array i>`` / ``<tensor i>`` for in-memory images.
        width, height: the original image size in pixels.
        detections: every (box, class) pair above the threshold after NMS.
    """

    source: str
    width: int
    height: int
    detections: tuple[Detection, ...]

    def __len__(self) -> int:
        return len(self.detections)

    def __iter__(self) -> Iterator[Detection]:
        return iter(self.detections)

    def __getitem__(self, i: int) -> Detection:
        return self.detections[i]

    def to_dict(self) -> dict[str, Any]:
        return {
            "filename": self.source,
            "width": self.width,
            "height": self.height,
            "objects": [d.to_dict() for d in self.detections],
        }


def prediction(source: str, size: tuple[int, int], dets: Detections, thresh: float,
               names: Sequence[str],
               kept: Callable[[np.ndarray, float], np.ndarray] | None = None) -> Prediction:
    """One image's :class:`Prediction` from its detection arrays after NMS: a :class:`Detection`
    per (box, class) the head's threshold rule keeps (``kept(probs, thresh)``,
    :meth:`DetectionHead.score_kept`; default Darknet's ``prob > thresh``), best score first (a
    stable sort: ties keep darknet's order).

    Args:
        source: the image's name.
        size: the original image's (width, height) in pixels.
        dets: boxes relative to the image (:func:`network_detections`).
        names: class names (a class past them is named by its id).
    """
    w, h = size
    mask = dets.probs > np.float32(thresh) if kept is None else kept(dets.probs, thresh)
    box_ids, class_ids = np.nonzero(mask)
    boxes = dets.boxes.astype(np.float32)
    out = []
    for b, c in zip(box_ids.tolist(), class_ids.tolist()):
        x, y, bw, bh = (float(v) for v in boxes[b])
        pixel = Box((x - bw / 2) * w, (y - bh / 2) * h, bw * w, bh * h)
        name = names[c] if c < len(names) else str(c)
        out.append(Detection(c, name, float(dets.probs[b, c]), pixel, float(dets.objectness[b]),
                             (x, y, bw, bh), b))
    out.sort(key=lambda d: -d.score)  # stable: ties keep darknet's order
    return Prediction(source, w, h, tuple(out))
