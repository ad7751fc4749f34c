"""Pascal VOC XML (``scripts/voc_label.py``'s conversion) or COCO JSON to Darknet's layout: images
with a ``.txt`` label beside them, ``<name>.names``, ``train.txt``/``valid.txt`` and ``<name>.data``.

Reading Darknet's label files is :mod:`darknetpy.data.labels`; checking a dataset is
:mod:`darknetpy.data.check`.
"""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from ..errors import DataError, UsageError
from .labels import label_path

IMAGE_MODES = MappingProxyType({
    "copy": "copy each image into <out>/obj/",
    "hardlink": "hard-link each image into <out>/obj/ (same file system)",
    "symlink": "symbolic link in <out>/obj/ pointing to the original image",
    "inplace": "leave images where they are; labels go where Darknet looks (label_path)",
})  # fmt: skip
DIFFICULT_MODES = MappingProxyType({
    "skip": "drop objects marked difficult (scripts/voc_label.py)",
    "keep": "write them as ordinary labels",
    "separate": "write them to a parallel list for the .data key difficult= (detector map)",
})  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Writing Darknet's layout


@dataclass(frozen=True)
class Sample:
    """One image to convert: its source file and its boxes, relative ``(class, x, y, w, h)``."""

    image: Path
    boxes: tuple[tuple[int, float, float, float, float], ...]
    difficult: tuple[tuple[int, float, float, float, float], ...] = ()


@dataclass(frozen=True)
class ConversionReport:
    """What a converter wrote and what it left out."""

    data_file: Path
    names: tuple[str, ...]
    train: int
    valid: int
    boxes: int
    skipped: tuple[str, ...] = field(default=())  # one line per object or image left out


def format_label_line(box: Sequence[float]) -> str:
    """A Darknet label line, ``class x y w h`` with six decimals."""
    cls, x, y, w, h = box
    return f"{int(cls)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n"


def _relative_box(
    cls: int, x0: float, y0: float, x1: float, y1: float, width: float, height: float
) -> tuple[int, float, float, float, float] | None:
    """Corners in pixels (0-based, exclusive end) to a relative centre box, clipped to the image;
    None if nothing is left."""
    x0, x1 = max(0.0, min(x0, width)), max(0.0, min(x1, width))
    y0, y1 = max(0.0, min(y0, height)), max(0.0, min(y1, height))
    if x1 <= x0 or y1 <= y0:
        return None
    return cls, (x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height


def _place_image(src: Path, dst: Path, mode: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    if mode == "copy":
        shutil.copy2(src, dst)
    elif mode == "hardlink":
        os.link(src, dst)
    else:
        dst.symlink_to(src.resolve())


def write_darknet_dataset(
    samples: Sequence[Sample],
    names: Sequence[str],
    out_dir: str | Path,
    *,
    name: str = "obj",
    valid_fraction: float = 0.2,
    seed: int = 0,
    images: str = "copy",
    skipped: Sequence[str] = (),
) -> ConversionReport:
    """Write samples in Darknet's layout under ``out_dir`` and return what was written.

    Layout: ``obj/<image>`` with ``obj/<stem>.txt`` beside it (or, with ``images="inplace"``, labels
    at :func:`label_path` of the original image), ``<name>.names``, ``train.txt``, ``valid.txt`` (paths
    relative to ``out_dir``, absolute for ``inplace``), ``<name>.data``, and for samples with
    difficult objects ``difficult/<stem>.txt`` + ``difficult.txt`` (the ``difficult=`` list).

    Args:
        valid_fraction: share of images (rounded, chosen with ``seed``) listed in ``valid.txt``.
        images: a key of :data:`IMAGE_MODES`.
    """
    if images not in IMAGE_MODES:
        raise UsageError(f"images={images!r}: use one of {', '.join(IMAGE_MODES)}")
    if not 0 <= valid_fraction <= 1:
        raise UsageError(f"valid_fraction={valid_fraction}: must be within 0..1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    listed: list[str] = []
    used: set[str] = set()
    has_difficult = any(s.difficult for s in samples)
    difficult_listed: list[str] = []
    for sample in samples:
        stem, suffix = sample.image.stem, sample.image.suffix
        unique, n = stem, 1
        while unique.lower() in used:  # same name from two folders: keep both
            unique, n = f"{stem}_{n}", n + 1
        used.add(unique.lower())
        if images == "inplace":
            image = sample.image.resolve()
            label = label_path(image)
            entry = str(image)
        else:
            image = out / "obj" / f"{unique}{suffix}"
            _place_image(sample.image, image, images)
            label = label_path(image)
            entry = image.relative_to(out).as_posix()
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("".join(format_label_line(b) for b in sample.boxes))
        listed.append(entry)
        if has_difficult:
            dif = out / "difficult" / f"{unique}.txt"
            dif.parent.mkdir(parents=True, exist_ok=True)
            dif.write_text("".join(format_label_line(b) for b in sample.difficult))
            difficult_listed.append(f"difficult/{unique}{suffix}")
    order = np.random.default_rng(seed).permutation(len(listed))
    n_valid = round(valid_fraction * len(listed))
    is_valid = np.zeros(len(listed), dtype=bool)
    is_valid[order[:n_valid]] = True
    train = [p for p, v in zip(listed, is_valid) if not v]
    valid = [p for p, v in zip(listed, is_valid) if v]
    (out / "train.txt").write_text("".join(f"{p}\n" for p in train))
    (out / "valid.txt").write_text("".join(f"{p}\n" for p in valid))
    (out / f"{name}.names").write_text("".join(f"{n}\n" for n in names))
    lines = [
        f"classes = {len(names)}",
        "train = train.txt",
        "valid = valid.txt",
        f"names = {name}.names",
        "backup = backup/",
    ]
    if has_difficult:
        (out / "difficult.txt").write_text(
            "".join(f"{p}\n" for p, v in zip(difficult_listed, is_valid) if v)
        )
        lines.append("difficult = difficult.txt")
    data_file = out / f"{name}.data"
    data_file.write_text("\n".join(lines) + "\n")
    return ConversionReport(
        data_file,
        tuple(names),
        len(train),
        len(valid),
        sum(len(s.boxes) for s in samples),
        tuple(skipped),
    )


def _xml_text(node: ET.Element | None, tag: str, where: str) -> str:
    found = node.find(tag) if node is not None else None
    if found is None or found.text is None:
        raise DataError(f"{where}: missing <{tag}>")
    return found.text.strip()


def read_voc_annotation(
    xml_file: str | Path,
) -> tuple[str, int, int, list[tuple[str, bool, float, float, float, float]]]:
    """One Pascal VOC XML: ``(filename, width, height, [(name, difficult, xmin, ymin, xmax, ymax)])``
    with VOC's 1-based pixel corners as written."""
    where = str(xml_file)
    try:
        root = ET.parse(xml_file).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DataError(f"{where}: not a readable VOC annotation ({exc})") from None
    size = root.find("size")
    try:
        width = int(float(_xml_text(size, "width", where)))
        height = int(float(_xml_text(size, "height", where)))
        objects = []
        for obj in root.iter("object"):
            dif = obj.find("difficult")
            difficult = dif is not None and (dif.text or "0").strip() not in ("", "0")
            box = obj.find("bndbox")
            corners = [float(_xml_text(box, t, where)) for t in ("xmin", "ymin", "xmax", "ymax")]
            objects.append((_xml_text(obj, "name", where), difficult, *corners))
    except ValueError as exc:
        raise DataError(f"{where}: bad number ({exc})") from None
    filename = root.findtext("filename", default="").strip()
    return filename, width, height, objects  # type: ignore[return-value]


def _find_image(folder_candidates: Iterable[Path], filename: str, stem: str) -> Path | None:
    for folder in folder_candidates:
        if filename and (folder / filename).is_file():
            return folder / filename
        for ext in (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG", ".BMP"):
            if (folder / f"{stem}{ext}").is_file():
                return folder / f"{stem}{ext}"
    return None


def convert_voc(
    voc_dir: str | Path,
    out_dir: str | Path,
    *,
    names: Sequence[str] | None = None,
    difficult: str = "skip",
    name: str = "obj",
    valid_fraction: float = 0.2,
    seed: int = 0,
    images: str = "copy",
) -> ConversionReport:
    """Pascal VOC (``Annotations/*.xml`` + ``JPEGImages/``, or XML beside the images) to Darknet.

    Boxes are converted like ``scripts/voc_label.py`` (1-based corners: ``x = ((xmin+xmax)/2 - 1)/W``,
    ``w = (xmax-xmin)/W``), then clipped to the image.

    Args:
        names: class order; objects of other classes are skipped. None: every name found, sorted.
        difficult: a key of :data:`DIFFICULT_MODES`.
    """
    if difficult not in DIFFICULT_MODES:
        raise UsageError(f"difficult={difficult!r}: use one of {', '.join(DIFFICULT_MODES)}")
    voc = Path(voc_dir)
    xml_dir = voc / "Annotations" if (voc / "Annotations").is_dir() else voc
    xml_files = sorted(xml_dir.glob("*.xml"))
    if not xml_files:
        raise DataError(f"{voc}: no VOC .xml annotations in {xml_dir}")
    parsed = [(f, read_voc_annotation(f)) for f in xml_files]
    if names is None:
        names = sorted({obj[0] for _, (_, _, _, objs) in parsed for obj in objs})
    index = {n: i for i, n in enumerate(names)}
    samples, skipped = [], []
    for xml_file, (filename, width, height, objects) in parsed:
        image = _find_image((voc / "JPEGImages", xml_file.parent, voc), filename, xml_file.stem)
        if image is None:
            skipped.append(f"{xml_file}: image {filename or xml_file.stem} not found")
            continue
        if width <= 0 or height <= 0:
            skipped.append(f"{xml_file}: image size {width}x{height}")
            continue
        boxes, hard = [], []
        for cls_name, is_difficult, x0, y0, x1, y1 in objects:
            if cls_name not in index:
                skipped.append(f"{xml_file}: class {cls_name!r} not in names")
                continue
            box = _relative_box(index[cls_name], x0 - 1, y0 - 1, x1 - 1, y1 - 1, width, height)
            if box is None:
                skipped.append(f"{xml_file}: empty box {cls_name} {x0} {y0} {x1} {y1}")
            elif is_difficult and difficult == "skip":
                continue
            elif is_difficult and difficult == "separate":
                hard.append(box)
            else:
                boxes.append(box)
        samples.append(Sample(image, tuple(boxes), tuple(hard)))
    return write_darknet_dataset(
        samples,
        names,
        out_dir,
        name=name,
        valid_fraction=valid_fraction,
        seed=seed,
        images=images,
        skipped=skipped,
    )


def convert_coco(
    annotation_file: str | Path,
    images_dir: str | Path,
    out_dir: str | Path,
    *,
    include_crowd: bool = False,
    name: str = "obj",
    valid_fraction: float = 0.2,
    seed: int = 0,
    images: str = "copy",
) -> ConversionReport:
    """COCO instances JSON to Darknet: categories sorted by id become classes 0.. (for the 80 COCO
    categories that is ``coco.names``'s order, matching ``coco_ids``); bbox ``[x, y, w, h]`` in
    pixels becomes a relative centre box clipped to the image. Crowd boxes are skipped unless
    ``include_crowd``; images without annotations are kept as background."""
    path = Path(annotation_file)
    try:
        data = json.loads(path.read_text())
        categories = sorted(data["categories"], key=lambda c: int(c["id"]))
        image_rows = data["images"]
        annotations = data.get("annotations", [])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a readable COCO annotation file ({exc})") from None
    class_of = {int(c["id"]): i for i, c in enumerate(categories)}
    names = [str(c.get("name", c["id"])) for c in categories]
    by_image: dict[int, list[dict]] = {}
    for ann in annotations:
        by_image.setdefault(int(ann["image_id"]), []).append(ann)
    samples, skipped = [], []
    folder = Path(images_dir)
    for row in image_rows:
        image = folder / row["file_name"]
        if not image.is_file():
            skipped.append(f"{path}: image {row['file_name']} not found in {folder}")
            continue
        width, height = float(row["width"]), float(row["height"])
        boxes = []
        for ann in by_image.get(int(row["id"]), []):
            if ann.get("iscrowd", 0) and not include_crowd:
                continue
            if int(ann["category_id"]) not in class_of:
                skipped.append(
                    f"{path}: annotation {ann.get('id')} has unknown category {ann['category_id']}"
                )
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            box = _relative_box(
                class_of[int(ann["category_id"])], x, y, x + w, y + h, width, height
            )
            if box is None:
                skipped.append(f"{path}: annotation {ann.get('id')} has an empty box")
            else:
                boxes.append(box)
        samples.append(Sample(image, tuple(boxes)))
    return write_darknet_dataset(
        samples,
        names,
        out_dir,
        name=name,
        valid_fraction=valid_fraction,
        seed=seed,
        images=images,
        skipped=skipped,
    )
