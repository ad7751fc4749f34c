"""[connected], [softmax], [dropout], [batchnorm], [activation], [crop], [cost], [empty],
[implicit], [contrastive]."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from darknetpy.errors import CfgError

from . import arange, network, run
from .test_conv import reader


def test_connected_is_w_x_plus_b_on_the_flattened_input() -> None:
    net = network("[connected]\noutput=2\nactivation=linear\n", channels=2, height=1, width=2)
    fc = net.layers[0]
    assert fc.out_shape.channels == 2 and fc.out_shape.height == fc.out_shape.width == 1
    values = np.array([0.5, -1.0, 1, 2, 3, 4, 5, 6, 7, 8], dtype=np.float32)
    calls, read = reader(values)
    fc.read_darknet(read, False)
    assert calls == [(2, "biases"), (8, "weights")]
    x = arange(1, 2, 1, 2)  # flattened: 0, 1, 2, 3
    y = run(net, x)[0]
    assert y.shape == (1, 2, 1, 1)
    assert y.flatten().tolist() == [0.5 + 1 * 2 + 2 * 3 + 3 * 4 + 0, -1 + 6 + 14 + 24]
    assert fc.bflops() == 0.0  # darknet prints none for [connected]
    np.testing.assert_array_equal(np.concatenate(fc.write_darknet(False)), values)


def test_connected_transpose_flag_reads_inputs_by_outputs() -> None:
    net = network("[connected]\noutput=2\n", channels=3, height=1, width=1)
    fc = net.layers[0]
    values = np.array([0, 0, 1, 2, 3, 4, 5, 6], dtype=np.float32)  # [inputs][outputs] = 3 x 2
    _, read = reader(values)
    fc.read_darknet(read, True)
    assert fc.linear.weight.tolist() == [[1, 3, 5], [2, 4, 6]]
    np.testing.assert_array_equal(np.concatenate(fc.write_darknet(True)), values)


def test_connected_batch_norm_file_order_and_bias_after_normalising() -> None:
    net = network("[connected]\noutput=1\nbatch_normalize=1\nactivation=linear\n",
                  channels=1, height=1, width=1)
    fc = net.layers[0]
    _, read = reader(np.array([0.5, 2.0, 3.0, 1.0, 4.0], dtype=np.float32))
    fc.read_darknet(read, False)  # biases, weights, scales, rolling mean, rolling variance
    assert (fc.bn.bias.item(), fc.linear.weight.item(), fc.bn.weight.item(),
            fc.bn.running_mean.item(), fc.bn.running_var.item()) == (0.5, 2.0, 3.0, 1.0, 4.0)
    y = run(net, torch.ones(1, 1, 1, 1))[0].item()
    assert y == pytest.approx((2 - 1) / math.sqrt(4 + 1e-5) * 3 + 0.5, rel=1e-6)
    assert fc.darknet_byte_count() == 4 * 5


def test_softmax_groups_and_temperature() -> None:
    net = network("[softmax]\ngroups=2\ntemperature=2\n", channels=4, height=1, width=1)
    layer = net.layers[0]
    assert layer.darknet_name == "softmax" and layer.out_shape.channels == 4
    x = torch.tensor([0.0, 2 * math.log(3.0), 5.0, 5.0]).view(1, 4, 1, 1)
    assert run(net, x)[0].flatten().tolist() == pytest.approx([0.25, 0.75, 0.5, 0.5])
    with pytest.raises(CfgError, match="groups=3 must divide the 4 inputs"):
        network("[softmax]\ngroups=3\n", channels=4, height=1, width=1)


def test_softmax_is_over_the_flattened_buffer_unless_spatial() -> None:
    x = torch.randn(1, 3, 2, 2)
    flat = run(network("[softmax]\n", channels=3, height=2, width=2), x)[0]
    torch.testing.assert_close(flat.flatten(), torch.softmax(x.flatten(), 0))
    spatial = run(network("[softmax]\nspatial=1\n", channels=3, height=2, width=2), x)[0]
    torch.testing.assert_close(spatial, torch.softmax(x, 1))


def test_dropout_identity_at_inference_scaled_in_training() -> None:
    net = network("[dropout]\nprobability=0.25\n", channels=1, height=100, width=100)
    x = torch.ones(1, 1, 100, 100)
    assert torch.equal(run(net, x)[0], x)
    net.train()
    net.layers[0].generator = torch.Generator().manual_seed(0)
    y = net.forward_layers(x)[0]
    kept = y[y != 0]
    assert 0.2 < 1 - kept.numel() / y.numel() < 0.3
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / 0.75))
    net.layers[0].generator = torch.Generator().manual_seed(0)
    assert torch.equal(net.forward_layers(x)[0], y)  # the draws follow the layer's generator


def test_batchnorm_layer() -> None:
    net = network("[batchnorm]\n", channels=1, height=1, width=1)
    layer = net.layers[0]
    _, read = reader(np.array([0.5, 3.0, 1.0, 4.0], dtype=np.float32))
    layer.read_darknet(read, False)  # biases, scales, rolling mean, rolling variance
    assert run(net, torch.full((1, 1, 1, 1), 2.0))[0].item() == pytest.approx(
        (2 - 1) / math.sqrt(4 + 1e-5) * 3 + 0.5, rel=1e-6)


def test_activation_layer_uses_the_generic_path() -> None:
    x = torch.tensor([-1.0, 2.0]).view(1, 2, 1, 1)
    assert run(network("[activation]\nactivation=leaky\n", channels=2, height=1, width=1),
               x)[0].flatten().tolist() == pytest.approx([-0.1, 2.0])
    assert run(network("[activation]\nactivation=swish\n", channels=2, height=1, width=1),
               x)[0].flatten().tolist() == [0.0, 0.0]
    assert run(network("[activation]\n", channels=2, height=1, width=1), x)[0].equal(x)  # linear


def test_crop_at_inference_is_the_centre_times_2_minus_1() -> None:
    net = network("[crop]\ncrop_height=2\ncrop_width=2\nflip=1\nangle=7\nsaturation=1.5\n"
                  "exposure=1.5\n", channels=1, height=4, width=4)
    x = arange(1, 1, 4, 4)
    assert run(net, x)[0][0, 0].tolist() == [[9.0, 11.0], [17.0, 19.0]]  # 2*[5, 6; 9, 10] - 1
    net = network("[crop]\ncrop_height=3\ncrop_width=2\nnoadjust=1\n", channels=1, height=4,
                  width=4)
    assert run(net, x)[0][0, 0].tolist() == [[1.0, 2.0], [5.0, 6.0], [9.0, 10.0]]  # (4-3)/2 = 0


def test_crop_in_training_draws_window_and_flip_from_its_rng() -> None:
    net = network("[crop]\ncrop_height=2\ncrop_width=2\nflip=1\nnoadjust=1\n", channels=1,
                  height=4, width=4).train()
    net.layers[0].rng = np.random.default_rng(5)
    x = arange(1, 1, 4, 4)
    seen = set()
    for _ in range(40):
        y = net.forward_layers(x)[0][0, 0]
        top, left = int(y[0].min().item()) // 4, int(y.min().item()) % 4
        flipped = bool(y[0, 0] > y[0, 1])
        assert y.tolist() in ([[x[0, 0, top + i, left + j].item() for j in order] for i in (0, 1)]
                              for order in ((0, 1), (1, 0)))
        seen.add((top, left, flipped))
    assert len(seen) > 8  # several windows, both orientations


def test_identity_layers_and_their_names() -> None:
    x = torch.randn(1, 2, 2, 2)
    for body, name in (("[cost]\ntype=sse\nscale=1\n", "cost"), ("[empty]\n", "none"),
                       ("[silence]\n", "none"), ("[dropout]\n", "dropout")):
        net = network(body, channels=2, height=2, width=2)
        assert net.layers[0].darknet_name == name
        assert run(net, x)[0].equal(x)


def test_implicit_is_a_learned_constant() -> None:
    net = network("[empty]\n[implicit]\nfilters=3\natoms=2\nmean=1\nstd=0.1\n", channels=2,
                  height=2, width=2)
    layer = net.layers[1]
    assert (layer.out_shape.channels, layer.out_shape.height, layer.out_shape.width) == (3, 2, 1)
    assert ((layer.weight - 1).abs() <= 0.1).all()
    assert layer.darknet_byte_count() == 4 * 6
    y = run(net, torch.randn(2, 2, 2, 2))[1]
    assert y.shape == (2, 3, 2, 1) and torch.equal(y[0], y[1]) and torch.equal(y[0], layer.weight)


def test_contrastive_must_point_at_a_yolo_layer() -> None:
    with pytest.raises(CfgError, match=r"yolo_layer=-1 must point at a \[yolo\] layer"):
        network("[empty]\n[contrastive]\nclasses=1\nyolo_layer=-1\n")


def test_connected_too_large_or_without_input() -> None:
    with pytest.raises(CfgError, match=r"\[connected\]: the weights \(2147483647 x 192\) would hold"):
        network("[connected]\noutput=2147483647\n")
