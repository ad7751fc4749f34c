"""The device settings of a training run: what makes CUDA fast without changing a number on the CPU.

One record, :class:`DeviceSettings`, decided once by :func:`training_settings` and applied by
:func:`apply_settings` (both the Darknet loop, :mod:`darknetpy.training.setup`, and the recipe loop,
:mod:`darknetpy.training.recipe_loop`, use it):

* ``cudnn.benchmark`` on CUDA: cuDNN times its convolution algorithms once per input shape (the
  shapes change only at Darknet's random resize, every 10 iterations, among a few sizes).
* TF32 off unless ``--tf32`` (:func:`darknetpy.devices.set_tf32`): fp32 training on CUDA then
  computes what the CPU computes, within float32 noise.
* channels-last (NHWC) model and batches under AMP on CUDA, where the tensor cores want it. Not on
  the CPU: measured with ``bench/bench_channels_last.py`` (yolov4-tiny raccoon, fp32, one thread)
  it gains 2-3 %, within the noise of a shared machine, and moves the loss by float32 rounding
  (oneDNN's NHWC kernels sum in another order), i.e. away from the CPU goldens.
* loader workers scaled to the cores of this process's share of the node
  (:func:`default_workers`), kept alive between ``iterate`` calls (persistent workers), and
  batches handed over as uint8 (a quarter of float32's bytes through shared and pinned memory)
  and made float on the device by :func:`to_device_images`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
import torch

from ..data.loader import unit_float
from ..devices import set_tf32
from ..errors import UsageError

__all__ = [
    "DeviceSettings",
    "apply_settings",
    "available_cores",
    "default_workers",
    "local_world_size",
    "to_device_images",
    "training_settings",
    "use_channels_last",
]

MAX_WORKERS = 8  # per rank: beyond this the loader outruns any single GPU on these cfgs


@dataclass(frozen=True)
class DeviceSettings:
    """How a training run uses its device (see the module docstring)."""

    device: torch.device
    cudnn_benchmark: bool
    tf32: bool
    channels_last: bool
    workers: int
    pin_memory: bool

    def describe(self) -> str:
        """The settings in a few words, for the run's summary line."""
        parts = [f"{self.workers} loader worker(s)"]
        if self.device.type == "cuda":
            parts += [f"TF32 {'on' if self.tf32 else 'off'}",
                      "cudnn.benchmark" if self.cudnn_benchmark else "no cudnn.benchmark"]
        if self.channels_last:
            parts.append("channels-last")
        return ", ".join(parts)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's or taskset's share)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def local_world_size(world_size: int) -> int:
    """Training processes on this node: torchrun's ``LOCAL_WORLD_SIZE``, else ``world_size``
    (``--gpus 0,1`` starts every process on this machine)."""
    value = os.environ.get("LOCAL_WORLD_SIZE", "")
    try:
        return max(1, int(value)) if value else max(1, world_size)
    except ValueError:
        raise UsageError(f"environment variable LOCAL_WORLD_SIZE={value!r} is not an "
                         "integer") from None  # fmt: skip


def default_workers(device_type: str, cores: int, local_world: int) -> int:
    """Loader processes per rank when ``--workers`` is not given.

    Each rank gets ``cores // local_world`` cores. On CUDA the model runs on the GPU, so all but
    one of them load data (at least 1, at most :data:`MAX_WORKERS`). On the CPU the workers compete
    with the training threads: none on 2 cores or fewer per rank (building in the training process
    between iterations), else half of them, at most 4.
    """
    per_rank = max(1, cores // max(1, local_world))
    if device_type == "cuda":
        return max(1, min(MAX_WORKERS, per_rank - 1))
    return 0 if per_rank <= 2 else min(4, per_rank // 2)


def use_channels_last(device: torch.device, amp: str) -> bool:
    """Channels-last model and batches: CUDA under AMP only (see the module docstring)."""
    return device.type == "cuda" and amp != "off"


def training_settings(device: torch.device, *, amp: str = "off", tf32: bool = False,
                      workers: int | None = None, world_size: int = 1,
                      cores: int | None = None) -> DeviceSettings:
    """The settings of a run on ``device`` (``workers`` None: :func:`default_workers`).

    Raises:
        UsageError: ``workers`` negative.
    """
    if workers is not None and workers < 0:
        raise UsageError(f"--workers {workers}: use 0 (load in the training process) or more")
    cuda = device.type == "cuda"
    if workers is None:
        workers = default_workers(device.type, cores or available_cores(),
                                  local_world_size(world_size))  # fmt: skip
    return DeviceSettings(device, cudnn_benchmark=cuda, tf32=tf32,
                          channels_last=use_channels_last(device, amp), workers=workers,
                          pin_memory=cuda)  # fmt: skip


def apply_settings(settings: DeviceSettings, net: torch.nn.Module | None = None) -> None:
    """Set PyTorch's switches for this run and convert ``net`` to the run's memory format."""
    set_tf32(settings.tf32)
    if settings.device.type == "cuda":
        torch.backends.cudnn.benchmark = settings.cudnn_benchmark
    if net is not None and settings.channels_last:
        net.to(memory_format=torch.channels_last)


def to_device_images(images: torch.Tensor, device: torch.device, *,
                     channels_last: bool = False) -> torch.Tensor:
    """A batch (uint8 or float32, ``(n, 3, h, w)``) on ``device`` as float32 in [0, 1].

    uint8 goes over as uint8 (a quarter of the bytes) and becomes float there
    (:func:`darknetpy.data.loader.unit_float`), bit-identical to the float the CPU computes.
    """
    x = unit_float(images.to(device, non_blocking=True))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x
