"""darknetpy.model.fastconv: prepacked oneDNN convolutions and the fast in-place mish."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from darknetpy.model.fastconv import (
    FUSED_ACTIVATIONS,
    FastMaxPool,
    FastUpsample,
    PackedConv,
    fast_pool_layers,
    mish_,
    packing_available,
    prepack_convolutions,
)
from darknetpy.inference.inference_model import fuse_conv_batchnorm
from darknetpy.model.layers.activation import ACTIVATIONS
from darknetpy.model.network import Network

needs_onednn = pytest.mark.skipif(not packing_available(), reason="PyTorch built without oneDNN")

CFG = """[net]
width=40
height=36
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=mish

[convolutional]
filters=12
size=1
stride=1
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=12
size=3
stride=1
pad=1
groups=4
activation={act}

[convolutional]
batch_normalize=1
filters=16
size=3
dilation=2
pad=1
activation=swish

[route]
layers=-1,-3

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
antialiasing=1
activation=leaky

[shortcut]
from=-3
activation=linear

[convolutional]
filters=8
size=1
activation=logistic
"""


def _network(act: str) -> Network:
    torch.manual_seed(0)
    net = Network.from_text(CFG.replace("{act}", act))
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    return net.eval()


ACTS = ["leaky", "linear", "relu", "logistic", "tanh", "relie", "hardtan", "elu", "mish", "relu6"]


@needs_onednn
@pytest.mark.parametrize("act", ACTS)
def test_prepacked_network_computes_what_the_unfused_one_does(act: str) -> None:
    net = _network(act)
    fused = fuse_conv_batchnorm(net)
    packed = copy.deepcopy(fused)
    replaced = prepack_convolutions(packed)
    # every conv but the antialiased one
    assert replaced == 5
    assert not isinstance(packed.layers[5], PackedConv)
    assert isinstance(packed.layers[2], PackedConv)
    for batch, (h, w) in ((1, (36, 40)), (3, (36, 40)), (2, (24, 32))):  # other sizes than packed for
        x = torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(batch))
        with torch.inference_mode():
            want = net(x)
            got = packed(x)
        for a, b in zip(want, got):
            assert a.shape == b.shape
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), float((a - b).abs().max())


@needs_onednn
def test_prepack_keeps_the_layer_contract_and_refuses_training_mode() -> None:
    net = _network("leaky")
    conv = net.layers[2]
    fused = fuse_conv_batchnorm(net)
    prepack_convolutions(fused)
    packed = fused.layers[2]
    assert isinstance(packed, PackedConv)
    assert (packed.index, packed.sources, packed.out_shape) == (conv.index, conv.sources, conv.out_shape)
    assert packed.bflops() == pytest.approx(conv.bflops())
    assert packed._attr == "leaky_relu"
    assert fused.layers[0]._attr == "none" and fused.layers[0]._mish  # mish runs after the conv
    train = _network("leaky").train()
    assert prepack_convolutions(train) == 0
    copied = copy.deepcopy(fused)  # the packed weights travel as dense tensors
    x = torch.rand(2, 3, 36, 40)
    with torch.inference_mode():
        want = fused(x)
        for a, b in zip(want, copied(x)):
            assert torch.equal(a, b)


def test_fused_activation_table_matches_the_activation_formulas() -> None:
    """Each oneDNN post-op named in the table computes the darknet formula of its activation."""
    x = torch.linspace(-30, 30, 2001)
    reference = {
        "none": lambda t: t,
        "relu": F.relu,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "swish": F.silu,
        "hardtanh": lambda t, lo, hi: t.clamp(lo, hi),
        "leaky_relu": lambda t, slope: F.leaky_relu(t, slope),
    }
    for name, (attr, scalars) in FUSED_ACTIVATIONS.items():
        want = ACTIVATIONS[name].fn(x)
        got = reference[attr](x, *scalars)
        assert torch.allclose(want, got, atol=1e-6), name


def test_fast_mish_matches_darknets_formula_in_double() -> None:
    x = torch.cat([torch.linspace(-120, 120, 240_001), torch.randn(100_000) * 4,
                   torch.tensor([0.0, -0.0, 20.0, -20.0, 88.0, -88.0, 1e-30, -1e-30])])
    d = x.double()
    softplus = torch.where(d > 20, d, torch.where(d < -20, torch.exp(d), torch.log1p(torch.exp(d))))
    want = d * torch.tanh(softplus)  # activations.h: mish_yashas
    got = mish_(x.clone()).double()
    assert torch.isfinite(got).all()
    err = (got - want).abs()
    assert float(err.max()) < 3e-6
    big = want.abs() > 1e-20
    assert float((err[big] / want.abs()[big]).max()) < 1e-6
    y = torch.randn(1000)
    z = y.clone()
    assert mish_(z) is z  # in place
    assert torch.allclose(z, F.mish(y), atol=2e-6)


def test_fast_mish_in_chunks_on_large_and_channels_last_tensors() -> None:
    g = torch.Generator().manual_seed(1)
    for shape, channels_last in (((2, 16, 300, 300), True), ((2, 16, 300, 300), False),
                                 ((3, 5, 7, 9), False)):
        x = torch.randn(*shape, generator=g) * 4
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        want = F.mish(x)
        got = mish_(x)
        assert got is x
        assert torch.allclose(got, want, atol=3e-6), float((got - want).abs().max())
    odd = torch.randn(4, 6, generator=g).t()  # neither contiguous nor channels-last
    want = F.mish(odd)
    assert torch.allclose(mish_(odd), want, atol=3e-6)


POOLS = """[net]
width={w}
height={h}
channels=3

[convolutional]
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size={size}
stride={stride}
{extra}
[upsample]
stride=2

[upsample]
stride=3

[route]
layers=-1
"""

# (size, stride, extra): Darknet's default padding (size - 1), explicit ones, SPP's stride-1 windows,
# yolov3-tiny's size=2 stride=1 (asymmetric: not replaced), strides by axis
POOL_CASES = [(2, 2, ""), (3, 2, ""), (5, 1, ""), (13, 1, ""), (2, 1, ""), (3, 2, "padding=0\n"),
              (4, 2, "padding=2\n"), (3, 3, ""), (2, 2, "stride_x=1\n")]


@pytest.mark.parametrize("w, h", [(40, 36), (13, 13), (27, 21)])
@pytest.mark.parametrize("size, stride, extra", POOL_CASES)
def test_fast_pool_layers_equal_darknets_bit_for_bit(w: int, h: int, size: int, stride: int,
                                                     extra: str) -> None:
    net = Network.from_text(POOLS.format(w=w, h=h, size=size, stride=stride, extra=extra)).eval()
    fast = copy.deepcopy(net)
    replaced = fast_pool_layers(fast)
    assert isinstance(fast.layers[2], FastUpsample)  # stride 2
    assert not isinstance(fast.layers[3], FastUpsample)  # stride 3: 1/3 is not exact in float
    pooled = isinstance(fast.layers[1], FastMaxPool)
    assert replaced == 1 + pooled
    if (size, stride, extra) == (2, 2, ""):
        assert pooled  # yolov4-tiny's maxpool
    if (size, stride, extra) == (2, 1, ""):
        assert not pooled  # one pixel padded after only: no symmetric padding gives it
    # the cfg size (the fast path) and another size (the original layers), both memory formats
    for hh, ww in ((h, w), (h + 3, w + 5)):
        x = torch.randn(2, 3, hh, ww, generator=torch.Generator().manual_seed(hh))
        for fmt in (torch.contiguous_format, torch.channels_last):
            with torch.inference_mode():
                want = net.forward_layers(x.contiguous(memory_format=fmt))
                got = fast.forward_layers(x.contiguous(memory_format=fmt))
            for a, b in zip(want, got):
                assert a.shape == b.shape and torch.equal(a, b)
    assert fast_pool_layers(Network.from_text(POOLS.format(w=w, h=h, size=size, stride=stride,
                                                           extra=extra)).train()) == 0


@needs_onednn
def test_load_uses_the_fast_pool_layers_on_the_cpu() -> None:
    from darknetpy.inference.inference_model import InferenceModel

    net = Network.from_text(POOLS.format(w=40, h=36, size=2, stride=2, extra=""))
    model = InferenceModel(net)
    kinds = [type(layer) for layer in model.fused.layers]
    assert FastMaxPool in kinds and FastUpsample in kinds
    x = torch.rand(1, 3, 36, 40)
    with torch.inference_mode():
        want = net(x)
    for a, b in zip(want, model(x)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
