"""``darknet detector valid`` result files (``src/detector.c: validate_detector, print_cocos,
print_detector_detections``): COCO json and VOC ``comp4_det_test_<name>.txt``."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError, UsageError
from .records import ScoredBox

# detector.c: coco_ids, the official COCO category id of each of the 80 classes of coco.names.
COCO_IDS: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
)  # fmt: skip


def basecfg(path: str | Path) -> str:
    """``utils.c: basecfg``: the file name after the last ``/`` (then ``\\``), cut at its first dot."""
    name = str(path).rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
    return name.split(".", 1)[0]


def coco_image_id(path: str | Path) -> int:
    """``print_cocos``: ``atoi(basecfg(path))``, so ``COCO_val2014_000000000042.jpg`` gives 0."""
    found = re.match(r"\s*([+-]?\d+)", basecfg(path))
    return int(found.group(1)) if found else 0


def read_coco_image_ids(annotation_file: str | Path) -> dict[str, int]:
    """Map each image's file name (and its basename without extension) to its id in a COCO json."""
    path = Path(annotation_file)
    try:
        data = json.loads(path.read_text())
        ids: dict[str, int] = {}
        for image in data["images"]:
            name = Path(image["file_name"]).name
            ids[name] = int(image["id"])
            ids.setdefault(basecfg(name), int(image["id"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a readable COCO annotation file ({exc})") from None
    return ids


def read_coco_category_ids(annotation_file: str | Path) -> tuple[int, ...]:
    """The category ids of a COCO json sorted by id: class ``k`` of a dataset converted with
    :func:`darknetpy.data.convert_datasets.convert_coco` is category ``ids[k]``."""
    path = Path(annotation_file)
    try:
        return tuple(sorted(int(c["id"]) for c in json.loads(path.read_text())["categories"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a readable COCO annotation file ({exc})") from None


def _valid_corners(box: Sequence[float], w: int, h: int, one_based: bool) -> tuple[float, ...]:
    """Corners as ``print_cocos`` / ``print_detector_detections``: double halves stored as float."""
    f32 = np.float32
    x, y, bw, bh = (float(f32(v)) for v in box)
    off = 1.0 if one_based else 0.0
    xmin, xmax = f32(x - bw / 2.0 + off), f32(x + bw / 2.0 + off)
    ymin, ymax = f32(y - bh / 2.0 + off), f32(y + bh / 2.0 + off)
    low = f32(off)
    xmin, ymin = max(xmin, low), max(ymin, low)
    xmax, ymax = min(xmax, f32(w)), min(ymax, f32(h))
    return float(xmin), float(ymin), float(xmax), float(ymax)


def format_coco_results(
    images: Sequence[tuple[str | Path, tuple[int, int], Sequence[ScoredBox]]],
    *,
    category_ids: Sequence[int] | None = COCO_IDS,
    image_ids: Mapping[str, int] | None = None,
) -> str:
    """``detector valid`` with ``eval=coco``: the text of ``coco_results.json``.

    Args:
        images: per image its path, ``(width, height)`` and detections with boxes in **pixels**.
        category_ids: class index -> category id (Darknet's ``coco_ids``); None: the class index.
        image_ids: file name (or basename without extension) -> image id, e.g. from
            :func:`read_coco_image_ids`; images not in it, or all when None, use Darknet's
            ``atoi(basename)`` rule.
    """
    lines = []
    for path, (w, h), dets in images:
        name = Path(str(path)).name
        if image_ids is not None and (name in image_ids or basecfg(name) in image_ids):
            image_id = image_ids.get(name, image_ids.get(basecfg(name), 0))
        else:
            image_id = coco_image_id(path)
        for box, probs in dets:
            xmin, ymin, xmax, ymax = _valid_corners(box, w, h, one_based=False)
            bw, bh = (
                float(np.float32(xmax) - np.float32(xmin)),
                float(np.float32(ymax) - np.float32(ymin)),
            )
            for k, prob in enumerate(probs):
                if prob > 0:
                    if category_ids is not None and k >= len(category_ids):
                        raise UsageError(
                            f"class {k} has no COCO category id "
                            f"({len(category_ids)} known); pass category_ids"
                        )
                    cat = category_ids[k] if category_ids is not None else k
                    lines.append(
                        f'{{"image_id":{image_id}, "category_id":{cat}, "bbox":['
                        f"{xmin:f}, {ymin:f}, {bw:f}, {bh:f}], "
                        f'"score":{float(np.float32(prob)):f}}}'
                    )
    return "[\n" + ",\n".join(lines) + "\n]\n"


def format_voc_results(
    images: Sequence[tuple[str | Path, tuple[int, int], Sequence[ScoredBox]]], classes: int
) -> list[str]:
    """``detector valid`` with ``eval=voc``: per class the text of ``comp4_det_test_<name>.txt``.

    Lines are ``<basename> <prob> <xmin> <ymin> <xmax> <ymax>`` with 1-based pixel corners clipped
    to ``[1, w]`` × ``[1, h]`` (``print_detector_detections``); boxes are given in pixels.
    """
    out: list[list[str]] = [[] for _ in range(classes)]
    for path, (w, h), dets in images:
        ident = basecfg(path)
        for box, probs in dets:
            xmin, ymin, xmax, ymax = _valid_corners(box, w, h, one_based=True)
            for k, prob in enumerate(probs):
                if prob:
                    out[k].append(
                        f"{ident} {float(np.float32(prob)):f} {xmin:f} {ymin:f} {xmax:f} {ymax:f}\n"
                    )
    return ["".join(lines) for lines in out]
