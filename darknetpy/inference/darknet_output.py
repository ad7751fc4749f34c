"""What darknet's ``detector test`` shows for one image's detections: the console lines
(``image.c: draw_detections_v3, get_actual_detections``), the drawn image (``draw_detections_v3``,
``get_color``) and an entry of the ``-out`` JSON (``network.c: detection_to_json``, here with pixel
boxes added), and the ``-save_labels`` label files (``test_detector``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from ..data.labels import label_path
from ..errors import UsageError
from ..files import refuse_overwrite

if TYPE_CHECKING:
    from pathlib import Path

    from .inference_model import Prediction

__all__ = ["DONT_SHOW", "class_color", "darknet_json", "draw_detections", "ext_output_lines",
           "write_yolo_labels", "yolo_label_lines"]

#: Darknet's palette for ``get_color`` (``image.c: colors``), RGB.
_PALETTE = ((1, 0, 1), (0, 0, 1), (0, 1, 1), (0, 1, 0), (1, 1, 0), (1, 0, 0))
#: Darknet skips classes whose name starts with this (``get_actual_detections``).
DONT_SHOW = "dont_show"


# ---------------------------------------------------------------- console lines
def _c_round(value: float) -> float:
    """C's ``round``: halves away from zero."""
    return math.copysign(math.floor(abs(value) + 0.5), value)


def _boxes_in_order(
    prediction: Prediction, thresh: float, names: Sequence[str]
) -> list[tuple[Any, int, list[Any]]]:
    """``get_actual_detections`` then the sort by left edge: ``(detection of the best class,
    best class, every detection of that box)`` per box, as ``draw_detections_v3`` prints them."""
    t = np.float32(thresh)
    by_box: dict[int, list[Any]] = {}
    for d in prediction.detections:
        by_box.setdefault(d.box_index, []).append(d)
    selected = []
    for index in sorted(by_box):
        dets = sorted(by_box[index], key=lambda d: d.class_id)
        best, best_prob = None, t
        for d in dets:  # `prob > best_prob`: the first class wins a tie
            if np.float32(d.score) > best_prob and not _hidden(names, d.class_id):
                best, best_prob = d, np.float32(d.score)
        if best is not None:
            selected.append((best, best.class_id, dets))

    def left(item: tuple[Any, int, list[Any]]) -> np.float32:
        x, _, w, _ = item[0].relative
        return np.float32(x) - np.float32(w) / np.float32(2)

    selected.sort(key=left)  # qsort(compare_by_lefts); glibc's merge sort keeps ties in order
    return selected


def _hidden(names: Sequence[str], class_id: int) -> bool:
    return class_id < len(names) and names[class_id].startswith(DONT_SHOW)


def _line(d: Any, name: str, width: int, height: int, ext_output: bool) -> str:
    percent = float(np.float32(d.score) * np.float32(100))
    text = f"{name}: {percent:.0f}%"
    if not ext_output:
        return text
    x, y, w, h = (np.float32(v) for v in d.relative)
    half_w, half_h = w / np.float32(2), h / np.float32(2)
    left = _c_round(float((x - half_w) * np.float32(width)))
    top = _c_round(float((y - half_h) * np.float32(height)))
    bw = _c_round(float(w * np.float32(width)))
    bh = _c_round(float(h * np.float32(height)))
    return (
        f"{text}\t(left_x: {left:4.0f}   top_y: {top:4.0f}   width: {bw:4.0f}   height: {bh:4.0f})"
    )


def ext_output_lines(
    prediction: Prediction, thresh: float, names: Sequence[str], ext_output: bool = True
) -> list[str]:
    """Darknet's console lines for one image (``image.c: draw_detections_v3``).

    One ``name: NN%`` line per box whose best class is above ``thresh``, boxes sorted by their left
    edge, then a line for each other class of that box above ``thresh``. With ``ext_output`` the
    box follows in pixels, rounded as C's ``round``:
    ``name: NN%\\t(left_x: %4.0f   top_y: %4.0f   width: %4.0f   height: %4.0f)``.
    """
    lines = []
    for best, best_class, dets in _boxes_in_order(prediction, thresh, names):
        lines.append(_line(best, best.name, prediction.width, prediction.height, ext_output))
        for d in dets:
            if d.class_id != best_class and np.float32(d.score) > np.float32(thresh):
                lines.append(_line(d, d.name, prediction.width, prediction.height, ext_output))
    return lines


# ---------------------------------------------------------------- drawing
def _get_color(c: int, x: int, maximum: int) -> float:
    """``image.c: get_color``: channel ``c`` of colour ``x`` of ``maximum`` (palette blend)."""
    ratio = np.float32(x) / np.float32(maximum) * np.float32(5)
    i, j = math.floor(ratio), math.ceil(ratio)
    ratio -= np.float32(i)
    return float((np.float32(1) - ratio) * _PALETTE[i][c] + ratio * _PALETTE[j][c])


def class_color(class_id: int, classes: int) -> tuple[int, int, int]:
    """The BGR colour darknet draws class ``class_id`` with (``draw_detections_v3``)."""
    offset = class_id * 123457 % max(1, classes)
    red, green, blue = (_get_color(c, offset, max(1, classes)) for c in (2, 1, 0))
    return int(blue * 255), int(green * 255), int(red * 255)


def draw_detections(
    image_bgr: np.ndarray, prediction: Prediction, thresh: float, names: Sequence[str], classes: int
) -> np.ndarray:
    """A copy of ``image_bgr`` with each box darknet would draw and its label
    (``name: 0.93[, other names]``), lowest score drawn first as in ``draw_detections_v3``."""
    out = image_bgr.copy()
    h, w = out.shape[:2]
    width = max(1, int(h * 0.002))
    boxes = _boxes_in_order(prediction, thresh, names)
    boxes.sort(key=lambda item: np.float32(item[0].score))  # compare_by_probs, ascending
    font_scale = max(0.35, h * 0.02 / 22)
    thickness = max(1, round(font_scale * 1.5))
    for best, best_class, dets in boxes:
        x, y, bw, bh = best.relative
        # clamp in float first: an untrained network's boxes can be inf or nan
        left = _pixel((x - bw / 2.0) * w, w - 1)
        right = _pixel((x + bw / 2.0) * w, w - 1)
        top = _pixel((y - bh / 2.0) * h, h - 1)
        bottom = _pixel((y + bh / 2.0) * h, h - 1)
        color = class_color(best_class, classes)
        cv2.rectangle(out, (left, top), (right, bottom), color, width)
        label = f"{best.name}: {best.score:.2f}" + "".join(
            f", {d.name}" for d in dets if d.class_id != best_class and d.score > thresh
        )
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        y0 = max(0, top - th - base - width)
        cv2.rectangle(out, (left, y0), (left + tw + 2, y0 + th + base + 2), color, -1)
        text_color = (0, 0, 0) if sum(color) > 382 else (255, 255, 255)
        cv2.putText(
            out,
            label,
            (left + 1, y0 + th + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            text_color,
            thickness,
            cv2.LINE_AA,
        )
    return out


# ---------------------------------------------------------------- JSON
def darknet_json(prediction: Prediction, frame_id: int) -> dict[str, Any]:
    """One entry of darknet's ``-out`` JSON (``network.c: detection_to_json``) plus the image size
    and each object's ``box`` in pixels (left, top, width, height; not rounded, not clipped)."""
    return {
        "frame_id": frame_id,
        "filename": prediction.source,
        "width": prediction.width,
        "height": prediction.height,
        "objects": [d.to_dict() for d in prediction.detections],
    }


def _pixel(value: float, limit: int) -> int:
    """``value`` clamped to [0, limit] as an int; NaN gives 0."""
    return int(min(max(value, 0.0), float(limit))) if value == value else 0


def yolo_label_lines(prediction: Prediction, thresh: float) -> list[str]:
    """Darknet's ``-save_labels`` lines (``detector.c: test_detector``): per box, in detection
    order, the class of highest probability above ``thresh`` (the first on ties) and the box
    relative to the image, ``"%d %2.4f %2.4f %2.4f %2.4f"``."""
    best: dict[int, Any] = {}
    for d in prediction.detections:
        kept = best.get(d.box_index)
        if d.score > thresh and (kept is None or d.score > kept.score or
                                 (d.score == kept.score and d.class_id < kept.class_id)):
            best[d.box_index] = d
    return [f"{d.class_id} {d.relative[0]:2.4f} {d.relative[1]:2.4f} {d.relative[2]:2.4f} "
            f"{d.relative[3]:2.4f}" for _, d in sorted(best.items())]  # fmt: skip


def write_yolo_labels(image: Path, prediction: Prediction, thresh: float,
                      inputs: Sequence[Path] = ()) -> Path:
    """Write :func:`yolo_label_lines` to the label file Darknet reads for ``image``
    (:func:`~darknetpy.data.labels.label_path`: beside it, or under ``labels/`` for an
    ``images/`` folder), replacing it; returns its path.

    Raises:
        UsageError: the image has no label-file name (an unknown extension) or the label file
            would be one of ``inputs``.
    """
    path = label_path(image)
    if path.suffix != ".txt":
        raise UsageError(f"{image}: -save_labels cannot name a label file for this extension "
                         "(Darknet's 'Failed to infer label file name')")  # fmt: skip
    refuse_overwrite(path, *inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in yolo_label_lines(prediction, thresh)))
    return path
