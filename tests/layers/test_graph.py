"""[route], [shortcut], [sam], [scale_channels]: darknet's slicing, channel-mismatch and weighting
rules, with hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from darknetpy.errors import CfgError

from . import arange, network, run

# layer 0: the input (4 channels); layer 1: 2 channels, max over channels (0, 2) and (1, 3)
BASE = "[empty]\n[maxpool]\nmaxpool_depth=1\nout_channels=2\n"


def x4() -> torch.Tensor:
    return arange(1, 4, 2, 2) - 5


def test_route_groups_slice_each_input_then_concatenate() -> None:
    net = network(BASE + "[route]\nlayers=0,1\ngroups=2\ngroup_id=1\n", channels=4, height=2,
                  width=2)
    route = net.layers[2]
    assert route.sources == (0, 1) and route.out_shape.channels == 3  # (4 + 2) / 2
    x = x4()
    out = run(net, x)
    torch.testing.assert_close(out[2], torch.cat([x[:, 2:4], out[1][:, 1:2]], dim=1))
    first = run(network(BASE + "[route]\nlayers=-2, -1\ngroups=2\n", channels=4, height=2,
                        width=2), x)[2]
    torch.testing.assert_close(first, torch.cat([x[:, 0:2], out[1][:, 0:1]], dim=1))


def test_route_of_one_layer_is_that_layer() -> None:
    net = network(BASE + "[route]\nlayers=0\n", channels=4, height=2, width=2)
    x = x4()
    assert torch.equal(run(net, x)[2], x)


@pytest.mark.parametrize(("body", "message"), [
    ("[maxpool]\nsize=2\nstride=2\n[route]\nlayers=0,1\n",
     r"layer 1 outputs 4 x 4 x 4 but layer 0 outputs 8 x 8 x 4; routed layers must have the same"),
    ("[route]\nlayers=0\ngroups=3\n", r"groups=3 does not divide the 4 channels of layer 0"),
    ("[route]\nlayers=0\ngroups=2\ngroup_id=2\n", r"groups=2 group_id=2"),
    ("[route]\nlayers=5\n", r"layers=5 refers to layer 5, but layer 1 can only read layers 0..0"),
    ("[route]\ngroups=1\n", r"\[route\] needs layers="),
])
def test_route_errors(body: str, message: str) -> None:
    with pytest.raises(CfgError, match=message):
        network("[empty]\n" + body, channels=4)


def test_shortcut_adds_only_the_overlapping_channels() -> None:
    body = BASE + (
        "[shortcut]\nfrom=0\n"  # 2: prev (2 ch) + input (4 ch): the input's extra channels dropped
        "[route]\nlayers=0\n"  # 3: input
        "[shortcut]\nfrom=1\nactivation=leaky\n"  # 4: prev (4 ch) + 2 ch: channels 2, 3 unchanged
    )
    net = network(body, channels=4, height=2, width=2)
    assert net.layers[2].out_shape.channels == 2 and net.layers[4].out_shape.channels == 4
    x = x4()
    out = run(net, x)
    m = out[1]
    torch.testing.assert_close(out[2], m + x[:, :2])
    expected = x.clone()
    expected[:, :2] += m
    torch.testing.assert_close(out[4], torch.nn.functional.leaky_relu(expected, 0.1))
    assert net.layers[2].bflops() == pytest.approx(2 * 2 * 2 * 1 / 1e9)


def test_shortcut_with_several_from_layers() -> None:
    net = network(BASE + "[route]\nlayers=0\n[shortcut]\nfrom=0,-2\n", channels=4, height=2, width=2)
    shortcut = net.layers[3]
    assert shortcut.sources == (2, 0, 1)
    x = x4()
    out = run(net, x)
    expected = x + x
    expected[:, :2] += out[1]
    torch.testing.assert_close(out[3], expected)
    assert shortcut.bflops() == pytest.approx(4 * 2 * 2 * 2 / 1e9)


def test_weighted_shortcut_per_feature_relu_normalisation() -> None:
    net = network("[empty]\n[shortcut]\nfrom=0\nweights_type=per_feature\n"
                  "weights_normalization=relu\n", channels=2, height=1, width=1)
    shortcut = net.layers[1]
    assert shortcut.weight.tolist() == [[1.0], [1.0]]  # darknet initialises them to 1
    assert shortcut.darknet_byte_count() == 4 * 2
    with torch.no_grad():
        shortcut.weight.copy_(torch.tensor([[3.0], [-1.0]]))
    x = torch.tensor([2.0, 4.0]).view(1, 2, 1, 1)
    # w' = relu(w) / (1e-4 + sum relu(w)) = (3, 0) / 3.0001, applied to x and to x again
    expected = [2 * 3 / 3.0001, 4 * 3 / 3.0001]
    assert run(net, x)[1].flatten().tolist() == pytest.approx(expected, rel=1e-6)
    assert shortcut.bflops() == pytest.approx(2 * 2 / 1e9)


def test_weighted_shortcut_per_channel_softmax_normalisation() -> None:
    net = network("[empty]\n[maxpool]\nmaxpool_depth=1\nout_channels=1\n"
                  "[shortcut]\nfrom=0\nweights_type=per_channel\nweights_normalization=softmax\n",
                  channels=2, height=1, width=1)
    shortcut = net.layers[2]
    assert shortcut.weight.shape == (2, 1)  # [input][channel]: prev has 1 channel
    with torch.no_grad():
        shortcut.weight.copy_(torch.tensor([[0.0], [math.log(3.0)]]))
    x = torch.tensor([2.0, 4.0]).view(1, 2, 1, 1)
    # e^(w - max) = (1/3, 1); w' = those / (1e-4 + 4/3). prev = max over channels = 4; from = x,
    # of which only channel 0 (= 2) is added
    total = 1 / 3 + 1 + 1e-4
    assert run(net, x)[2].flatten().tolist() == pytest.approx([4 / 3 / total + 2 / total], rel=1e-6)


def test_shortcut_errors() -> None:
    with pytest.raises(CfgError, match=r"from: layer 0 outputs 8 x 8 x 3 but the previous layer "
                                       r"outputs 4 x 4 x 3; a shortcut needs the same width"):
        network("[empty]\n[maxpool]\nsize=2\nstride=2\n[shortcut]\nfrom=0\n")
    with pytest.raises(CfgError, match=r"weights_type='per_pixel' is not one of"):
        network("[empty]\n[shortcut]\nfrom=0\nweights_type=per_pixel\n")


def test_sam_multiplies_elementwise() -> None:
    net = network(BASE + "[route]\nlayers=0\n[sam]\nfrom=0\n", channels=4, height=2, width=2)
    x = x4()
    torch.testing.assert_close(run(net, x)[3], x * x)
    with pytest.raises(CfgError, match=r"\[sam\] multiplies equal shapes"):
        network(BASE + "[sam]\nfrom=0\n", channels=4, height=2, width=2)


def test_scale_channels_per_channel_and_per_pixel() -> None:
    body = ("[empty]\n[avgpool]\n[scale_channels]\nfrom=0\n"  # 2: x * mean_c(x)
            "[maxpool]\nmaxpool_depth=1\nout_channels=1\n"  # 3: 1 x H x W, max over channels
            "[scale_channels]\nfrom=0\nscale_wh=1\nactivation=logistic\n")  # 4: x * layer 3
    net = network(body, channels=4, height=2, width=2)
    assert net.layers[2].out_shape.channels == 4 and net.layers[4].out_shape.channels == 4
    x = x4()
    out = run(net, x)
    torch.testing.assert_close(out[2], x * x.mean(dim=(2, 3), keepdim=True))
    torch.testing.assert_close(out[3], out[2].amax(dim=1, keepdim=True))
    torch.testing.assert_close(out[4], torch.sigmoid(x * out[3]))
    with pytest.raises(CfgError, match=r"needs 1 x 1 x 4 \(darknet asserts\)"):
        network("[empty]\n[scale_channels]\nfrom=0\n", channels=4)
