"""darknetpy.data.augment / truth / pixels: Darknet's per-image training augmentation."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from darknetpy.model.cfg import Options, parse_cfg
from darknetpy.data.augment import (
    AugmentConfig,
    Crop,
    Draws,
    detection_mode,
    draw_augmentation,
    jitter_crop,
    limit_blur,
    mixup_code,
    rand_precalc_random,
    rand_scale,
)
from darknetpy.data.dataset import augment_detection
from darknetpy.data.mosaic import mosaic_piece
from darknetpy.data.pixels import (
    augment_image, blur_image, gaussian_noise, hsv_shift, hsv_shift_region,
)
from darknetpy.data.truth import blend_truth, correct_boxes, fill_truth_detection
from darknetpy.errors import CfgError
from darknetpy.model.heads.options import parse_gaussian_yolo_options, parse_yolo_options
from darknetpy.model.heads.region import parse_region_options
from darknetpy.model.netconfig import NetConfig
from tests.data.scenes import PALETTE, check_boxes_cover_colours, make_scene


def draws(**kw) -> Draws:
    base = {"r1": 0.5, "r2": 0.5, "r3": 0.5, "r4": 0.5, "resize_r1": 0.5, "resize_r2": 0.5,
            "flip": False, "dhue": 0.0, "dsat": 1.0, "dexp": 1.0, "blur": 0, "gaussian_noise": 0}
    base.update(kw)
    return Draws(**base)


def aug(**kw) -> AugmentConfig:
    base = {"width": 96, "height": 80, "classes": 12, "jitter": 0.0, "flip": False}
    base.update(kw)
    return AugmentConfig(**base)


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("mixup, cutmix, mosaic, code, mode", [
    (0, False, False, 0, 0),
    (1, False, False, 1, 1),
    (0, True, False, 2, 0),   # cutmix alone is turned off for detection
    (0, False, True, 3, 3),
    (1, False, True, 3, 3),   # mosaic overrides mixup
    (0, True, True, 4, 3),    # cutmix + mosaic gives mosaic
])
def test_mixup_code_table(mixup, cutmix, mosaic, code, mode) -> None:
    assert mixup_code(mixup, cutmix, mosaic) == code and detection_mode(code) == mode
    assert aug(mixup=mixup, cutmix=cutmix, mosaic=mosaic).mode == mode


def test_config_rules() -> None:
    cfg = aug(saturation=0, exposure=0)
    assert cfg.saturation == 1 and cfg.exposure == 1  # load_thread
    with pytest.raises(CfgError, match="letter_box=1 and mosaic=1"):
        aug(mosaic=True, letter_box=True)
    with pytest.raises(CfgError, match="mixup=5"):
        aug(mixup=5)
    aug(cutmix=True, letter_box=True)  # cutmix alone is off, so letter_box is fine


# Two [net]s (letter_box=1 excludes mosaic=1) and every head kind; between them each
# AugmentConfig field takes a non-default value, and each expected value is written out here.
FROM_NET = [
    ("""[net]
width=96
height=64
channels=3
hue=.1
saturation=1.5
exposure=1.25
flip=0
blur=3
gaussian_noise=7
mixup=1
cutmix=1
mosaic=1
mosaic_bound=1
[yolo]
classes=3
anchors=10,14
jitter=.5
resize=1.5
max=90
""", {"width": 96, "height": 64, "classes": 3, "jitter": 0.5, "resize": 1.5, "hue": 0.1,
      "saturation": 1.5, "exposure": 1.25, "flip": False, "blur": 3, "gaussian_noise": 7,
      "mixup": 1, "cutmix": True, "mosaic": True, "mosaic_bound": True, "letter_box": False,
      "max_boxes": 90}),
    ("""[net]
width=32
height=48
channels=3
exposure=2
letter_box=1
[Gaussian_yolo]
classes=5
anchors=10,14
jitter=.25
resize=2
max=30
""", {"width": 32, "height": 48, "classes": 5, "jitter": 0.25, "resize": 2.0, "hue": 0.0,
      "saturation": 1.0, "exposure": 2.0, "flip": True, "blur": 0, "gaussian_noise": 0,
      "mixup": 0, "cutmix": False, "mosaic": False, "mosaic_bound": False, "letter_box": True,
      "max_boxes": 30}),
    ("""[net]
width=64
height=64
channels=3
mixup=1
[region]
classes=7
anchors=10,14
jitter=.125
resize=1.25
max=40
""", {"width": 64, "height": 64, "classes": 7, "jitter": 0.125, "resize": 1.25, "hue": 0.0,
      "saturation": 1.0, "exposure": 1.0, "flip": True, "blur": 0, "gaussian_noise": 0,
      "mixup": 1, "cutmix": False, "mosaic": False, "mosaic_bound": False, "letter_box": False,
      "max_boxes": 40}),
]


@pytest.mark.parametrize("text, expected", FROM_NET)
def test_from_net_maps_every_field(text, expected) -> None:
    net_section, head_section = parse_cfg(text, "from_net.cfg")
    parse_head = {"yolo": parse_yolo_options, "Gaussian_yolo": parse_gaussian_yolo_options,
                  "region": parse_region_options}[head_section.name]
    config = AugmentConfig.from_net(NetConfig.from_section(net_section),
                                    parse_head(Options(head_section)))
    assert set(expected) == {f.name for f in dataclasses.fields(AugmentConfig)}
    assert {k: getattr(config, k) for k in expected} == pytest.approx(expected)


def test_from_net_cases_move_every_field_off_its_default() -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(AugmentConfig)}
    moved = {k for _, expected in FROM_NET for k, v in expected.items() if v != defaults[k]}
    assert moved == set(defaults)


def test_from_net_keeps_the_constructor_checks() -> None:
    net, head = parse_cfg("[net]\nwidth=32\nheight=32\nchannels=3\nmosaic=1\nletter_box=1\n"
                          "[yolo]\nanchors=10,14\n", "n.cfg")
    with pytest.raises(CfgError, match="letter_box=1 and mosaic=1"):
        AugmentConfig.from_net(NetConfig.from_section(net), parse_yolo_options(Options(head)))


# ----------------------------------------------------------------------------- random helpers


def test_rand_helpers(rng) -> None:
    assert rand_precalc_random(-10, 10, 0.25) == -5
    assert rand_precalc_random(10, -10, 0.25) == -5  # bounds swapped
    values = np.array([rand_scale(rng, 1.5) for _ in range(4000)])
    assert values.min() >= 1 / 1.5 - 1e-6 and values.max() <= 1.5 + 1e-6
    assert 0.4 < (values >= 1).mean() < 0.6  # inverted half the time
    fixed = [draw_augmentation(rng, aug(hue=0.1, saturation=1.5, exposure=1.5, flip=True, blur=5,
                                        gaussian_noise=20)) for _ in range(2000)]
    assert all(-0.1 <= d.dhue <= 0.1 for d in fixed)
    assert 0.4 < np.mean([d.flip for d in fixed]) < 0.6
    blurs = np.array([d.blur for d in fixed])
    assert set(blurs) == {0, 1, 5} and all(0.28 < (blurs == b).mean() < 0.39 for b in (0, 1, 5))
    assert 0.4 < np.mean([d.gaussian_noise == 20 for d in fixed]) < 0.6
    assert not any(d.flip for d in (draw_augmentation(rng, aug(flip=False)) for _ in range(50)))


# ----------------------------------------------------------------------------- crop


def test_jitter_crop_offsets_truncate_toward_zero() -> None:
    a = aug(jitter=0.2)
    crop = jitter_crop(100, 50, 96, 80, draws(r1=0.0, r2=1.0, r3=0.49, r4=0.25), a)
    # dw = 20, dh = 10; pleft = -20, pright = 20, ptop = trunc(-0.2) = 0, pbot = trunc(-5) = -5
    assert (crop.pleft, crop.pright, crop.ptop, crop.pbot) == (-20, 20, 0, -5)
    assert (crop.swidth, crop.sheight) == (100, 55)


def test_jitter_crop_resize_offsets() -> None:
    a = aug(resize=1.5)
    # min_rdw = int(100*(1-1.5)/2) = -25, max_rdw = int(100*(1-1/1.5)/2) = 16
    crop = jitter_crop(100, 100, 96, 80, draws(resize_r1=0.0, resize_r2=1.0), a)
    assert (crop.pleft, crop.pright, crop.ptop, crop.pbot) == (-25, 16, -25, 16)
    down = jitter_crop(100, 100, 96, 80, draws(resize_r1=0.0, resize_r2=1.0), aug(resize=0.5))
    # resize < 1: shrink side only, from [min_rdw, 0] = [-50, 0]
    assert (down.pleft, down.pright) == (-50, 0)


def test_jitter_crop_letter_box_matches_the_network_aspect() -> None:
    wide = jitter_crop(200, 100, 100, 100, draws(), aug(letter_box=True))
    assert (wide.ptop, wide.pbot, wide.swidth, wide.sheight) == (-50, -50, 200, 200)
    tall = jitter_crop(100, 300, 200, 100, draws(), aug(letter_box=True))
    assert (tall.pleft, tall.pright, tall.swidth, tall.sheight) == (-250, -250, 600, 300)


@pytest.mark.parametrize("flip, piece, expect", [
    (False, 0, (0, 30, 0, 30)), (False, 1, (30, 0, 0, 30)),
    (False, 2, (0, 30, 30, 0)), (False, 3, (30, 0, 30, 0)),
    (True, 0, (30, 0, 0, 30)), (True, 1, (0, 30, 0, 30)),
    (True, 2, (30, 0, 30, 0)), (True, 3, (0, 30, 30, 0)),
])
def test_move_to_corner_rule(flip: bool, piece: int, expect) -> None:
    a = aug(jitter=0.3)
    # r = 0.75 -> each offset = 0.75*60 - 30 = 15; moving one side onto the other gives 30
    crop = jitter_crop(100, 100, 96, 80, draws(r1=.75, r2=.75, r3=.75, r4=.75, flip=flip), a, piece)
    assert (crop.pleft, crop.pright, crop.ptop, crop.pbot) == expect


def test_invalid_crop_falls_back_to_the_full_image() -> None:
    crop = jitter_crop(10, 10, 96, 80, draws(r1=1.0, r2=1.0), aug(jitter=0.9))
    # pleft = pright = 9: swidth = -8 -> reset, but pright is kept (as Darknet)
    assert (crop.pleft, crop.ptop, crop.swidth, crop.sheight, crop.pright) == (0, 0, 10, 10, 9)


# ----------------------------------------------------------------------------- labels


def _crop(pleft=0, pright=0, ptop=0, pbot=0, ow=100, oh=100, flip=False) -> Crop:
    return Crop(pleft, pright, ptop, pbot, ow - pleft - pright, oh - ptop - pbot, ow, oh, flip)


@pytest.mark.parametrize("crop, expect", [
    (_crop(pleft=10, pright=10), (0.5, 0.5, 0.25, 0.2)),
    (_crop(pright=20), (0.625, 0.5, 0.25, 0.2)),
    (_crop(pright=20, flip=True), (0.375, 0.5, 0.25, 0.2)),
    (_crop(pleft=-25, pright=-25), (0.5, 0.5, 0.2 / 1.5, 0.2)),
    (_crop(pleft=45), (0.15 / 0.55 / 2, 0.5, 0.15 / 0.55, 0.2)),  # pixels 45..60 of 45..100
])
def test_correct_boxes_hand_computed(crop: Crop, expect) -> None:
    box = np.array([[0, 0.5, 0.5, 0.2, 0.2]], np.float32)
    xywh, valid = correct_boxes(box, *crop.box_transform(), crop.flip)
    assert valid[0]
    np.testing.assert_allclose(xywh[0], expect, atol=2e-6)


def test_correct_boxes_marks_invalid() -> None:
    boxes = np.array([[0, 0, 0, .2, .2], [0, 1.3, .5, .2, .2], [0, .5, -.2, .2, .2],
                      [0, .5, .5, .2, .2]], np.float32)
    _, valid = correct_boxes(boxes, 0, 0, 1, 1, False)
    assert valid.tolist() == [False, False, False, True]


def test_fill_truth_truncates_to_max_before_filtering() -> None:
    # two boxes of an unknown class and one good one; max = 2: the good one survives only
    # when the shuffle puts it in the first two rows (Darknet truncates before filtering)
    boxes = np.array([[5, .3, .3, .2, .2], [5, .5, .5, .2, .2], [0, .7, .7, .2, .2]], np.float32)
    counts = [
        int((fill_truth_detection(boxes, _crop(), 3, 2, 96, 80, np.random.default_rng(s))[0][:, 0] > 0).sum())
        for s in range(200)
    ]
    assert set(counts) == {0, 1}
    full = fill_truth_detection(boxes, _crop(), 3, 3, 96, 80, np.random.default_rng(0))[0]
    assert (full[:, 0] > 0).sum() == 1 and full.shape == (3, 5)


def test_fill_truth_filters_tiny_and_packs_rows(rng) -> None:
    net_w, net_h = 100, 50
    boxes = np.array([
        [1, .2, .5, 0.009, .5],    # under one network pixel wide: dropped
        [2, .4, .5, 0.011, .5],    # just over: kept
        [0, .6, .5, .5, 0.019],    # under one pixel high (1/50 = 0.02): dropped
        [0, .8, .5, .3, .4],
    ], np.float32)
    truth, min_w_h = fill_truth_detection(boxes, _crop(), 3, 10, net_w, net_h, rng)
    kept = truth[truth[:, 0] > 0]
    assert len(kept) == 2 and sorted(kept[:, 4].tolist()) == [0, 2]
    assert (truth[2:] == 0).all() and min_w_h == 1  # 0.011*100 -> 1 pixel
    assert fill_truth_detection(boxes[:0], _crop(), 3, 10, 96, 80, rng)[1] == 0


def test_blend_truth_appends_up_to_max() -> None:
    a = np.zeros((4, 5), np.float32)
    a[:2] = [[.1, .1, .1, .1, 0], [.2, .2, .2, .2, 1]]
    b = np.zeros((4, 5), np.float32)
    b[:3] = [[.3, .3, .3, .3, 2], [.4, .4, .4, .4, 3], [.5, .5, .5, .5, 4]]
    out = blend_truth(a, b)
    assert out[:, 4].tolist() == [0, 1, 2, 3] and (a[2:] == 0).all()


def test_limit_blur() -> None:
    assert limit_blur(5, 100) == 5 and limit_blur(5, 39) == 4 and limit_blur(5, 0) == 0
    assert limit_blur(1, 0) == 1 and limit_blur(0, 0) == 0


# ----------------------------------------------------------------------------- pixels


def test_flip_mirrors_image_and_boxes(rng) -> None:
    image, labels = make_scene(rng, 120, 90, [0, 1, 2])
    a = aug(width=120, height=90, max_boxes=5)
    crop = jitter_crop(120, 90, 120, 90, draws(flip=True), a)
    out = augment_image(image, crop, 120, 90, draws(flip=True), 0, np.zeros((5, 5), np.float32), rng)
    np.testing.assert_array_equal(out, image[:, ::-1])
    truth, _ = fill_truth_detection(labels, crop, 12, 5, 120, 90, rng)
    for cls, x, y, w, h in labels:
        row = truth[truth[:, 4] == cls][0]
        np.testing.assert_allclose(row[:4], [1 - x, y, w, h], atol=1e-6)


def test_hsv_shift_behaviour() -> None:
    img = np.array([[[255, 0, 0], [0, 0, 255], [50, 50, 50], [200, 200, 200]]], np.uint8)
    assert hsv_shift(img, 0.0, 1.0, 1.0) is img  # nothing to do: skipped
    green = hsv_shift(img, 60 / 179, 1.0, 1.0)  # H += 60 (OpenCV: 120 degrees)
    assert tuple(green[0, 0]) == (0, 255, 0)
    assert tuple(green[0, 2]) == (50, 50, 50)  # grey has no hue to shift
    assert tuple(hsv_shift(img, -0.1, 1.0, 1.0)[0, 0]) == (255, 0, 0)  # H=0 saturates at 0
    # blue (H=120) + 70 = 190: past 180, wraps like H=10 in HSV -> RGB
    wrapped = hsv_shift(img, 70 / 179, 1.0, 1.0)[0, 1]
    expect = cv2.cvtColor(np.array([[[10, 255, 255]]], np.uint8), cv2.COLOR_HSV2RGB)[0, 0]
    assert tuple(wrapped) == tuple(expect)
    bright = hsv_shift(img, 0.0, 1.0, 2.0)
    assert tuple(bright[0, 2]) == (100, 100, 100) and tuple(bright[0, 3]) == (255, 255, 255)
    pale = hsv_shift(img, 0.0, 0.5, 1.0)  # S 255 -> 128 (rounded)
    assert tuple(pale[0, 0]) == tuple(
        cv2.cvtColor(np.array([[[0, 128, 255]]], np.uint8), cv2.COLOR_HSV2RGB)[0, 0]
    )


@pytest.mark.parametrize("blur", [0, 1])
def test_mosaic_region_has_the_whole_image_pixels(rng, blur: int) -> None:
    """A mosaic piece's quadrant (``region``) holds the pixels of the whole augmented image, as
    Darknet converts the whole piece: OpenCV's HSV conversion rounds the end of each row its own
    way, so the colour step must not run on the region's columns alone (it did: up to 15% of the
    quadrant's pixels were 1 off Darknet's)."""
    image = cv2.GaussianBlur(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8), (5, 5), 0)
    crop = jitter_crop(400, 300, 256, 256, draws(), aug(width=256, height=256))
    truth = np.zeros((2, 5), np.float32)
    truth[0] = [0.4, 0.5, 0.3, 0.4, 0]
    for _ in range(8):
        cut_x, cut_y = (int(v) for v in rng.integers(51, 205, 2))
        colour = draws(dhue=float(rng.uniform(-0.1, 0.1)), dsat=float(rng.uniform(0.67, 1.5)),
                       dexp=float(rng.uniform(0.67, 1.5)), blur=blur)
        whole = augment_image(image, crop, 256, 256, colour, blur, truth, rng)
        for index in range(4):
            region = mosaic_piece(index, crop, 256, 256, cut_x, cut_y).src
            x0, y0, x1, y1 = region
            part = augment_image(image, crop, 256, 256, colour, blur, truth, rng, region=region)
            np.testing.assert_array_equal(part, whole[y0:y1, x0:x1])
            np.testing.assert_array_equal(hsv_shift_region(whole, region, 0.0, 1.0, 1.0),
                                          whole[y0:y1, x0:x1])


def test_gaussian_noise_only_brightens(rng) -> None:
    img = np.full((50, 50, 3), 100, np.uint8)
    out = gaussian_noise(img, 30, rng)
    assert (out >= img).all() and (out > img).mean() > 0.4
    assert gaussian_noise(img, 0, rng) is img
    assert (gaussian_noise(np.full((5, 5, 3), 250, np.uint8), 127, rng) <= 255).all()


def test_blur_one_keeps_the_boxes_sharp(rng) -> None:
    img = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    truth = np.zeros((3, 5), np.float32)
    truth[0] = [0.5, 0.5, 0.5, 0.5, 0]  # pixels 20..60 x 15..45
    out = blur_image(img, 1, truth)
    np.testing.assert_array_equal(out[15:45, 20:60], img[15:45, 20:60])
    assert (out[:10] != img[:10]).mean() > 0.9
    strong = blur_image(img, 7, truth)
    np.testing.assert_array_equal(strong, cv2.GaussianBlur(img, (7, 7), 0))


def test_mean_colour_fills_the_padding() -> None:
    img = np.zeros((20, 20, 3), np.uint8)
    img[:, :10] = (200, 100, 0)  # mean colour (100, 50, 0)
    a = aug(width=40, height=20)
    crop = _crop(pleft=-20, ow=20, oh=20)  # 40 x 20: left half padding
    out = augment_image(img, crop, 40, 20, draws(), 0, np.zeros((1, 5), np.float32),
                        np.random.default_rng(0))
    assert (out[:, :19] == (100, 50, 0)).all() and (out[:, 21:30] == (200, 100, 0)).all()
    assert a.width == 40


# ----------------------------------------------------------------------------- properties


@pytest.mark.parametrize("settings", [
    {"jitter": 0.3, "flip": True},
    {"jitter": 0.5, "flip": True, "resize": 1.5},
    {"jitter": 0.2, "flip": True, "letter_box": True},
    {"jitter": 0.3, "resize": 0.6},
])
def test_boxes_follow_the_pixels(settings: dict) -> None:
    """Each box painted in its own colour: after augmentation the truth still covers it."""
    a = aug(width=96, height=80, **settings)
    for seed in range(40):
        rng = np.random.default_rng(seed)
        image, labels = make_scene(rng, int(rng.integers(60, 200)), int(rng.integers(60, 200)),
                                   list(rng.permutation(12)[:4]))
        out, truth = augment_detection(image, labels, a, 96, 80, rng)
        assert out.shape == (80, 96, 3) and out.dtype == np.uint8
        check_boxes_cover_colours(out, truth, 12)


def test_colour_jitter_keeps_geometry_and_range() -> None:
    a = aug(jitter=0.3, flip=True, hue=0.1, saturation=1.5, exposure=1.5, gaussian_noise=10, blur=3)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        image, labels = make_scene(rng, 120, 100, [0, 1, 2, 3])
        out, truth = augment_detection(image, labels, a, 96, 80, rng)
        assert out.dtype == np.uint8 and out.shape == (80, 96, 3)
        n = int((truth[:, 0] > 0).sum())
        assert ((truth[:n, :4] > 0) & (truth[:n, :4] <= 1)).all() and (truth[n:] == 0).all()


def test_same_generator_state_same_result() -> None:
    a = aug(jitter=0.3, flip=True, hue=0.1, saturation=1.5, exposure=1.5, gaussian_noise=10)
    image, labels = make_scene(np.random.default_rng(0), 120, 100, [0, 1, 2])
    first = augment_detection(image, labels, a, 96, 80, np.random.default_rng(7))
    second = augment_detection(image, labels, a, 96, 80, np.random.default_rng(7))
    other = augment_detection(image, labels, a, 96, 80, np.random.default_rng(8))
    assert all((x == y).all() for x, y in zip(first, second))
    assert not (first[0] == other[0]).all()
    assert PALETTE.shape == (12, 3)
