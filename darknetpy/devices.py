"""Device names and the process-wide float32 precision of CUDA, shared by detect, map and train.

* :func:`parse_device` turns ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` into a :class:`torch.device`,
  or one line saying what is wrong (an unknown name, no CUDA, ``cuda:9`` on a machine with two
  GPUs) instead of PyTorch's "invalid device ordinal" traceback at the first tensor moved there.
* :func:`set_tf32` chooses between TensorFloat-32 and IEEE float32 for CUDA matmuls and cuDNN
  convolutions. darknetpy turns TF32 **off** unless asked (``--tf32``): PyTorch's default runs fp32
  convolutions in TF32 (10-bit mantissa), which makes ``--amp off`` training and ``map --device
  cuda`` drift from Darknet's float32 goldens. These are PyTorch's process-wide switches; the
  commands set them explicitly at their start.
"""

from __future__ import annotations

import re

import torch

from .errors import UsageError

__all__ = ["parse_device", "set_tf32", "tf32_enabled"]

_DEVICE = re.compile(r"(cpu|cuda|mps)(?::(\d+))?")


def parse_device(device: str | torch.device, *, what: str = "--device") -> torch.device:
    """``device`` as a :class:`torch.device` that exists on this machine.

    Args:
        device: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or a :class:`torch.device`.
        what: how the caller names the value in the message (``--device``, ``device``).

    Raises:
        UsageError: one line: not a device name, CUDA (or MPS) not available, or no CUDA device N.
    """
    text = str(device)
    match = _DEVICE.fullmatch(text.strip())
    if match is None:
        raise UsageError(f"{what} {text}: not a device; use cpu, cuda, cuda:N or mps")
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        if index not in (None, "0"):
            raise UsageError(f"{what} {text}: the CPU has no index; use cpu")
        return torch.device("cpu")
    if kind == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError(f"{what} {text}: MPS is not available on this machine; use cpu")
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise UsageError(f"{what} {text}: CUDA is not available on this machine; use --device cpu")
    if index is None:
        return torch.device("cuda")
    count = torch.cuda.device_count()
    if int(index) >= count:
        raise UsageError(f"{what} {text}: no such CUDA device; this machine has {count} "
                         f"(cuda:0..cuda:{count - 1})")  # fmt: skip
    return torch.device("cuda", int(index))


def set_tf32(enabled: bool) -> None:
    """TF32 (``enabled``) or IEEE float32 for CUDA matmuls and cuDNN convolutions and RNNs.

    Uses PyTorch's ``fp32_precision`` switches where they exist (torch >= 2.9, where mixing them
    with the older ``allow_tf32`` flags is an error), else ``allow_tf32``. Harmless without CUDA.
    """
    value = "tf32" if enabled else "ieee"
    cudnn = torch.backends.cudnn
    if hasattr(cudnn, "fp32_precision") and hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        torch.backends.cuda.matmul.fp32_precision = value
        cudnn.conv.fp32_precision = value
        cudnn.rnn.fp32_precision = value
    else:  # pragma: no cover - torch < 2.9
        torch.backends.cuda.matmul.allow_tf32 = enabled
        cudnn.allow_tf32 = enabled


def tf32_enabled() -> bool:
    """Whether CUDA convolutions run in TF32 (the switch :func:`set_tf32` sets)."""
    cudnn = torch.backends.cudnn
    if hasattr(cudnn, "conv") and hasattr(cudnn.conv, "fp32_precision"):
        return cudnn.conv.fp32_precision == "tf32"
    return bool(cudnn.allow_tf32)  # pragma: no cover - torch < 2.9
