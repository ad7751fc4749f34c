"""darknetpy's initial weights against Darknet's own (issue 17, "Initialisation").

``tests/darknet_init/`` holds small cfgs covering every layer type Darknet initialises, and the
``.weights`` file Darknet wrote for each right after parsing it (its untouched initialisation; see
the README there). Each tensor of such a file is compared with the tensor a freshly built darknetpy
network writes at the same place:

- values Darknet sets to a constant (0 or 1: biases, batch-norm scales, rolling means and
  variances, shortcut weights, the positions of a ``[local]`` layer after the first) must be
  darknetpy's at the same positions, exactly;
- values Darknet draws (``rand_uniform``) must be darknetpy's draws from the same distribution:
  each side uniform on the interval Darknet's rule gives (smallest and largest value near its
  ends, one-sample Kolmogorov-Smirnov), and the two samples alike (mean, standard deviation,
  two-sample Kolmogorov-Smirnov).

Every tolerance is the sampling error for the number of values, at a false-alarm rate of about
1e-6 per check; darknetpy's draws are seeded, so the outcome is fixed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from darknetpy.model.layers.base import DarknetLayer
from darknetpy.model.layers.conv import Conv
from darknetpy.model.layers.dense import Connected, Implicit
from darknetpy.model.layers.local import Local
from darknetpy.model.layers.recurrent import RecurrentLayer
from darknetpy.model.network import Network, build_network

RECORDED = Path(__file__).resolve().parents[1] / "darknet_init"
CASES = ("yolo_tiny", "region", "layers", "recurrent", "recurrent_conv")
DETECTION = ("yolo", "region", "Gaussian_yolo")
ALPHA = 1e-6  # the false-alarm rate of one statistical check
Z = 5.3  # the two-sided normal quantile of ALPHA
KS = math.sqrt(-math.log(ALPHA / 2) / 2)  # Kolmogorov's asymptotic quantile of ALPHA


@dataclass(frozen=True)
class Pair:
    """One tensor of the ``.weights`` file: Darknet's values and darknetpy's, in file order."""

    name: str  # "<layer index>:<section>[.<inner layer>]/<parameter>": "13:convolutional/conv.weight"
    layer: DarknetLayer  # the darknetpy layer owning it (an inner one for recurrent sections)
    darknet: np.ndarray
    ours: np.ndarray


def _require(case: str) -> tuple[Path, Path]:
    cfg, weights = RECORDED / f"{case}.cfg", RECORDED / f"{case}.weights"
    if not (cfg.is_file() and weights.is_file()):
        pytest.skip(f"{weights}: Darknet's recorded initialisation is absent (tests/darknet_init)")
    return cfg, weights


def _owners(network: Network) -> Iterator[tuple[str, DarknetLayer]]:
    """``(name, layer)`` of every layer holding ``.weights`` tensors, in file order: a recurrent
    section's inner layers (``"1:lstm.uf"``) in place of the section."""
    for layer in network.layers:
        name = f"{layer.index}:{layer.section.name}"
        if not isinstance(layer, RecurrentLayer):
            yield name, layer
            continue
        children = {id(module): attr for attr, module in layer.named_children()}
        for inner in layer.inner_layers():
            yield f"{name}.{children[id(inner)]}", inner


def _named(owner: DarknetLayer, prefix: str) -> dict[int, str]:
    tensors = [*owner.named_parameters(), *owner.named_buffers()]
    return {id(t): f"{prefix}/{name}" for name, t in tensors}


@functools.lru_cache(maxsize=None)
def pairs(case: str) -> tuple[Pair, ...]:
    """Darknet's recorded initialisation of ``case`` (read by darknetpy's ``.weights`` reader)
    beside darknetpy's own initialisation (seeded), tensor by tensor."""
    cfg, weights = _require(case)
    torch.manual_seed(0)
    ours = build_network(cfg, quiet=True)
    darknet = build_network(cfg, quiet=True)
    darknet.load_weights(weights)
    out = []
    for (prefix, mine), (_, theirs) in zip(_owners(ours), _owners(darknet), strict=True):
        names = _named(mine, prefix)
        for a, b in zip(mine.darknet_tensors(), theirs.darknet_tensors(), strict=True):
            out.append(Pair(names[id(a)], mine, b.detach().numpy().ravel().astype(np.float64),
                            a.detach().numpy().ravel().astype(np.float64)))
    return tuple(out)


def _constant(values: np.ndarray) -> np.ndarray:
    """Where Darknet set a constant: 0 or 1 (a ``rand_uniform`` draw is never exactly either)."""
    return (values == 0) | (values == 1)


def darknet_interval(p: Pair) -> tuple[float, float]:
    """The interval Darknet's rule draws this tensor's random values from (``rand_uniform``):

    - ``make_convolutional_layer``: ``scale * U(-1, 1)``, ``scale = sqrt(2 / (size*size*c/groups))``
      (C integer division; ``c`` the input channels);
    - ``make_connected_layer``: ``scale = sqrt(2 / inputs)``;
    - ``make_local_layer``: ``scale = sqrt(2 / (size*size*c))``, the first position's matrix only;
    - ``make_implicit_layer``: ``mean + U(-std, std)``.
    """
    layer = p.layer
    if isinstance(layer, Conv):
        scale = math.sqrt(2.0 / (layer.spec.size ** 2 * layer.in_shape.channels // layer.spec.groups))
    elif isinstance(layer, Connected):
        scale = math.sqrt(2.0 / layer.in_shape.numel)
    elif isinstance(layer, Local):
        scale = math.sqrt(2.0 / (layer.size ** 2 * layer.in_shape.channels))
    elif isinstance(layer, Implicit):
        options = layer.section.options  # parse_implicit: mean (0), std (0.2)
        mean, std = float(options.get("mean", 0.0)), float(options.get("std", 0.2))
        return mean - std, mean + std
    else:
        raise AssertionError(f"{p.name}: Darknet draws no random values for {type(layer).__name__}")
    return -scale, scale


def _ks_uniform(values: np.ndarray, lo: float, hi: float) -> float:
    """One-sample Kolmogorov-Smirnov distance of ``values`` from U(lo, hi)."""
    x = np.sort((values - lo) / (hi - lo))
    n = x.size
    ranks = np.arange(1, n + 1) / n
    return float(max(np.max(ranks - x), np.max(x - (ranks - 1.0 / n))))


def _ks_two(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov distance."""
    grid = np.concatenate([a, b])
    fa = np.searchsorted(np.sort(a), grid, side="right") / a.size
    fb = np.searchsorted(np.sort(b), grid, side="right") / b.size
    return float(np.max(np.abs(fa - fb)))


def check_uniform(values: np.ndarray, lo: float, hi: float, who: str) -> None:
    """``values`` drawn from U(lo, hi): inside it (float rounding allowed), both ends reached as
    closely as ``n`` draws reach them (P(no value within t of an end) = (1 - t)^n), and the
    Kolmogorov-Smirnov distance within its ALPHA quantile."""
    n = values.size
    width = hi - lo
    end = -math.log(ALPHA) / n * width  # P(min - lo > end) = (1 - end/width)^n <= ALPHA
    rounding = 1e-6 * max(abs(lo), abs(hi))
    assert lo - rounding <= values.min() <= lo + end, (who, lo, values.min(), end)
    assert hi - end <= values.max() <= hi + rounding, (who, hi, values.max(), end)
    assert _ks_uniform(values, lo, hi) <= KS / math.sqrt(n), (who, _ks_uniform(values, lo, hi))


def check_same_distribution(p: Pair, ours: np.ndarray, darknet: np.ndarray) -> None:
    """Mean and standard deviation within their sampling error (from Darknet's sample's second and
    fourth moments), and the two-sample Kolmogorov-Smirnov distance within its ALPHA quantile."""
    n, m = ours.size, darknet.size
    sd = darknet.std()
    m4 = np.mean((darknet - darknet.mean()) ** 4)
    assert abs(ours.mean() - darknet.mean()) <= Z * sd * math.sqrt(1 / n + 1 / m), (
        p.name, ours.mean(), darknet.mean())
    sd_of_sd = math.sqrt(max(m4 - sd ** 4, 0.0) / (4 * sd ** 2))  # per value: delta method
    assert abs(ours.std() - sd) <= Z * sd_of_sd * math.sqrt(1 / n + 1 / m), (p.name, ours.std(), sd)
    assert _ks_two(ours, darknet) <= KS * math.sqrt((n + m) / (n * m)), (p.name, _ks_two(ours, darknet))


@pytest.mark.parametrize("case", CASES)
def test_initial_weights_match_darknets(case: str) -> None:
    """Every tensor of every recorded cfg: Darknet's constants exactly, its draws in distribution."""
    checked = 0
    for p in pairs(case):
        assert p.ours.shape == p.darknet.shape, p.name
        fixed = _constant(p.darknet)
        np.testing.assert_array_equal(p.ours[fixed], p.darknet[fixed], err_msg=p.name)
        if fixed.all():
            continue
        lo, hi = darknet_interval(p)
        ours, darknet = p.ours[~fixed], p.darknet[~fixed]
        check_uniform(darknet, lo, hi, f"Darknet {p.name}")  # the rule read from Darknet's C code
        check_uniform(ours, lo, hi, f"darknetpy {p.name}")
        check_same_distribution(p, ours, darknet)
        checked += 1
    assert checked > 0


def test_batch_norm_start_values() -> None:
    """``make_convolutional_layer``, ``make_connected_layer``, ``make_batchnorm_layer``: scales 1,
    biases 0, rolling mean 0 and rolling variance 0 (``calloc``; PyTorch would start the variance
    at 1), in Darknet's file and darknetpy's, for the batch norms of every layer type."""
    expected = {"bn.bias": 0.0, "bn.weight": 1.0, "bn.running_mean": 0.0, "bn.running_var": 0.0}
    seen = set()
    for case in CASES:
        for p in pairs(case):
            field = p.name.rsplit("/", 1)[1]
            if field in expected:
                assert (p.darknet == expected[field]).all() and (p.ours == expected[field]).all(), p.name
                seen.add((p.layer.darknet_name, field))
    assert {(kind, f) for kind in ("convolutional", "connected", "batchnorm") for f in expected} <= seen


def _one(case: str, suffix: str) -> Pair:
    found = [p for p in pairs(case) if p.name.endswith(suffix)]
    assert len(found) == 1, (suffix, [p.name for p in found])
    return found[0]


def test_layers_darknet_initialises_its_own_way() -> None:
    """The rules that are not "uniform weights, zero biases", Darknet's and darknetpy's alike:

    - ``make_local_layer`` draws only the first ``c*n*size*size`` weights (the first output
      position's matrix); the other positions start at 0;
    - ``make_shortcut_layer``: weights (``weights_type``) 1;
    - ``make_implicit_layer``: ``mean + U(-std, std)``;
    - ``make_convolutional_layer`` means to set the weights of a ``normalize_channels*``
      convolution to 1, but tests ``l.activation`` before assigning it (still 0, LOGISTIC): they
      are drawn like any other convolution's."""
    local = _one("layers", ":local/weight")
    first = local.layer.in_shape.channels * local.layer.out_shape.channels * local.layer.size ** 2
    for values in (local.darknet, local.ours):
        assert (values[first:] == 0).all() and (values[:first] != 0).all()
    for suffix in ("3:shortcut/weight", "4:shortcut/weight"):
        shortcut = _one("layers", suffix)
        assert (shortcut.darknet == 1).all() and (shortcut.ours == 1).all()
    implicit = _one("layers", "15:implicit/weight")
    assert darknet_interval(implicit) == (0.95, 1.05)
    check_uniform(implicit.darknet, 0.95, 1.05, "Darknet [implicit] mean=1 std=0.05")
    norm = _one("layers", "5:convolutional/conv.weight")
    assert norm.layer.activation.name == "normalize_channels_softmax"
    lo, hi = darknet_interval(norm)
    check_uniform(norm.darknet, lo, hi, "Darknet normalize_channels_softmax convolution")
    check_uniform(norm.ours, lo, hi, "darknetpy normalize_channels_softmax convolution")


def test_the_convolution_before_a_detection_layer_is_initialised_like_any_other() -> None:
    """Darknet's parser gives the convolution before ``[yolo]``, ``[region]`` and
    ``[Gaussian_yolo]`` no special values (``parse_yolo`` etc. only set the head's own anchors):
    biases 0 and weights ``sqrt(2 / fan_in) * U(-1, 1)``, like every convolution."""
    heads = 0
    for case in ("yolo_tiny", "region"):
        by_layer: dict[int, list[Pair]] = {}
        network = build_network(RECORDED / f"{case}.cfg", quiet=True)
        for p in pairs(case):
            by_layer.setdefault(p.layer.index, []).append(p)
        for layer in network.layers:
            if layer.darknet_name not in DETECTION:
                continue
            before = by_layer[layer.index - 1]
            bias, weight = before  # no batch norm: biases, weights
            assert bias.name.endswith("conv.bias") and weight.name.endswith("conv.weight")
            assert (bias.darknet == 0).all() and (bias.ours == 0).all()
            lo, hi = darknet_interval(weight)
            check_uniform(weight.darknet, lo, hi, f"Darknet {weight.name}")
            check_uniform(weight.ours, lo, hi, f"darknetpy {weight.name}")
            heads += 1
    assert heads == 4  # two [yolo], one [region], one [Gaussian_yolo]


def test_the_checks_see_a_wrong_scale() -> None:
    """The statistics above tell the rule from its nearest mistakes: the same weights drawn with
    ``sqrt(1 / fan_in)`` (Darknet's commented-out rule), or normal with the same standard
    deviation, fail."""
    p = next(p for p in pairs("yolo_tiny") if p.name == "10:convolutional/conv.weight")
    lo, hi = darknet_interval(p)
    rng = np.random.default_rng(0)
    narrow = rng.uniform(lo, hi, p.darknet.size) / math.sqrt(2)
    normal = rng.normal(0.0, hi / math.sqrt(3), p.darknet.size)
    for wrong in (narrow, normal):
        with pytest.raises(AssertionError):
            check_uniform(wrong, lo, hi, "wrong")
        with pytest.raises(AssertionError):
            check_same_distribution(p, wrong, p.darknet)
