"""Darknet's detection arrays, and the one path from head outputs to detections.

:func:`network_detections` is ``network.c: get_network_boxes`` followed by NMS: every head
decodes its own candidates (:meth:`DetectionHead.detections`), the arrays are joined in layer order
and moved from the network input to the image (``yolo_layer.c: correct_yolo_boxes``), then the
*last* head's NMS runs
(Darknet's commands take the last detection layer's ``nms_kind``). :meth:`Network.detect`, the
inference model, evaluation and training's mAP all come through here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from ...errors import CfgError, UsageError

if TYPE_CHECKING:
    from .base import DetectionHead

Size = tuple[int, int]

__all__ = [
    "DarknetDetection",
    "DetectionRow",
    "Detections",
    "correct_yolo_boxes",
    "get_network_boxes",
    "network_detections",
]


class DetectionRow(NamedTuple):
    """One (box, class) pair above the threshold; the box is relative to the image."""

    class_id: int
    prob: float
    x: float
    y: float
    w: float
    h: float
    objectness: float


@dataclass(frozen=True, eq=False)
class DarknetDetection:
    """One entry of a :class:`Detections` array (darknet's ``detection`` struct): box (x, y, w,
    h), objectness and the per-class prob vector."""

    bbox: tuple[float, float, float, float]
    objectness: float
    probs: np.ndarray  # (classes,) float32; 0 where <= thresh or suppressed by NMS
    uncertainty: tuple[float, float, float, float] | None = None  # [Gaussian_yolo] σ of x, y, w, h

    @property
    def best_class(self) -> int:
        """Index of the highest class probability."""
        return int(np.argmax(self.probs))


@dataclass(frozen=True, eq=False)
class Detections:
    """darknet's ``detection`` array for one image, as parallel arrays in darknet's order.

    Attributes:
        boxes: (n, 4) float32 ``x, y, w, h`` (centre and size).
        objectness: (n,) float32.
        probs: (n, classes) float32, ``objectness * class`` zeroed where <= thresh.
        uncertainty: (n, 4) float32 for ``[Gaussian_yolo]`` heads, else None.
    """

    boxes: np.ndarray
    objectness: np.ndarray
    probs: np.ndarray
    uncertainty: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.objectness)

    def __getitem__(self, i: int) -> DarknetDetection:
        uc = None if self.uncertainty is None else tuple(float(v) for v in self.uncertainty[i])
        return DarknetDetection(
            tuple(float(v) for v in self.boxes[i]),  # type: ignore[arg-type]
            float(self.objectness[i]),
            self.probs[i],
            uc,
        )  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[DarknetDetection]:
        return (self[i] for i in range(len(self)))

    @property
    def classes(self) -> int:
        return self.probs.shape[1]

    def take(self, index: np.ndarray) -> Detections:
        """The detections at ``index`` (an integer array), in that order."""
        uc = None if self.uncertainty is None else self.uncertainty[index]
        return Detections(self.boxes[index], self.objectness[index], self.probs[index], uc)

    def with_boxes(self, boxes: np.ndarray) -> Detections:
        return Detections(boxes, self.objectness, self.probs, self.uncertainty)

    @staticmethod
    def empty(classes: int) -> Detections:
        return Detections(
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.float32),
            np.zeros((0, classes), np.float32),
        )

    @staticmethod
    def concat(parts: Sequence[Detections], classes: int) -> Detections:
        """Join the detections of several heads (darknet's ``dets += count``)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return Detections.empty(classes)
        uc = None
        if any(p.uncertainty is not None for p in parts):
            uc = np.concatenate(
                [
                    p.uncertainty
                    if p.uncertainty is not None
                    else np.zeros((len(p), 4), np.float32)
                    for p in parts
                ]
            )
        return Detections(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.objectness for p in parts]),
            np.concatenate([p.probs for p in parts]),
            uc,
        )

    def rows(self, thresh: float,
             kept: Callable[[np.ndarray, float], np.ndarray] | None = None) -> list[DetectionRow]:
        """Every (detection, class) with prob > thresh, in array order then class order
        (what ``draw_detections_v3`` prints); ``kept(probs, thresh)`` is the head's rule instead
        (:meth:`DetectionHead.score_kept`, e.g. YOLOX's ``>=``)."""
        mask = self.probs > np.float32(thresh) if kept is None else kept(self.probs, thresh)
        det, cls = np.nonzero(mask)
        return [
            DetectionRow(
                int(c),
                float(self.probs[d, c]),
                *(float(v) for v in self.boxes[d]),
                float(self.objectness[d]),
            )
            for d, c in zip(det, cls)
        ]


def correct_yolo_boxes(
    boxes: np.ndarray, image_size: Size, net_size: Size, letter_box: bool, relative: bool = True
) -> np.ndarray:
    """Network-relative boxes to image-relative ones (``yolo_layer.c: correct_yolo_boxes``).

    With ``letter_box`` the image occupied ``new_w x new_h`` of the input, computed with integer
    division, and offsets use float halves; without it the correction is the identity. Boxes are
    not clipped. ``relative=False`` gives pixels.
    """
    w, h = image_size
    netw, neth = net_size
    if letter_box:
        if np.float32(netw) / np.float32(w) < np.float32(neth) / np.float32(h):
            new_w, new_h = netw, (h * netw) // w
        else:
            new_w, new_h = (w * neth) // h, neth
    else:
        new_w, new_h = netw, neth
    deltaw, deltah = np.float32(netw - new_w), np.float32(neth - new_h)
    out = boxes.astype(np.float32, copy=True)
    with np.errstate(all="ignore"):  # a letterbox with new_w or new_h 0 gives inf, as in C
        ratiow = np.float32(new_w) / np.float32(netw)
        ratioh = np.float32(new_h) / np.float32(neth)
        out[:, 0] = (out[:, 0].astype(np.float64) - float(deltaw) / 2.0 / netw) / np.float64(ratiow)
        out[:, 1] = (out[:, 1].astype(np.float64) - float(deltah) / 2.0 / neth) / np.float64(ratioh)
        out[:, 2] *= np.float32(1) / ratiow
        out[:, 3] *= np.float32(1) / ratioh
        if not relative:
            out[:, 0] *= np.float32(w)
            out[:, 2] *= np.float32(w)
            out[:, 1] *= np.float32(h)
            out[:, 3] *= np.float32(h)
    return out


def _head_classes(heads: Sequence[DetectionHead]) -> int:
    classes = {layer.classes for layer in heads}
    if len(classes) > 1:
        listing = ", ".join(f"{layer.where()} classes={layer.classes}" for layer in heads)
        raise CfgError(
            f"detection layers disagree on classes= ({listing}); darknet sizes every "
            "detection by the first one: give all heads the same classes="
        )
    return classes.pop()


def _image_sizes(image_size: Size | Sequence[Size], batch: int) -> list[Size]:
    if len(image_size) == 2 and all(isinstance(v, (int, np.integer)) for v in image_size):
        sizes = [(int(image_size[0]), int(image_size[1]))] * batch  # type: ignore[arg-type]
    else:
        sizes = [(int(s[0]), int(s[1])) for s in image_size]  # type: ignore[index]
        if len(sizes) != batch:
            raise UsageError(
                f"got {len(sizes)} image sizes for a batch of {batch} images; give one "
                "(width, height) for all or one per image"
            )
    for w, h in sizes:
        if w <= 0 or h <= 0:
            raise UsageError(f"image size ({w}, {h}) must be positive (width, height) in pixels")
    return sizes


def get_network_boxes(
    heads: Sequence[DetectionHead],
    outputs: Sequence[torch.Tensor],
    image_size: Size | Sequence[Size],
    net_size: Size,
    thresh: float = 0.25,
    hier_thresh: float = 0.5,
    letter_box: bool = False,
    relative: bool = True,
) -> list[Detections]:
    """Every head's detections per image, boxes relative to the image (``get_network_boxes``).

    Args:
        heads: the detection layers, in layer order (``Network.heads``).
        outputs: their outputs, in the same order.
        image_size: the original image's (width, height), one for all images or one per image.
        net_size: the network input (width, height) the outputs were computed at.
        thresh: objectness and class-probability threshold.
        hier_thresh: accepted for darknet's signature; its ``[region]`` path does not use it.
        letter_box: whether the image was letterboxed into the input.
        relative: False gives pixels (darknet's ``relative=0``).

    Raises:
        CfgError: heads with different ``classes=``.
    """
    del hier_thresh
    if len(heads) != len(outputs):
        raise UsageError(f"{len(outputs)} outputs for {len(heads)} detection layers")
    classes = _head_classes(heads)
    batch = outputs[0].shape[0] if outputs else 0
    sizes = _image_sizes(image_size, batch)
    per_head = [layer.detections(output, net_size, thresh) for layer, output in zip(heads, outputs)]
    result = []
    for b in range(batch):
        dets = Detections.concat([head[b] for head in per_head], classes)
        boxes = correct_yolo_boxes(dets.boxes, sizes[b], net_size, letter_box, relative)
        result.append(dets.with_boxes(boxes))
    return result


def network_detections(
    heads: Sequence[DetectionHead],
    outputs: Sequence[torch.Tensor],
    image_size: Size | Sequence[Size],
    net_size: Size,
    thresh: float = 0.25,
    nms: float = 0.45,
    letter_box: bool = False,
    hier_thresh: float = 0.5,
) -> list[Detections]:
    """:func:`get_network_boxes`, then the last head's NMS at ``nms`` (0 skips NMS, as darknet
    does)."""
    dets = get_network_boxes(heads, outputs, image_size, net_size, thresh, hier_thresh, letter_box)
    if nms:
        dets = [heads[-1].nms(d, nms) for d in dets]
    return dets
