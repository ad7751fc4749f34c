"""How many training processes, on which devices: Darknet's ``-gpus 0,1`` and its learning rate.

Darknet's ``detector train ... -gpus 0,1`` (``darknet.c``/``detector.c: train_detector``) trains one
network copy per listed GPU and multiplies ``learning_rate`` by the number of GPUs
(``nets[k].learning_rate *= ngpus``). The maintained fork (hank-ai/darknet) dropped that
multiplication; :data:`GPU_LR_RULES` offers both, Darknet's by default.

:func:`plan_launch` turns the command line's ``--gpus``/``--device``/``--cpu-processes`` into a
:class:`LaunchPlan` (one process per GPU, each on its own ``cuda:<id>``, NCCL between them; or N CPU
processes with gloo, for tests and CPU machines), refusing what cannot run: ``--gpus`` without CUDA
or with an id the machine does not have is an error, never a silent CPU run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

import torch

from ..errors import UsageError

__all__ = ["GPU_LR_RULES", "LaunchPlan", "gpu_lr_factor", "plan_launch"]

#: ``--gpu-lr-rule``: what several training processes do to ``[net] learning_rate``.
GPU_LR_RULES = MappingProxyType({
    "darknet": "learning_rate x the number of processes (AlexeyAB's train_detector)",
    "none": "learning_rate as the cfg says (hank-ai/darknet, the maintained fork)",
})


def gpu_lr_factor(world_size: int, rule: str = "darknet") -> int:
    """The learning-rate factor of ``world_size`` processes under ``rule``.

    As ``detector.c: train_detector`` (``nets[k].learning_rate *= ngpus``) for ``"darknet"``;
    1 for ``"none"`` (hank-ai/darknet).

    Raises:
        UsageError: ``rule`` is not a key of :data:`GPU_LR_RULES`.
    """
    if rule not in GPU_LR_RULES:
        raise UsageError(f"--gpu-lr-rule {rule}: choose one of {', '.join(GPU_LR_RULES)}")
    return world_size if rule == "darknet" else 1


@dataclass(frozen=True)
class LaunchPlan:
    """What ``darknetpy train`` starts: ``processes`` processes, process ``k`` on ``devices[k]``."""

    processes: int
    devices: tuple[str, ...]  # per local rank: "cuda:<id>" or "cpu"
    device: str  # what each process passes to train(): "cuda" or "cpu"
    backend: str  # torch.distributed backend between the processes; "" for one process
    lr_factor: int


def _ids(gpus: Sequence[int]) -> str:
    return ",".join(str(i) for i in gpus)


def plan_launch(gpus: Sequence[int] | None, *, device: str | None = None,
                cpu_processes: int | None = None, lr_rule: str = "darknet") -> LaunchPlan:
    """The processes and devices of a training run.

    Args:
        gpus: CUDA device ids (``--gpus 0,1``): one process per id, process ``k`` on
            ``cuda:gpus[k]``, NCCL between them.
        device: ``--device`` (``cpu`` or ``cuda``; default: ``cuda`` with ``gpus``, else ``cpu``).
        cpu_processes: several processes on the CPU (gloo), e.g. to test multi-process training.
        lr_rule: a key of :data:`GPU_LR_RULES`.

    Raises:
        UsageError: ``gpus`` without CUDA, an id the machine lacks, ``gpus`` with ``device="cpu"``
            or with ``cpu_processes``.
    """
    if gpus:
        ids = _ids(gpus)
        if cpu_processes is not None:
            raise UsageError(f"--gpus {ids} and --cpu-processes {cpu_processes}: give one of them")
        if device is not None and device != "cuda":
            raise UsageError(f"--gpus {ids} selects CUDA devices; drop --device {device} (or use "
                             "--cpu-processes N for several CPU processes)")  # fmt: skip
        if not torch.cuda.is_available():
            raise UsageError(f"--gpus {ids}: CUDA is not available (no CUDA device visible to "
                             "PyTorch) and darknetpy does not fall back to the CPU; drop --gpus "
                             "to train on the CPU")  # fmt: skip
        count = torch.cuda.device_count()
        missing = [i for i in gpus if i >= count]
        if missing:
            raise UsageError(f"--gpus {ids}: no CUDA device {missing[0]}; this machine has "
                             f"{count} (ids 0..{count - 1})")  # fmt: skip
        n = len(gpus)
        return LaunchPlan(n, tuple(f"cuda:{i}" for i in gpus), "cuda", "nccl" if n > 1 else "",
                          gpu_lr_factor(n, lr_rule))  # fmt: skip
    chosen = device or "cpu"
    if cpu_processes is not None:
        if cpu_processes < 1:
            raise UsageError(f"--cpu-processes {cpu_processes}: expected 1 or more")
        if chosen != "cpu":
            raise UsageError(f"--cpu-processes {cpu_processes} runs on the CPU; drop --device "
                             f"{chosen} (several GPUs: --gpus 0,1)")  # fmt: skip
        n = cpu_processes
        return LaunchPlan(n, ("cpu",) * n, "cpu", "gloo" if n > 1 else "",
                          gpu_lr_factor(n, lr_rule))  # fmt: skip
    if chosen == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: CUDA is not available (no CUDA device visible to "
                         "PyTorch); use --device cpu")  # fmt: skip
    return LaunchPlan(1, (chosen if chosen == "cpu" else "cuda:0",), chosen, "",
                      gpu_lr_factor(1, lr_rule))  # fmt: skip
