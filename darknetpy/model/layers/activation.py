"""Darknet's activations: the ``ACTIVATIONS`` table (``activations.h``, ``activations.c``,
``gemm.c: activate_array_cpu_custom``).

Darknet computes an activation in one of three code paths, and not every name works in every path:

* ``forward_convolutional_layer`` has dedicated code for swish, mish, hard_mish and the three
  ``normalize_channels*`` variants, and sends every other name through ``activate()``;
* ``forward_shortcut_layer`` has dedicated code for swish and mish only;
* every other layer ([activation], [connected], [sam], [scale_channels]) calls ``activate_array``,
  i.e. ``activate()`` alone.

``activate()`` has no case for swish, mish, hard_mish, normalize_channels* **nor relu6**, and returns
0 for them. darknetpy reproduces that: :meth:`Activation.for_layer` gives the formula where darknet
computes it and a zero function elsewhere. relu6 gives 0 everywhere, because the golden data (and
every CPU build) run ``activate()`` for it; only darknet's GPU kernel computes ``min(max(x,0),6)``.

Formulas that equal a PyTorch builtin up to float rounding use the builtin (faster): leaky, relu,
logistic, tanh, elu, swish, mish (PyTorch's softplus has darknet's threshold 20), hardtan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cfg import Options

ActivationFn = Callable[[Tensor], Tensor]


class ActivationPath(Enum):
    """Darknet's activation code paths (see the module docstring)."""

    CONV = "convolutional"  # forward_convolutional_layer
    SHORTCUT = "shortcut"  # forward_shortcut_layer
    GENERIC = "generic"  # activate_array / activate()


ALL_PATHS = frozenset(ActivationPath)


@dataclass(frozen=True)
class Activation:
    """One darknet activation.

    Attributes:
        name: darknet's name (``get_activation``).
        fn: the formula, on a (N, C, H, W) or (N, C) tensor (channels on dim 1).
        paths: where darknet computes ``fn``; anywhere else it outputs 0.
        inplace: an in-place version of ``fn`` (for inference without autograd), if there is one.
    """

    name: str
    fn: ActivationFn
    paths: frozenset[ActivationPath] = ALL_PATHS
    inplace: ActivationFn | None = None

    def for_layer(self, path: ActivationPath) -> ActivationFn:
        """The function darknet applies in code path ``path``: ``fn`` or a zero function."""
        return self.fn if path in self.paths else zero

    def apply(self, x: Tensor, path: ActivationPath) -> Tensor:
        """``for_layer(path)(x)``, in place when autograd is off and an in-place version exists."""
        if path not in self.paths:
            return zero(x)
        if self.inplace is not None and not torch.is_grad_enabled():
            return self.inplace(x)
        return self.fn(x)


# ---- the formulas (activations.h; each names its darknet function) ----

def linear(x: Tensor) -> Tensor:
    """``linear_activate``: x."""
    return x


def zero(x: Tensor) -> Tensor:
    """What ``activate()`` returns for a name it has no case for."""
    return torch.zeros_like(x)


def leaky(x: Tensor) -> Tensor:
    """``leaky_activate``: x if x > 0 else 0.1 x (also ``revleaky``)."""
    return F.leaky_relu(x, 0.1)


def relu6(x: Tensor) -> Tensor:
    """``relu6_activate`` (GPU kernel only): min(max(x, 0), 6)."""
    return x.clamp(0.0, 6.0)


def loggy(x: Tensor) -> Tensor:
    """``loggy_activate``: 2 / (1 + e^-x) - 1."""
    return 2.0 * torch.sigmoid(x) - 1.0


def elu(x: Tensor) -> Tensor:
    """``elu_activate``: x if x >= 0 else e^x - 1."""
    return F.elu(x)


def selu(x: Tensor) -> Tensor:
    """``selu_activate``, with darknet's rounded constants 1.0507 and 1.6732 (not PyTorch's SELU)."""
    return torch.where(x >= 0, 1.0507 * x, (1.0507 * 1.6732) * torch.expm1(x))


def gelu(x: Tensor) -> Tensor:
    """``gelu_activate``: 0.5 x (1 + tanh(0.797885 x + 0.035677 x^3)) (darknet's constants)."""
    return 0.5 * x * (1.0 + torch.tanh(0.797885 * x + 0.035677 * x * x * x))


def relie(x: Tensor) -> Tensor:
    """``relie_activate``: x if x > 0 else 0.01 x."""
    return F.leaky_relu(x, 0.01)


def ramp(x: Tensor) -> Tensor:
    """``ramp_activate``: x (x > 0) + 0.1 x."""
    return F.relu(x) + 0.1 * x


def plse(x: Tensor) -> Tensor:
    """``plse_activate``: piecewise linear sigmoid (slope 0.01 outside [-4, 4], 0.125 inside)."""
    return torch.where(x < -4, 0.01 * (x + 4), torch.where(x > 4, 0.01 * (x - 4) + 1, 0.125 * x + 0.5))


def stair(x: Tensor) -> Tensor:
    """``stair_activate``: n = floor(x); floor(x/2) if n is even, else (x - n) + floor(x/2)."""
    n = torch.floor(x)
    half = torch.floor(x / 2)
    return torch.where(torch.remainder(n, 2) == 0, half, (x - n) + half)


def hardtan(x: Tensor) -> Tensor:
    """``hardtan_activate``: clamp(x, -1, 1)."""
    return x.clamp(-1.0, 1.0)


def lhtan(x: Tensor) -> Tensor:
    """``lhtan_activate``: 0.001 x below 0, 0.001 (x - 1) + 1 above 1, x between."""
    return torch.where(x < 0, 0.001 * x, torch.where(x > 1, 0.001 * (x - 1) + 1, x))


def hard_mish(x: Tensor) -> Tensor:
    """``hard_mish_yashas``: x if x > 0; x^2/2 + x if -2 < x <= 0; else 0."""
    return torch.where(x > 0, x, torch.where(x > -2, x * x / 2 + x, torch.zeros_like(x)))


def normalize_channels(x: Tensor) -> Tensor:
    """``activate_array_normalize_channels``: at each pixel, x_k / (1e-4 + sum of the positive x_j)
    for x_k > 0, else 0."""
    positive = F.relu(x)
    return positive / (1e-4 + positive.sum(dim=1, keepdim=True))


def _at_least_float32(x: Tensor) -> Tensor:
    """fp16/bf16 widened to float32 (e^x overflows fp16 from x = 11.1: inf / inf = NaN)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def normalize_channels_softmax(x: Tensor) -> Tensor:
    """``activate_array_normalize_channels_softmax(use_max_val=0)``: e^x_k / (1e-4 + sum e^x_j),
    without subtracting the maximum (it overflows where darknet's float32 overflows); computed in
    float32 at least, then cast back (``--half``)."""
    e = torch.exp(_at_least_float32(x))
    return (e / (1e-4 + e.sum(dim=1, keepdim=True))).to(x.dtype)


def normalize_channels_softmax_maxval(x: Tensor) -> Tensor:
    """``activate_array_normalize_channels_softmax(use_max_val=1)``: the softmax above on x - max
    (in float32 at least: a half sum of many channels can overflow too)."""
    w = _at_least_float32(x)
    e = torch.exp(w - w.amax(dim=1, keepdim=True))
    return (e / (1e-4 + e.sum(dim=1, keepdim=True))).to(x.dtype)


# ---- in-place versions (module-level functions, not lambdas: a network must pickle) ----

def _leaky_(x: Tensor) -> Tensor:
    return F.leaky_relu_(x, 0.1)


def _swish_(x: Tensor) -> Tensor:
    return F.silu(x, inplace=True)


def _mish_(x: Tensor) -> Tensor:
    return F.mish(x, inplace=True)


_CONV = frozenset({ActivationPath.CONV})
_CONV_SHORTCUT = frozenset({ActivationPath.CONV, ActivationPath.SHORTCUT})

ACTIVATIONS: MappingProxyType[str, Activation] = MappingProxyType({
    a.name: a for a in (
        Activation("linear", linear),
        Activation("leaky", leaky, inplace=_leaky_),
        Activation("revleaky", leaky, inplace=_leaky_),
        Activation("relu", F.relu, inplace=F.relu_),
        Activation("relu6", relu6, paths=frozenset()),  # CPU activate(): no case, 0
        Activation("logistic", torch.sigmoid, inplace=torch.sigmoid_),
        Activation("tanh", torch.tanh, inplace=torch.tanh_),
        Activation("loggy", loggy),
        Activation("elu", elu),
        Activation("selu", selu),
        Activation("gelu", gelu),
        Activation("relie", relie),
        Activation("ramp", ramp),
        Activation("plse", plse),
        Activation("stair", stair),
        Activation("hardtan", hardtan),
        Activation("lhtan", lhtan),
        Activation("swish", F.silu, paths=_CONV_SHORTCUT, inplace=_swish_),
        Activation("mish", F.mish, paths=_CONV_SHORTCUT, inplace=_mish_),
        Activation("hard_mish", hard_mish, paths=_CONV),
        Activation("normalize_channels", normalize_channels, paths=_CONV),
        Activation("normalize_channels_softmax", normalize_channels_softmax, paths=_CONV),
        Activation("normalize_channels_softmax_maxval", normalize_channels_softmax_maxval,
                   paths=_CONV),
    )
})


def get_activation(opts: Options, default: str) -> Activation:
    """Read ``activation=`` (darknet's ``get_activation``, exact case-sensitive names).

    Raises:
        CfgError: an unknown name, listing the table (darknet silently falls back to relu).
    """
    return opts.get_choice("activation", ACTIVATIONS, default)
