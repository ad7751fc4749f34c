"""darknetpy.data.loader / dataset: iterations, determinism, bad images, output format."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from darknetpy.data import AugmentConfig, build_train_loader
from darknetpy.data.dataset import (
    DARKNET_CHUNKS,
    Events,
    TrainSource,
    build_iteration,
    chunk_bounds,
    chunk_mode,
)
from darknetpy.errors import DataError
from tests.data.scenes import check_boxes_cover_colours, write_dataset

AUG = {"width": 64, "height": 48, "classes": 12, "jitter": 0.3, "flip": True, "hue": 0.1,
       "saturation": 1.5, "exposure": 1.5, "max_boxes": 10}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> list[Path]:
    return write_dataset(tmp_path_factory.mktemp("scenes"), np.random.default_rng(0), 10)


def _same(a, b) -> bool:
    return torch.equal(a.images, b.images) and torch.equal(a.truth, b.truth)


def test_chunk_bounds_follow_load_threads() -> None:
    assert chunk_bounds(64, 6) == [(0, 10), (10, 21), (21, 32), (32, 42), (42, 53), (53, 64)]
    assert chunk_bounds(4, 6) == [(0, 0), (0, 1), (1, 2), (2, 2), (2, 3), (3, 4)]


def test_half_of_the_chunks_use_mosaic() -> None:
    aug = AugmentConfig(**AUG, mosaic=True)
    modes = [chunk_mode(aug, 0, it, c) for it in range(200) for c in range(6)]
    assert set(modes) == {0, 3} and 0.45 < modes.count(3) / len(modes) < 0.55


def test_batch_format_and_truth_consistency(scenes: list[Path]) -> None:
    plain = AugmentConfig(**{**AUG, "hue": 0.0, "saturation": 1.0, "exposure": 1.0})
    loader = build_train_loader(scenes, plain, batch=8, workers=0, seed=3)
    batch = loader.get(1, 64, 48)
    assert batch.images.shape == (8, 3, 48, 64) and batch.images.dtype == torch.uint8
    assert batch.truth.shape == (8, 10, 5) and batch.truth.dtype == torch.float32
    for image, truth in zip(batch.images.numpy(), batch.truth.numpy()):
        check_boxes_cover_colours(np.ascontiguousarray(image.transpose(1, 2, 0)), truth, 12)
    assert (batch.truth[:, :, 0] > 0).sum() > 0


def test_deterministic_by_seed_and_iteration(scenes: list[Path]) -> None:
    aug = AugmentConfig(**AUG, mosaic=True, gaussian_noise=5, blur=3)
    loader = build_train_loader(scenes, aug, batch=6, workers=0, seed=11)
    first = loader.get(7, 64, 48)
    assert _same(first, loader.get(7, 64, 48))
    cached = build_train_loader(scenes, aug, batch=6, workers=0, seed=11, cache=True)
    assert _same(first, cached.get(7, 64, 48))  # the cache changes nothing
    assert not _same(first, loader.get(8, 64, 48))
    assert not _same(first, build_train_loader(scenes, aug, batch=6, workers=0, seed=12).get(7, 64, 48))
    resized = loader.get(7, 96, 64)
    assert resized.images.shape == (6, 3, 64, 96)


def test_workers_and_resume_give_the_same_batches(scenes: list[Path]) -> None:
    aug = AugmentConfig(**AUG, mosaic=True)
    loader = build_train_loader(scenes, aug, batch=5, workers=2, seed=5, cache=True)
    sizes = {3: (64, 48), 4: (64, 48), 5: (96, 64), 6: (32, 32)}
    got = list(loader.iterate(3, 7, size=lambda it: sizes[it]))
    assert [b.iteration for b in got] == [3, 4, 5, 6]
    assert [tuple(b.images.shape[2:]) for b in got] == [(48, 64), (48, 64), (64, 96), (32, 32)]
    serial = build_train_loader(scenes, aug, batch=5, workers=0, seed=5)
    resumed = list(serial.iterate(5, 7, size=lambda it: sizes[it]))  # "interrupted", resumed at 5
    assert _same(got[2], resumed[0]) and _same(got[3], resumed[1])
    assert _same(got[0], serial.get(3, 64, 48))


def test_bad_images_are_skipped_and_counted(scenes: list[Path], tmp_path: Path) -> None:
    truncated = tmp_path / "cut.jpg"
    buf = cv2.imencode(".jpg", np.zeros((40, 40, 3), np.uint8))[1]
    truncated.write_bytes(buf.tobytes()[:200])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    images = [*scenes[:3], tmp_path / "missing.jpg", truncated, text]
    batches = []
    for cache in (False, True):
        loader = build_train_loader(images, AugmentConfig(**AUG), batch=16, workers=0, seed=0,
                                    cache=cache)
        a = loader.get(1, 64, 48)
        summary = loader.summary()
        assert set(summary.bad_images) == {images[3], truncated, text}
        assert "truncated JPEG" in summary.bad_images[truncated]
        assert summary.images == 6 and "3 unusable" in str(summary)
        assert a.images.shape[0] == 16 and torch.isfinite(a.images).all()
        batches.append(a)
    assert _same(*batches)  # same draws, same result with or without the cache


def test_every_image_bad_is_an_error(tmp_path: Path) -> None:
    images = [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    loader = build_train_loader(images, AugmentConfig(**AUG), batch=2, workers=0, seed=0)
    with pytest.raises(DataError, match="every one of the 2 training images is unusable"):
        loader.get(1, 64, 48)
    with pytest.raises(DataError, match="unusable"):
        build_train_loader(images, AugmentConfig(**AUG), batch=2, workers=0, seed=0, cache=True)


def test_label_problems_are_summarised_once_per_file(scenes: list[Path], tmp_path: Path) -> None:
    img = tmp_path / "odd.png"
    cv2.imwrite(str(img), np.zeros((30, 30, 3), np.uint8))
    img.with_suffix(".txt").write_text("0 0.5 0.5 0.2 0.2\n40 0.5 0.5 0.2 0.2\n0 0.5\n")
    loader = build_train_loader([img], AugmentConfig(**AUG), batch=4, workers=0, seed=0)
    loader.get(1, 64, 48)
    loader.get(2, 64, 48)
    summary = loader.summary()
    report = summary.label_files[img.with_suffix(".txt")]
    assert report.bad_class == 1 and report.malformed == 1 and summary.dropped_boxes == 2


def test_mixup_blends_two_images(scenes: list[Path]) -> None:
    aug = AugmentConfig(**{**AUG, "mixup": 1, "hue": 0.0, "saturation": 1.0, "exposure": 1.0})
    loader = build_train_loader(scenes, aug, batch=6, workers=0, seed=0, chunks=6)
    it = next(i for i in range(1, 100) if all(chunk_mode(aug, 0, i, c) == 1 for c in range(6)))
    batch = loader.get(it, 64, 48)
    assert batch.images.dtype == torch.float32  # a blend is no byte
    levels = batch.images.numpy() * 255
    # a blend of two uint8 images has half-integer levels; plain images have none
    assert (np.abs(levels - np.rint(levels)) > 0.25).mean() > 0.01
    counts = (batch.truth[:, :, 0] > 0).sum(dim=1)
    assert counts.max() >= 3  # truths of both images appended


def test_bytes_made_float_equal_darknets_value_over_255(scenes: list[Path]) -> None:
    """uint8 batches + unit_float give the float32 the loader used to build (mat_to_image's /255.f),
    bit for bit, for every byte value."""
    from darknetpy.data.image import to_chw_float
    from darknetpy.data.loader import unit_float

    every = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).expand(1, 3, 16, 16)
    want = to_chw_float(every[0].numpy().transpose(1, 2, 0))
    assert np.array_equal(unit_float(every)[0].numpy(), want)
    assert unit_float(every).dtype == torch.float32
    batch = build_train_loader(scenes, AugmentConfig(**AUG, mosaic=True), batch=6, workers=0,
                               seed=2).get(4, 64, 48)
    assert batch.images.dtype == torch.uint8
    assert np.array_equal(unit_float(batch.images).numpy(),
                          batch.images.numpy().astype(np.float32) / np.float32(255))
    mixed = torch.rand(2, 3, 4, 4)
    assert unit_float(mixed) is mixed  # mixup iterations are float already


class _RecordingSource(TrainSource):
    """A :class:`TrainSource` that notes the list index of every image it hands out (images decoded
    once)."""

    def __init__(self, paths: list[Path], classes: int) -> None:
        super().__init__(paths, classes)
        self.drawn: list[int] = []
        self._decoded: dict[int, np.ndarray] = {}

    def image(self, index: int) -> np.ndarray:
        if index not in self._decoded:
            self._decoded[index] = super().image(index)
        return self._decoded[index]

    def draw(self, rng: np.random.Generator, events: Events) -> tuple[int, np.ndarray, np.ndarray]:
        index, image, boxes = super().draw(rng, events)
        self.drawn.append(index)
        return index, image, boxes


def _chi2_quantile(dof: int, z: float) -> float:
    """Wilson-Hilferty: the chi-square quantile whose normal equivalent is ``z``."""
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


def test_each_image_is_drawn_uniformly_with_replacement(scenes: list[Path]) -> None:
    """``data.c: get_random_paths_custom``: every image of every iteration is ``random_gen() % m``,
    uniform over the list and independent of the others, within and across the loader calls
    (``load_threads``' chunks) and across iterations; no epochs. Over 120 iterations of 16 images
    (10 in the list; 6 chunks of 2 or 3): the counts per image pass a chi-square test, and the
    images of a batch coincide at the birthday-problem rate (a draw without replacement, per batch
    or per chunk, gives 16 -> 10 distinct or no coincidence within a chunk, and fails)."""
    m, batch, iterations, z = len(scenes), 16, 120, 5.3  # z: a two-sided false alarm of 1e-7
    aug = AugmentConfig(**{**AUG, "hue": 0.0, "saturation": 1.0, "exposure": 1.0})
    source = _RecordingSource(scenes, aug.classes)
    draws = []
    for iteration in range(iterations):
        source.drawn.clear()
        build_iteration(source, aug, 7, iteration, batch, 16, 16, DARKNET_CHUNKS)
        assert len(source.drawn) == batch
        draws.append(list(source.drawn))
    d = np.array(draws)
    counts = np.bincount(d.ravel(), minlength=m)
    expected = d.size / m
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 <= _chi2_quantile(m - 1, 4.75), (chi2, counts)  # one-sided 1e-6
    # distinct images per batch: occupancy of m cells by `batch` uniform draws
    q1, q2 = (1 - 1 / m) ** batch, (1 - 2 / m) ** batch
    mean = m * (1 - q1)
    var = m * (m - 1) * q2 + m * q1 - m * m * q1 * q1
    distinct = np.array([len(set(row)) for row in draws])
    assert abs(distinct.mean() - mean) <= z * math.sqrt(var / iterations), (distinct.mean(), mean)
    # coinciding pairs within one chunk and across two: each rate 1/m (disjoint pairs: independent)
    bounds = chunk_bounds(batch, DARKNET_CHUNKS)
    within = [(a, a + 1) for a, b in bounds if b - a >= 2]
    across = [(b - 1, b) for _, b in bounds[:-1]]
    for pairs in (within, across):
        slots = [s for pair in pairs for s in pair]
        assert len(set(slots)) == len(slots)
        same = np.array([[row[a] == row[b] for a, b in pairs] for row in draws])
        rate, n = same.mean(), same.size
        assert abs(rate - 1 / m) <= z * math.sqrt((1 / m) * (1 - 1 / m) / n), (pairs, rate)
