"""Darknet's update rule (spec §3.3, §7): values worked out by hand, and PyTorch SGD equivalence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from darknetpy import Network
from darknetpy.training.optim import (
    DarknetEMA,
    DarknetOptimizer,
    frozen_layers,
    inference_layers,
    never_updated,
    param_slots,
)

NET = """[net]
batch={batch}
subdivisions=1
width=4
height=4
channels=1
momentum=0.9
decay=0.01
learning_rate=0.1
{extra}
"""

CONV_BN = """[convolutional]
batch_normalize=1
filters=1
size=1
stride=1
pad=0
activation=linear
{extra}
"""

CONV_BIAS = """[convolutional]
filters=1
size=1
stride=1
pad=0
activation=linear
{extra}
"""


def _net(*layers: str, batch: int = 4, net_extra: str = "") -> Network:
    return Network.from_text(NET.format(batch=batch, extra=net_extra) + "".join(layers))


def _set(net: Network, values: dict[str, float]) -> None:
    params = dict(net.named_parameters())
    with torch.no_grad():
        for name, value in values.items():
            params[name].fill_(value)


def _grads(net: Network, values: dict[str, float]) -> None:
    params = dict(net.named_parameters())
    for name, value in values.items():
        params[name].grad = torch.full_like(params[name], value)


def _value(net: Network, name: str) -> float:
    return float(dict(net.named_parameters())[name].item())


def test_slots_decay_only_on_weights():
    net = _net(CONV_BN.format(extra=""), CONV_BIAS.format(extra="learning_rate=0.5"))
    slots = {(s.layer, s.name): s for s, _ in param_slots(net)}
    assert slots[(0, "conv.weight")].decay
    assert not slots[(0, "bn.weight")].decay and not slots[(0, "bn.bias")].decay
    assert slots[(1, "conv.weight")].decay and not slots[(1, "conv.bias")].decay
    assert slots[(1, "conv.weight")].lr_scale == 0.5 and slots[(0, "conv.weight")].lr_scale == 1.0


def test_two_steps_by_hand():
    """B=4, lr=0.1, momentum=0.9, decay=0.01; layer 1 has learning_rate=0.5.

    Weight (w=0.5): step 1, g=2: u = -2 - 0.01*4*0.5 = -2.02; w = 0.5 + 0.1/4*u = 0.4495;
    u = 0.9*u = -1.818. Step 2, g=1: u = -1.818 - 1 - 0.04*0.4495 = -2.83598;
    w = 0.4495 + 0.025*u = 0.3786005.
    Bias (b=0.2, no decay): step 1, g=2: b = 0.2 - 0.025*2 = 0.15; u = -1.8.
    Step 2, g=1: u = -2.8; b = 0.15 - 0.07 = 0.08.
    BN scale (1.0, no decay), g=2: 1 - 0.05 = 0.95.
    Layer 1 weight (w=0.5, lr x0.5): step 1, g=2: w = 0.5 + 0.0125*(-2.02) = 0.47475.
    """
    net = _net(CONV_BN.format(extra=""), CONV_BIAS.format(extra="learning_rate=0.5"))
    _set(net, {"layers.0.conv.weight": 0.5, "layers.0.bn.weight": 1.0, "layers.0.bn.bias": 0.2,
               "layers.1.conv.weight": 0.5, "layers.1.conv.bias": 0.2})
    opt = DarknetOptimizer(net, net.net)
    _grads(net, {"layers.0.conv.weight": 2.0, "layers.0.bn.weight": 2.0, "layers.0.bn.bias": 2.0,
                 "layers.1.conv.weight": 2.0, "layers.1.conv.bias": 2.0})
    opt.step(rate=0.1, iteration=1)
    assert _value(net, "layers.0.conv.weight") == pytest.approx(0.4495, rel=1e-6)
    assert _value(net, "layers.0.bn.bias") == pytest.approx(0.15, rel=1e-6)
    assert _value(net, "layers.0.bn.weight") == pytest.approx(0.95, rel=1e-6)
    assert _value(net, "layers.1.conv.weight") == pytest.approx(0.47475, rel=1e-6)
    assert all(p.grad is None for p in net.parameters())  # consumed
    _grads(net, {"layers.0.conv.weight": 1.0, "layers.0.bn.bias": 1.0})
    opt.step(rate=0.1, iteration=2)
    assert _value(net, "layers.0.conv.weight") == pytest.approx(0.3786005, rel=1e-6)
    assert _value(net, "layers.0.bn.bias") == pytest.approx(0.08, rel=1e-6)
    # no gradient: momentum alone moves the BN scale: u = 0.9*(-2) = -1.8 -> 0.95 - 0.045
    assert _value(net, "layers.0.bn.weight") == pytest.approx(0.905, rel=1e-6)


def test_equals_torch_sgd_on_mean_loss():
    """Darknet's rule == torch SGD(momentum, dampening 0, weight_decay on weights) on loss/B."""
    rng = np.random.default_rng(0)
    batch, lrs = 8, [0.01, 0.02, 0.005, 0.02, 0.001]
    ours = _net(CONV_BN.format(extra=""), CONV_BIAS.format(extra=""), batch=batch)
    ref = _net(CONV_BN.format(extra=""), CONV_BIAS.format(extra=""), batch=batch)
    ref.load_state_dict(ours.state_dict())
    opt = DarknetOptimizer(ours, ours.net)
    slots = param_slots(ref)
    groups = [{"params": [p for s, p in slots if s.decay], "weight_decay": 0.01},
              {"params": [p for s, p in slots if not s.decay], "weight_decay": 0.0}]
    sgd = torch.optim.SGD(groups, lr=0.1, momentum=0.9, dampening=0)
    for k, lr in enumerate(lrs, start=1):
        grads = {n: torch.from_numpy(rng.normal(size=p.shape).astype(np.float32))
                 for n, p in ours.named_parameters()}  # fmt: skip
        for n, p in ours.named_parameters():
            p.grad = grads[n].clone()  # gradient of the SUMMED loss
        for n, p in ref.named_parameters():
            p.grad = grads[n] / batch  # gradient of the mean loss
        opt.step(rate=lr, iteration=k)
        for g in sgd.param_groups:
            g["lr"] = lr
        sgd.step()
    for (n, a), b in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=n)


def test_clip_clamps_weights_after_the_update():
    net = _net(CONV_BIAS.format(extra="clip=0.3"))
    _set(net, {"layers.0.conv.weight": 0.29, "layers.0.conv.bias": 0.0})
    opt = DarknetOptimizer(net, net.net)
    _grads(net, {"layers.0.conv.weight": -40.0})  # w + 0.025*40 = 1.29 -> clamped
    opt.step(rate=0.1, iteration=1)
    assert _value(net, "layers.0.conv.weight") == pytest.approx(0.3)


def test_dont_update_accumulates_then_updates():
    """A skipped layer keeps summing its gradients (no momentum) until its first update."""
    net = _net(CONV_BIAS.format(extra="dont_update=2"), net_extra="decay=0")
    _set(net, {"layers.0.conv.weight": 0.0, "layers.0.conv.bias": 0.0})
    opt = DarknetOptimizer(net, net.net)
    for it in (1, 2):
        _grads(net, {"layers.0.conv.bias": 1.0})
        opt.step(rate=0.1, iteration=it)
        assert _value(net, "layers.0.conv.bias") == 0.0
    _grads(net, {"layers.0.conv.bias": 1.0})
    opt.step(rate=0.1, iteration=3)  # u = -3 -> b = 0.025 * -3
    assert _value(net, "layers.0.conv.bias") == pytest.approx(-0.075)


def test_burnin_update_waits_for_burn_in():
    net = _net(CONV_BIAS.format(extra="burnin_update=2"), net_extra="burn_in=2\ndecay=0")
    opt = DarknetOptimizer(net, net.net)
    _set(net, {"layers.0.conv.bias": 0.0})
    for it in (1, 2, 3):
        _grads(net, {"layers.0.conv.bias": 1.0})
        opt.step(rate=0.1, iteration=it)
        assert _value(net, "layers.0.conv.bias") == 0.0
    _grads(net, {"layers.0.conv.bias": 1.0})
    opt.step(rate=0.1, iteration=4)  # 2*burn_in = 4 is not > 4: updated with u = -4
    assert _value(net, "layers.0.conv.bias") == pytest.approx(-0.1)


def test_frozen_and_never_updated_layers():
    three = [CONV_BN.format(extra=""), CONV_BN.format(extra="stopbackward=1"),
             CONV_BIAS.format(extra="")]
    net = _net(*three)
    assert inference_layers(net) == 1 and never_updated(net) == 1
    assert frozen_layers(net, 0) == 2 and frozen_layers(net, 10**6) == 2
    slots = {s.layer for s in (g["slot"] for g in DarknetOptimizer(net, net.net).param_groups)}
    assert slots == {1, 2}  # the stopbackward layer itself is still updated (decay only)
    net = _net(CONV_BN.format(extra="stopbackward=5"), CONV_BIAS.format(extra=""))
    assert frozen_layers(net, 4) == 1 and frozen_layers(net, 5) == 0 and never_updated(net) == 0
    net = _net(CONV_BN.format(extra=""), CONV_BN.format(extra="train_only_bn=1"),
               CONV_BIAS.format(extra=""))
    assert never_updated(net) == 2 and frozen_layers(net, 0) == 2


def test_decay_only_moves_a_layer_without_gradient():
    net = _net(CONV_BN.format(extra="stopbackward=1"), CONV_BIAS.format(extra=""))
    _set(net, {"layers.0.conv.weight": 0.5})
    DarknetOptimizer(net, net.net).step(rate=0.1, iteration=1)
    # u = -0.01*4*0.5 = -0.02; w = 0.5 + 0.025*(-0.02) = 0.4995 (lr*decay*w per update)
    assert _value(net, "layers.0.conv.weight") == pytest.approx(0.4995, rel=1e-6)


def test_adam_one_step_by_hand():
    """adam_update_gpu: g' = u - decay*B*w; m = 0.1 g'; v = 0.001 g'^2; t=1 bias correction."""
    net = _net(CONV_BIAS.format(extra=""), net_extra="adam=1\nB1=0.9\nB2=0.999\neps=0.000001")
    _set(net, {"layers.0.conv.weight": 0.5, "layers.0.conv.bias": 0.2})
    opt = DarknetOptimizer(net, net.net)
    _grads(net, {"layers.0.conv.weight": 2.0, "layers.0.conv.bias": -1.0})
    opt.step(rate=0.1, iteration=1)
    # weight: g' = -2 - 0.02 = -2.02, mhat = g', vhat = g'^2 -> w += 0.1 * -1 (up to eps)
    assert _value(net, "layers.0.conv.weight") == pytest.approx(0.4, abs=1e-6)
    # bias: decay applies to biases too under Adam: g' = 1 - 0.04*0.2 = 0.992 -> b += 0.1
    assert _value(net, "layers.0.conv.bias") == pytest.approx(0.3, abs=1e-6)


def test_ema_rule():
    net = _net(CONV_BIAS.format(extra=""))
    ema = DarknetEMA(net, alpha=0.5, max_batches=2400)  # start 1200, apply at 1400
    _set(net, {"layers.0.conv.weight": 1.0, "layers.0.conv.bias": 0.0})
    assert ema.after_update(1199) is None and not ema.initialized
    assert ema.after_update(1200) == "EMA initialization"
    _set(net, {"layers.0.conv.weight": 3.0})
    assert ema.after_update(1201) == "ema_update()"  # 0.5*1 + 0.5*3
    with ema.swapped():
        assert _value(net, "layers.0.conv.weight") == pytest.approx(2.0)
    assert _value(net, "layers.0.conv.weight") == 3.0
    assert ema.after_update(1400) == "ema_apply()"
    assert _value(net, "layers.0.conv.weight") == pytest.approx(2.0)
    assert ema.after_update(1401) is None  # after the apply point: nothing
    state = ema.state_dict()
    other = DarknetEMA(net, alpha=0.5, max_batches=2400)
    other.load_state_dict(state)
    assert other.initialized and float(other.shadow[0].item()) == pytest.approx(2.0)
