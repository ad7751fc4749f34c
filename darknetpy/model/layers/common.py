"""What every layer module shares: darknet's C ``int`` limits and checks on cfg values and shapes,
C integer division, the "must output an image" check, allocation errors as CfgErrors, darknet's
batch-norm module and running-average factors, modules built without PyTorch's initialisation, the
antialiasing blur, and copying ``.weights`` values into tensors."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import MappingProxyType
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..cfg import Options
from .base import Shape

BN_EPS = 1e-5  # blas.c: normalize_cpu, sqrt(variance + .00001f)
BN_MOMENTUM = 0.01  # forward_batchnorm_layer_gpu / cuDNN exponentialAverageFactor (the CPU build: 0.1)
# The running-average factor of each darknet build (rolling = (1-f)*rolling + f*batch statistic):
# the GPU build, cuDNN or not, 0.01 everywhere (forward_batchnorm_layer_gpu,
# forward_connected_layer_gpu); the CPU build 0.1 (forward_batchnorm_layer, used by convolutional
# and [batchnorm] layers) and 0.05 in [connected] layers (forward_connected_layer).
BN_MOMENTUM_BY_BUILD = MappingProxyType({
    "gpu": MappingProxyType({"convolutional": 0.01, "batchnorm": 0.01, "connected": 0.01}),
    "cpu": MappingProxyType({"convolutional": 0.1, "batchnorm": 0.1, "connected": 0.05}),
})


INT_MAX = 2**31 - 1  # darknet's sizes and counts are C ints


def get_c_int(opts: Options, key: str, default: int) -> int:
    """``opts.get_int`` for a value darknet keeps in a C ``int``: out of range is a CfgError."""
    value = opts.get_int(key, default)
    if not -INT_MAX - 1 <= value <= INT_MAX:
        raise opts.error(f"{key}={value} does not fit darknet's 32-bit int", key)
    return value


def check_count(opts: Options, count: int, what: str, key: str | None = None) -> None:
    """Refuse a layer size darknet's ``int`` arithmetic cannot hold (outputs, weights)."""
    if count > INT_MAX:
        raise opts.error(f"{what} would hold {count} values, more than darknet's int limit "
                         f"({INT_MAX}); the layer is far too large", key)


def checked_shape(opts: Options, shape: Shape, key: str | None = None) -> Shape:
    """``shape`` after :func:`check_count` of its values."""
    check_count(opts, shape.numel, f"the output {shape}", key)
    return shape


T = TypeVar("T")


def allocate(opts: Options, make: Callable[[], T], what: str) -> T:
    """``make()``, turning an allocation failure into a CfgError naming the layer."""
    try:
        return make()
    except MemoryError:
        raise opts.error(f"not enough memory for {what}") from None
    except RuntimeError as exc:
        text = str(exc)
        if "alloc" not in text and "memory" not in text and "overflow" not in text:
            raise
        raise opts.error(f"not enough memory for {what} ({text.splitlines()[0][:120]})") from None


def c_div(a: int, b: int) -> int:
    """C integer division (truncates toward zero), as darknet's shape formulas use it."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def require_image(opts: Options, shape: Shape, what: str) -> None:
    """Darknet's ``Layer before <what> layer must output image.`` check, as a CfgError."""
    if shape.channels <= 0 or shape.height <= 0 or shape.width <= 0:
        raise opts.error(
            f"the layer before {what} must output an image, but its output is {shape} (w x h x c)"
        )


class _DarknetCpuBatchNorm(torch.autograd.Function):
    """Training-mode batch norm of darknet's CPU build, forward and backward as its C code computes
    them (``batchnorm_layer.c: forward_batchnorm_layer, backward_batchnorm_layer``;
    ``blas.c: mean_cpu, variance_cpu, normalize_cpu, mean_delta_cpu, variance_delta_cpu,
    normalize_delta_cpu``).

    Two points differ from PyTorch's (and cuDNN's) batch norm:

    - the batch is normalised with the UNBIASED variance (``variance_cpu`` divides by N - 1);
    - the backward pass is not the exact gradient of that forward: ``normalize_delta_cpu`` uses
      the biased-variance factor 2/N, and divides by ``sqrt(variance) + eps`` where the forward
      divided by ``sqrt(variance + eps)`` (relative differences of order 1/N, and of order
      eps/variance in channels of small variance).

    ``bias_grad=False`` reproduces the CPU build's defect: ``backward_batchnorm_layer``
    (batchnorm_layer.c:211-221) never calls ``backward_bias``, so the batch-norm biases (beta) of
    ``[convolutional]`` and ``[batchnorm]`` layers get no gradient and keep their initial values;
    the GPU build calls ``backward_bias_gpu`` (batchnorm_layer.c:399) and the original darknet
    (pjreddie) calls ``backward_bias`` in the same function.
    """

    @staticmethod
    def batch_stats(x: Tensor, dims: list[int]) -> tuple[Tensor, Tensor]:
        """``mean_cpu`` and ``variance_cpu`` (which divides by batch*spatial - 1) per channel."""
        return x.mean(dims), x.var(dims, correction=1)

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, eps: float,
                bias_grad: bool) -> tuple[Tensor, Tensor, Tensor]:
        dims = [0, *range(2, x.dim())]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean, var = _DarknetCpuBatchNorm.batch_stats(x, dims)
        std = torch.sqrt(var + eps)
        x_norm = (x - mean.view(shape)) / std.view(shape)
        ctx.save_for_backward(x, mean, var, x_norm, weight)
        ctx.eps, ctx.bias_grad = eps, bias_grad
        ctx.mark_non_differentiable(mean, var)
        return x_norm * weight.view(shape) + bias.view(shape), mean, var

    @staticmethod
    def backward(ctx: Any, grad: Tensor, _gm: Tensor, _gv: Tensor) -> tuple[Tensor | None, ...]:
        x, mean, var, x_norm, weight = ctx.saved_tensors
        dims = [0, *range(2, x.dim())]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        n = x.numel() // x.shape[1]
        grad_weight = (grad * x_norm).sum(dims)  # backward_scale_cpu
        grad_bias = grad.sum(dims) if ctx.bias_grad else torch.zeros_like(weight)
        d = grad * weight.view(shape)  # scale_bias(l.delta, l.scales, ...)
        centred = x - mean.view(shape)
        mean_delta = d.sum(dims) * (-1.0 / torch.sqrt(var + ctx.eps))  # mean_delta_cpu
        var_delta = (d * centred).sum(dims) * -0.5 * torch.pow(var + ctx.eps, -1.5)
        # normalize_delta_cpu: eps OUTSIDE the square root here, 1/(sqrt(variance) + eps)
        grad_x = (d / (torch.sqrt(var) + ctx.eps).view(shape)
                  + var_delta.view(shape) * 2.0 * centred / n + mean_delta.view(shape) / n)
        return grad_x, grad_weight, grad_bias, None, None


class DarknetBatchNorm:
    """Darknet's batch norm: :class:`DarknetBatchNorm2d` and :class:`DarknetBatchNorm1d` are
    ``nn.BatchNorm2d``/``1d`` (state, inference, ``isinstance``) with this training mode.

    In training mode it reproduces one darknet build (:attr:`build`, set by
    :func:`set_bn_build`): ``"gpu"`` is cuDNN's ``cudnnBatchNormalizationForwardTraining`` (the
    biased variance; PyTorch's own batch norm computes exactly that), ``"cpu"`` the CPU build's
    forward (``forward_batchnorm_layer``: normalised with the unbiased variance, ``blas.c:271``)
    with the exact gradient of that forward. :attr:`cpu_backward` True replaces the gradient with
    the CPU build's own backward (:class:`_DarknetCpuBatchNorm`), and :attr:`bias_grad` False
    reproduces its defect (batch-norm biases never trained). Outside training (or tracking off) it
    is PyTorch's.
    """

    build: str = "gpu"
    cpu_backward: bool = False
    bias_grad: bool = True

    def forward(self, input: Tensor) -> Tensor:
        bn: Any = self
        if self.build == "gpu" or not bn.training or not bn.track_running_stats:
            return super().forward(input)  # type: ignore[misc]
        bn._check_input_dim(input)
        f = float(bn.momentum if bn.momentum is not None else 0.1)
        bn.num_batches_tracked.add_(1)
        if self.cpu_backward or not self.bias_grad:
            x = input if input.dtype == torch.float64 else input.float()  # half: in float32
            y, mean, var = _DarknetCpuBatchNorm.apply(x, bn.weight.to(x.dtype), bn.bias.to(x.dtype),
                                                      bn.eps, self.bias_grad)
            with torch.no_grad():  # forward_batchnorm_layer: rolling = (1-f)*rolling + f*batch
                bn.running_mean.mul_(1.0 - f).add_(mean, alpha=f)
                bn.running_var.mul_(1.0 - f).add_(var, alpha=f)
            return y.to(input.dtype)
        # (x - mean) / sqrt(var_unbiased + eps) through PyTorch's own kernel (and its exact
        # gradient): var_unbiased + eps = (var_biased + eps (n-1)/n) n/(n-1), so the biased
        # normalisation with eps (n-1)/n, times sqrt((n-1)/n), is darknet's; the running
        # averages take the unbiased variance in both
        n = input.numel() // input.shape[1]
        c = math.sqrt((n - 1) / n) if n > 1 else 1.0
        return F.batch_norm(input, bn.running_mean, bn.running_var, bn.weight * c, bn.bias,
                            training=True, momentum=f, eps=bn.eps * (n - 1) / n if n > 1 else bn.eps)


class DarknetBatchNorm2d(DarknetBatchNorm, nn.BatchNorm2d):
    """:class:`DarknetBatchNorm` of (N, C, H, W) tensors."""


class DarknetBatchNorm1d(DarknetBatchNorm, nn.BatchNorm1d):
    """:class:`DarknetBatchNorm` of (N, C) tensors ([connected])."""


def batch_norm(channels: int, dims: int = 2, eps: float = BN_EPS) -> nn.Module:
    """Darknet's batch norm: eps 1e-5 (``eps``: the ``bn_eps`` key), running-average factor 0.01 (the
    GPU reference), and darknet's initial values: scales 1, biases 0, **rolling mean and variance 0**
    (``make_convolutional_layer``). A :class:`DarknetBatchNorm`."""
    cls = DarknetBatchNorm2d if dims == 2 else DarknetBatchNorm1d
    bn = cls(channels, eps=eps, momentum=BN_MOMENTUM)
    with torch.no_grad():
        bn.running_var.zero_()
    return bn


def set_bn_momentum(network: nn.Module, build: str) -> None:
    """Give every batch norm of ``network`` the running-average factor darknet's ``build``
    (``"cpu"`` or ``"gpu"``, :data:`BN_MOMENTUM_BY_BUILD`) uses for its layer type."""
    factors = BN_MOMENTUM_BY_BUILD[build]
    for layer in network.modules():
        bn = getattr(layer, "bn", None)
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            bn.momentum = factors.get(getattr(layer, "darknet_name", ""), factors["convolutional"])


# The layer types whose batch norm goes through backward_batchnorm_layer (no bias gradient on
# the CPU build); [connected] computes its bias gradient itself (backward_connected_layer).
_BN_BIAS_DEFECT_TYPES = ("convolutional", "batchnorm")


def set_bn_build(network: nn.Module, build: str, *, cpu_defects: bool = False) -> None:
    """Make every batch norm of ``network`` train as darknet's ``build`` does: its running-average
    factors (:func:`set_bn_momentum`) and its training-mode arithmetic (:class:`DarknetBatchNorm`).

    ``cpu_defects`` (``build="cpu"`` only) also reproduces the CPU build's backward: its
    approximate batch-norm gradient, and its defect that the biases of ``[convolutional]`` and
    ``[batchnorm]`` batch norms get no gradient (:class:`_DarknetCpuBatchNorm`).
    """
    set_bn_momentum(network, build)
    defects = cpu_defects and build == "cpu"
    for layer in network.modules():
        bn = getattr(layer, "bn", None)
        if isinstance(bn, DarknetBatchNorm):
            bn.build = build
            bn.cpu_backward = defects
            bn.bias_grad = not (defects and getattr(layer, "darknet_name", "convolutional")
                                in _BN_BIAS_DEFECT_TYPES)  # fmt: skip


def empty_module(factory: Callable[..., nn.Module], *args: object, **kwargs: object) -> nn.Module:
    """Build ``factory(*args)`` without PyTorch's own initialisation (it is replaced by darknet's).

    The module is created on the meta device and then given uninitialised storage on the current
    default device, so that building a large network costs one initialisation, not two (and none
    under ``with torch.device("meta"):``).
    """
    module = factory(*args, device="meta", **kwargs)
    return module.to_empty(device=torch.get_default_device())


def blur_kernel(channels: int, antialiasing: int) -> tuple[Tensor, int]:
    """The fixed depthwise blur of ``antialiasing=1`` (3x3 [1,2,1]x[1,2,1]/16, pad 1) or
    ``antialiasing=2`` (2x2 of 1/4, pad 0) (``make_convolutional_layer``, ``make_maxpool_layer``).

    Returns:
        the (channels, 1, k, k) kernel and its padding.
    """
    if antialiasing == 2:
        kernel = torch.full((2, 2), 0.25)
        pad = 0
    else:
        row = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.outer(row, row) / 16
        pad = 1
    return kernel.expand(channels, 1, *kernel.shape).contiguous(), pad


def blur_out(size: int, kernel: int, pad: int, stride: int) -> int:
    """Output size of the blur layer (``convolutional_out_height`` of the blur conv)."""
    return c_div(size + 2 * pad - kernel, stride) + 1


def copy_values(tensor: Tensor, values: np.ndarray) -> None:
    """Copy float32 ``values`` (any layout numpy can make contiguous) into ``tensor``."""
    tensor.copy_(torch.from_numpy(np.ascontiguousarray(values)).view(tensor.shape))
