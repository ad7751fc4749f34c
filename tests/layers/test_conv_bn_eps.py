"""``bn_eps`` on ``[convolutional]``: the batch norm's eps everywhere it is applied (training
forward, inference forward, the folded and prepacked weights, ONNX), Darknet's 1e-5 when absent."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from darknetpy.errors import CfgError
from darknetpy.inference.inference_model import fuse_conv_batchnorm
from darknetpy.model.cfg import CfgWarning
from darknetpy.model.fastconv import packing_available, prepack_convolutions
from darknetpy.model.layers.common import BN_EPS
from darknetpy.model.network import Network

CFG = """\
[net]
width=16
height=16
channels=3

[convolutional]
batch_normalize=1
{eps}
filters=8
size=3
stride=1
pad=1
activation=swish

[convolutional]
batch_normalize=1
{eps}
filters=4
size=1
stride=1
pad=1
activation=linear
"""


def network(eps: str = "bn_eps=0.001") -> Network:
    """Two conv + BN layers with small running variances, where eps 1e-3 and 1e-5 differ a lot."""
    torch.manual_seed(0)
    net = Network.from_text(CFG.format(eps=eps))
    with torch.no_grad():
        for layer in net.layers:
            layer.bn.weight.uniform_(0.5, 1.5)
            layer.bn.bias.uniform_(-0.5, 0.5)
            layer.bn.running_mean.uniform_(-0.1, 0.1)
            layer.bn.running_var.uniform_(1e-4, 1e-2)
    return net.eval()


def reference(net: Network, x: torch.Tensor, eps: float, training: bool = False) -> torch.Tensor:
    """The layers written out with ``F.batch_norm(..., eps=eps)``."""
    for layer in net.layers:
        bn = layer.bn
        y = F.conv2d(x, layer.conv.weight, None, 1, layer.conv.padding)
        if training:
            y = F.batch_norm(y, None, None, bn.weight, bn.bias, True, 0.0, eps)
        else:
            y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0,
                             eps)
        x = F.silu(y) if layer.activation.name == "swish" else y
    return x


def close(got: torch.Tensor, want: torch.Tensor, tol: float = 1e-5) -> bool:
    """Within ``tol`` of the largest value (float32 rounding of a folded convolution)."""
    diff = (got - want).detach().abs().max()
    return float(diff) <= tol * float(want.detach().abs().max())


def test_absent_key_is_darknets_eps() -> None:
    net = network("")
    assert BN_EPS == 1e-5 and all(layer.bn.eps == 1e-5 for layer in net.layers)
    assert all(layer.spec.bn_eps == 1e-5 for layer in net.layers)


@pytest.mark.parametrize("grad", [False, True], ids=["folded", "unfolded"])
def test_inference_forward_uses_bn_eps(grad: bool) -> None:
    """Eval mode: without gradients the layer runs its cached folded weights, with them conv +
    BN."""
    net = network()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.set_grad_enabled(grad):
        got = net(x)[0]
    want = reference(net, x, 1e-3)
    assert close(got, want)
    assert not close(reference(net, x, 1e-5), want, 1e-2)  # eps matters here


def test_training_forward_uses_bn_eps() -> None:
    net = network().train()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    got = net(x)[0]
    assert close(got, reference(net, x, 1e-3, training=True))


def test_fused_and_prepacked_networks_use_bn_eps() -> None:
    net = network()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    want = reference(net, x, 1e-3)
    fused = fuse_conv_batchnorm(net)
    with torch.inference_mode():
        assert close(fused(x)[0], want)
    if packing_available():
        packed = copy.deepcopy(fused)
        assert prepack_convolutions(packed) == 2
        with torch.inference_mode():
            assert close(packed(x)[0], want)


@pytest.mark.parametrize("fuse", [True, False])
def test_onnx_export_uses_bn_eps(tmp_path: Path, fuse: bool) -> None:
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from darknetpy.inference.export import export_onnx

    net = network()
    path = export_onnx(net, tmp_path / "eps.onnx", fuse=fuse)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": x.numpy()})
    assert close(torch.from_numpy(got), reference(net, x, 1e-3), 1e-4)


@pytest.mark.parametrize("value", ["0", "-1e-3", "nan"])
def test_bad_bn_eps_is_a_cfg_error(value: str) -> None:
    with pytest.raises(CfgError, match="bn_eps=.* must be a positive number"):
        Network.from_text(CFG.format(eps=f"bn_eps={value}"))


def test_bn_eps_without_batch_norm_is_reported_unused() -> None:
    text = CFG.format(eps="").replace("batch_normalize=1\n\nfilters=4", "bn_eps=0.001\nfilters=4")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CfgWarning)
        Network.from_text(text)
    assert any("bn_eps" in str(w.message) for w in caught)


def test_shared_layers_must_agree_on_bn_eps() -> None:
    text = CFG.format(eps="bn_eps=0.001") + """
[route]
layers=0

[convolutional]
batch_normalize=1
filters=4
size=1
stride=1
pad=1
activation=linear
share_index=1
"""
    with pytest.raises(CfgError, match="bn_eps differs"):
        Network.from_text(text)
