"""The ACTIVATIONS table: darknet's formulas (activations.h) checked on hand-computed values, and
the code paths where darknet outputs 0 instead (activate() has no case for the name)."""

from __future__ import annotations

import copy
import math
import pickle
import re
import warnings

import pytest
import torch

from darknetpy.errors import CfgError
from darknetpy.model.layers.activation import ACTIVATIONS, ActivationPath
from darknetpy.model.network import Network

from ..conftest import REPO
from . import network, run

E = math.e

# (name, x, darknet's value): each value worked out by hand from the formula in activations.h.
CASES = [
    ("linear", [-2.0, 3.0], [-2.0, 3.0]),
    ("leaky", [-1.0, 2.0], [-0.1, 2.0]),
    ("revleaky", [-1.0, 2.0], [-0.1, 2.0]),
    ("relu", [-1.0, 2.0], [0.0, 2.0]),
    ("relu6", [-1.0, 2.0, 7.0], [0.0, 2.0, 6.0]),  # the formula; darknet's CPU gives 0 (below)
    ("logistic", [0.0, 1.0], [0.5, 1 / (1 + 1 / E)]),
    ("tanh", [0.0, 0.5], [0.0, 2 / (1 + math.exp(-1.0)) - 1]),
    ("loggy", [0.0, 1.0], [0.0, 2 / (1 + 1 / E) - 1]),
    ("elu", [-1.0, 2.0], [1 / E - 1, 2.0]),
    ("selu", [-1.0, 2.0], [1.0507 * 1.6732 * (1 / E - 1), 1.0507 * 2]),
    ("gelu", [1.0, -1.0], [0.5 * (1 + math.tanh(0.797885 + 0.035677)),
                           -0.5 * (1 + math.tanh(-0.797885 - 0.035677))]),
    ("relie", [-2.0, 2.0], [-0.02, 2.0]),
    ("ramp", [-1.0, 2.0], [-0.1, 2.2]),
    ("plse", [-5.0, 0.0, 2.0, 5.0], [-0.01, 0.5, 0.75, 1.01]),
    # n = floor(x): even -> floor(x/2); odd -> (x - n) + floor(x/2) (C's n % 2 on negatives too)
    ("stair", [2.5, 3.5, -0.5, -1.5], [1.0, 1.5, -0.5, -1.0]),
    ("hardtan", [-3.0, 0.5, 3.0], [-1.0, 0.5, 1.0]),
    ("lhtan", [-1.0, 0.5, 3.0], [-0.001, 0.5, 1.002]),
    ("swish", [1.0, -1.0], [1 / (1 + 1 / E), -1 / (1 + E)]),
    # mish: x tanh(softplus(x)), softplus(x) = x above 20 (darknet's threshold), ln(1+e^x) else
    ("mish", [1.0, 25.0, -1.0], [math.tanh(math.log(1 + E)), 25.0,
                                  -math.tanh(math.log(1 + 1 / E))]),
    ("hard_mish", [2.0, -1.0, -3.0], [2.0, -0.5, 0.0]),
]


@pytest.mark.parametrize(("name", "x", "expected"), CASES, ids=[c[0] for c in CASES])
def test_formula_values(name: str, x: list[float], expected: list[float]) -> None:
    got = ACTIVATIONS[name].fn(torch.tensor(x, dtype=torch.float64))
    assert got.tolist() == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_every_table_entry_has_a_case_or_a_channel_test() -> None:
    channel_wise = {"normalize_channels", "normalize_channels_softmax",
                    "normalize_channels_softmax_maxval"}
    assert set(ACTIVATIONS) == {c[0] for c in CASES} | channel_wise


def test_normalize_channels_variants_work_across_channels() -> None:
    x = torch.tensor([1.0, 3.0, -2.0]).view(1, 3, 1, 1)
    got = ACTIVATIONS["normalize_channels"].fn(x).flatten().tolist()
    assert got == pytest.approx([1 / 4.0001, 3 / 4.0001, 0.0], rel=1e-6)
    y = torch.tensor([0.0, math.log(3.0)], dtype=torch.float64).view(1, 2, 1, 1)
    got = ACTIVATIONS["normalize_channels_softmax"].fn(y).flatten().tolist()
    assert got == pytest.approx([1 / 4.0001, 3 / 4.0001], rel=1e-6)
    # Without the max subtraction darknet overflows; the _maxval variant does not.
    big = y + 1000
    assert not torch.isfinite(ACTIVATIONS["normalize_channels_softmax"].fn(big)).all()
    got = ACTIVATIONS["normalize_channels_softmax_maxval"].fn(big).flatten().tolist()
    total = 1 / 3 + 1 + 1e-4  # e^(x - max) = 1/3, 1; the 1e-4 is added after the max shift
    assert got == pytest.approx([1 / 3 / total, 1 / total], rel=1e-9)


def test_darknet_outputs_zero_where_activate_has_no_case() -> None:
    x = torch.tensor([-1.0, 0.5, 2.0])
    for name in ("swish", "mish"):
        assert ACTIVATIONS[name].for_layer(ActivationPath.SHORTCUT)(x).abs().sum() > 0
        assert ACTIVATIONS[name].for_layer(ActivationPath.GENERIC)(x).tolist() == [0, 0, 0]
    hard_mish = ACTIVATIONS["hard_mish"]
    assert hard_mish.for_layer(ActivationPath.SHORTCUT)(x).tolist() == [0, 0, 0]
    assert hard_mish.for_layer(ActivationPath.CONV)(x).tolist() == [-0.5, 0.5, 2.0]
    for path in ActivationPath:  # CPU activate() has no RELU6 case: 0 even in conv
        assert ACTIVATIONS["relu6"].for_layer(path)(x).tolist() == [0, 0, 0]
    assert ACTIVATIONS["leaky"].for_layer(ActivationPath.GENERIC)(x).tolist() == pytest.approx(
        [-0.1, 0.5, 2.0])


def test_in_place_versions_match_the_formulas() -> None:
    x = torch.linspace(-30, 30, 601)
    for activation in ACTIVATIONS.values():
        if activation.inplace is not None:
            expected = activation.fn(x)
            with torch.no_grad():
                got = activation.apply(x.clone(), ActivationPath.CONV)
            torch.testing.assert_close(got, expected, msg=activation.name)


def test_activation_paths_inside_layers() -> None:
    body = (
        "[convolutional]\nfilters=2\nsize=1\nactivation=linear\n"  # 0: identity weights below
        "[activation]\nactivation=mish\n"  # 1: generic activate() -> 0
        "[shortcut]\nfrom=-2\nactivation=mish\n"  # 2: 0 + x, mish computed
        "[shortcut]\nfrom=-3\nactivation=hard_mish\n"  # 3: hard_mish is not computed here -> 0
        "[route]\nlayers=0\n"  # 4: x
        "[convolutional]\nfilters=2\nsize=1\nactivation=hard_mish\n"  # 5: computed in conv
    )
    net = network(body, channels=2, height=2, width=2)
    with torch.no_grad():
        for conv in (net.layers[0], net.layers[5]):
            conv.conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
            conv.conv.bias.zero_()
    x = torch.tensor([-1.0, 0.5, 2.0, -3.0, 1.5, -0.5, 0.0, 4.0]).view(1, 2, 2, 2)
    out = run(net, x)
    assert out[1].abs().sum() == 0
    torch.testing.assert_close(out[2], torch.nn.functional.mish(x))
    assert out[3].abs().sum() == 0
    torch.testing.assert_close(out[5], ACTIVATIONS["hard_mish"].fn(x))
    assert out[5].abs().sum() > 0


def test_conv_and_connected_default_to_logistic_shortcut_to_linear() -> None:
    net = network("[convolutional]\nfilters=1\nsize=1\n[shortcut]\nfrom=-1\n"
                  "[connected]\noutput=1\n", channels=1, height=1, width=1)
    conv, shortcut, connected = net.layers
    assert (conv.activation.name, shortcut.activation.name, connected.activation.name) == (
        "logistic", "linear", "logistic")


def test_unknown_activation_lists_the_table_and_suggests() -> None:
    with pytest.raises(CfgError, match=r"t.cfg:6 \[convolutional\]: activation='mesh' is not one "
                                       r"of .*leaky.*mish.*did you mean 'mish'"):
        network("[convolutional]\nactivation=mesh\n")


# ---- pickling: a whole Network goes through torch.save, deepcopy and spawn workers ----

def _unit_variance(net: Network) -> Network:
    """Darknet's random weights with BN rolling variance 1 (0, darknet's init, overflows)."""
    with torch.no_grad():
        for name, buffer in net.named_buffers():
            if name.endswith("running_var"):
                buffer.fill_(1.0)
    return net


def _outputs(net: Network, x: torch.Tensor, *, grad: bool) -> list[torch.Tensor]:
    # no_grad runs the in-place versions (Activation.inplace), autograd the plain formulas
    with torch.set_grad_enabled(grad):
        outputs = [o.detach() for o in net(x)]
    assert all(torch.isfinite(o).all() for o in outputs)
    return outputs


def _assert_same(got: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_every_activation_survives_pickle_and_deepcopy(name: str) -> None:
    # each code path: convolutional, shortcut, generic ([activation])
    body = (f"[convolutional]\nfilters=4\nsize=3\npad=1\nbatch_normalize=1\nactivation={name}\n"
            f"[shortcut]\nfrom=-1\nactivation={name}\n"
            f"[activation]\nactivation={name}\n")
    net = _unit_variance(network(body, channels=3, height=4, width=4))
    x = torch.linspace(-3, 3, 48).view(1, 3, 4, 4)
    expected = {grad: _outputs(net, x, grad=grad) for grad in (False, True)}
    for clone in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        assert [layer.activation for layer in clone.layers] == [ACTIVATIONS[name]] * 3
        for grad in (False, True):
            _assert_same(_outputs(clone, x, grad=grad), expected[grad])


# yolov4: mish, leaky, linear; enet-coco: swish, logistic, leaky, linear
PICKLED_CFGS = ("yolov4.cfg", "enet-coco.cfg")


def test_pickled_cfgs_cover_every_activation_of_the_shipped_cfgs() -> None:
    def used(paths: list) -> set[str]:
        return {m for p in paths for m in re.findall(r"(?m)^activation=(\S+)", p.read_text())}

    shipped = sorted((REPO / "cfg").glob("*.cfg"))
    assert len(shipped) > 20, "cfg/: the repository's cfgs are missing"
    assert used(shipped) <= used([REPO / "cfg" / name for name in PICKLED_CFGS])


@pytest.mark.parametrize("cfg", PICKLED_CFGS)
def test_official_cfg_network_survives_pickle_and_deepcopy(cfg: str) -> None:
    path = REPO / "cfg" / cfg
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = _unit_variance(Network.from_cfg(path)).eval()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    expected = _outputs(net, x, grad=False)
    clone = pickle.loads(pickle.dumps(net))
    assert clone.cfg_text == net.cfg_text
    _assert_same(_outputs(clone, x, grad=False), expected)
    del clone
    _assert_same(_outputs(copy.deepcopy(net), x, grad=False), expected)
