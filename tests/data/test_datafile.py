"""darknetpy.data.datafile: .data files, names and image lists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from darknetpy.data.datafile import DataConfig, DataWarning, read_image_list, read_names
from darknetpy.errors import DataError


def test_raccoon_data_resolves_relative_to_its_folder(shared: Path) -> None:
    data = DataConfig.from_file(shared / "datasets/raccoon/raccoon.data")
    folder = shared / "datasets/raccoon"
    assert data.classes == 1 and data.eval == "voc" and data.savelast == 100
    assert data.train == folder / "train.txt" and data.valid == folder / "valid.txt"
    assert data.names == folder / "raccoon.names" and data.saveweights is None
    assert read_names(data.names) == ("raccoon",)
    images = read_image_list(data.train, base=data.path.parent)
    assert len(images) == 160 and all(p.is_file() for p in images)
    assert data.where("names") == f"{data.path}:4"


def test_cwd_wins_over_the_data_folder(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.txt").write_text("x.jpg\n")
    (tmp_path / "train.txt").write_text("y.jpg\n")
    (tmp_path / "d" / "my.data").write_text("train = train.txt\nvalid=valid.txt\n")
    monkeypatch.chdir(tmp_path)
    data = DataConfig.from_file("d/my.data")
    assert data.train == Path("train.txt")  # exists in the working directory
    assert data.valid == Path("valid.txt")  # exists nowhere: Darknet's reading


def test_data_file_whitespace_comments_first_wins_and_types(tmp_path: Path) -> None:
    path = tmp_path / "x.data"
    path.write_text(
        "# comment\n; other\nclasses = 2 0\nnames=/abs/x.names\nnames=/other.names\n"
        "eval=coco\nbackup = /tmp/b a c k/\nsaveweights=500\nsavelast=10\nlabels=/l.names\n"
    )
    data = DataConfig.from_file(path)
    assert data.classes == 20  # all whitespace is deleted, as Darknet
    assert data.names == Path("/abs/x.names") and data.eval == "coco"
    assert data.backup == Path("/tmp/back/") and data.saveweights == 500 and data.savelast == 10


@pytest.mark.parametrize("text, match", [
    ("classes=two\n", r":1: classes=two is not an integer"),
    ("train=a\nclasses=0\n", r":2: classes=0 must be >= 1"),
    ("eval=yolo\n", r":1: eval=yolo is not one of voc, coco"),
    ("train\n", r":1: cannot parse"),
    ("train=\n", r":1: cannot parse"),
])
def test_data_file_errors_give_path_and_line(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.data"
    path.write_text(text)
    with pytest.raises(DataError, match=match) as info:
        DataConfig.from_file(path)
    assert str(path) in str(info.value)


def test_unknown_key_warns_or_fails_strict(tmp_path: Path) -> None:
    path = tmp_path / "k.data"
    path.write_text("classes=1\ntrian=train.txt\n")
    with pytest.warns(DataWarning, match=r"k.data:2: unknown .data key 'trian' \(did you mean 'train'"):
        DataConfig.from_file(path)
    with pytest.raises(DataError, match="trian"):
        DataConfig.from_file(path, strict=True)


def test_missing_data_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such .data file"):
        DataConfig.from_file(tmp_path / "nope.data")


def test_read_names_counts_every_line(tmp_path: Path) -> None:
    path = tmp_path / "n.names"
    path.write_text("a\r\n\nc d\n")
    assert read_names(path) == ("a", "", "c d")
    path.write_text("a\nb")
    assert read_names(path) == ("a", "b")
    path.write_text("")
    assert read_names(path) == ()
    with pytest.raises(DataError, match=r"x.data:3: names file .* does not exist"):
        read_names(tmp_path / "none.names", where="x.data:3")


def test_read_image_list_resolution_and_blank_lines(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "set"
    (root / "imgs").mkdir(parents=True)
    (root / "imgs" / "a.jpg").write_bytes(b"")
    (tmp_path / "b.jpg").write_bytes(b"")
    lst = root / "lists" / "train.txt"
    lst.parent.mkdir()
    lst.write_text(f"imgs/a.jpg\n\n  b.jpg \r\n{tmp_path / 'abs.jpg'}\nmissing.jpg\n")
    monkeypatch.chdir(tmp_path)
    paths = read_image_list(lst, base=root)
    assert paths == [root / "imgs" / "a.jpg", Path("b.jpg"), tmp_path / "abs.jpg", Path("missing.jpg")]
    assert os.path.exists(paths[1])
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="holds no image path"):
        read_image_list(empty)
