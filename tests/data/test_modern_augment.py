"""darknetpy.data.modern: the YOLOv8 (ultralytics) and YOLOX training augmentation.

Property tests on synthetic scenes where every box is painted its own colour (tests/data/scenes.py):
after each step the boxes kept still frame their colours, lie inside the image, the padding is grey
114, and every draw comes from the generator given.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from darknetpy.data.modern import (
    KIND_DEFAULTS,
    FitCache,
    ModernAugment,
    Stage,
    build_modern_sample,
    sample_index,
)
from darknetpy.data.modern.common import (
    FILL,
    hflip,
    mosaic_layout,
    paste_mosaic,
    pixel_boxes,
    to_truth,
    warp_boxes,
)
from darknetpy.data.modern.v8 import (
    box_candidates,
    letterbox,
    load_fit,
    random_flip,
    random_hsv,
    random_perspective,
    ultralytics_mixup,
    ultralytics_mosaic,
)
from darknetpy.data.modern.yolox import (
    augment_hsv,
    fit_image,
    preproc,
    train_transform,
    yolox_mixup,
    yolox_mosaic,
    yolox_random_affine,
)
from darknetpy.errors import CfgError, DataError
from tests.data.scenes import PALETTE, colour_mask, make_scene

QUIET = {"hsv_prob": 0.0, "mixup_prob": 0.0}  # colours stay exact: the boxes can be checked


class MemorySource:
    """In-memory images and labels; records every image handed out. ``cycle``: ``draw`` hands out
    the images after the last one in turn (no image twice in a mosaic) instead of drawing."""

    def __init__(
        self, items: list[tuple[np.ndarray, np.ndarray]], bad: set[int] = frozenset(),
        cycle: bool = False,
    ) -> None:
        self.items, self.bad, self.loaded, self.cycle = items, set(bad), [], cycle

    def image(self, index: int) -> np.ndarray:
        if index in self.bad:
            raise DataError(f"image {index} is unreadable")
        self.loaded.append(index)
        return self.items[index][0]

    def labels(self, index: int, events: object) -> np.ndarray:
        return self.items[index][1]

    def draw(self, rng: np.random.Generator, events: object) -> tuple[int, np.ndarray, np.ndarray]:
        while True:
            if self.cycle:
                index = ((self.loaded[-1] if self.loaded else -1) + 1) % len(self.items)
            else:
                index = int(rng.integers(len(self.items)))
            if index not in self.bad:
                return index, self.image(index), self.labels(index, events)


def scenes(count: int = 4, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` scenes of different sizes; scene k holds classes 3k, 3k+1, 3k+2 (mod 12)."""
    rng = np.random.default_rng(seed)
    return [
        make_scene(rng, 120 + 37 * k, 90 + 23 * (3 - k % 4), [(3 * k + j) % 12 for j in range(3)])
        for k in range(count)
    ]


def rows_of(truth: np.ndarray) -> np.ndarray:
    n = int((truth[:, 2] > 0).sum())
    assert (truth[n:] == 0).all(), "rows after the last box must be zero"
    assert (truth[:n, 2] > 0).all(), "boxes are packed from row 0"
    return truth[:n]


def check_boxes_frame_colours(
    image: np.ndarray, truth: np.ndarray, margin: float = 1.5, interior: float | None = 0.85
) -> np.ndarray:
    """Every kept box lies in the image; every pixel of a kept class's colour lies inside (a
    margin around) one of that class's boxes; with ``interior``, each box is mostly its colour."""
    rows = rows_of(truth)
    height, width = image.shape[:2]
    x, y, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    eps = 1e-5
    assert ((x - w / 2 >= -eps) & (x + w / 2 <= 1 + eps)).all(), rows
    assert ((y - h / 2 >= -eps) & (y + h / 2 <= 1 + eps)).all(), rows
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    for cls in np.unique(rows[:, 4]).astype(int):
        mask = colour_mask(image, cls)
        covered = np.zeros_like(mask)
        for row in rows[rows[:, 4] == cls]:
            left, right = (row[0] - row[2] / 2) * width, (row[0] + row[2] / 2) * width
            top, bottom = (row[1] - row[3] / 2) * height, (row[1] + row[3] / 2) * height
            covered |= (xs > left - margin) & (xs < right + margin) & (ys > top - margin) & (
                ys < bottom + margin
            )
            inner = (xs > left + margin) & (xs < right - margin) & (ys > top + margin) & (
                ys < bottom - margin
            )
            if interior is not None and inner.sum() >= 4:
                assert mask[inner].mean() >= interior, f"class {cls} box {row} is not its colour"
        stray = mask & ~covered
        assert stray.sum() == 0, f"{stray.sum()} pixels of class {cls} outside its boxes"
    return rows


# ----------------------------------------------------------------------------- boxes


def test_pixel_boxes_and_truth_round_trip() -> None:
    labels = np.array([[3, 0.5, 0.25, 0.2, 0.1], [1, 0.05, 0.9, 0.2, 0.2]], np.float32)
    boxes = pixel_boxes(labels, 200, 100)
    np.testing.assert_allclose(boxes[0], [80, 20, 120, 30, 3])
    np.testing.assert_allclose(boxes[1], [-10, 80, 30, 100, 1], atol=1e-5)
    truth = to_truth(boxes, 200, 100, max_boxes=4)
    np.testing.assert_allclose(truth[0], [0.5, 0.25, 0.2, 0.1, 3], atol=1e-6)
    np.testing.assert_allclose(truth[1], [0.075, 0.9, 0.15, 0.2, 1], atol=1e-6)  # clipped at x=0
    assert (truth[2:] == 0).all()


def test_truth_drops_empty_boxes_and_keeps_max() -> None:
    boxes = np.array([[5, 5, 5, 9, 0], [-9, 0, -1, 5, 1], [1, 1, 4, 4, 2], [2, 2, 6, 6, 3]],
                     np.float32)  # fmt: skip
    truth = to_truth(boxes, 10, 10, max_boxes=1)
    assert truth.shape == (1, 5) and truth[0, 4] == 2  # zero width / outside dropped, then cut


def test_warp_boxes_identity_and_rotation() -> None:
    boxes = np.array([[10, 20, 30, 60, 4]], np.float32)
    np.testing.assert_allclose(warp_boxes(boxes, np.eye(3)), boxes)
    quarter = cv2.getRotationMatrix2D((0, 0), 90, 1.0)  # (x, y) -> (y, -x)
    np.testing.assert_allclose(warp_boxes(boxes, quarter), [[20, -30, 60, -10, 4]], atol=1e-4)


def test_hflip_mirrors_pixels_and_boxes() -> None:
    image, labels = make_scene(np.random.default_rng(1), 90, 60, [0, 5])
    boxes = pixel_boxes(labels, 90, 60)
    flipped, moved = hflip(image, boxes)
    np.testing.assert_array_equal(flipped, image[:, ::-1])
    check_boxes_frame_colours(flipped, to_truth(moved, 90, 60, 8))
    np.testing.assert_allclose(moved[:, [0, 2]], 90 - boxes[:, [2, 0]])


# ----------------------------------------------------------------------------- mosaic


def test_mosaic_layout_tiles_around_the_centre() -> None:
    dst, src = mosaic_layout(0, 50, 40, 80, 60, 200, 200)
    assert dst == (0, 0, 50, 40) and src == (30, 20, 80, 60)  # the image's bottom-right corner
    dst, src = mosaic_layout(3, 150, 170, 80, 60, 200, 200)
    assert dst == (150, 170, 200, 200) and src == (0, 0, 50, 30)  # cut at the canvas edge
    with pytest.raises(ValueError):
        mosaic_layout(4, 0, 0, 1, 1, 2, 2)


@pytest.mark.parametrize("mosaic", [ultralytics_mosaic, yolox_mosaic])
def test_mosaic_shows_four_images_on_grey(mosaic) -> None:
    size = 96
    pieces = []
    for k in range(4):
        image = np.full((size - 10 * k, size, 3), 10 + 20 * k, np.uint8)  # one grey per image
        pieces.append((image, np.array([[5, 5, 40, 30, k]], np.float32)))
    for seed in range(20):
        canvas, boxes = mosaic(pieces, size, size, np.random.default_rng(seed))
        assert canvas.shape == (2 * size, 2 * size, 3)
        values = set(np.unique(canvas))
        assert {10, 30, 50, 70} <= values <= {10, 30, 50, 70, FILL}  # every image, then grey
        assert ((boxes[:, :4] >= 0) & (boxes[:, :4] <= 2 * size)).all()
        for image_k, (x1, y1, x2, y2, k) in zip(range(4), boxes):
            patch = canvas[int(math.ceil(y1)) : int(y2), int(math.ceil(x1)) : int(x2)]
            assert patch.size == 0 or (patch == 10 + 20 * int(k)).all()


def test_mosaic_fill_is_114_outside_the_pieces() -> None:
    pieces = [(np.full((40 + 5 * k, 50, 3), 7, np.uint8), np.zeros((0, 5), np.float32))
              for k in range(4)]  # fmt: skip
    canvas, _ = paste_mosaic(pieces, 70, 60, 128, 128)
    inside = np.zeros((128, 128), bool)
    for k, (image, _) in enumerate(pieces):
        (x1, y1, x2, y2), _ = mosaic_layout(k, 70, 60, image.shape[1], image.shape[0], 128, 128)
        inside[y1:y2, x1:x2] = True
    assert (canvas[inside] == 7).all() and (canvas[~inside] == FILL).all()


def test_ultralytics_mosaic_centre_range() -> None:
    pieces = [(np.full((64, 64, 3), k, np.uint8), np.zeros((0, 5), np.float32)) for k in range(4)]
    centres = []
    for seed in range(200):
        canvas, _ = ultralytics_mosaic(pieces, 64, 64, np.random.default_rng(seed))
        ys, xs = np.nonzero(canvas[..., 0] == 0)
        centres.append((xs.max() + 1, ys.max() + 1))  # piece 0 ends at the centre
    xc, yc = np.array(centres).T
    assert xc.min() >= 32 and xc.max() < 96 and yc.min() >= 32 and yc.max() < 96
    assert xc.max() - xc.min() > 40  # spread over the range


# ----------------------------------------------------------------------------- affine / perspective


def test_random_perspective_identity_copies_the_image() -> None:
    image, labels = make_scene(np.random.default_rng(2), 80, 80, [1, 2])
    boxes = pixel_boxes(labels, 80, 80)
    out, kept = random_perspective(image, boxes, 80, 80, np.random.default_rng(0), translate=0.0,
                                   scale=(1.0, 1.0))  # fmt: skip
    np.testing.assert_array_equal(out, image)
    np.testing.assert_allclose(kept, boxes, atol=1e-4)


def test_random_perspective_centres_a_single_image() -> None:
    """close_mosaic path: the fitted image lands in the middle of the output (8.4.190's letterbox)."""
    image = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    out, _ = random_perspective(image, np.zeros((0, 5), np.float32), 100, 80,
                                np.random.default_rng(0), translate=0.0, scale=(1.0, 1.0))  # fmt: skip
    np.testing.assert_array_equal(out[20:60, 20:80], image)
    assert (out[:20] == FILL).all() and (out[:, :20] == FILL).all() and (out[60:] == FILL).all()


def test_random_perspective_fills_114_and_follows_the_boxes() -> None:
    image, labels = make_scene(np.random.default_rng(3), 100, 100, [0, 3, 4, 8])
    out, kept = random_perspective(image, pixel_boxes(labels, 100, 100), 100, 100,
                                   np.random.default_rng(0), translate=0.0, scale=(0.5, 0.5))  # fmt: skip
    assert (out[:24] == FILL).all() and (out[:, -24:] == FILL).all()  # shrunk to the centre half
    assert (out[30:70, 30:70] != FILL).any()
    assert len(kept) == 4
    check_boxes_frame_colours(out, to_truth(kept, 100, 100, 8))


@pytest.mark.parametrize("seed", range(6))
def test_random_perspective_rotated_boxes_hold_their_colours(seed: int) -> None:
    image, labels = make_scene(np.random.default_rng(seed), 120, 90, [2, 5, 9])
    out, kept = random_perspective(image, pixel_boxes(labels, 120, 90), 96, 96,
                                   np.random.default_rng(seed), degrees=15, shear=5,
                                   perspective=0.0005)  # fmt: skip
    check_boxes_frame_colours(out, to_truth(kept, 96, 96, 8), margin=2.0, interior=None)


def test_box_candidates_rules() -> None:
    before = np.array([[0, 0, 100, 100]] * 4, np.float32)
    after = np.array([[10, 10, 90, 90], [0, 0, 2, 50], [0, 0, 30, 30], [0, 0, 3, 3]], np.float32)
    # kept; too thin (w <= 2); 9% of the area; 0.09% of the area
    assert box_candidates(before, after).tolist() == [True, False, False, False]
    long = np.array([[0, 0, 303, 3]], np.float32)
    assert not box_candidates(np.array([[0, 0, 400, 3]], np.float32), long)[0]  # aspect >= 100


def test_yolox_affine_identity_is_the_top_left_crop() -> None:
    canvas = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 50, 40, 1], [60, 60, 120, 120, 2]], np.float32)
    out, moved = yolox_random_affine(canvas, boxes, 64, 64, np.random.default_rng(0), degrees=0,
                                     translate=0, scales=(1, 1), shear=0)  # fmt: skip
    np.testing.assert_array_equal(out, canvas[:64, :64])
    np.testing.assert_allclose(moved, [[10, 10, 50, 40, 1], [60, 60, 64, 64, 2]])


@pytest.mark.parametrize("seed", range(6))
def test_yolox_affine_boxes_hold_their_colours(seed: int) -> None:
    image, labels = make_scene(np.random.default_rng(seed), 128, 128, [1, 6, 10])
    out, moved = yolox_random_affine(image, pixel_boxes(labels, 128, 128), 96, 96,
                                     np.random.default_rng(seed), scales=(0.5, 1.0))  # fmt: skip
    check_boxes_frame_colours(out, to_truth(moved, 96, 96, 8), margin=2.0, interior=None)


# ----------------------------------------------------------------------------- colour


def test_random_hsv_zero_gains_is_the_identity() -> None:
    image = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    assert random_hsv(image, np.random.default_rng(0), 0, 0, 0) is image


def test_random_hsv_keeps_shape_grey_and_value() -> None:
    rng = np.random.default_rng(5)
    image = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    out = random_hsv(image, rng, 0.015, 0.7, 0.4)
    assert out.shape == image.shape and out.dtype == np.uint8 and not np.array_equal(out, image)
    grey = np.full((4, 4, 3), 90, np.uint8)
    np.testing.assert_array_equal(random_hsv(grey, rng, 0.5, 0.9, 0.0), grey)  # no colour made
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    shifted = random_hsv(red, rng, 0.3, 0.0, 0.0)
    assert (shifted.max(axis=2) == 255).all() and not (shifted == red).all()  # hue moves, V kept


def test_yolox_hsv_is_the_int16_arithmetic() -> None:
    image = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    for seed in range(8):
        out = augment_hsv(image, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        gains = rng.uniform(-1, 1, 3) * [5, 30, 30] * rng.integers(0, 2, 3)
        gains = gains.astype(np.int16)
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.int16)
        hsv[..., 0] = (hsv[..., 0] + gains[0]) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] + gains[1], 0, 255)
        hsv[..., 2] = np.clip(hsv[..., 2] + gains[2], 0, 255)
        np.testing.assert_array_equal(out, cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB))


def test_random_flip_probabilities() -> None:
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    boxes = np.array([[0, 0, 1, 1, 0]], np.float32)
    out, moved = random_flip(image, boxes, np.random.default_rng(0), lr=1.0, ud=1.0)
    np.testing.assert_array_equal(out, image[::-1, ::-1])
    np.testing.assert_allclose(moved, [[2, 1, 3, 2, 0]])
    same, kept = random_flip(image, boxes, np.random.default_rng(0), lr=0.0)
    assert same is image and kept is boxes


# ----------------------------------------------------------------------------- letterbox / preproc


def test_letterbox_pads_centred_with_114() -> None:
    image, labels = make_scene(np.random.default_rng(4), 100, 50, [3, 7])
    out, boxes = letterbox(image, pixel_boxes(labels, 100, 50), 64, 64)
    assert out.shape == (64, 64, 3)
    assert (out[:16] == FILL).all() and (out[48:] == FILL).all()
    assert not (out[16:48] == FILL).all(axis=2).any()
    check_boxes_frame_colours(out, to_truth(boxes, 64, 64, 8))


def test_preproc_pads_top_left_with_114() -> None:
    image = np.full((50, 100, 3), 9, np.uint8)
    out, r = preproc(image, 64, 64)
    assert r == 0.64 and (out[:32] == 9).all() and (out[32:] == FILL).all()


def test_fit_rules() -> None:
    image = np.zeros((375, 500, 3), np.uint8)
    assert load_fit(image, 224, 224).shape == (168, 224, 3)  # ceil(375 * 0.448) = 168
    assert load_fit(image, 500, 500) is image
    fitted, r = fit_image(image, 224, 224)
    assert fitted.shape == (168, 224, 3) and r == pytest.approx(0.448)


def test_train_transform_drops_tiny_boxes_and_falls_back() -> None:
    image, labels = make_scene(np.random.default_rng(6), 128, 128, [0, 1])
    boxes = pixel_boxes(labels, 128, 128)
    tiny = np.array([[3, 3, 3.5, 20, 4]], np.float32)  # half a pixel wide
    out, kept = train_transform(image, np.concatenate([boxes, tiny]), 64, 64,
                                np.random.default_rng(0), hsv_prob=0.0)  # fmt: skip
    assert len(kept) == 2 and set(kept[:, 4]) == {0, 1}
    check_boxes_frame_colours(out, to_truth(kept, 64, 64, 8))
    out, kept = train_transform(image, tiny, 64, 64, np.random.default_rng(0), flip_prob=1.0)
    np.testing.assert_array_equal(out, preproc(image, 64, 64)[0])  # the un-augmented image
    np.testing.assert_allclose(kept, tiny * [0.5, 0.5, 0.5, 0.5, 1])
    out, kept = train_transform(image, np.zeros((0, 5), np.float32), 64, 64,
                                np.random.default_rng(0))  # fmt: skip
    assert len(kept) == 0 and np.array_equal(out, preproc(image, 64, 64)[0])


# ----------------------------------------------------------------------------- mixup


@pytest.mark.parametrize("seed", range(8))
def test_yolox_mixup_blends_and_moves_the_boxes(seed: int) -> None:
    black = np.zeros((96, 96, 3), np.uint8)
    mine = np.array([[10, 10, 30, 30, 11]], np.float32)
    other, labels = make_scene(np.random.default_rng(seed), 120, 80, [2, 4, 6])
    blended, boxes = yolox_mixup(black, mine, other, pixel_boxes(labels, 120, 80),
                                 np.random.default_rng(seed))  # fmt: skip
    assert blended.shape == black.shape and len(boxes) == 4 and boxes[0, 4] == 11
    doubled = blended.astype(np.int16) * 2  # 0.5 x 0 + 0.5 x other, truncated
    assert doubled.max() <= 255
    truth = to_truth(boxes[1:], 96, 96, 8)
    check_boxes_frame_colours(doubled.astype(np.uint8), truth, margin=2.0, interior=None)


def test_ultralytics_mixup_weights_and_boxes() -> None:
    a, b = np.full((4, 4, 3), 200, np.uint8), np.full((4, 4, 3), 100, np.uint8)
    boxes_a, boxes_b = np.ones((1, 5), np.float32), np.zeros((2, 5), np.float32)
    out, boxes = ultralytics_mixup((a, boxes_a), (b, boxes_b), np.random.default_rng(0))
    r = np.random.default_rng(0).beta(32.0, 32.0)
    assert (out == int(200 * r + 100 * (1 - r))).all() and len(boxes) == 3


# ----------------------------------------------------------------------------- one sample


def aug_for(kind: str, **overrides) -> ModernAugment:
    return ModernAugment.for_kind(kind, **{**QUIET, **overrides})


@pytest.mark.parametrize("kind", ["yolov8", "yolox"])
@pytest.mark.parametrize("size", [(96, 96), (128, 96)])
def test_samples_frame_their_colours(kind: str, size: tuple[int, int]) -> None:
    source = MemorySource(scenes(4), cycle=True)  # each class once per sample: ultralytics
    interior = 0.85 if kind == "yolov8" else None  # drops crushed boxes; YOLOX rotates, shears
    total = 0
    for seed in range(12):
        image, truth = build_modern_sample(source, seed % 4, size, Stage(), np.random.default_rng(seed),
                                           aug_for(kind))  # fmt: skip
        assert image.shape == (size[1], size[0], 3) and image.dtype == np.uint8
        assert truth.shape == (KIND_DEFAULTS[kind].max_boxes, 5) and truth.dtype == np.float32
        total += len(check_boxes_frame_colours(image, truth, margin=2.0, interior=interior))
    assert total >= 12  # boxes survive the mosaic + affine


@pytest.mark.parametrize("kind", ["yolov8", "yolox"])
def test_samples_with_colour_and_mixup_keep_boxes_in_the_image(kind: str) -> None:
    source = MemorySource(scenes(8))
    aug = ModernAugment.for_kind(kind, mixup_prob=1.0)
    for seed in range(6):
        image, truth = build_modern_sample(source, None, (96, 96), Stage(),
                                           np.random.default_rng(seed), aug)  # fmt: skip
        rows = rows_of(truth)
        assert len(rows) and ((rows[:, :4] > 0) & (rows[:, :4] <= 1)).all()


@pytest.mark.parametrize("kind", ["yolov8", "yolox"])
def test_mosaic_uses_four_images_and_close_mosaic_one(kind: str) -> None:
    source = MemorySource(scenes(8))
    build_modern_sample(source, 3, (96, 96), Stage(), np.random.default_rng(0), aug_for(kind))
    assert len(source.loaded) == 4 and source.loaded[0] == 3
    for seed in range(10):
        source.loaded.clear()
        image, truth = build_modern_sample(source, seed % 8, (96, 96), Stage(mosaic=False,
                                           mixup=False), np.random.default_rng(seed),
                                           aug_for(kind, mixup_prob=1.0))  # fmt: skip
        assert source.loaded == [seed % 8]  # one image, no mixup partner either
        own = {(3 * (seed % 8) + j) % 12 for j in range(3)}
        assert set(rows_of(truth)[:, 4].astype(int)) <= own
        others = set(range(12)) - own
        assert not any(colour_mask(image, c).sum() > 4 for c in others)


def test_stage_follows_close_mosaic_iteration() -> None:
    aug = ModernAugment.for_kind("yolov8", close_mosaic_iteration=301)
    assert Stage.at(aug, 300) == Stage(True, True) and Stage.at(aug, 301) == Stage(False, False)
    never = KIND_DEFAULTS["yolox"]
    assert Stage.at(never, 10**6) == Stage(True, True)


@pytest.mark.parametrize("kind", ["yolov8", "yolox"])
def test_samples_deterministic_by_seed_and_cache_blind(kind: str) -> None:
    source, aug = MemorySource(scenes(8)), ModernAugment.for_kind(kind, mixup_prob=0.5)
    cache = FitCache()

    def sample(seed: int, cache: FitCache | None = None) -> tuple[np.ndarray, np.ndarray]:
        return build_modern_sample(source, 2, (96, 64), Stage(), np.random.default_rng(seed), aug,
                                   cache=cache)  # fmt: skip

    for seed in range(4):
        first, again, cached = sample(seed), sample(seed), sample(seed, cache)
        for a, b in ((first, again), (first, cached), (first, sample(seed, cache))):
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(sample(0)[0], sample(1)[0])
    assert cache.nbytes > 0


def test_unusable_first_image_is_replaced() -> None:
    source = MemorySource(scenes(4), bad={1})
    image, truth = build_modern_sample(source, 1, (64, 64), Stage(mosaic=False),
                                       np.random.default_rng(0), aug_for("yolov8"))  # fmt: skip
    assert image.shape == (64, 64, 3) and 1 not in source.loaded


def test_fit_cache_budget_and_read_only() -> None:
    cache = FitCache(budget=3 * 100)
    for index in range(5):
        got = cache.get(("yolov8", index, 10, 10), lambda: np.zeros((10, 10), np.uint8))
        assert not got.flags.writeable
    assert cache.nbytes == 300 and len(cache._items) == 3
    big = cache.get(("yolov8", 9, 1, 1), lambda: np.zeros(1000, np.uint8))
    assert big.flags.writeable and cache.nbytes == 300  # over the budget: not kept


def test_sample_index_is_a_permutation_per_epoch() -> None:
    first = [sample_index(7, p, 10) for p in range(10)]
    second = [sample_index(7, p, 10) for p in range(10, 20)]
    assert sorted(first) == sorted(second) == list(range(10)) and first != second
    assert first == [sample_index(7, p, 10) for p in range(10)]


# ----------------------------------------------------------------------------- settings


def test_defaults_are_the_references() -> None:
    v8, x = KIND_DEFAULTS["yolov8"], KIND_DEFAULTS["yolox"]
    assert (v8.mosaic_prob, v8.mixup_prob, v8.degrees, v8.translate, v8.scale_range, v8.shear,
            v8.hsv_gains, v8.flip_prob) == (1.0, 0.0, 0.0, 0.1, (0.5, 1.5), 0.0,
                                             (0.015, 0.7, 0.4), 0.5)  # fmt: skip
    assert (x.mosaic_prob, x.mixup_prob, x.degrees, x.translate, x.scale_range, x.shear,
            x.hsv_gains, x.mixup_scale, x.max_boxes) == (1.0, 1.0, 10.0, 0.1, (0.1, 2.0), 2.0,
                                                         (5, 30, 30), (0.5, 1.5), 120)  # fmt: skip


def test_settings_are_checked() -> None:
    assert ModernAugment.for_kind("yolox", scale_range=[0.5, 1]).scale_range == (0.5, 1.0)
    with pytest.raises(CfgError, match="yolov8, yolox"):
        ModernAugment.for_kind("yolov5")
    with pytest.raises(CfgError, match="mosaic_prob=1.5"):
        ModernAugment.for_kind("yolov8", mosaic_prob=1.5)
    with pytest.raises(CfgError, match="perspective"):
        ModernAugment.for_kind("yolox", perspective=0.001)
    with pytest.raises(CfgError, match="hsv_gains= needs 3"):
        ModernAugment.for_kind("yolov8", hsv_gains=(0.1, 0.2))
    with pytest.raises(CfgError, match="scale_range"):
        ModernAugment.for_kind("yolov8", scale_range=(0, 1))
    with pytest.raises(CfgError, match="unknown augmentation settings"):
        ModernAugment.for_kind("yolov8", mosiac_prob=1.0)
