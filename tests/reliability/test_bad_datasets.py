"""Broken datasets: training data loading skips and counts bad files, and stops only if all are bad.

A dataset is built in ``tmp_path`` from the raccoon photos of ``../shared/datasets/raccoon`` with
every kind of damage a real dataset has: missing images, empty / text / random-byte / truncated
JPEGs, a directory named like an image, unreadable files; images in other formats that must work
(PNG, greyscale, alpha, 16-bit, BMP, 1x1 and extreme aspect ratios); label files missing, empty,
with coordinates out of range, NaN or inf, unknown or negative class ids, malformed lines.

The loader (``darknetpy.data.loader``) must skip every unusable image, count it once, report the
label problems, hand out only finite, in-range truth, and raise a DataError only when every image
is unusable.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest

from darknetpy.data import datafile as datafile_mod
from darknetpy.data import loader as loader_mod
from darknetpy.errors import DarknetpyError, DataError
from darknetpy.inference import inference_model
from darknetpy.training import train as train_mod

from ..conftest import SHARED, make_tiny_run, quiet_weights, require_shared, tiny_cfg

RACCOON = SHARED / "datasets" / "raccoon"
CLASSES = 1


@dataclass
class BrokenDataset:
    """The image list and what is wrong with each entry."""

    root: Path
    images: list[Path] = field(default_factory=list)  # the training list, in order
    bad_images: set[Path] = field(default_factory=set)  # must be skipped
    odd_images: set[Path] = field(default_factory=set)  # unusual but valid: must be used
    label_problems: dict[Path, str] = field(default_factory=dict)  # label path -> kind

    @property
    def good(self) -> list[Path]:
        return [p for p in self.images if p not in self.bad_images]


def _raccoon_photos(n: int) -> list[Path]:
    require_shared()
    assert RACCOON.is_dir(), f"{RACCOON} missing from ../shared"
    photos = sorted((RACCOON / "obj").glob("*.jpg"), key=lambda p: int(p.stem.split("-")[1]))
    return photos[:n]


def _copy_with_labels(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    shutil.copyfile(src.with_suffix(".txt"), dst.with_suffix(".txt"))


def _small(src: Path, size: int = 96) -> np.ndarray:
    image = cv2.imread(str(src), cv2.IMREAD_COLOR)
    return cv2.resize(image, (size, size * image.shape[0] // image.shape[1] or 1))


def build_broken_dataset(root: Path, good: int = 14) -> BrokenDataset:
    photos = _raccoon_photos(good + 20)
    data = BrokenDataset(root)
    root.mkdir(parents=True, exist_ok=True)
    label = "0 0.5 0.5 0.4 0.4\n"

    def add(path: Path, *, bad: bool = False, odd: bool = False) -> Path:
        data.images.append(path)
        if bad:
            data.bad_images.add(path)
        if odd:
            data.odd_images.add(path)
        return path

    for src in photos[:good]:  # plain good images with their real labels
        _copy_with_labels(src, root / src.name)
        add(root / src.name)
    spare = iter(photos[good:])
    raw = next(spare).read_bytes()

    # ---- unusable images (with a label file each, so only the image is at fault)
    def bad_file(name: str, content: bytes | None) -> None:
        path = root / name
        if content is not None:
            path.write_bytes(content)
        path.with_suffix(".txt").write_text(label)
        add(path, bad=True)

    bad_file("missing.jpg", None)
    bad_file("empty.jpg", b"")
    bad_file("text.jpg", b"this is not an image\n")
    bad_file("random.jpg", np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    bad_file("truncated_half.jpg", raw[: len(raw) // 2])
    bad_file("truncated_header.jpg", raw[:300])
    bad_file("soi_only.jpg", b"\xff\xd8")
    bad_file("png_magic_only.png", b"\x89PNG\r\n\x1a\n")
    (root / "folder.jpg").mkdir()
    (root / "folder.txt").write_text(label)
    add(root / "folder.jpg", bad=True)
    locked = root / "locked.jpg"
    locked.write_bytes(raw)
    locked.chmod(0)
    locked.with_suffix(".txt").write_text(label)
    try:
        locked.read_bytes()
        readable = True
    except OSError:
        readable = False
    add(locked, bad=not readable, odd=readable)  # root can read it anyway

    # ---- valid images in other formats and shapes (must be used, not skipped)
    base = _small(next(spare))

    def odd_image(name: str, pixels: np.ndarray) -> None:
        path = root / name
        assert cv2.imwrite(str(path), pixels), name
        path.with_suffix(".txt").write_text(label)
        add(path, odd=True)

    odd_image("rgb.png", base)
    odd_image("grey.jpg", cv2.cvtColor(base, cv2.COLOR_BGR2GRAY))
    odd_image("grey.png", cv2.cvtColor(base, cv2.COLOR_BGR2GRAY))
    odd_image("alpha.png", cv2.cvtColor(base, cv2.COLOR_BGR2BGRA))
    odd_image("deep16.png", base.astype(np.uint16) * 257)
    odd_image("grey16.png", cv2.cvtColor(base, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257)
    odd_image("bitmap.bmp", base)
    odd_image("one_pixel.png", base[:1, :1])
    odd_image("one_row.png", base[:1, :])
    odd_image("one_column.png", base[:, :1])
    odd_image("tall.jpg", cv2.resize(base, (3, 400)))

    # ---- label problems (good images)
    def labelled(kind: str, text: str | None) -> None:
        src = next(spare, None) or photos[0]
        path = root / f"label_{kind}.jpg"
        shutil.copyfile(src, path)
        if text is not None:
            path.with_suffix(".txt").write_text(text)
        data.label_problems[path.with_suffix(".txt")] = kind
        add(path)

    labelled("missing", None)
    labelled("empty", "")
    labelled("out_of_range", "0 1.7 0.5 0.2 0.2\n0 0.5 0.5 3.0 0.2\n0 -0.9 0.5 0.2 0.2\n")
    labelled("nan", "0 nan 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n")
    labelled("inf", "0 0.5 inf 0.2 0.2\n0 0.5 0.5 -inf 0.2\n")
    labelled("unknown_class", "7 0.5 0.5 0.2 0.2\n1 0.4 0.4 0.1 0.1\n")
    labelled("negative_class", "-1 0.5 0.5 0.2 0.2\n")
    labelled("malformed", "0 0.5 0.5 0.2\nzero 0.5 0.5 0.2 0.2\n0 a b c d\n0 0.5 0.5 0.2 0.2 9\n")
    labelled("zero_size", "0 0.5 0.5 0 0.2\n0 0.5 0.5 0.2 -0.1\n0 0 0 0.2 0.2\n")
    labelled("binary", None)
    (root / "label_binary.txt").write_bytes(b"\x00\xff\xfe garbage \x00\n\x80\x81")
    return data


def _write_list(data: BrokenDataset) -> Path:
    listing = data.root / "train.txt"
    listing.write_text("".join(f"{p}\n" for p in data.images))
    return listing


def _aug(**kwargs):
    from darknetpy.data.augment import AugmentConfig

    base = {"width": 64, "height": 64, "classes": CLASSES, "jitter": 0.3, "hue": 0.1,
            "saturation": 1.5, "exposure": 1.5, "max_boxes": 20}
    base.update(kwargs)
    return AugmentConfig(**base)


# ------------------------------------------------------------------------------------------------
def test_each_broken_image_is_a_data_error_and_each_odd_one_loads(tmp_path: Path) -> None:
    from darknetpy.data.image import load_image

    data = build_broken_dataset(tmp_path / "ds")
    for path in data.images:
        if path in data.bad_images:
            with pytest.raises(DataError) as info:
                load_image(path)
            assert path.name in str(info.value), info.value
        else:
            image = load_image(path)
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, path
            assert min(image.shape[:2]) >= 1
    print(f"broken dataset: {len(data.bad_images)} unusable images, {len(data.odd_images)} odd "
          f"but valid images, {len(data.label_problems)} broken label files")


def test_each_broken_label_file_is_read_and_counted(tmp_path: Path) -> None:
    from darknetpy.data.labels import read_labels

    data = build_broken_dataset(tmp_path / "ds")
    expect = {  # kind -> (boxes kept, something reported)
        "missing": (0, "missing"), "empty": (0, None), "out_of_range": (0, "invalid"),
        "nan": (1, "non_finite"), "inf": (0, "non_finite"), "unknown_class": (0, "bad_class"),
        "negative_class": (0, "bad_class"), "malformed": (0, "malformed"),
        "zero_size": (0, "invalid"), "binary": (0, "malformed"),
    }
    for path, kind in data.label_problems.items():
        boxes, report = read_labels(path, CLASSES)
        kept, flag = expect[kind]
        assert boxes.shape == (kept, 5), (kind, boxes)
        assert np.isfinite(boxes).all()
        assert ((boxes[:, 0] >= 0) & (boxes[:, 0] < CLASSES)).all(), kind
        if flag is not None:
            value = getattr(report, flag)
            assert value, (kind, report)
    # the valid box on the NaN line's neighbour survives
    boxes, report = read_labels(data.root / "label_nan.txt", CLASSES)
    assert report.non_finite == 1 and np.allclose(boxes, [[0, 0.5, 0.5, 0.2, 0.2]])


@pytest.mark.parametrize("mode", ["single", "mosaic", "mixup"])
def test_loader_skips_and_counts_bad_images_and_never_stops(tmp_path: Path, mode: str) -> None:
    data = build_broken_dataset(tmp_path / "ds")
    aug = _aug(mosaic=mode == "mosaic", mixup=int(mode == "mixup"))
    loader = loader_mod.build_train_loader(data.images, aug, batch=16, workers=0, seed=3)
    for iteration in range(1, 21):  # 320 draws over 45 images: each is drawn (fixed seed)
        batch = loader.get(iteration, 64, 64)
        images, truth = loader_mod.unit_float(batch.images).numpy(), batch.truth.numpy()
        assert images.shape == (16, 3, 64, 64) and np.isfinite(images).all()
        assert images.min() >= 0 and images.max() <= 1
        assert np.isfinite(truth).all()
        rows = truth[truth[:, :, 2] > 0]
        assert ((rows[:, 4] >= 0) & (rows[:, 4] < CLASSES)).all()
        assert (rows[:, :4] >= 0).all() and (rows[:, :4] <= 1.0001).all(), rows
    summary = loader.summary()
    assert set(summary.bad_images) == data.bad_images, set(summary.bad_images) ^ data.bad_images
    for path, reason in summary.bad_images.items():  # each reason names the file
        assert path.name in reason, reason
    problems = {p for p in summary.label_files}
    expected_reported = {p for p, kind in data.label_problems.items() if kind != "empty"}
    assert expected_reported <= problems, expected_reported - problems
    text = str(summary)
    assert f"{len(data.bad_images)} unusable (skipped)" in text, text
    print(f"{mode}: {len(data.images)} images, {len(data.bad_images)} broken skipped, "
          f"{len(data.label_problems)} broken label files; summary:\n{text}")


def test_loader_with_cache_counts_bad_images_up_front(tmp_path: Path) -> None:
    data = build_broken_dataset(tmp_path / "ds")
    loader = loader_mod.build_train_loader(data.images, _aug(), batch=8, workers=0, seed=0, cache=True)
    assert set(loader.summary().bad_images) == data.bad_images
    batch = loader.get(1, 64, 64)
    assert np.isfinite(batch.images.numpy()).all()


def test_loader_workers_report_bad_images_to_the_summary(tmp_path: Path) -> None:
    data = build_broken_dataset(tmp_path / "ds", good=4)
    loader = loader_mod.build_train_loader(data.images, _aug(), batch=16, workers=2, seed=5)
    batches = list(loader.iterate(start=1, stop=9, size=(64, 64)))
    assert [b.iteration for b in batches] == list(range(1, 9))
    reported = set(loader.summary().bad_images)
    assert reported and reported <= data.bad_images
    # the same iterations in this process give the same batches (deterministic skipping)
    again = loader_mod.build_train_loader(data.images, _aug(), batch=16, workers=0, seed=5)
    for batch in batches[:3]:
        same = again.get(batch.iteration, 64, 64)
        assert np.array_equal(same.images.numpy(), batch.images.numpy())


@pytest.mark.parametrize("cache", [False, True])
def test_every_image_bad_stops_with_a_data_error(tmp_path: Path, cache: bool) -> None:
    data = build_broken_dataset(tmp_path / "ds")
    bad = sorted(data.bad_images)
    with pytest.raises(DataError, match=r"every one of the \d+ training images is unusable"):
        loader = loader_mod.build_train_loader(bad, _aug(), batch=4, workers=0, seed=0, cache=cache)
        loader.get(1, 64, 64)


def test_a_single_good_image_among_bad_ones_is_enough(tmp_path: Path) -> None:
    data = build_broken_dataset(tmp_path / "ds")
    listing = sorted(data.bad_images) + [data.good[0]]
    loader = loader_mod.build_train_loader(listing, _aug(), batch=4, workers=0, seed=0)
    for iteration in range(1, 6):
        assert loader.get(iteration, 64, 64).images.shape[0] == 4
    assert set(loader.summary().bad_images) <= data.bad_images


def test_image_list_with_blank_lines_and_missing_list(tmp_path: Path) -> None:
    data = build_broken_dataset(tmp_path / "ds", good=3)
    listing = _write_list(data)
    listing.write_text("\n\n" + listing.read_text() + "\n   \n")
    paths = datafile_mod.read_image_list(listing)
    assert len(paths) == len(data.images)
    with pytest.raises(DataError):
        datafile_mod.read_image_list(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(DataError, match=r"empty\.txt holds no image path"):
        datafile_mod.read_image_list(tmp_path / "empty.txt")
    with pytest.raises(DataError):
        loader_mod.build_train_loader([], _aug(), batch=2, workers=0, seed=0)


# ------------------------------------------------------------------------------------------------
# the training loop on the broken dataset
TRAIN_CFG = tiny_cfg(batch=4, subdivisions=1, yolo={"random": 0},
                     net={"learning_rate": 0.001, "max_batches": 3, "policy": "constant",
                          "mosaic": 1})  # fmt: skip


def _train_files(root: Path, images: list[Path]) -> tuple[Path, Path]:
    run = make_tiny_run(root, TRAIN_CFG, name="broken", images=images, names=False)
    return run.cfg, run.data


@pytest.mark.filterwarnings("ignore:.*batch=4 is lower than 8")
@pytest.mark.parametrize("cache", [False, True])
def test_training_on_a_broken_dataset_skips_counts_and_prints_a_summary(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], cache: bool) -> None:
    data = build_broken_dataset(tmp_path / "ds", good=6)
    cfg, datafile = _train_files(tmp_path, data.images)
    result = train_mod.train(cfg, datafile, seed=4, progress=False, chart=False, workers=0,
                             cache=cache, max_batches=6)
    assert result.iteration == 6 and not result.interrupted
    out = capsys.readouterr().out
    assert "unusable (skipped)" in out, out[-2000:]
    count = int(out.split(" unusable (skipped)")[0].rsplit("; ", 1)[1])
    assert 1 <= count <= len(data.bad_images), out[-2000:]
    if cache:  # every image is decoded up front: every broken one is counted
        assert count == len(data.bad_images), out[-2000:]
    print(f"training on {len(data.images)} images ({len(data.bad_images)} broken, "
          f"{len(data.label_problems)} broken label files): 6 iterations, {count} skipped")


@pytest.mark.filterwarnings("ignore:.*batch=4 is lower than 8")
def test_training_with_every_image_bad_stops_with_a_data_error(tmp_path: Path) -> None:
    data = build_broken_dataset(tmp_path / "ds", good=1)
    cfg, datafile = _train_files(tmp_path, sorted(data.bad_images))
    with pytest.raises(DataError, match="every one of the"):
        train_mod.train(cfg, datafile, seed=0, progress=False, chart=False, workers=0)


# ------------------------------------------------------------------------------------------------
# a NUL byte in a path read from a file (a corrupted list, a binary file given as the list)
NUL_REASON = ("a path holding a NUL byte raises ValueError ('embedded null byte') from "
              "pathlib/open, which only OSError handlers do not catch: darknetpy/data/image.py "
              "load_image, data/datafile.py _read_lines (read_image_list, read_names), cfg.py "
              "read_cfg, weights.py _open; catch ValueError there too and raise the module's "
              "DarknetpyError naming the file")


def test_image_list_line_with_a_nul_byte_is_skipped(tmp_path: Path) -> None:
    data = build_broken_dataset(tmp_path / "ds", good=3)
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"obj/raccoon\x00-1.jpg\n" + "".join(f"{p}\n" for p in data.good[:2]).encode())
    paths = datafile_mod.read_image_list(listing)
    loader = loader_mod.build_train_loader(paths, _aug(), batch=8, workers=0, seed=0)
    for iteration in range(1, 4):
        loader.get(iteration, 64, 64)
    assert len(loader.summary().bad_images) == 1


@pytest.mark.parametrize("reader", ["load_image", "read_image_list", "read_names", "read_cfg",
                                    "read_header"])
def test_paths_with_a_nul_byte_are_darknetpy_errors(reader: str) -> None:
    from darknetpy.model.cfg import read_cfg
    from darknetpy.data.datafile import read_image_list, read_names
    from darknetpy.data.image import load_image
    from darknetpy.model.weights import read_header

    readers = {"load_image": load_image, "read_image_list": read_image_list,
               "read_names": read_names, "read_cfg": read_cfg, "read_header": read_header}
    with pytest.raises(DarknetpyError):
        readers[reader](Path("broken\x00name"))


# ------------------------------------------------------------------------------------------------
# the inference API given odd or wrong images: it works or raises a DarknetpyError
def _predict_inputs(tmp_path: Path) -> dict[str, object]:
    import torch

    return {
        "uint8 HWC": np.zeros((10, 10, 3), np.uint8), "grey 2-D": np.zeros((10, 10), np.uint8),
        "RGBA": np.zeros((10, 10, 4), np.uint8), "1x1": np.zeros((1, 1, 3), np.uint8),
        "float64": np.zeros((10, 10, 3)), "float 0..255": np.full((10, 10, 3), 200.0, np.float32),
        "NaN float": np.full((10, 10, 3), np.nan, np.float32), "empty": np.zeros((0, 0, 3), np.uint8),
        "uint16": np.zeros((10, 10, 3), np.uint16), "bool": np.zeros((10, 10, 3), bool),
        "4-D array": np.zeros((2, 10, 10, 3), np.uint8), "tensor CHW": torch.zeros(3, 10, 10),
        "tensor NCHW": torch.zeros(2, 3, 64, 64), "tensor 5 channels": torch.zeros(1, 5, 64, 64),
        "tensor int64": torch.zeros(3, 10, 10, dtype=torch.int64),
        "tensor NaN": torch.full((3, 10, 10), float("nan")),
        "missing path": str(tmp_path / "nope.jpg"), "directory": str(tmp_path),
        "text file": str(tmp_path / "text.jpg"), "int": 5, "None": None,
    }


def test_predict_on_odd_or_wrong_images_works_or_raises_a_darknetpy_error(tmp_path: Path) -> None:
    import torch

    cfg = tmp_path / "t.cfg"
    cfg.write_text(TRAIN_CFG)
    (tmp_path / "text.jpg").write_text("not an image")
    from darknetpy import Network

    quiet_weights(Network.from_text(TRAIN_CFG)).save_weights(tmp_path / "t.weights")
    model = inference_model.load(cfg, tmp_path / "t.weights")
    outcomes: dict[str, str] = {}
    for name, image in _predict_inputs(tmp_path).items():
        try:
            model.predict([image])
        except DarknetpyError:
            outcomes[name] = "error"
        else:
            outcomes[name] = "ok"
    print(f"predict: {len(outcomes)} odd inputs: {outcomes}")
    assert outcomes["uint8 HWC"] == outcomes["1x1"] == outcomes["tensor CHW"] == "ok"
    assert outcomes["missing path"] == outcomes["text file"] == outcomes["None"] == "error"
    for bad in (torch.zeros(1, 5, 64, 64), torch.zeros(2, 4, 64, 64)):
        with pytest.raises(DarknetpyError):
            model(bad)
