"""``darknetpy detect``: sources, drawn images, JSON, videos, darknet's console lines."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from darknetpy.cli import main
from darknetpy.inference.darknet_output import class_color, ext_output_lines
from darknetpy.inference.sources import Source, read_sources
from darknetpy.errors import DataError, UsageError
from darknetpy.inference.inference_model import Box, Detection, Prediction

from .conftest import GOLDEN, SHARED, require_shared

LINE = re.compile(
    r"^(?P<name>.+): (?P<percent>\d+)%\t\(left_x: +(?P<left>-?\d+) +top_y: +(?P<top>-?\d+)"
    r" +width: +(?P<width>-?\d+) +height: +(?P<height>-?\d+)\)$"
)


def _detection(
    class_id: int,
    name: str,
    score: float,
    rel: tuple[float, ...],
    box_index: int,
    size: tuple[int, int],
) -> Detection:
    x, y, w, h = rel
    box = Box((x - w / 2) * size[0], (y - h / 2) * size[1], w * size[0], h * size[1])
    return Detection(class_id, name, score, box, 0.9, rel, box_index)


# ---------------------------------------------------------------- console lines
def test_ext_output_lines_follow_draw_detections_v3() -> None:
    names = ["cat", "dog", "dont_show_me"]
    size = (64, 32)
    prediction = Prediction(
        "a.jpg",
        64,
        32,
        (
            _detection(1, "dog", 0.8, (0.5, 0.5, 0.25, 0.25), 0, size),
            _detection(0, "cat", 0.625, (0.5, 0.5, 0.25, 0.25), 0, size),  # second class of box 0
            _detection(0, "cat", 0.5, (25 / 128, 0.5, 0.25, 0.25), 1, size),  # left 4.5 px
            _detection(2, "dont_show_me", 0.99, (0.0, 0.75, 9 / 64, 0.25), 2, size),  # hidden name
            _detection(0, "cat", 0.7, (0.0, 0.75, 9 / 64, 0.25), 2, size),  # left -4.5 px
        ),
    )
    lines = ext_output_lines(prediction, 0.25, names)
    assert lines == [
        # sorted by left edge; C's round takes halves away from zero: -4.5 -> -5, 4.5 -> 5
        "cat: 70%\t(left_x:   -5   top_y:   20   width:    9   height:    8)",
        # the best class skips "dont_show" names; the other classes of the box are all listed
        "dont_show_me: 99%\t(left_x:   -5   top_y:   20   width:    9   height:    8)",
        "cat: 50%\t(left_x:    5   top_y:   12   width:   16   height:    8)",
        "dog: 80%\t(left_x:   24   top_y:   12   width:   16   height:    8)",
        "cat: 62%\t(left_x:   24   top_y:   12   width:   16   height:    8)",  # %.0f of 62.5
    ]
    assert ext_output_lines(prediction, 0.65, names, ext_output=False) == [
        "cat: 70%",
        "dont_show_me: 99%",
        "dog: 80%",
    ]


def test_class_colors_are_darknets_palette() -> None:
    assert class_color(0, 80) == (255, 0, 255)  # offset 0: colors[0] = (1, 0, 1), magenta
    # class 1 of 80: offset 123457 % 80 = 17, ratio 17/80*5 = 1.0625 between (0,0,1) and (0,1,1)
    assert class_color(1, 80) == (int(0.0 * 255), int(0.0625 * 255), 255)
    assert class_color(0, 1) == (255, 0, 255)


# ---------------------------------------------------------------- sources
def test_sources_images_folders_lists_videos_and_stdin(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("b.jpg", "a.png", "notes.txt"):
        (folder / name).write_bytes(b"x")
    (tmp_path / "clip.MP4").write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text("imgs/a.png\n\n  imgs/b.jpg  \n")
    got = read_sources([folder, listing, tmp_path / "clip.MP4"])
    assert got == [
        Source("image", folder / "a.png"),
        Source("image", folder / "b.jpg"),
        Source("image", tmp_path / "imgs/a.png"),
        Source("image", tmp_path / "imgs/b.jpg"),
        Source("video", tmp_path / "clip.MP4"),
    ]
    assert read_sources([], io.StringIO("x.jpg\ny.jpg\n")) == [
        Source("image", Path("x.jpg")),
        Source("image", Path("y.jpg")),
    ]
    with pytest.raises(UsageError, match="no image path on standard input"):
        read_sources([], io.StringIO(""))
    with pytest.raises(DataError, match="no such file or folder"):
        read_sources([tmp_path / "missing.jpg"])
    (tmp_path / "blob.bin").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(DataError, match="nor a text list of image paths"):
        read_sources([tmp_path / "blob.bin"])


# ---------------------------------------------------------------- the command
def _golden(name: str = "yolov4-tiny") -> tuple[str, str]:
    require_shared()
    return str(GOLDEN / name / "net.cfg"), str(GOLDEN / name / "net.weights")


def test_detect_writes_drawn_images_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Acceptance 1: ../shared/images/*.jpg with a golden network -> drawn images and JSON."""
    cfg, weights = _golden()
    images = sorted((SHARED / "images").glob("*.jpg"))
    out_json = tmp_path / "dets.json"
    argv = [
        "detect",
        cfg,
        weights,
        *map(str, images),
        "--names",
        str(SHARED / "names" / "coco.names"),
        "--thresh",
        "0.9",
        "--save-dir",
        str(tmp_path / "drawn"),
        "--json",
        str(out_json),
        "--ext-output",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    entries = json.loads(out_json.read_text())
    assert [e["filename"] for e in entries] == [str(p) for p in images]
    assert [e["frame_id"] for e in entries] == list(range(1, len(images) + 1))
    total = 0
    for image, entry in zip(images, entries):
        original = cv2.imread(str(image))
        drawn = cv2.imread(str(tmp_path / "drawn" / image.name))
        assert drawn is not None and drawn.shape == original.shape
        assert (entry["width"], entry["height"]) == (original.shape[1], original.shape[0])
        for obj in entry["objects"]:
            total += 1
            rel, box = obj["relative_coordinates"], obj["box"]
            assert obj["confidence"] > 0.9 and obj["name"]
            assert box["left"] == pytest.approx(
                (rel["center_x"] - rel["width"] / 2) * entry["width"]
            )
            assert box["height"] == pytest.approx(rel["height"] * entry["height"])
        if entry["objects"]:  # boxes were drawn: pixels changed
            assert np.abs(drawn.astype(int) - original.astype(int)).max() > 100
    assert total > 0
    lines = [line for line in out.splitlines() if "%" in line]
    assert len(lines) == total or len(lines) <= total  # secondary hidden classes print nothing
    assert all(LINE.match(line) for line in lines), lines[:3]
    assert sum("Predicted in" in line for line in out.splitlines()) == len(images)


def test_darknet_form_prints_darknets_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``detector test DATA CFG WEIGHTS -thresh T -ext_output -dont_show < list`` prints exactly
    what darknet printed for every raccoon validation image (golden/trained-raccoon/test.json):
    the same names, percentages and pixel boxes, line for line, in darknet's order."""
    require_shared()
    folder = GOLDEN / "trained-raccoon"
    dataset = SHARED / "datasets" / "raccoon"
    golden = json.loads((folder / "test.json").read_text())
    images = [dataset / "obj" / name for name in golden["images"]]
    monkeypatch.chdir(tmp_path)  # the drawn images go to ./predictions
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(f"{p}\n" for p in images)))
    argv = [
        "detector",
        "test",
        str(dataset / "raccoon.data"),
        str(folder / "net.cfg"),
        str(folder / "net.weights"),
        "-thresh",
        str(golden["thresh"]),
        "-ext_output",
        "-dont_show",
    ]
    assert main(argv) == 0
    printed: dict[str, list[tuple]] = {}
    for line in capsys.readouterr().out.splitlines():
        if ": Predicted in " in line:
            current = printed.setdefault(Path(line.split(": Predicted in ")[0]).name, [])
        else:
            m = LINE.match(line)
            assert m, line
            current.append(
                (
                    m["name"],
                    int(m["percent"]),
                    int(m["left"]),
                    int(m["top"]),
                    int(m["width"]),
                    int(m["height"]),
                )
            )
    assert list(printed) == list(golden["images"])
    mismatched = []
    for name, rows in golden["images"].items():
        want = [
            (r["name"], r["percent"], r["left"], r["top"], r["width"], r["height"]) for r in rows
        ]
        if printed[name] != want:  # a row printed as 5% sits within rounding of the 0.05 threshold
            mismatched.append(name)
            assert [g for g in printed[name] if g[1] > 5] == [w for w in want if w[1] > 5], name
        assert (tmp_path / "predictions" / name).is_file()
    assert sum(map(len, golden["images"].values())) > 100
    assert len(mismatched) <= 2, mismatched


def test_detect_reads_a_list_on_stdin_and_a_video(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, weights = _golden("yolov3-tiny")
    dog = cv2.imread(str(SHARED / "images" / "dog.jpg"))
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(
        str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (dog.shape[1], dog.shape[0])
    )
    for k in range(3):
        writer.write(np.roll(dog, 40 * k, axis=1))
    writer.release()
    out_json = tmp_path / "v.json"
    assert (
        main(
            [
                "detect",
                cfg,
                weights,
                str(video),
                "--thresh",
                "0.7",
                "--save-dir",
                str(tmp_path / "out"),
                "--json",
                str(out_json),
                "--batch-size",
                "2",
            ]
        )
        == 0
    )
    entries = json.loads(out_json.read_text())
    assert [e["frame_id"] for e in entries] == [1, 2, 3]
    assert all(e["filename"] == str(video) for e in entries)
    assert sum(len(e["objects"]) for e in entries) > 0
    capture = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == 3
    # a list of images on standard input, as `darknet detector test ... < list.txt`
    monkeypatch.setattr(
        "sys.stdin",
        io.StringIO(f"{SHARED / 'images' / 'dog.jpg'}\n{SHARED / 'images' / 'horses.jpg'}\n"),
    )
    capsys.readouterr()
    assert main(["detect", cfg, weights, "--thresh", "0.7", "--no-save"]) == 0
    assert capsys.readouterr().out.count("Predicted in") == 2


def test_detect_refuses_to_overwrite_inputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, weights = _golden("yolov3-tiny")
    image = tmp_path / "dog.jpg"
    image.write_bytes((SHARED / "images" / "dog.jpg").read_bytes())
    before = image.read_bytes()
    assert main(["detect", cfg, weights, str(image), "--save-dir", str(tmp_path)]) == 2
    assert "refusing to overwrite an input file" in capsys.readouterr().err
    assert image.read_bytes() == before
    assert main(["detect", cfg, weights, str(image), "--json", weights, "--no-save"]) == 2
    assert "refusing to overwrite an input file" in capsys.readouterr().err
    assert main(["detect", cfg, weights, str(image), "--names", "a", "--names-from-data", "b"]) == 2
    with pytest.raises(SystemExit):
        main(["detect", cfg, weights, str(image), "--thresh", "2"])


def test_detect_loads_one_copy_of_the_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command only predicts: it loads with keep_unfused=False (no unfused copy)."""
    import darknetpy.inference.inference_model
    from darknetpy.model.network import Network

    from .conftest import tiny_cfg

    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(tiny_cfg(backbone=(8, 16), classes=2))
    weights = tmp_path / "tiny.weights"
    Network.from_cfg(cfg).save_weights(weights)
    image = tmp_path / "image.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (40, 50, 3), np.uint8))
    models = []
    real_load = darknetpy.inference.inference_model.load

    def recording_load(*args: object, **kwargs: object) -> darknetpy.inference.inference_model.InferenceModel:
        models.append(real_load(*args, **kwargs))  # type: ignore[arg-type]
        return models[-1]

    monkeypatch.setattr(darknetpy.inference.inference_model, "load", recording_load)
    assert main(["detect", str(cfg), str(weights), str(image), "--no-save"]) == 0
    assert "Predicted in" in capsys.readouterr().out
    (model,) = models
    assert not model.keep_unfused
    with pytest.raises(UsageError, match="keep_unfused=False"):
        _ = model.network
