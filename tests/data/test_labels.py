"""darknetpy.data.labels: replace_image_to_label and read_boxes with bounds checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from darknetpy.data.labels import LABEL_EXTENSIONS, label_path, read_labels


@pytest.mark.parametrize("image, label", [
    ("obj/raccoon-1.jpg", "obj/raccoon-1.txt"),
    ("/d/coco/images/train2017/0001.jpg", "/d/coco/labels/train2017/0001.txt"),
    ("/d/coco/images/val2017/0001.jpg", "/d/coco/labels/val2017/0001.txt"),
    ("/d/coco/images/train2014/x.jpg", "/d/coco/labels/train2014/x.txt"),
    ("/d/coco/images/val2014/x.jpg", "/d/coco/labels/val2014/x.txt"),
    ("/voc/VOC2007/JPEGImages/000005.jpg", "/voc/VOC2007/labels/000005.txt"),
    ("C:\\coco\\images\\train2017\\a.jpg", "C:\\coco\\labels\\train2017\\a.txt"),
    ("C:\\coco\\images\\val2014\\a.png", "C:\\coco\\labels\\val2014\\a.txt"),
    ("C:\\voc\\JPEGImages\\a.jpg", "C:\\voc\\labels\\a.txt"),
    # no generic /images/ -> /labels/: labels sit beside the image
    ("/d/images/a.jpg", "/d/images/a.txt"),
    # only the first occurrence of each pattern is replaced
    ("/x/JPEGImages/JPEGImages/a.jpg", "/x/labels/JPEGImages/a.txt"),
    # extension only at the very end, case-sensitive table
    ("/d/a.jpg.png", "/d/a.jpg.txt"),
    ("/d/a.jpgx", "/d/a.jpgx"),
    ("/d/a.Jpg", "/d/a.Jpg"),
    ("/d/a.webp", "/d/a.webp"),
    ("/d/a.tif", "/d/a.tif"),
    # spaces and tabs trimmed at both ends before the extension swap
    ("  /d/a.jpg \t", "/d/a.txt"),
])
def test_label_path_table(image: str, label: str) -> None:
    assert str(label_path(image)) == str(Path(label))


@pytest.mark.parametrize("ext", LABEL_EXTENSIONS)
def test_every_listed_extension_becomes_txt(ext: str) -> None:
    assert label_path(f"/d/img{ext}").name == "img.txt"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "a.txt"
    path.write_text(text)
    return path


def test_read_labels_good_file(tmp_path: Path) -> None:
    boxes, report = read_labels(_write(tmp_path, "0 0.5 0.5 0.2 0.3\n2 0.1 0.2 0.05 0.06\n"), 3)
    assert boxes.dtype == np.float32 and boxes.shape == (2, 5)
    np.testing.assert_allclose(boxes[1], [2, 0.1, 0.2, 0.05, 0.06], rtol=1e-6)
    assert report.ok and report.boxes == 2 and report.dropped == 0


def test_read_labels_missing_and_empty(tmp_path: Path) -> None:
    boxes, report = read_labels(tmp_path / "none.txt", 3)
    assert boxes.shape == (0, 5) and report.missing and not report.ok
    boxes, report = read_labels(_write(tmp_path, "\n  \n"), 3)
    assert boxes.shape == (0, 5) and report.ok and not report.missing


def test_read_labels_not_a_txt_path_is_not_read(tmp_path: Path) -> None:
    image = tmp_path / "a.webp"
    image.write_bytes(b"0 0.5 0.5 0.1 0.1")
    boxes, report = read_labels(image, 3)
    assert boxes.shape == (0, 5) and report.not_label_file


def test_read_labels_drops_and_counts(tmp_path: Path) -> None:
    text = "\n".join([  # noqa: FLY002
        "0 0.5 0.5 0.2 0.2",        # kept
        "0 0.5 0.5 0.2",            # malformed: 4 fields
        "0 0.5 0.5 0.2 0.2 7",      # malformed: 6 fields
        "1.5 0.5 0.5 0.2 0.2",      # malformed: class not an integer
        "a 0.5 0.5 0.2 0.2",        # malformed
        "0 nan 0.5 0.2 0.2",        # non-finite
        "0 0.5 inf 0.2 0.2",        # non-finite
        "3 0.5 0.5 0.2 0.2",        # class == classes
        "-1 0.5 0.5 0.2 0.2",       # negative class
        "0 0 0 0.2 0.2",            # x == y == 0: Darknet's "invalid" marker
        "0 0.5 0.5 0 0.2",          # zero width
        "0 0.5 0.5 0.2 -0.1",       # negative height
        "0 1.5 0.5 0.2 0.2",        # entirely right of the image
        "0 0.5 -0.3 0.2 0.2",       # entirely above
        "0 1.02 0.5 0.2 0.2",       # centre outside the image
        "2 0.5 0.5 1.2 0.2",        # wider than the image
        "1 0.95 0.5 0.2 0.2",       # sticks out: kept, clipped
        "2 0.5 0.5 1.0000001 0.2",  # float printing slop: kept
    ])
    boxes, report = read_labels(_write(tmp_path, text), 3)
    assert report.malformed == 4 and report.non_finite == 2 and report.bad_class == 2
    assert report.invalid == 7 and report.clipped == 1 and report.boxes == 3 == len(boxes)
    assert boxes[:, 0].tolist() == [0, 1, 2] and not report.ok
    assert report.dropped == 15


def test_read_labels_without_classes_keeps_large_ids(tmp_path: Path) -> None:
    boxes, report = read_labels(_write(tmp_path, "99 0.5 0.5 0.1 0.1\n"))
    assert len(boxes) == 1 and report.ok


def test_read_labels_never_raises_on_binary(tmp_path: Path) -> None:
    path = tmp_path / "b.txt"
    path.write_bytes(bytes(range(256)) * 4)
    boxes, report = read_labels(path, 3)
    assert boxes.shape == (0, 5) and report.malformed >= 1
