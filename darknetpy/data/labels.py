"""YOLO label files: where they are and what they hold (no torch, no model).

Mirrors ``utils.c: replace_image_to_label, find_replace, find_replace_extension, trim`` and
``data.c: read_boxes``. One deliberate difference: Darknet reads a label file as a stream of
``%d %f %f %f %f`` tokens and stops at the first token that does not parse (a 4-column line shifts
every later box by one field); darknetpy reads it line by line, drops a malformed line, counts it
in :class:`LabelReport` and goes on. Boxes that Darknet would drop later anyway (NaN, a class
outside ``[0, classes)``, zero or negative size, ``x == y == 0``, entirely outside the image) and
values that cannot be a relative box (x or y outside [0, 1], w or h above 1: Darknet would clamp
such a box to a different one) are dropped here and counted; boxes with valid values whose edges
stick out of the image are kept (Darknet clamps them) and counted as ``clipped``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["LABEL_DIR_SUBSTITUTIONS", "LABEL_EXTENSIONS", "LabelReport", "label_path", "read_boxes",
           "read_labels"]

#: ``replace_image_to_label``: (find, replace) pairs applied in this order, each to the FIRST
#: occurrence only. There is deliberately no generic ``/images/ -> /labels/``.
LABEL_DIR_SUBSTITUTIONS: tuple[tuple[str, str], ...] = (
    ("/images/train2017/", "/labels/train2017/"),
    ("/images/val2017/", "/labels/val2017/"),
    ("/JPEGImages/", "/labels/"),
    ("\\images\\train2017\\", "\\labels\\train2017\\"),
    ("\\images\\val2017\\", "\\labels\\val2017\\"),
    ("\\images\\train2014\\", "\\labels\\train2014\\"),
    ("\\images\\val2014\\", "\\labels\\val2014\\"),
    ("/images/train2014/", "/labels/train2014/"),
    ("/images/val2014/", "/labels/val2014/"),
    ("\\JPEGImages\\", "\\labels\\"),
)

#: ``replace_image_to_label``: extensions replaced by ``.txt``, in this order, only at the very end
#: of the path and case-sensitively (``.Jpg`` and ``.webp`` are left alone, as in Darknet).
LABEL_EXTENSIONS: tuple[str, ...] = (
    ".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG",
    ".bmp", ".BMP", ".ppm", ".PPM", ".tiff", ".TIFF",
)


def label_path(image_path: str | Path) -> Path:
    """The label file Darknet reads for ``image_path`` (``replace_image_to_label``).

    The directory substitutions of :data:`LABEL_DIR_SUBSTITUTIONS` (first occurrence each), then
    spaces and tabs trimmed at both ends, then the first matching extension of
    :data:`LABEL_EXTENSIONS` at the end of the path becomes ``.txt``. An unknown extension is left
    as is (Darknet prints "Failed to infer label file name"), so the "label file" is then the image
    path itself with that extension; :func:`read_labels` reports it as not a label file.

    Example:
        >>> label_path("/data/coco/images/train2017/000000000009.jpg").as_posix()
        '/data/coco/labels/train2017/000000000009.txt'
    """
    text = str(image_path)
    for find, replace in LABEL_DIR_SUBSTITUTIONS:
        text = text.replace(find, replace, 1)
    text = text.strip(" \t")
    for ext in LABEL_EXTENSIONS:
        if text.endswith(ext):
            text = text[: -len(ext)] + ".txt"
    return Path(text)


@dataclass(frozen=True)
class LabelReport:
    """What :func:`read_labels` found in one label file.

    Attributes:
        path: the label file.
        missing: the file does not exist or cannot be read (the image is background, as Darknet).
        not_label_file: the path does not end in ``.txt`` (unknown image extension); not read.
        boxes: boxes kept.
        malformed: lines that are not ``class x y w h`` (class an integer, four numbers).
        non_finite: boxes with a NaN or infinite value.
        bad_class: boxes whose class is negative or ``>= classes``.
        invalid: boxes with ``w <= 0`` or ``h <= 0``, ``w > 1`` or ``h > 1``, x or y outside
            [0, 1], or ``x == y == 0`` (Darknet's "no box" marker).
        clipped: kept boxes that stick out of [0, 1] (Darknet clamps their edges).
    """

    path: Path
    missing: bool = False
    not_label_file: bool = False
    boxes: int = 0
    malformed: int = 0
    non_finite: int = 0
    bad_class: int = 0
    invalid: int = 0
    clipped: int = 0

    @property
    def dropped(self) -> int:
        """Lines or boxes dropped for any reason."""
        return self.malformed + self.non_finite + self.bad_class + self.invalid

    @property
    def ok(self) -> bool:
        """Nothing to report (an existing file whose every line became a box)."""
        return not (self.missing or self.not_label_file or self.dropped or self.clipped)


_EPS = 1e-6  # annotation tools round; a box 1e-7 past the border is not worth a report


def _parse_line(fields: list[str]) -> tuple[int, float, float, float, float] | None:
    if len(fields) != 5:
        return None
    try:
        cls = int(fields[0])
        x, y, w, h = (float(v) for v in fields[1:])
    except ValueError:
        return None
    return cls, x, y, w, h


def read_labels(path: str | Path, classes: int | None = None) -> tuple[np.ndarray, LabelReport]:
    """Read a YOLO label file (``read_boxes``), dropping what Darknet cannot use. Never raises.

    Args:
        path: the label file (see :func:`label_path`).
        classes: the number of classes; boxes with ``class >= classes`` are dropped. ``None``
            keeps every non-negative class (the loader still drops them, as Darknet does).

    Returns:
        ``(boxes, report)``: float32 array (N, 5) with rows ``class, x, y, w, h`` (centre and size
        relative to the image), in file order; and a :class:`LabelReport`.
    """
    path = Path(path)
    empty = np.zeros((0, 5), np.float32)
    if path.suffix != ".txt":
        # Darknet would fscanf the image itself and find no box.
        return empty, LabelReport(path, not_label_file=True)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except (OSError, ValueError):
        return empty, LabelReport(path, missing=True)
    rows: list[tuple[int, float, float, float, float]] = []
    malformed = non_finite = bad_class = invalid = clipped = 0
    for raw in text.splitlines():
        fields = raw.split()
        if not fields:
            continue
        row = _parse_line(fields)
        if row is None:
            malformed += 1
            continue
        cls, x, y, w, h = row
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            non_finite += 1
        elif cls < 0 or (classes is not None and cls >= classes):
            bad_class += 1
        elif (
            not (0 < w <= 1 + _EPS and 0 < h <= 1 + _EPS)
            or not (-_EPS <= x <= 1 + _EPS and -_EPS <= y <= 1 + _EPS)
            or (x == 0 and y == 0)
        ):
            invalid += 1
        else:
            if min(x - w / 2, y - h / 2) < -_EPS or max(x + w / 2, y + h / 2) > 1 + _EPS:
                clipped += 1
            rows.append(row)
    boxes = np.array(rows, dtype=np.float32).reshape(-1, 5)
    report = LabelReport(
        path,
        boxes=len(rows),
        malformed=malformed,
        non_finite=non_finite,
        bad_class=bad_class,
        invalid=invalid,
        clipped=clipped,
    )
    return boxes, report


_C_INT = re.compile(r"[+-]?\d+")


def read_boxes(path: str | Path) -> list[tuple[int, float, float, float, float]]:
    """Label lines ``class x y w h`` as ``data.c: read_boxes`` reads them: unfiltered, as ``detector
    map`` and ``calc_anchors`` read them (training filters them: :func:`read_labels`).

    Values are read five at a time (``fscanf("%d %f %f %f %f")``) until one does not parse; a
    missing file gives no boxes (Darknet logs it to ``bad.list``).
    """
    try:
        tokens = Path(path).read_text(errors="replace").split()
    except OSError:
        return []
    boxes = []
    for i in range(0, len(tokens) - 4, 5):
        if not _C_INT.fullmatch(tokens[i]):
            break  # "%d" fails (or stops inside the token, misaligning the rest): Darknet stops
        try:
            x, y, w, h = (float(t) for t in tokens[i + 1 : i + 5])
        except ValueError:
            break
        boxes.append((int(tokens[i]), x, y, w, h))
    return boxes

