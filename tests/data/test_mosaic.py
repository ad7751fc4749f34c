"""darknetpy.data.mosaic: Darknet's 4-image mosaic geometry and blend_truth_mosaic."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from darknetpy.data.augment import AugmentConfig, Crop
from darknetpy.data.dataset import Events, TrainSource, build_slot
from darknetpy.data.mosaic import MosaicPiece, blend_truth_mosaic, cut_points, mosaic_piece
from tests.data.scenes import check_boxes_cover_colours, write_dataset


def test_cut_points_range() -> None:
    rng = np.random.default_rng(0)
    xs, ys = zip(*(cut_points(rng, 416, 320) for _ in range(3000)))
    # rand_int(w*0.2, w*0.8) with C's float -> int truncation: [83, 332] and [64, 256]
    assert (min(xs), max(xs), min(ys), max(ys)) == (83, 332, 64, 256)


CROP = Crop(pleft=-20, pright=10, ptop=-10, pbot=-30, swidth=210, sheight=140, ow=200, oh=100,
            flip=False)


@pytest.mark.parametrize("index, src, dst", [
    (0, (60, 10, 100, 70), (0, 0, 40, 60)),
    (1, (10, 10, 70, 70), (40, 0, 100, 60)),
    (2, (60, 10, 100, 50), (0, 60, 40, 100)),
    (3, (10, 10, 70, 50), (40, 60, 100, 100)),
])
def test_piece_regions_hand_computed(index: int, src, dst) -> None:
    # left = min(40, 20*100/200 = 10), top = min(60, 10*100/100), right = 0 (pright > 0),
    # bot = min(40, 30*100/100 = 30)
    piece = mosaic_piece(index, CROP, 100, 100, 40, 60)
    assert piece.shifts == (10, 0, 10, 30) and piece.src == src and piece.dst == dst


def test_piece_shifts_swap_sides_when_flipped() -> None:
    flipped = Crop(**{**CROP.__dict__, "flip": True})
    assert mosaic_piece(0, flipped, 100, 100, 40, 60).shifts == (0, 10, 10, 30)


def _blend(box, index, shifts=(0, 0, 0, 0), bound=False, cut=(40, 60), net=100):
    truth = np.zeros((4, 5), np.float32)
    piece = np.zeros((4, 5), np.float32)
    piece[0] = box
    dst = {0: (0, 0), 1: (cut[0], 0), 2: (0, cut[1]), 3: cut}[index]
    spec = MosaicPiece(index, (0, 0, 0, 0), (*dst, 0, 0), shifts)
    return blend_truth_mosaic(truth, piece, spec, 100, 100, *cut, net, net, bound)[0]


def test_blend_truth_mosaic_shift_and_clip_to_image() -> None:
    # piece 3, shifts (10, 0, 10, 30): x += (40-10)/100, y += (60-10)/100 -> (0.8, 1.0);
    # bottom edge 110 > 100: clipped to the image, y = 0.95, h = 0.1
    row = _blend([0.5, 0.5, 0.2, 0.2, 7], 3, (10, 0, 10, 30))
    np.testing.assert_allclose(row, [0.8, 0.95, 0.2, 0.1, 7], atol=1e-5)


def test_mosaic_bound_clips_to_the_quadrant() -> None:
    # piece 0: x -= 0.6, y -= 0.4 -> (0.3, 0.1); its right edge 50 crosses cut_x = 40
    free = _blend([0.9, 0.5, 0.4, 0.2, 1], 0)
    bound = _blend([0.9, 0.5, 0.4, 0.2, 1], 0, bound=True)
    np.testing.assert_allclose(free, [0.3, 0.1, 0.4, 0.2, 1], atol=1e-5)
    # bound: edges become ints first, by C truncation of float32 values: left (0.3-0.2)*100 =
    # 9.99999 -> 9, right 50 -> 40 (the cut), top 0, bottom 19.99999 -> 19
    np.testing.assert_allclose(bound, [0.245, 0.095, 0.31, 0.19, 1], atol=1e-6)


def test_blend_truth_mosaic_drops_and_appends() -> None:
    gone = _blend([0.3, 0.3, 0.4, 0.4, 1], 0)  # shifted entirely left of the image
    assert (gone == 0).all()
    tiny = _blend([0.9, 0.5, 0.4, 0.2, 1], 0, net=2)  # w 0.4 is not > 1/2: dropped
    assert (tiny == 0).all()
    truth = np.zeros((3, 5), np.float32)
    truth[:2] = [[0.5, 0.5, 0.1, 0.1, 0], [0.6, 0.6, 0.1, 0.1, 0]]
    piece = np.zeros((3, 5), np.float32)
    piece[:2] = [[0.9, 0.5, 0.4, 0.2, 1], [0.8, 0.5, 0.2, 0.2, 2]]
    spec = MosaicPiece(0, (0, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0))
    out = blend_truth_mosaic(truth, piece, spec, 100, 100, 40, 60, 100, 100, False)
    assert out[:, 4].tolist() == [0, 0, 1] and (truth[2] == 0).all()  # only one free slot


def _flat_images(folder: Path, count: int) -> list[Path]:
    folder.mkdir()
    paths = []
    for i in range(count):
        colour = (40 * i % 256, 255 - 30 * i, 90 + 50 * i % 160)
        img = np.zeros((50 + 7 * i, 80 - 5 * i, 3), np.uint8)
        img[:] = colour
        paths.append(folder / f"flat{i}.png")
        cv2.imwrite(str(paths[-1]), img)
    return paths


def test_pieces_land_in_their_quadrants(tmp_path: Path) -> None:
    """Flat-colour images, jitter on: each quadrant is one colour, split at the cut point."""
    source = TrainSource(_flat_images(tmp_path / "flat", 8), classes=1)
    aug = AugmentConfig(width=96, height=64, classes=1, jitter=0.4, flip=True, mosaic=True)
    events = Events()
    for seed in range(25):
        image, truth = build_slot(source, aug, 3, 96, 64, np.random.default_rng(seed), events)
        cut_x, cut_y = cut_points(np.random.default_rng(seed), 96, 64)  # the first draw
        for x0, y0, x1, y1 in [(0, 0, cut_x, cut_y), (cut_x, 0, 96, cut_y),
                               (0, cut_y, cut_x, 64), (cut_x, cut_y, 96, 64)]:
            quadrant = image[y0:y1, x0:x1].reshape(-1, 3)
            assert (quadrant == quadrant[0]).all(), (seed, x0, y0)
        assert (truth == 0).all()
    # no label files: every image is background, reported once per file
    reports = events.label_reports
    assert len(reports) == len({r.path for r in reports}) == 8 and all(r.missing for r in reports)


@pytest.mark.parametrize("bound", [True, False])
def test_mosaic_boxes_follow_the_pixels(tmp_path: Path, bound: bool) -> None:
    paths = write_dataset(tmp_path / "scenes", np.random.default_rng(3), 12, classes_per_image=2)
    source = TrainSource(paths, classes=12)
    aug = AugmentConfig(width=128, height=96, classes=12, jitter=0.3, flip=True, mosaic=True,
                        mosaic_bound=bound)
    for seed in range(30):
        image, truth = build_slot(source, aug, 3, 128, 96, np.random.default_rng(seed), Events())
        assert image.shape == (96, 128, 3)
        # without mosaic_bound a box may run over a neighbouring piece, so only coverage holds
        check_boxes_cover_colours(image, truth, 12, interior=0.85 if bound else None)
