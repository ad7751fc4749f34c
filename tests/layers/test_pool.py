"""[maxpool], [local_avgpool], [avgpool]: darknet's asymmetric -FLT_MAX padding and window counts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from darknetpy.errors import CfgError

from . import arange, network, run


def darknet_pool(x: np.ndarray, size: int, stride: int, padding: int, average: bool) -> np.ndarray:
    """forward_maxpool_layer / forward_local_avgpool_layer transcribed loop by loop (one image)."""
    c, h, w = x.shape
    out_h = (h + padding - size) // stride + 1
    out_w = (w + padding - size) // stride + 1
    offset = -(padding // 2)
    out = np.zeros((c, out_h, out_w), dtype=np.float64)
    for k, i, j in itertools.product(range(c), range(out_h), range(out_w)):
        best, total, count = -np.finfo(np.float32).max, 0.0, 0
        for n, m in itertools.product(range(size), range(size)):
            row, col = offset + i * stride + n, offset + j * stride + m
            if 0 <= row < h and 0 <= col < w:
                best = max(best, x[k, row, col])
                total += x[k, row, col]
                count += 1
        out[k, i, j] = (total / count if count else np.nan) if average else best  # 0/0: NaN
    return out


def test_size_2_stride_1_pads_right_and_bottom_with_minus_infinity() -> None:
    net = network("[maxpool]\nsize=2\nstride=1\n", channels=1, height=2, width=3)
    assert net.layers[0].out_shape.height == 2 and net.layers[0].out_shape.width == 3
    x = -torch.tensor([[1.0, 5.0, 2.0], [4.0, 3.0, 6.0]]).view(1, 1, 2, 3)
    # zero padding would give 0 in the last column and row; darknet's -FLT_MAX keeps the values.
    assert run(net, x)[0][0, 0].tolist() == [[-1.0, -2.0, -2.0], [-3.0, -3.0, -6.0]]
    assert run(net, -x)[0][0, 0].tolist() == [[5.0, 6.0, 6.0], [4.0, 6.0, 6.0]]


def test_size_2_stride_2_on_odd_input_gives_ceil() -> None:
    net = network("[maxpool]\nsize=2\nstride=2\n", channels=1, height=3, width=3)
    assert (net.layers[0].out_shape.height, net.layers[0].out_shape.width) == (2, 2)
    x = -arange(1, 1, 3, 3)
    assert run(net, x)[0][0, 0].tolist() == [[0.0, -2.0], [-6.0, -8.0]]


def test_spp_sizes_match_symmetric_padding() -> None:
    x = torch.randn(1, 4, 9, 9)
    for size in (5, 9, 13):
        net = network(f"[maxpool]\nsize={size}\nstride=1\n", channels=4, height=9, width=9)
        got = run(net, x)[0]
        torch.testing.assert_close(got, F.max_pool2d(x, size, 1, size // 2))
        np.testing.assert_allclose(got[0].numpy(), darknet_pool(x[0].numpy(), size, 1, size - 1, False))


@pytest.mark.parametrize(("size", "stride", "padding"), [
    (2, 1, None), (2, 2, None), (3, 2, None), (3, 2, 0), (3, 2, 1), (4, 4, None), (5, 3, 2),
    # windows larger than the image, or padding larger than a window (all-padding windows):
    (2, 2, 3), (13, 1, None), (10, 3, None), (3, 1, 8), (9, 4, 12),
])
@pytest.mark.parametrize("kind", ["maxpool", "local_avgpool"])
def test_pools_match_darknets_loops(kind: str, size: int, stride: int, padding: int | None) -> None:
    extra = "" if padding is None else f"padding={padding}\n"
    net = network(f"[{kind}]\nsize={size}\nstride={stride}\n{extra}", channels=2, height=7, width=8)
    x = torch.randn(1, 2, 7, 8)
    expected = darknet_pool(x[0].numpy(), size, stride, size - 1 if padding is None else padding,
                            kind == "local_avgpool")
    got = run(net, x)[0][0]
    assert tuple(got.shape) == (net.layers[0].out_shape.channels, net.layers[0].out_shape.height,
                                net.layers[0].out_shape.width) == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-6)


def test_local_avgpool_averages_only_in_image_values() -> None:
    net = network("[local_avgpool]\nsize=2\nstride=1\n", channels=1, height=2, width=3)
    assert net.layers[0].darknet_name == "none"
    x = arange(1, 1, 2, 3)  # [[0, 1, 2], [3, 4, 5]]
    assert run(net, x)[0][0, 0].tolist() == [[2.0, 3.0, 3.5], [3.5, 4.5, 5.0]]


def test_stride_x_and_stride_y() -> None:
    net = network("[maxpool]\nsize=2\nstride_x=2\nstride_y=1\n", channels=1, height=4, width=4)
    assert (net.layers[0].out_shape.height, net.layers[0].out_shape.width) == (4, 2)
    assert run(net, arange(1, 1, 4, 4))[0].shape == (1, 1, 4, 2)


def test_maxpool_depth_takes_every_out_channels_th_channel() -> None:
    net = network("[maxpool]\nmaxpool_depth=1\nout_channels=2\n", channels=5, height=1, width=1)
    x = torch.tensor([3.0, -1.0, 7.0, 4.0, 5.0]).view(1, 5, 1, 1)
    assert run(net, x)[0].flatten().tolist() == [7.0, 4.0]  # max(3, 7, 5), max(-1, 4)


def test_maxpool_antialiasing_blurs_a_stride_1_pool() -> None:
    net = network("[maxpool]\nsize=2\nstride=2\nantialiasing=1\n", channels=2)
    assert net.layers[0].out_shape.height == 4
    x = torch.randn(1, 2, 8, 8)
    pooled = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=-1e30), 2, 1)
    blur = (torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16).expand(2, 1, 3, 3)
    torch.testing.assert_close(run(net, x)[0], F.conv2d(pooled, blur, stride=2, padding=1, groups=2))


def test_bflops() -> None:
    pool = network("[maxpool]\nsize=3\nstride=2\n", channels=4, height=8, width=8).layers[0]
    assert pool.bflops() == pytest.approx(3 * 3 * 4 * 4 * 4 / 1e9)
    avg = network("[local_avgpool]\nsize=4\nstride=4\n", channels=32, height=208,
                  width=208).layers[0]
    assert avg.bflops() == pytest.approx(0.001384, rel=1e-3)  # structure.json, contrastive cfg


def test_global_avgpool() -> None:
    net = network("[avgpool]\n", channels=2, height=2, width=2)
    x = arange(1, 2, 2, 2)
    assert run(net, x)[0].flatten().tolist() == [1.5, 5.5]
    assert net.layers[0].out_shape.numel == 2


def test_window_larger_than_the_input_is_an_error() -> None:
    with pytest.raises(CfgError, match=r"size=5 is larger than the input 3 x 3 plus padding=0"):
        network("[maxpool]\nsize=5\nstride=1\npadding=0\n", height=3, width=3)


def test_huge_windows_do_not_pad_a_huge_tensor() -> None:
    net = network("[maxpool]\nsize=2147483647\nstride=1\n", channels=2, height=3, width=4)
    x = torch.randn(1, 2, 3, 4)
    y = run(net, x)[0]  # every window covers the whole image: the global max everywhere
    assert y.shape == x.shape
    torch.testing.assert_close(y, x.amax(dim=(2, 3), keepdim=True).expand_as(x))


@pytest.mark.parametrize("body", ["[maxpool]\nstride=1000000000000000000000\n",
                                  "[maxpool]\nsize=2\npadding=2147483647\n",
                                  "[maxpool]\nmaxpool_depth=1\nout_channels=2147483647\n"])
def test_sizes_beyond_darknets_int_are_errors(body: str) -> None:
    with pytest.raises(CfgError, match=r"t.cfg:\d+ \[maxpool\]: .*(32-bit int|int limit)"):
        network(body)
