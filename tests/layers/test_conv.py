"""[convolutional]: darknet's shape formula, padding rules, batch norm, weights order and flags."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from darknetpy.model.cfg import Options, parse_cfg
from darknetpy.errors import CfgError
from darknetpy.model.layers.base import BuildContext, Shape
from darknetpy.model.layers.common import set_bn_momentum
from darknetpy.model.layers.conv import Conv, build_conv

from . import network, run


def reader(values: np.ndarray) -> tuple[list[tuple[int, str]], object]:
    """A ``read(count, name)`` over ``values`` that records each call."""
    calls: list[tuple[int, str]] = []
    position = 0

    def read(count: int, name: str) -> np.ndarray:
        nonlocal position
        calls.append((count, name))
        out = values[position:position + count].astype(np.float32)
        position += count
        return out

    return calls, read


def test_pad_flag_means_size_over_2_and_overrides_padding() -> None:
    net = network("[convolutional]\nfilters=2\nsize=5\npad=1\npadding=7\nactivation=linear\n")
    conv = net.layers[0]
    assert conv.conv.padding == (2, 2) and conv.out_shape.height == 8
    net = network("[convolutional]\nfilters=2\nsize=3\npadding=0\nstride=2\nactivation=linear\n")
    assert (net.layers[0].out_shape.height, net.layers[0].out_shape.width) == (3, 3)  # (8-3)/2+1


def test_dilation_pads_by_padding_times_dilation() -> None:
    net = network("[convolutional]\nfilters=2\nsize=3\npad=1\ndilation=2\nactivation=linear\n")
    conv = net.layers[0]
    assert (conv.conv.padding, conv.conv.dilation) == ((2, 2), (2, 2))
    x = torch.randn(1, 3, 8, 8)
    expected = F.conv2d(x, conv.conv.weight, conv.conv.bias, padding=2, dilation=2)
    torch.testing.assert_close(run(net, x)[0], expected)


@pytest.mark.parametrize("body", [
    "size=2\npad=1\ndilation=2",  # darknet says 9, the convolution gives 10
    "size=3\npadding=0\ndilation=2",  # darknet says 6, the convolution gives 4
])
def test_dilation_that_disagrees_with_darknets_formula_is_an_error(body: str) -> None:
    with pytest.raises(CfgError, match=r"t.cfg:9 \[convolutional\]: darknet computes an output "
                                       r"height of \d+ \(its formula ignores dilation\)"):
        network(f"[convolutional]\nfilters=1\n{body}\n")


def test_size_one_ignores_dilation() -> None:
    conv = network("[convolutional]\nfilters=1\nsize=1\ndilation=3\n").layers[0]
    assert conv.conv.dilation == (1, 1)


def test_no_output_is_an_error() -> None:
    with pytest.raises(CfgError, match=r"size=5 .* leaves no output on an input height of 3"):
        network("[convolutional]\nfilters=1\nsize=5\n", height=3, width=3)


def test_stride_x_and_stride_y() -> None:
    net = network("[convolutional]\nfilters=2\nsize=3\npad=1\nstride_x=2\nstride_y=1\n"
                  "activation=linear\n")
    conv = net.layers[0]
    assert (conv.out_shape.height, conv.out_shape.width) == (8, 4)
    x = torch.randn(1, 3, 8, 8)
    expected = F.conv2d(x, conv.conv.weight, conv.conv.bias, stride=(1, 2), padding=1)
    torch.testing.assert_close(run(net, x)[0], expected)
    assert "3x 3/ 2x 1" in conv.summary_extra()


def test_groups_split_channels_into_contiguous_blocks() -> None:
    net = network("[convolutional]\nfilters=6\ngroups=2\nsize=1\nactivation=linear\n", channels=4)
    conv = net.layers[0]
    assert conv.conv.weight.shape == (6, 2, 1, 1)
    x = torch.randn(1, 4, 8, 8)
    y = run(net, x)[0]
    w, b = conv.conv.weight, conv.conv.bias
    first = torch.einsum("oc,nchw->nohw", w[:3, :, 0, 0], x[:, :2]) + b[:3].view(1, 3, 1, 1)
    torch.testing.assert_close(y[:, :3], first)
    with pytest.raises(CfgError, match=r"groups=3 must divide both the input channels \(4\)"):
        network("[convolutional]\nfilters=6\ngroups=3\nsize=1\n", channels=4)


def test_batch_norm_inference_fused_and_unfused_agree_with_the_formula() -> None:
    net = network("[convolutional]\nbatch_normalize=1\nfilters=1\nsize=1\nactivation=linear\n",
                  channels=1, height=1, width=2)
    conv = net.layers[0]
    assert conv.conv.bias is None  # with batch norm darknet's biases are the BN beta
    with torch.no_grad():
        conv.conv.weight.fill_(2.0)
        conv.bn.bias.fill_(0.5)
        conv.bn.weight.fill_(3.0)
        conv.bn.running_mean.fill_(1.0)
        conv.bn.running_var.fill_(4.0)
    x = torch.tensor([[[[1.0, -1.0]]]])
    expected = [(2 - 1) / math.sqrt(4 + 1e-5) * 3 + 0.5, (-2 - 1) / math.sqrt(4 + 1e-5) * 3 + 0.5]
    assert run(net, x)[0].flatten().tolist() == pytest.approx(expected, rel=1e-6)  # fused
    assert net.forward_layers(x)[0].flatten().tolist() == pytest.approx(expected, rel=1e-6)
    with torch.no_grad():  # the fused weights follow a change of the parameters
        conv.bn.running_mean.fill_(0.0)
    assert run(net, x)[0].flatten()[0].item() == pytest.approx(2 / math.sqrt(4 + 1e-5) * 3 + 0.5)


def test_darknet_initialisation() -> None:
    conv = network("[convolutional]\nbatch_normalize=1\nfilters=16\nsize=3\ngroups=1\n",
                   channels=8).layers[0]
    bound = math.sqrt(2.0 / (3 * 3 * 8))
    assert conv.conv.weight.abs().max() <= bound and conv.conv.weight.abs().max() > bound / 2
    assert conv.bn.weight.eq(1).all() and conv.bn.bias.eq(0).all()
    assert conv.bn.running_mean.eq(0).all() and conv.bn.running_var.eq(0).all()  # not 1
    assert (conv.bn.eps, conv.bn.momentum) == (1e-5, 0.01)


def test_weights_order_and_state_dict_names() -> None:
    net = network("[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\npad=1\n"
                  "[convolutional]\nfilters=2\nsize=1\n")
    bn_conv, plain = net.layers
    assert [t.data_ptr() for t in bn_conv.darknet_tensors()] == [
        t.data_ptr() for t in (bn_conv.bn.bias, bn_conv.bn.weight, bn_conv.bn.running_mean,
                               bn_conv.bn.running_var, bn_conv.conv.weight)]
    assert [t.data_ptr() for t in plain.darknet_tensors()] == [
        plain.conv.bias.data_ptr(), plain.conv.weight.data_ptr()]
    assert bn_conv.darknet_byte_count() == 4 * (4 * 4 + 4 * 3 * 9)
    keys = set(net.state_dict())
    assert {"layers.0.conv.weight", "layers.0.bn.weight", "layers.0.bn.bias",
            "layers.0.bn.running_mean", "layers.0.bn.running_var", "layers.1.conv.weight",
            "layers.1.conv.bias"} <= keys
    assert "layers.0.conv.bias" not in keys


def test_read_darknet_order_and_dontloadscales() -> None:
    net = network("[convolutional]\nbatch_normalize=1\nfilters=2\nsize=1\n"
                  "[convolutional]\nbatch_normalize=1\nfilters=2\nsize=1\ndontloadscales=1\n",
                  channels=1)
    values = np.arange(1, 100, dtype=np.float32)
    calls, read = reader(values)
    net.layers[0].read_darknet(read, False)
    conv = net.layers[0]
    assert conv.bn.bias.tolist() == [1, 2] and conv.bn.weight.tolist() == [3, 4]
    assert conv.bn.running_mean.tolist() == [5, 6] and conv.bn.running_var.tolist() == [7, 8]
    assert conv.conv.weight.flatten().tolist() == [9, 10]
    calls, read = reader(values)
    net.layers[1].read_darknet(read, False)
    assert calls == [(2, "biases"), (4, "weights")]  # no bytes for scales/mean/variance
    assert net.layers[1].bn.weight.tolist() == [1, 1]
    assert net.layers[1].conv.weight.flatten().tolist() == [3, 4, 5, 6]


def test_flipped_weights_are_transposed_on_read_and_back_on_write() -> None:
    net = network("[convolutional]\nfilters=3\nsize=1\nflipped=1\n", channels=2)
    conv = net.layers[0]
    file_values = np.arange(3 + 6, dtype=np.float32)
    _, read = reader(file_values)
    conv.read_darknet(read, False)
    # file holds [c*size*size][filters] = [[3, 4, 5], [6, 7, 8]]: filter f, channel c = row c, col f
    assert conv.conv.weight[:, :, 0, 0].tolist() == [[3, 6], [4, 7], [5, 8]]
    written = np.concatenate(conv.write_darknet(False))
    np.testing.assert_array_equal(written, file_values)


def test_share_index_shares_parameters_and_stores_nothing() -> None:
    net = network("[convolutional]\nfilters=3\nsize=3\npad=1\n"
                  "[convolutional]\nfilters=3\nsize=3\npad=1\n"
                  "[convolutional]\nfilters=3\nsize=3\npad=1\nshare_index=-1\n", channels=3)
    shared = net.layers[2]
    assert shared.conv.weight is net.layers[1].conv.weight
    assert shared.conv.bias is net.layers[1].conv.bias
    assert shared.darknet_tensors() == [] and shared.darknet_byte_count() == 0
    with pytest.raises(CfgError, match=r"share_index=0: size, filters, groups or input channels"):
        network("[convolutional]\nfilters=3\nsize=3\npad=1\n"
                "[convolutional]\nfilters=4\nsize=3\npad=1\nshare_index=0\n")


@pytest.mark.parametrize(("aa", "kernel", "pad"), [(1, [[1, 2, 1], [2, 4, 2], [1, 2, 1]], 1),
                                                    (2, [[4, 4], [4, 4]], 0)])
def test_antialiasing_blurs_a_stride_1_conv(aa: int, kernel: list[list[int]], pad: int) -> None:
    net = network(f"[convolutional]\nfilters=2\nsize=3\npad=1\nstride=2\nantialiasing={aa}\n"
                  "activation=linear\n")
    conv = net.layers[0]
    assert conv.out_shape.height == 4  # (8+2-3)/2+1 = 4 for AA1 and (8-2)/2+1 = 4 for AA2
    x = torch.randn(1, 3, 8, 8)
    full = F.conv2d(x, conv.conv.weight, conv.conv.bias, padding=1)  # stride 1
    blur = torch.tensor(kernel, dtype=torch.float32).expand(2, 1, *np.shape(kernel)) / 16
    expected = F.conv2d(full, blur, stride=2, padding=pad, groups=2)
    torch.testing.assert_close(run(net, x)[0], expected)
    assert conv.bflops() == pytest.approx(2 * 2 * 3 * 9 * 8 * 8 / 1e9)  # before the blur
    assert not any("blur" in k for k in net.state_dict())
    assert conv.darknet_byte_count() == 4 * (2 + 2 * 3 * 9)


def test_bflops_counts_groups() -> None:
    conv = network("[convolutional]\nfilters=8\ngroups=4\nsize=3\npad=1\nstride=2\n",
                   channels=8, height=16, width=16).layers[0]
    assert conv.bflops() == pytest.approx(2 * 8 * (8 / 4) * 9 * 8 * 8 / 1e9)


def test_xnor_binarises_input_and_weights() -> None:
    net = network("[convolutional]\nfilters=1\nsize=1\nxnor=1\nactivation=linear\n",
                  channels=2, height=1, width=2)
    conv = net.layers[0]
    with torch.no_grad():
        conv.conv.weight.copy_(torch.tensor([0.5, -1.5]).view(1, 2, 1, 1))
        conv.conv.bias.fill_(0.25)
    x = torch.tensor([[[[0.3, -2.0]], [[0.0, 4.0]]]])
    # mean |w| = 1; sign(x) per pixel: (+1, -1) and (-1, +1); binary weights (+1, -1)
    assert run(net, x)[0].flatten().tolist() == [1 + 1 + 0.25, -1 - 1 + 0.25]
    assert conv.bflops() == pytest.approx(2 * 2 * 1 * 2 / 1e9 / 32)


@pytest.mark.parametrize(("key", "message"), [
    ("binary=1", "binary weights"), ("sway=1", "deformable"), ("filters=0", "filters=0"),
])
def test_unsupported_or_invalid_keys(key: str, message: str) -> None:
    with pytest.raises(CfgError, match=message):
        network(f"[convolutional]\nsize=3\n{key}\n")


def test_needs_an_image_input() -> None:
    net = network("[convolutional]\nsize=1\n")
    (section,) = parse_cfg("[convolutional]\nsize=1\n", "u.cfg")
    ctx = BuildContext(0, net.net, Shape(0, 8, 8), ())
    with pytest.raises(CfgError, match=r"u.cfg:1 \[convolutional\]: the layer before "
                                       r"\[convolutional\] must output an image"):
        build_conv(Options(section), ctx)


def test_is_a_conv_layer() -> None:
    assert isinstance(network("[conv]\nsize=1\n").layers[0], Conv)


@pytest.mark.parametrize(("key", "message"), [
    ("filters=" + "9" * 40, "does not fit darknet's 32-bit int"),
    ("filters=2147483647", r"the weights \(2147483647 filters of 1 x 1 x 3\) would hold"),
    ("size=2147483647\npad=1", r"would hold \d+ values, more than darknet's int limit"),
])
def test_sizes_beyond_darknets_int_are_errors(key: str, message: str) -> None:
    with pytest.raises(CfgError, match=r"t.cfg:\d+ \[convolutional\]: .*" + message):
        network(f"[convolutional]\n{key}\n")


@pytest.mark.parametrize(
    ("build", "expected"), [("cpu", (0.1, 0.1, 0.05)), ("gpu", (0.01, 0.01, 0.01))]
)
def test_set_bn_momentum_reproduces_each_darknet_build(build: str, expected: tuple) -> None:
    """forward_batchnorm_layer (CPU: 0.9/0.1, also behind [convolutional]), forward_connected_layer
    (CPU: 0.95/0.05), and the GPU build's 0.99/0.01 everywhere; then one training-mode pass moves
    the zero rolling mean to exactly factor x the batch mean."""
    net = network(
        "[convolutional]\nfilters=2\nsize=1\nbatch_normalize=1\nactivation=linear\n"
        "[batchnorm]\n"
        "[connected]\noutput=3\nbatch_normalize=1\nactivation=linear\n"
    )
    set_bn_momentum(net, build)
    conv, bn, connected = net.layers
    assert (conv.bn.momentum, bn.bn.momentum, connected.bn.momentum) == expected
    net.train()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        batch_mean = conv.conv(x).mean(dim=(0, 2, 3))
        net.forward_layers(x)
    torch.testing.assert_close(conv.bn.running_mean, expected[0] * batch_mean)
