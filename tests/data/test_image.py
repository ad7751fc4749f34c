"""darknetpy.data.image: decoding, Darknet's resize_image / letterbox_image, golden inputs."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from darknetpy.data.darknet_resize import resize_chw_kernel, resize_hwc_kernel, resize_image_numpy
from darknetpy.data.image import (
    letterbox_image,
    letterbox_size,
    load_image,
    prepare_test_input,
    resize_image,
    to_chw_float,
)
from darknetpy.errors import DataError
from tests.conftest import GOLDEN

F32 = np.float32


def _golden_inputs() -> list[str]:
    if not GOLDEN.is_dir():
        return ["<absent>"]
    return sorted(p.name for p in GOLDEN.iterdir() if (p / "input.npy").is_file())


def _cfg_int(text: str, key: str) -> int:
    match = re.search(rf"^\s*{key}\s*=\s*(\d+)", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def reference_resize(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """resize_image (src/image.c) written as its loops, one float32 operation at a time."""
    c, ih, iw = im.shape
    if (iw, ih) == (w, h):
        return im.copy()
    part = np.zeros((c, ih, w), F32)
    w_scale = F32(iw - 1) / F32(w - 1)
    h_scale = F32(ih - 1) / F32(h - 1)
    for k in range(c):
        for r in range(ih):
            for col in range(w):
                if col == w - 1 or iw == 1:
                    val = im[k, r, iw - 1]
                else:
                    sx = F32(col) * w_scale
                    ix = int(sx)
                    dx = F32(sx - F32(ix))
                    val = F32(F32(F32(1) - dx) * im[k, r, ix]) + F32(dx * im[k, r, ix + 1])
                part[k, r, col] = val
    out = np.zeros((c, h, w), F32)
    for k in range(c):
        for r in range(h):
            sy = F32(r) * h_scale
            iy = int(sy)
            dy = F32(sy - F32(iy))
            for col in range(w):
                out[k, r, col] = F32(F32(1) - dy) * part[k, iy, col]
            if r == h - 1 or ih == 1:
                continue
            for col in range(w):
                out[k, r, col] = F32(out[k, r, col] + F32(dy * part[k, iy + 1, col]))
    return out


@pytest.mark.parametrize("resize", [resize_image, resize_image_numpy], ids=["numba", "numpy"])
@pytest.mark.parametrize("size", [(7, 5, 13, 9), (13, 9, 7, 5), (16, 12, 5, 17), (1, 6, 4, 3),
                                  (6, 1, 3, 4), (31, 23, 31, 23), (40, 30, 11, 37)])
def test_resize_image_matches_the_c_loops_bit_for_bit(size: tuple[int, ...], resize, rng) -> None:
    iw, ih, w, h = size
    im = rng.random((3, ih, iw), dtype=F32)
    np.testing.assert_array_equal(resize(im, w, h), reference_resize(im, w, h))


# ----------------------------------- the compiled resize_image vs its numpy reference, bit for bit


def assert_same_bits(got: np.ndarray, expect: np.ndarray) -> None:
    """Equal shapes, dtypes and bit patterns (so -0.0 != 0.0); NaNs only need the same places."""
    assert got.shape == expect.shape and got.dtype == expect.dtype == np.float32
    nan = np.isnan(expect)
    np.testing.assert_array_equal(np.isnan(got), nan)
    bad = (got.view(np.uint32) != expect.view(np.uint32)) & ~nan
    assert not bad.any(), f"{bad.sum()} values differ, first at {np.argwhere(bad)[0]}"


def reference_prepare(image: np.ndarray, w: int, h: int, letter: bool,
                      channels=(0, 1, 2)) -> np.ndarray:
    """prepare_test_input as it was written before the fused kernel, on resize_image_numpy."""
    chw = to_chw_float(image[:, :, list(channels)])
    if not letter:
        return resize_image_numpy(chw, w, h)
    new_w, new_h = letterbox_size(chw.shape[2], chw.shape[1], w, h)
    boxed = np.full((chw.shape[0], h, w), 0.5, F32)
    dx, dy = (w - new_w) // 2, (h - new_h) // 2
    boxed[:, dy : dy + new_h, dx : dx + new_w] = resize_image_numpy(chw, new_w, new_h)
    return boxed


# (in_w, in_h, w, h): 1x1 in and out, single rows/columns, odd sizes, up and down, one axis equal
GRID = [(1, 1, 1, 1), (1, 1, 5, 3), (5, 3, 1, 1), (1, 7, 4, 9), (7, 1, 9, 4), (1, 7, 1, 3),
        (7, 1, 3, 1), (2, 2, 3, 3), (3, 3, 2, 2), (13, 7, 13, 29), (13, 7, 29, 7), (13, 7, 5, 7),
        (13, 7, 13, 2), (13, 7, 13, 7), (17, 23, 416, 416), (768, 576, 416, 416),
        (768, 576, 416, 312), (101, 99, 37, 211), (211, 37, 99, 101), (640, 1, 416, 416),
        (8, 9, 24, 42)]  # 8->24, 9->42: (out-1)*scale rounds below in-1 (last column/row quirks)


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("size", GRID, ids=[f"{a}x{b}-{c}x{d}" for a, b, c, d in GRID])
def test_compiled_resize_equals_numpy_reference(size, channels: int) -> None:
    iw, ih, w, h = size
    rng = np.random.default_rng([iw, ih, w, h, channels])
    im = (rng.standard_normal((channels, ih, iw)) * 3).astype(F32)
    assert_same_bits(resize_image(im, w, h), resize_image_numpy(im, w, h))


def test_compiled_resize_takes_2d_float64_and_strided_input(rng) -> None:
    im = rng.random((19, 23))  # (H, W) float64: cast to float32 first, as the reference does
    assert_same_bits(resize_image(im, 11, 30), resize_image_numpy(im, 11, 30))
    strided = rng.random((3, 40, 60), dtype=F32)[:, ::3, ::-2]
    assert_same_bits(resize_image(strided, 7, 9), resize_image_numpy(strided, 7, 9))


def test_compiled_resize_keeps_signed_zeros_infinities_and_nans(rng) -> None:
    im = rng.standard_normal((3, 9, 11)).astype(F32)
    im[0, 2, 3], im[1, 4, :], im[2, :, 5] = np.inf, -0.0, np.nan
    im[0, 8, 10], im[1, 0, 0] = -np.inf, np.float32(3e38)
    for w, h in [(11, 17), (23, 9), (5, 4), (11, 9), (1, 1)]:
        with np.errstate(invalid="ignore", over="ignore"):  # inf * 0 in both
            expect = resize_image_numpy(im, w, h)
        assert_same_bits(resize_image(im, w, h), expect)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(iw=st.integers(1, 48), ih=st.integers(1, 48), w=st.integers(1, 64), h=st.integers(1, 64),
       channels=st.sampled_from([1, 3, 4]), seed=st.integers(0, 2**32 - 1))
def test_compiled_resize_equals_numpy_reference_fuzzed(iw, ih, w, h, channels, seed) -> None:
    im = np.random.default_rng(seed).random((channels, ih, iw), dtype=F32)
    assert_same_bits(resize_image(im, w, h), resize_image_numpy(im, w, h))


@pytest.mark.parametrize("letter", [False, True], ids=["stretch", "letterbox"])
@pytest.mark.parametrize("size", [(768, 576, 416, 416), (576, 768, 416, 416), (1, 1, 32, 32),
                                  (416, 416, 416, 416), (416, 300, 416, 416), (33, 17, 64, 48),
                                  (1920, 1080, 608, 608), (7, 200, 96, 64), (8, 9, 24, 42)])
def test_fused_uint8_input_equals_to_chw_float_then_resize(size, letter: bool) -> None:
    iw, ih, w, h = size
    rgb = np.random.default_rng([iw, ih]).integers(0, 256, (ih, iw, 3), dtype=np.uint8)
    rgb[0, 0], rgb[-1, -1] = 0, 255
    got = prepare_test_input(rgb, w, h, letter)
    assert_same_bits(got, reference_prepare(rgb, w, h, letter))
    if letter:  # letterbox_image (float path) is unchanged and agrees
        assert_same_bits(got, letterbox_image(to_chw_float(rgb), w, h))


@pytest.mark.parametrize("channels, depth", [((2, 1, 0), 3), ((2, 1, 0), 4), ((0, 0, 0), 1),
                                             ((3, 0, 1), 4)])
def test_fused_uint8_input_reads_channels_in_the_given_order(channels, depth: int) -> None:
    image = np.random.default_rng(depth).integers(0, 256, (45, 61, depth), dtype=np.uint8)
    for letter in (False, True):
        got = prepare_test_input(image, 32, 40, letter, channels=channels)
        assert_same_bits(got, reference_prepare(image, 32, 40, letter, channels))
    bgr = prepare_test_input(image, 32, 40, False, channels=channels)
    rgb = prepare_test_input(np.ascontiguousarray(image[:, :, list(channels)]), 32, 40, False)
    assert_same_bits(bgr, rgb)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(iw=st.integers(1, 40), ih=st.integers(1, 40), w=st.integers(1, 50), h=st.integers(1, 50),
       letter=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_fused_uint8_input_fuzzed(iw, ih, w, h, letter, seed) -> None:
    rgb = np.random.default_rng(seed).integers(0, 256, (ih, iw, 3), dtype=np.uint8)
    if letter and 0 in letterbox_size(iw, ih, w, h):
        with pytest.raises(ValueError, match="must be positive"):
            prepare_test_input(rgb, w, h, letter)
        return
    assert_same_bits(prepare_test_input(rgb, w, h, letter), reference_prepare(rgb, w, h, letter))


def test_fused_uint8_input_takes_a_strided_view_and_other_dtypes(rng) -> None:
    big = rng.integers(0, 256, (50, 70, 4), dtype=np.uint8)
    view = big[::2, 3::3, :3]
    assert_same_bits(prepare_test_input(view, 20, 30, True), reference_prepare(view, 20, 30, True))
    floats = rng.integers(0, 256, (9, 13, 3)).astype(np.float64)  # not uint8: the float path
    assert_same_bits(prepare_test_input(floats, 20, 30, False),
                     reference_prepare(floats, 20, 30, False))


@pytest.mark.parametrize("image, channels, match", [
    (np.zeros((4, 4, 3), np.uint8), (0, 1, 3), "do not index"),
    (np.zeros((4, 4, 3), np.uint8), (-1, 1, 2), "do not index"),
    (np.zeros((4, 4), np.uint8), (0, 0, 0), "do not index"),
    (np.zeros((0, 4, 3), np.uint8), (0, 1, 2), "empty 4x0 image"),
    (np.zeros((5, 0, 3), np.uint8), (0, 1, 2), "empty 0x5 image"),
])
def test_prepare_test_input_rejects_bad_channels_and_empty_images(image, channels, match) -> None:
    for letter in (False, True):
        with pytest.raises(ValueError, match=match):
            prepare_test_input(image, 8, 8, letter, channels=channels)


@pytest.mark.parametrize("shape, w, h, match", [((3, 0, 5), 4, 4, "empty 5x0 image"),
                                                 ((3, 5, 5), 0, 4, "must be positive")])
def test_resize_image_rejects_empty_input_and_output(shape, w: int, h: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resize_image(np.zeros(shape, F32), w, h)


def test_resize_image_of_no_channels_is_empty() -> None:
    assert resize_image(np.zeros((0, 5, 6), F32), 3, 4).shape == (0, 4, 3)


def test_kernels_are_compiled_once_whatever_the_callers_arrays(rng) -> None:
    frozen = rng.integers(0, 256, (9, 8, 3), dtype=np.uint8)
    frozen.flags.writeable = False
    for image in (frozen, frozen[::2, ::-1], np.array(frozen)):
        prepare_test_input(image, 5, 6, False)
        prepare_test_input(image, 5, 6, True)
        prepare_test_input(image, 5, 6, True, channels_last=True)
        resize_image(to_chw_float(image), 5, 6)
        resize_image(to_chw_float(image).astype(np.float64)[:, ::2], 5, 6)
    assert len(resize_chw_kernel.signatures) == 1
    assert len(resize_hwc_kernel.signatures) == 2  # one per output layout: CHW, channels-last


def test_resize_image_is_align_corners_not_opencv(rng) -> None:
    im = rng.random((3, 10, 10), dtype=F32)
    out = resize_image(im, 19, 19)  # scale (10-1)/(19-1) = 0.5: even outputs hit source pixels
    np.testing.assert_array_equal(out[:, :18:2, :18:2], im[:, :9, :9])
    np.testing.assert_array_equal(out[:, :18, -1], reference_resize(im, 19, 19)[:, :18, -1])
    ocv = cv2.resize(im.transpose(1, 2, 0), (19, 19), interpolation=cv2.INTER_LINEAR)
    assert np.abs(ocv.transpose(2, 0, 1) - out).max() > 1e-3


@pytest.mark.parametrize("image, net, expect", [
    ((768, 576), (256, 256), (256, 192)),
    ((576, 768), (256, 256), (192, 256)),
    ((500, 375), (416, 416), (416, 312)),
    ((100, 100), (320, 256), (256, 256)),
    ((333, 500), (416, 320), (213, 320)),
])
def test_letterbox_size_uses_integer_arithmetic(image, net, expect) -> None:
    assert letterbox_size(*image, *net) == expect


def test_letterbox_embeds_at_integer_offset_on_half_grey(rng) -> None:
    im = rng.random((3, 30, 41), dtype=F32)  # 41x30 into 20x20: new 20x14, offset y (20-14)/2=3
    out = letterbox_image(im, 20, 20)
    assert letterbox_size(41, 30, 20, 20) == (20, 14)
    np.testing.assert_array_equal(out[:, :3], 0.5)
    np.testing.assert_array_equal(out[:, 17:], 0.5)
    np.testing.assert_array_equal(out[:, 3:17], reference_resize(im, 20, 14))


@pytest.mark.parametrize("name", _golden_inputs())
def test_golden_input_npy_is_reproduced(name: str, shared: Path) -> None:
    """The golden input.npy is dog.jpg at the net size: cv::resize of the float image, exactly.

    (Darknet's own test path uses resize_image; the golden files were fed to Darknet directly.)
    """
    folder = GOLDEN / name
    cfg = (folder / "net.cfg").read_text()
    expect = np.load(folder / "input.npy")
    image = load_image(shared / "images" / "dog.jpg")
    got = prepare_test_input(
        image, _cfg_int(cfg, "width"), _cfg_int(cfg, "height"), bool(_cfg_int(cfg, "letter_box")),
        method="opencv",
    )
    assert got.shape == expect.shape and got.dtype == np.float32
    assert np.abs(got - expect).max() <= 1e-6
    darknet = prepare_test_input(image, expect.shape[2], expect.shape[1], bool(_cfg_int(cfg, "letter_box")))
    assert darknet.shape == expect.shape and np.abs(darknet - expect).max() > 1e-2


def test_prepare_test_input_rejects_unknown_method() -> None:
    with pytest.raises(ValueError, match="darknet, opencv"):
        prepare_test_input(np.zeros((4, 4, 3), np.uint8), 8, 8, False, method="cubic")


# ----------------------------------------------------------------------------- decoding


def test_load_image_is_rgb(tmp_path: Path) -> None:
    bgr = np.zeros((4, 6, 3), np.uint8)
    bgr[:, :, 2] = 255  # red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    img = load_image(tmp_path / "red.png")
    assert img.dtype == np.uint8 and img.shape == (4, 6, 3)
    assert (img[..., 0] == 255).all() and (img[..., 1:] == 0).all()
    chw = to_chw_float(img)
    assert chw.shape == (3, 4, 6) and chw.dtype == np.float32 and chw[0].max() == 1.0


def test_load_image_converts_grey_alpha_and_16_bit(tmp_path: Path) -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    assert (load_image(tmp_path / "grey.png") == grey[:, :, None]).all()

    bgra = np.zeros((3, 4, 4), np.uint8)
    bgra[..., 0], bgra[..., 3] = 200, 7  # blue, almost transparent: alpha is dropped
    cv2.imwrite(str(tmp_path / "alpha.png"), bgra)
    assert (load_image(tmp_path / "alpha.png") == [0, 0, 200]).all()

    deep = np.full((3, 4, 3), 0x8000 + 0x00FF, np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    img = load_image(tmp_path / "deep.png")
    assert img.dtype == np.uint8 and (img == 0x80).all()


def test_load_image_expands_palette(tmp_path: Path) -> None:
    pil = pytest.importorskip("PIL.Image")
    pal = pil.new("P", (5, 3))
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    pal.putpixel((1, 1), 1)
    pal.save(tmp_path / "pal.png")
    img = load_image(tmp_path / "pal.png")
    assert tuple(img[0, 0]) == (10, 20, 30) and tuple(img[1, 1]) == (200, 100, 50)


@pytest.mark.parametrize("content, reason", [
    (None, "no such image"),
    (b"", "empty"),
    (b"hello, not an image", "cannot decode"),
])
def test_load_image_errors_name_the_file(tmp_path: Path, content, reason: str) -> None:
    path = tmp_path / "bad.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=reason) as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_load_image_rejects_truncated_jpeg(tmp_path: Path) -> None:
    ok, buf = cv2.imencode(".jpg", np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8))
    assert ok
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.tobytes()[: len(buf) * 2 // 3])
    with pytest.raises(DataError, match="truncated JPEG"):
        load_image(path)
