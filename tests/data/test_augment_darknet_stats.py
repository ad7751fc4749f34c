"""darknetpy's augmented batches against Darknet's, statistically (issue 17, "Augmentation").

Darknet's own ``load_data_detection`` (AlexeyAB 59596d78, OpenCV build) made 2560 augmented images of
the raccoon training list with ``tests/darknet_aug/net.cfg`` (jitter, resize, hue, saturation,
exposure, flip, mosaic and blur on); ``tests/darknet_aug/summary.json`` holds their statistics (see
that folder's README). Here darknetpy's loader builds batches of the same list with the same cfg, the
same statistics are computed (:mod:`tests.data.augment_stats`) and each must agree with Darknet's
within ``TOLERANCE_SE`` combined standard errors. The draws are seeded: the outcome is fixed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import darknetpy.data.dataset as dataset
from darknetpy.data.augment import AugmentConfig
from darknetpy.data.loader import build_train_loader
from darknetpy.data.truth import truth_count
from darknetpy.model.cfg import Options, parse_cfg
from darknetpy.model.heads.options import parse_yolo_options
from darknetpy.model.netconfig import NetConfig
from tests.conftest import SHARED, SKIP_REASON
from tests.data.augment_stats import TOLERANCE_SE, Piece, Sample, compare, summarize

HERE = Path(__file__).resolve().parents[1] / "darknet_aug"
RACCOON = SHARED / "datasets" / "raccoon"


def raccoon_config() -> tuple[AugmentConfig, int]:
    """The cfg Darknet ran, read as the trainer reads it (``[net]`` and the last ``[yolo]``), and its
    batch (images per iteration)."""
    sections = parse_cfg((HERE / "net.cfg").read_text(), str(HERE / "net.cfg"))
    net = NetConfig.from_section(sections[0])
    head = parse_yolo_options(Options([s for s in sections if s.name == "yolo"][-1]))
    return AugmentConfig.from_net(net, head), net.batch * net.subdivisions


def darknetpy_sample(monkeypatch: pytest.MonkeyPatch, seeds: range, iterations: int) -> Sample:
    """Batches of darknetpy's loader over the raccoon training list, each piece's decisions recorded by
    wrapping the functions :func:`darknetpy.data.dataset.build_slot` calls (the counterparts of those
    the Darknet driver wraps)."""
    if not RACCOON.is_dir():
        pytest.skip(SKIP_REASON)
    aug, batch = raccoon_config()
    images = [RACCOON / line for line in (RACCOON / "train.txt").read_text().split()]
    pending: dict[str, int] = {}
    pieces: list[Piece] = []
    slots: list[tuple[int, list[Piece]]] = []
    real = {name: getattr(dataset, name)
            for name in ("fill_truth_detection", "mosaic_piece", "augment_image", "build_slot")}  # fmt: skip

    def fill(boxes, *args, **kwargs):
        truth, min_w_h = real["fill_truth_detection"](boxes, *args, **kwargs)
        pending.update(labels=len(boxes), kept=truth_count(truth))
        return truth, min_w_h

    def mosaic_piece(index, crop, w, h, cut_x, cut_y):
        piece = real["mosaic_piece"](index, crop, w, h, cut_x, cut_y)
        pending.update(cut_x=cut_x, cut_y=cut_y, shifts=sum(piece.shifts))
        return piece

    def augment(image, crop, w, h, draws, blur, *args, **kwargs):
        mosaic = {k: pending.pop(k) for k in ("cut_x", "cut_y", "shifts") if k in pending}
        pieces.append(Piece(
            ow=crop.ow, oh=crop.oh, pleft=crop.pleft, ptop=crop.ptop, swidth=crop.swidth,
            sheight=crop.sheight, flip=draws.flip, dhue=draws.dhue, dsat=draws.dsat, dexp=draws.dexp,
            blur=blur, noise=draws.gaussian_noise, labels=pending["labels"], kept=pending["kept"], **mosaic,
        ))
        return real["augment_image"](image, crop, w, h, draws, blur, *args, **kwargs)

    def build_slot(source, aug, mode, *args, **kwargs):
        out = real["build_slot"](source, aug, mode, *args, **kwargs)
        slots.append((mode, pieces.copy()))
        pieces.clear()
        return out

    for name, wrapper in (("fill_truth_detection", fill), ("mosaic_piece", mosaic_piece),
                          ("augment_image", augment), ("build_slot", build_slot)):  # fmt: skip
        monkeypatch.setattr(dataset, name, wrapper)
    chunk_of = [c for c, (start, stop) in enumerate(dataset.chunk_bounds(batch, dataset.DARKNET_CHUNKS))
                for _ in range(start, stop)]  # fmt: skip
    sample = Sample()
    for seed in seeds:
        loader = build_train_loader(images, aug, batch=batch, workers=0, seed=seed)
        for iteration in range(1, iterations + 1):
            got = loader.get(iteration, aug.width, aug.height)
            assert len(slots) == batch
            for slot, (mode, made) in enumerate(slots):
                cluster = (seed * 100_000 + iteration) * 10 + chunk_of[slot]
                sample.add_image(cluster, mode == 3, got.images[slot].numpy(), got.truth[slot].numpy(),
                                 made)  # fmt: skip
            slots.clear()
        assert not loader.summary().label_files, "label rows dropped: the label counts would differ"
    return sample


def check_against_darknet(monkeypatch: pytest.MonkeyPatch, seeds: range, iterations: int) -> None:
    reference = json.loads((HERE / "summary.json").read_text())["stats"]
    ours = summarize(darknetpy_sample(monkeypatch, seeds, iterations), reference)
    assert set(ours) == set(reference)
    bad = compare(reference, ours, TOLERANCE_SE)
    assert not bad, "darknetpy's augmentation differs from Darknet's:\n" + "\n".join(bad)


def test_cfg_is_the_one_darknet_ran() -> None:
    aug, batch = raccoon_config()
    assert (aug.width, aug.height, aug.classes, aug.max_boxes, batch) == (256, 256, 1, 200, 16)
    assert (aug.jitter, aug.resize, aug.hue) == pytest.approx((0.3, 1.5, 0.1))
    assert (aug.saturation, aug.exposure) == pytest.approx((1.5, 1.5))
    assert aug.flip and aug.blur == 1 and aug.mode == 3
    assert not aug.letter_box and not aug.mosaic_bound and aug.gaussian_noise == 0


def test_augmented_batches_match_darknet_statistics(monkeypatch: pytest.MonkeyPatch) -> None:
    """1024 images (2 seeds x 32 iterations of 16): 40% of Darknet's sample."""
    check_against_darknet(monkeypatch, range(1, 3), 32)


@pytest.mark.slow
def test_augmented_batches_match_darknet_statistics_large(monkeypatch: pytest.MonkeyPatch) -> None:
    """5120 images (5 seeds x 64 iterations), twice Darknet's sample (about 90 s)."""
    check_against_darknet(monkeypatch, range(11, 16), 64)
