"""``darknetpy check``: every problem Darknet would trip over in a ``.data`` file's lists, images and
labels, reported without stopping at the first (:func:`check_dataset`)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from ..errors import DataError
from .datafile import DataConfig, DataWarning, read_image_list, read_names
from .labels import LABEL_EXTENSIONS, label_path

ISSUE_KINDS = MappingProxyType({
    "data_file": "the .data file cannot be read or parsed",
    "names": "names file missing, unreadable or with a different class count",
    "list": "an image list is missing, unreadable or (train=) empty",
    "empty_list": "an empty valid= list: nothing for map/valid to score (fine without -map)",
    "missing_image": "an image in a list does not exist",
    "unreadable_image": "an image exists but OpenCV cannot decode it",
    "label_name": "Darknet cannot infer the label file name (image extension not in its table)",
    "missing_label": "no label file: Darknet treats the image as background",
    "empty_label": "an empty label file: a background image (fine if intended)",
    "bad_line": "a label line Darknet cannot read (it stops reading the file there)",
    "unknown_class": "a class id outside 0..classes-1",
    "out_of_range": "x, y, w or h outside (0, 1]",
})  # fmt: skip


NOTE_KINDS = frozenset({"empty_label", "empty_list"})  # reported, but the dataset is usable


@dataclass(frozen=True)
class Issue:
    kind: str  # a key of ISSUE_KINDS
    path: Path
    line: int  # 1-based line of the label or list file, 0 when not about a line
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return f"{where}: {self.kind}: {self.message}"


@dataclass(frozen=True)
class DatasetReport:
    """Result of :func:`check_dataset`."""

    data_file: Path
    classes: int | None
    images: int
    boxes: int
    issues: tuple[Issue, ...]

    @property
    def ok(self) -> bool:
        """No issue other than notes (:data:`NOTE_KINDS`: background images, an empty valid list)."""
        return all(issue.kind in NOTE_KINDS for issue in self.issues)

    def count(self, kind: str) -> int:
        return sum(issue.kind == kind for issue in self.issues)

    def format(self, limit: int = 20) -> str:
        classes = self.classes if self.classes is not None else "?"
        lines = [f"{self.data_file}: {self.images} images, {self.boxes} boxes, {classes} classes"]
        for kind in ISSUE_KINDS:
            found = [i for i in self.issues if i.kind == kind]
            if found:
                lines.append(f"  {kind}: {len(found)} ({ISSUE_KINDS[kind]})")
                lines += [f"    {issue}" for issue in found[:limit]]
                if len(found) > limit:
                    lines.append(f"    ... and {len(found) - limit} more")
        if self.ok:
            lines.append("  no problem found")
        return "\n".join(lines)


def _check_label(label: Path, classes: int | None, issues: list[Issue]) -> int:
    try:
        text = label.read_text(errors="replace")
    except OSError as exc:
        issues.append(Issue("missing_label", label, 0, f"cannot read ({exc.strerror or exc})"))
        return 0
    boxes = 0
    if not text.strip():
        issues.append(Issue("empty_label", label, 0, "no boxes"))
        return 0
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) != 5:
                raise ValueError(f"{len(fields)} fields, expected 'class x y w h'")
            cls = int(fields[0])
            x, y, w, h = (float(v) for v in fields[1:])
        except ValueError as exc:
            issues.append(Issue("bad_line", label, number, f"{line.strip()!r}: {exc}"))
            continue
        boxes += 1
        if cls < 0 or (classes is not None and cls >= classes):
            limit = f"0..{classes - 1}" if classes is not None else ">= 0"
            issues.append(Issue("unknown_class", label, number, f"class {cls} not in {limit}"))
        bad = [f"{n}={v:g}" for n, v in zip("xywh", (x, y, w, h)) if not 0 < v <= 1]
        if bad:
            issues.append(Issue("out_of_range", label, number, ", ".join(bad)))
    return boxes


def check_dataset(data_file: str | Path, *, read_images: bool = True) -> DatasetReport:
    """Check a ``.data`` file's lists, images and labels; never raises on a bad dataset.

    Args:
        read_images: decode every image (slow on large sets); False only checks they exist.
    """
    import cv2

    data_file = Path(data_file)
    issues: list[Issue] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DataWarning)
            config = DataConfig.from_file(data_file)
    except DataError as exc:
        return DatasetReport(data_file, None, 0, 0, (Issue("data_file", data_file, 0, str(exc)),))
    for warning in caught:
        if issubclass(warning.category, DataWarning):
            issues.append(Issue("data_file", data_file, 0, str(warning.message)))
    classes = config.classes
    if config.names is not None:
        try:
            names = read_names(config.names, where=config.where("names"))
            if classes is not None and len(names) != classes:
                message = f"{len(names)} names but classes={classes} in {data_file.name}"
                issues.append(Issue("names", config.names, 0, message))
            classes = len(names)
        except DataError as exc:
            issues.append(Issue("names", config.names, 0, str(exc)))
    else:
        issues.append(Issue("names", data_file, 0, "no names= line"))
    seen: set[Path] = set()
    n_boxes = 0
    for key in ("train", "valid"):
        list_file = getattr(config, key)
        if list_file is None:
            continue
        if (
            key == "valid"
            and list_file.is_file()
            and not list_file.read_text(errors="replace").strip()
        ):
            issues.append(Issue("empty_list", list_file, 0, "valid= lists no image"))
            continue
        try:
            paths = read_image_list(list_file, base=data_file.parent, where=config.where(key))
        except DataError as exc:
            issues.append(Issue("list", list_file, 0, str(exc)))
            continue
        for image in paths:
            if image in seen:
                continue
            seen.add(image)
            if not image.is_file():
                issues.append(Issue("missing_image", image, 0, f"listed in {key}"))
                continue
            if read_images:
                try:
                    ok = cv2.imread(str(image), cv2.IMREAD_REDUCED_COLOR_8) is not None
                except cv2.error:
                    ok = False
                if not ok:
                    issues.append(Issue("unreadable_image", image, 0, "OpenCV cannot decode it"))
            label = label_path(image)
            if label.suffix != ".txt":
                issues.append(
                    Issue(
                        "label_name",
                        image,
                        0,
                        f"extension {image.suffix!r} is not one of {' '.join(LABEL_EXTENSIONS)}",
                    )
                )
                continue
            if not label.is_file():
                issues.append(Issue("missing_label", label, 0, f"for {image}"))
                continue
            n_boxes += _check_label(label, classes, issues)
    return DatasetReport(data_file, classes, len(seen), n_boxes, tuple(issues))
