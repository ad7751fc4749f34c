"""VOC/COCO conversion round trips (data.convert_datasets), the checker (data.check), read_boxes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from darknetpy.data.check import check_dataset
from darknetpy.data.convert_datasets import convert_coco, convert_voc, read_voc_annotation
from darknetpy.data.labels import label_path, read_boxes
from darknetpy.data.datafile import DataConfig, read_image_list, read_names
from darknetpy.evaluation import difficult_label_paths

from .conftest import make_image_set, write_flat_images

FIXTURES = Path(__file__).parent / "fixtures" / "eval"

# (file, width, height, [(class, x0, y0, x1, y1)]) in 0-based pixel corners, end exclusive
IMAGES = [
    ("street.jpg", 64, 48, [(0, 4, 6, 30, 40), (1, 32, 10, 63, 47)]),
    ("park.png", 80, 60, [(1, 0, 0, 80, 60)]),
    ("empty.jpg", 40, 40, []),
    ("corner.jpg", 50, 30, [(0, 10.5, 3.25, 20.75, 29)]),
]
NAMES = ["car", "person"]


def _relative(box: tuple, w: int, h: int) -> tuple[int, float, float, float, float]:
    cls, x0, y0, x1, y1 = box
    return cls, (x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h


def _write_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, w, h, _ in IMAGES:
        cv2.imwrite(str(folder / name), np.full((h, w, 3), 90, dtype=np.uint8))


def _listed(data_file: Path) -> list[Path]:
    """The images of train= and valid= (an empty list file counts as no image)."""
    config = DataConfig.from_file(data_file)
    lists = [p for p in (config.train, config.valid) if p is not None and p.read_text().strip()]
    return [image for p in lists for image in read_image_list(p, base=data_file.parent)]


def _assert_round_trip(data_file: Path, names: list[str], expected: list = IMAGES) -> None:
    assert read_names(DataConfig.from_file(data_file).names) == tuple(names)
    images = _listed(data_file)
    assert sorted(p.stem for p in images) == sorted(Path(n).stem for n, *_ in expected)
    for path in images:
        name, w, h, boxes = next(i for i in expected if Path(i[0]).stem == path.stem)
        assert path.is_file() and path.suffix == Path(name).suffix
        got = read_boxes(label_path(path))
        want = [_relative(b, w, h) for b in boxes]
        assert [g[0] for g in got] == [cls for cls, *_ in want]
        np.testing.assert_allclose(
            np.reshape([g[1:] for g in got], (-1, 4)),
            np.reshape([b[1:] for b in want], (-1, 4)),
            atol=6e-7,
        )


def test_voc_round_trip(tmp_path: Path) -> None:
    voc = tmp_path / "VOC"
    _write_images(voc / "JPEGImages")
    (voc / "Annotations").mkdir()
    for name, w, h, boxes in IMAGES:
        objects = "".join(
            f"<object><name>{NAMES[c]}</name><difficult>0</difficult><bndbox>"
            f"<xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin><xmax>{x1 + 1}</xmax><ymax>{y1 + 1}</ymax>"
            "</bndbox></object>"
            for c, x0, y0, x1, y1 in boxes
        )
        (voc / "Annotations" / f"{Path(name).stem}.xml").write_text(
            f"<annotation><filename>{name}</filename><size><width>{w}</width>"
            f"<height>{h}</height><depth>3</depth></size>{objects}</annotation>"
        )
    report = convert_voc(voc, tmp_path / "out", name="street", valid_fraction=0.25, seed=1)
    assert report.names == ("car", "person")  # sorted names found
    assert (report.train, report.valid, report.boxes) == (3, 1, 4)
    assert not report.skipped
    assert report.data_file == tmp_path / "out" / "street.data"
    _assert_round_trip(report.data_file, NAMES)
    assert check_dataset(report.data_file).ok


def test_coco_round_trip(tmp_path: Path) -> None:
    _write_images(tmp_path / "images")
    images, annotations = [], []
    for image_id, (name, w, h, boxes) in enumerate(IMAGES, start=7):
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        for c, x0, y0, x1, y1 in boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "iscrowd": 0,
                    "category_id": (3, 1)[c],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                }
            )
    annotations.append(
        {"id": 99, "image_id": 7, "iscrowd": 1, "category_id": 1, "bbox": [0, 0, 5, 5]}
    )  # crowd: skipped
    categories = [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}]
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    report = convert_coco(ann_file, tmp_path / "images", tmp_path / "out", valid_fraction=0.5)
    # categories sorted by id: person (1) is class 0, car (3) class 1
    assert report.names == ("person", "car")
    assert (report.train, report.valid, report.boxes) == (2, 2, 4)
    swapped = [(name, w, h, [(1 - b[0], *b[1:]) for b in boxes]) for name, w, h, boxes in IMAGES]
    _assert_round_trip(report.data_file, ["person", "car"], swapped)


def test_voc_fixture_and_difficult(tmp_path: Path) -> None:
    filename, w, h, objects = read_voc_annotation(FIXTURES / "voc_2008_000123.xml")
    assert (filename, w, h) == ("2008_000123.jpg", 500, 375)
    assert objects == [("dog", False, 51, 101, 251, 301), ("person", True, 300.5, 20, 480, 375)]
    voc = tmp_path / "voc"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "JPEGImages").mkdir()
    (voc / "Annotations" / "2008_000123.xml").write_bytes(
        (FIXTURES / "voc_2008_000123.xml").read_bytes()
    )
    cv2.imwrite(str(voc / "JPEGImages" / "2008_000123.jpg"), np.zeros((375, 500, 3), np.uint8))
    skip = convert_voc(voc, tmp_path / "skip", names=["dog", "person"], valid_fraction=1.0)
    assert skip.boxes == 1
    # dog: voc_label.py's ((51 + 251) / 2 - 1) / 500 = 0.3, (301 + 101) / 2 - 1 = 200 -> 200 / 375
    label = read_boxes(tmp_path / "skip" / "obj" / "2008_000123.txt")
    np.testing.assert_allclose(label, [(0, 0.3, 200 / 375, 0.4, 200 / 375)], atol=6e-7)
    sep = convert_voc(
        voc, tmp_path / "sep", names=["dog", "person"], difficult="separate", valid_fraction=1.0
    )
    config = DataConfig.from_file(sep.data_file)
    assert config.difficult == tmp_path / "sep" / "difficult.txt"
    # the listed images do not exist, only their labels: resolved by the label's existence
    hard = difficult_label_paths(config)
    assert hard == [tmp_path / "sep" / "difficult" / "2008_000123.txt"]
    np.testing.assert_allclose(
        read_boxes(hard[0]),
        [(1, (299.5 + 479) / 2 / 500, (19 + 374) / 2 / 375, 179.5 / 500, 355 / 375)],
        atol=6e-7,
    )
    only_dog = convert_voc(voc, tmp_path / "dog", names=["dog"], difficult="keep")
    assert only_dog.boxes == 1 and "class 'person' not in names" in only_dog.skipped[0]


def test_label_path_table() -> None:
    assert label_path("data/obj/a.jpg") == Path("data/obj/a.txt")
    assert label_path("VOC/JPEGImages/x.JPEG") == Path("VOC/labels/x.txt")
    assert label_path("coco/images/val2017/1.jpg") == Path("coco/labels/val2017/1.txt")
    assert label_path("coco/images/other/1.jpg") == Path("coco/images/other/1.txt")
    assert label_path("x.jpg.png") == Path("x.jpg.txt")
    assert label_path("a.Jpg") == Path("a.Jpg")  # not in Darknet's table


def test_read_boxes_stops_like_fscanf(tmp_path: Path) -> None:
    label = tmp_path / "a.txt"
    label.write_text(
        "0 0.5 0.5 0.2 0.2\n1 0.1 0.2 0.3 0.4 \n2 0.5 oops 0.1 0.1\n3 0.5 0.5 0.1 0.1\n"
    )
    assert read_boxes(label) == [(0, 0.5, 0.5, 0.2, 0.2), (1, 0.1, 0.2, 0.3, 0.4)]
    assert read_boxes(tmp_path / "missing.txt") == []


def test_check_reports_data_file_problems(tmp_path: Path) -> None:
    data = tmp_path / "x.data"
    data.write_text("classes = 2\nclasses\n")  # a line without '=': read_data_cfg's error line
    report = check_dataset(data)
    assert report.count("data_file") == 1 and "x.data:2" in report.issues[0].message
    (tmp_path / "n.names").write_text("a\nb\n")
    (tmp_path / "t.txt").write_text("")
    data.write_text("classes=2\nnames=n.names\nvaild=v.txt\ntrain=t.txt\n")
    report = check_dataset(data)
    assert report.count("data_file") == 1 and "did you mean 'valid'" in report.issues[0].message
    assert report.count("list") == 1 and "holds no image path" in str(report.issues[1])
    assert not report.ok


def test_converted_dataset_with_empty_valid_list_checks_ok(tmp_path: Path) -> None:
    _write_images(tmp_path / "images")
    images = [{"id": 1, "file_name": "street.jpg", "width": 64, "height": 48}]
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 6, 26, 34]}]
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1}]})
    )
    report = convert_coco(ann_file, tmp_path / "images", tmp_path / "out", valid_fraction=0.2)
    assert (report.train, report.valid) == (1, 0)  # round(0.2) = 0: valid.txt is empty
    checked = check_dataset(report.data_file)
    assert checked.ok and checked.count("empty_list") == 1 and checked.boxes == 1


def test_check_dataset_lists_every_problem(tmp_path: Path) -> None:
    obj = tmp_path / "obj"
    files = {
        "ok.jpg": "0 0.5 0.5 0.2 0.2\n",
        "empty.jpg": "",
        "range.jpg": "1 0.5 1.5 0.2 0.0\n",
        "class.jpg": "7 0.5 0.5 0.2 0.2\n",
        "bad.jpg": "0 0.5 0.5 0.2\n",
        "nolabel.jpg": None,
    }
    write_flat_images(obj, {**files, "pic.webp": None}, size=8)
    (obj / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (obj / "broken.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    listed = [*files, "broken.jpg", "pic.webp", "gone.jpg"]
    lists = {"train": [f"obj/{n}" for n in listed], "valid": ["obj/ok.jpg"]}
    data = make_image_set(tmp_path, lists, names=["a", "b"], classes=3, relative=True).data
    report = check_dataset(data)
    assert not report.ok
    assert report.images == len(listed) and report.classes == 2
    expected = {
        "names": 1,
        "missing_image": 1,
        "unreadable_image": 1,
        "label_name": 1,
        "missing_label": 1,
        "empty_label": 1,
        "bad_line": 1,
        "unknown_class": 1,
        "out_of_range": 1,
    }
    assert {kind: report.count(kind) for kind in expected} == expected
    out_of_range = next(i for i in report.issues if i.kind == "out_of_range")
    assert (
        out_of_range.line == 1 and "y=1.5" in out_of_range.message and "h=0" in out_of_range.message
    )
    assert "gone.jpg" in report.format()
    missing = check_dataset(tmp_path / "nope.data")
    assert missing.count("data_file") == 1 and not missing.ok
