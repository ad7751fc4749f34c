"""What every layer module shares: darknet's C ``int`` limits and checks on cfg values and shapes,
C integer division, the "must output an image" check, allocation errors as CfgErrors, darknet's
batch-norm module and running-average factors, modules built without PyTorch's initialisation, the
antialiasing blur, and copying ``.weights`` values into tensors."""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor, nn

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


def batch_norm(channels: int, dims: int = 2, eps: float = BN_EPS) -> nn.Module:
    """Darknet's batch norm: eps 1e-5 (``eps``: the ``bn_eps`` key), running-average factor 0.01 (the
    GPU reference), and darknet's initial values: scales 1, biases 0, **rolling mean and variance 0**
    (``make_convolutional_layer``)."""
    cls = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
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
