"""[local] (locally connected) and [normalization]/[lrn] (LRN), against formulas written here from
darknet's C loops (local_layer.c: forward_local_layer, normalization_layer.c:
forward_normalization_layer)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from darknetpy.errors import CfgError
from darknetpy.model.weights import WeightsHeader, read_weights, write_weights

from . import network, run
from .test_conv import reader


def _local_reference(x: np.ndarray, biases: np.ndarray, weights: np.ndarray, *, n: int, size: int,
                     stride: int, pad: int, out_h: int, out_w: int) -> np.ndarray:
    """forward_local_layer for one image, as loops: im2col with `pad` zero pixels, then per output
    position j the (n x c*size*size) matrix at weights[j*size*size*c*n] times column j."""
    c, h, w = x.shape
    k = c * size * size
    out = biases.reshape(n, out_h * out_w).astype(np.float64).copy()
    for j in range(out_h * out_w):
        oy, ox = divmod(j, out_w)
        column = np.zeros(k)
        for kk in range(k):
            ch, rest = divmod(kk, size * size)
            ky, kx = divmod(rest, size)
            iy, ix = oy * stride + ky - pad, ox * stride + kx - pad
            column[kk] = x[ch, iy, ix] if 0 <= iy < h and 0 <= ix < w else 0.0
        matrix = weights[j * k * n:(j + 1) * k * n].reshape(n, k)
        out[:, j] += matrix @ column
    return out.reshape(n, out_h, out_w)


@pytest.mark.parametrize(("size", "stride", "pad", "expect_hw"),
                         [(3, 1, 1, (5, 6)), (3, 2, 1, (3, 3)), (2, 2, 0, (2, 3)), (1, 1, 0, (5, 6))])
def test_local_forward_matches_darknets_loops(size: int, stride: int, pad: int,
                                              expect_hw: tuple[int, int],
                                              rng: np.random.Generator) -> None:
    filters, c = 3, 2
    net = network(f"[local]\nfilters={filters}\nsize={size}\nstride={stride}\npad={pad}\n"
                  "activation=linear\n", channels=c, height=5, width=6)
    layer = net.layers[0]
    out_h, out_w = expect_hw
    assert (layer.out_shape.channels, layer.out_shape.height, layer.out_shape.width) == \
        (filters, out_h, out_w)
    locations = out_h * out_w
    n_bias, n_weights = filters * locations, locations * filters * c * size * size
    values = rng.standard_normal(n_bias + n_weights).astype(np.float32)
    calls, read = reader(values)
    layer.read_darknet(read, False)
    assert calls == [(n_bias, "biases"), (n_weights, "weights")]
    assert layer.darknet_byte_count() == 4 * (n_bias + n_weights)
    assert layer.bflops() == 0.0  # darknet does not count them
    x = rng.standard_normal((2, c, 5, 6)).astype(np.float32)
    y = run(net, torch.from_numpy(x))[0].numpy()
    for b in range(2):
        expected = _local_reference(x[b], values[:n_bias], values[n_bias:], n=filters, size=size,
                                    stride=stride, pad=pad, out_h=out_h, out_w=out_w)
        np.testing.assert_allclose(y[b], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.concatenate(layer.write_darknet(False)), values)


def test_local_activation_default_is_logistic() -> None:
    net = network("[local]\nfilters=1\nsize=1\n", channels=1, height=2, width=2)
    y = run(net, torch.zeros(1, 1, 2, 2))[0]  # weights at position 0 random, bias 0: sigmoid(0)
    assert torch.equal(y, torch.full((1, 1, 2, 2), 0.5))


def test_local_weights_file_round_trip_is_byte_exact(tmp_path, rng: np.random.Generator) -> None:
    text = ("[net]\nwidth=7\nheight=7\nchannels=3\n[convolutional]\nfilters=4\nsize=3\npad=1\n"
            "stride=2\nbatch_normalize=1\nactivation=leaky\n[local]\nfilters=5\nsize=3\npad=1\n"
            "activation=leaky\n[lrn]\n[connected]\noutput=6\n")
    from darknetpy.model.network import Network

    net = Network.from_text(text, path="t.cfg", strict=True)
    conv = 4 * 3 * 3 * 3 + 4 * 4
    local = 5 * 4 * 4 + 4 * 4 * 5 * 4 * 3 * 3  # biases (5 x 4 x 4), weights per position
    connected = 6 + 6 * 5 * 4 * 4
    size = 20 + 4 * (conv + local + connected)
    body = rng.standard_normal((size - 20) // 4).astype(np.float32)
    original = tmp_path / "in.weights"
    original.write_bytes(np.array([0, 2, 5], np.int32).tobytes() + np.uint64(0).tobytes()
                         + body.tobytes())
    header = read_weights(original, net)
    assert header == WeightsHeader(0, 2, 5, 0)
    write_weights(tmp_path / "out.weights", net, header)
    assert (tmp_path / "out.weights").read_bytes() == original.read_bytes()


@pytest.mark.parametrize("body", ["[local]\nsize=5\npad=1\n", "[local]\nsize=1\npad=1\n"])
def test_local_pad_that_darknet_sizes_and_pads_differently_is_refused(body: str) -> None:
    with pytest.raises(CfgError, match=r"t\.cfg:7 \[local\]: pad=1 with size=\d.*im2col"):
        network(body, channels=1, height=8, width=8)


def test_local_needs_an_image_and_an_output() -> None:
    with pytest.raises(CfgError, match=r"\[local\]: size=9 .* leaves no output"):
        network("[local]\nsize=9\n", channels=1, height=8, width=8)


# ------------------------------------------------------------------ [normalization] / [lrn]
def _darknet_lrn(x: np.ndarray, size: int, alpha: float, beta: float, kappa: float) -> np.ndarray:
    """forward_normalization_layer for one image, its loops as written in C (float32 sums)."""
    c = x.shape[0]
    squared = (x * x).astype(np.float32)
    norms = np.zeros_like(x)
    norms[0] = np.float32(kappa)
    for k in range(size // 2):
        if k < c:  # darknet reads past the image here when size/2 > c; those terms are 0
            norms[0] += np.float32(alpha) * squared[k]
    for k in range(1, c):
        norms[k] = norms[k - 1]
        prev, nxt = k - (size - 1) // 2 - 1, k + size // 2
        if prev >= 0:
            norms[k] += np.float32(-alpha) * squared[prev]
        if nxt < c:
            norms[k] += np.float32(alpha) * squared[nxt]
    with np.errstate(invalid="ignore"):
        return x * np.power(norms.astype(np.float64), -beta).astype(np.float32)


@pytest.mark.parametrize(("section", "size", "channels"),
                         [("lrn", 5, 9), ("normalization", 3, 4), ("lrn", 4, 7), ("lrn", 5, 2)])
def test_lrn_matches_darknets_sliding_sum(section: str, size: int, channels: int,
                                          rng: np.random.Generator) -> None:
    alpha, beta, kappa = 0.05, 0.75, 2.0
    net = network(f"[{section}]\nsize={size}\nalpha={alpha}\nbeta={beta}\nkappa={kappa}\n",
                  channels=channels, height=3, width=2)
    layer = net.layers[0]
    assert layer.darknet_name == "normalization" and layer.out_shape == layer.in_shape
    assert layer.darknet_byte_count() == 0
    x = rng.standard_normal((2, channels, 3, 2)).astype(np.float32)
    y = run(net, torch.from_numpy(x))[0].numpy()
    for b in range(2):
        np.testing.assert_allclose(y[b], _darknet_lrn(x[b], size, alpha, beta, kappa),
                                   rtol=1e-5, atol=1e-6)


def test_lrn_is_darknets_not_the_textbook_window() -> None:
    """Darknet's norms leave channel size/2 out of its own window and subtract it beyond it."""
    net = network("[lrn]\nsize=3\nalpha=1\nbeta=1\nkappa=1\n", channels=4, height=1, width=1)
    x = torch.tensor([1.0, 2.0, 0.5, 0.25]).view(1, 4, 1, 1)
    y = run(net, x)[0].flatten().tolist()
    # x² = 1, 4, .25, .0625; window k-1..k+1 minus x_1² = 4: norms 1 + (5-4), 1 + (5.25-4),
    # 1 + (4.3125-4), 1 + (.3125-4) < 0 (a negative output; nan with a fractional beta)
    assert y == pytest.approx([1 / 2, 2 / 2.25, 0.5 / 1.3125, 0.25 / (1 + 0.3125 - 4)])


def test_lrn_backward_is_darknets_approximation() -> None:
    net = network("[lrn]\nsize=3\nalpha=0.5\nbeta=0.75\nkappa=1\n", channels=3, height=1, width=1)
    x = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1).requires_grad_()
    y = net.forward_layers(x)[0]
    y.sum().backward()
    # backward_normalization_layer: delta_in = norms^-beta * delta (norms constant)
    norms = torch.tensor([1 + 0.5 * 1, 1 + 0.5 * (1 + 9), 1 + 0.5 * 9])
    torch.testing.assert_close(x.grad.flatten(), norms.pow(-0.75))


def test_lrn_defaults_are_darknets() -> None:
    layer = network("[normalization]\n", channels=2, height=1, width=1).layers[0]
    assert (layer.size, layer.alpha, layer.beta, layer.kappa) == \
        (5, pytest.approx(1e-4), 0.75, 1.0)
