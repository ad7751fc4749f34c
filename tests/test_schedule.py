"""learning_rate / current_rate against darknet's get_current_rate (golden/lr.json) and by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from darknetpy.errors import CfgError
from darknetpy.model.cfg import Options, parse_cfg
from darknetpy.model.netconfig import NetConfig, Policy, parse_net_options
from darknetpy.training.schedule import current_rate, learning_rate

from .conftest import GOLDEN, require_shared


def _net(text: str) -> NetConfig:
    return parse_net_options(Options(parse_cfg("[net]\nwidth=8\nheight=8\nchannels=3\n" + text)[0]))


def _lr_cases() -> list[str]:
    path = GOLDEN / "lr.json"
    return sorted(json.loads(path.read_text())) if path.is_file() else ["<no ../shared>"]


@pytest.mark.parametrize("case", _lr_cases())
def test_every_golden_rate_is_reproduced_exactly(case: str) -> None:
    require_shared()
    golden = json.loads((GOLDEN / "lr.json").read_text())[case]
    net = _net(golden["net"])
    mismatches = {
        int(k): (v, current_rate(int(k), net))
        for k, v in golden["lr"].items()
        if np.float32(current_rate(int(k), net)) != np.float32(v)
    }
    assert not mismatches, f"{case}: {len(mismatches)} of {len(golden['lr'])} differ: {mismatches}"


def test_burn_in_uses_power_and_counts_the_current_update() -> None:
    net = NetConfig(learning_rate=0.001, burn_in=1000, power=4)
    assert current_rate(500, net) == pytest.approx(0.001 * 0.5**4, rel=1e-6)
    assert current_rate(0, net) == 0.0
    assert current_rate(1000, net) == pytest.approx(0.001, rel=1e-6)


def test_steps_apply_from_the_step_itself() -> None:
    net = NetConfig(learning_rate=0.01, policy=Policy.STEPS, steps=(100, 200), scales=(0.1, 0.5))
    assert current_rate(99, net) == pytest.approx(0.01)
    assert current_rate(100, net) == pytest.approx(0.001)
    assert current_rate(200, net) == pytest.approx(0.0005)


def test_sgdr_restarts_with_growing_cycles() -> None:
    net = NetConfig(learning_rate=0.1, policy=Policy.SGDR, sgdr_cycle=10, sgdr_mult=2,
                    learning_rate_min=0.0)
    assert current_rate(0, net) == pytest.approx(0.1)
    assert current_rate(10, net) == pytest.approx(0.0, abs=1e-7)  # end of the first cycle
    assert current_rate(11, net) == pytest.approx(0.05 * (1 + np.cos(np.pi / 20)), rel=1e-5)


def test_random_policy_is_seeded() -> None:
    net = NetConfig(learning_rate=0.1, policy=Policy.RANDOM, power=1)
    a = current_rate(5, net, np.random.default_rng(1))
    assert a == current_rate(5, net, np.random.default_rng(1))
    assert 0 <= a <= 0.1


def test_learning_rate_reads_a_cfg_file(tmp_path) -> None:  # noqa: ANN001
    cfg = tmp_path / "n.cfg"
    cfg.write_text("[net]\nwidth=8\nheight=8\nchannels=3\nlearning_rate=0.002\nburn_in=10\n")
    assert learning_rate(cfg, 5) == pytest.approx(0.002 * 0.5**4, rel=1e-6)


def test_sgdr_with_steps_and_no_scales_takes_scale_1_as_darknet() -> None:
    """resnet152_trident.cfg: policy=sgdr, steps=, no scales= (parse_net_options: scale 1.0)."""
    net = _net("learning_rate=0.1\npolicy=sgdr\nsgdr_cycle=10\nsteps=20,40\nmax_batches=100\n")
    assert (net.steps, net.scales) == ((20, 40), (1.0, 1.0))
    plain = _net("learning_rate=0.1\npolicy=sgdr\nsgdr_cycle=10\nmax_batches=100\n")
    assert [current_rate(k, net) for k in range(60)] == [current_rate(k, plain) for k in range(60)]
    with pytest.raises(CfgError, match=r"scales"):  # policy=steps needs both (darknet: error)
        _net("policy=steps\nsteps=20,40\n")
