"""darknetpy.data.image: decoding, Darknet's resize_image / letterbox_image, golden inputs."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

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


@pytest.mark.parametrize("size", [(7, 5, 13, 9), (13, 9, 7, 5), (16, 12, 5, 17), (1, 6, 4, 3),
                                  (6, 1, 3, 4), (31, 23, 31, 23), (40, 30, 11, 37)])
def test_resize_image_matches_the_c_loops_bit_for_bit(size: tuple[int, ...], rng) -> None:
    iw, ih, w, h = size
    im = rng.random((3, ih, iw), dtype=F32)
    np.testing.assert_array_equal(resize_image(im, w, h), reference_resize(im, w, h))


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
