"""[upsample] (incl. negative stride), [reorg3d] and the old [reorg]: hand values and darknet's
flat-buffer loops (blas.c: upsample_cpu, reorg_cpu) transcribed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from darknetpy.errors import CfgError

from . import arange, network, run


def reorg_cpu(x: np.ndarray, w: int, h: int, c: int, stride: int, forward: bool) -> np.ndarray:
    """blas.c: reorg_cpu for one image, on flat buffers, loop by loop."""
    x = x.ravel()
    out = np.zeros_like(x)
    in_c = c // (stride * stride)
    for k, j, i in itertools.product(range(c), range(h), range(w)):
        in_index = i + w * (j + h * k)
        c2, offset = k % in_c, k // in_c
        w2, h2 = i * stride + offset % stride, j * stride + offset // stride
        out_index = w2 + w * stride * (h2 + h * stride * c2)
        if forward:
            out[out_index] = x[in_index]
        else:
            out[in_index] = x[out_index]
    return out


def downsample_cpu(x: np.ndarray, out_w: int, out_h: int, c: int, stride: int,
                   scale: float) -> np.ndarray:
    """upsample_cpu(l.output, out_w, out_h, c, 1, stride, 0, scale, net.input) for one image."""
    x = x.ravel()
    out = np.zeros(c * out_h * out_w)
    for k, j, i in itertools.product(range(c), range(out_h * stride), range(out_w * stride)):
        in_index = k * out_w * out_h + (j // stride) * out_w + i // stride
        out_index = k * out_w * out_h * stride * stride + j * out_w * stride + i
        out[in_index] += scale * x[out_index]
    return out


def test_upsample_repeats_pixels_times_scale() -> None:
    net = network("[upsample]\nstride=2\nscale=0.5\n", channels=1, height=2, width=2)
    assert net.layers[0].darknet_name == "none"
    y = run(net, torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]))[0]
    assert y[0, 0].tolist() == [[0.5, 0.5, 1, 1], [0.5, 0.5, 1, 1], [1.5, 1.5, 2, 2], [1.5, 1.5, 2, 2]]


def test_negative_stride_sums_blocks() -> None:
    net = network("[upsample]\nstride=-2\n", channels=1, height=4, width=4)
    assert (net.layers[0].out_shape.height, net.layers[0].out_shape.width) == (2, 2)
    y = run(net, arange(1, 1, 4, 4))[0]
    assert y[0, 0].tolist() == [[10.0, 18.0], [42.0, 50.0]]  # sums, not means
    net = network("[upsample]\nstride=-2\nscale=0.25\n", channels=1, height=4, width=4)
    assert run(net, arange(1, 1, 4, 4))[0][0, 0].tolist() == [[2.5, 4.5], [10.5, 12.5]]


@pytest.mark.parametrize(("h", "w", "stride"), [(6, 6, -2), (5, 7, -2), (7, 7, -3)])
def test_negative_stride_matches_darknets_flat_loop(h: int, w: int, stride: int) -> None:
    net = network(f"[upsample]\nstride={stride}\nscale=1.5\n", channels=2, height=h, width=w)
    x = torch.randn(1, 2, h, w)
    out = net.layers[0].out_shape
    expected = downsample_cpu(x[0].numpy(), out.width, out.height, 2, -stride, 1.5)
    np.testing.assert_allclose(run(net, x)[0].flatten().numpy(), expected, rtol=1e-5, atol=1e-5)


def test_reorg3d_is_space_to_depth() -> None:
    net = network("[reorg3d]\nstride=2\n", channels=1, height=2, width=2)
    assert net.layers[0].darknet_name == "reorg"
    assert run(net, arange(1, 1, 2, 2))[0].flatten().tolist() == [0.0, 1.0, 2.0, 3.0]
    net = network("[reorg3d]\nstride=2\n", channels=2, height=4, width=6)
    x = torch.randn(1, 2, 4, 6)
    y = run(net, x)[0]
    assert y.shape == (1, 8, 2, 3)
    # out[(dy*s + dx)*C + c, j, i] = in[c, j*s + dy, i*s + dx]
    assert y[0, (1 * 2 + 0) * 2 + 1, 1, 2] == x[0, 1, 1 * 2 + 1, 2 * 2 + 0]
    expected = reorg_cpu(x[0].numpy(), 3, 2, 8, 2, forward=False)
    np.testing.assert_array_equal(y.flatten().numpy(), expected)


def test_old_reorg_reinterprets_the_buffer_and_differs_from_reorg3d() -> None:
    x = torch.randn(1, 8, 4, 6)
    old = network("[reorg]\nstride=2\n", channels=8, height=4, width=6)
    new = network("[reorg3d]\nstride=2\n", channels=8, height=4, width=6)
    assert old.layers[0].darknet_name == "none"
    y_old, y_new = run(old, x)[0], run(new, x)[0]
    assert y_old.shape == y_new.shape == (1, 32, 2, 3)
    expected = reorg_cpu(x[0].numpy(), 6, 4, 8, 2, forward=False)  # called with the INPUT dims
    np.testing.assert_array_equal(y_old.flatten().numpy(), expected)
    assert not torch.equal(y_old, y_new)


@pytest.mark.parametrize("old", [True, False])
def test_reverse_matches_darknets_loop(old: bool) -> None:
    section = "reorg" if old else "reorg3d"
    net = network(f"[{section}]\nstride=2\nreverse=1\n", channels=16, height=2, width=3)
    out = net.layers[0].out_shape
    assert (out.channels, out.height, out.width) == (4, 4, 6)
    x = torch.randn(1, 16, 2, 3)
    dims = (3, 2, 16) if old else (6, 4, 4)  # reorg_old passes the input dims, reorg3d the output's
    expected = reorg_cpu(x[0].numpy(), *dims, 2, forward=True)
    np.testing.assert_array_equal(run(net, x)[0].flatten().numpy(), expected)


@pytest.mark.parametrize(("body", "channels", "message"), [
    ("[reorg3d]\nstride=3\n", 4, r"stride=3 does not divide the input 8 x 8"),
    ("[reorg]\nstride=2\n", 6, r"needs input channels \(6\) divisible by 4"),
    ("[upsample]\nstride=0\n", 4, r"stride=0"),
    ("[upsample]\nstride=-16\n", 4, r"stride=-16 is larger than the input"),
])
def test_impossible_shapes_are_errors(body: str, channels: int, message: str) -> None:
    with pytest.raises(CfgError, match=message):
        network(body, channels=channels)
