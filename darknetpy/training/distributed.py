"""Several processes training one network: torchrun / ``--gpus`` helpers around ``torch.distributed``.

Darknet's ``-gpus 0,1`` (``detector.c: train_detector``, ``network_kernels.cu: train_networks``)
trains one network copy per GPU, each on its own ``batch`` images of the ``batch * ngpus`` loaded
per iteration, with ``learning_rate * ngpus``; the iteration counter advances by ``ngpus`` per step
and the copies are averaged every 4 iterations (``sync_nets``). darknetpy does the same with
DistributedDataParallel, except that gradients are averaged at every step (so the copies never
drift) and batch-norm running statistics are averaged every 4 iterations and before every save.

Start it either with ``torchrun --nproc_per_node N -m darknetpy train ...`` or with
``darknetpy train ... --gpus 0,1`` (which starts the processes itself, :func:`launch`). On CPU the
``gloo`` backend is used (that is how the tests run it), on CUDA ``nccl``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..errors import UsageError

__all__ = [
    "DistContext",
    "all_gather_object",
    "all_reduce_mean",
    "any_rank",
    "average_buffers",
    "barrier",
    "broadcast_float",
    "broadcast_module",
    "free_port",
    "launch",
    "rank_seed",
    "setup",
    "teardown",
]


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # this module initialised the process group

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"environment variable {name}={value!r} is not an integer") from None


def setup(device: str = "cpu", gpus: Sequence[int] | None = None) -> DistContext:
    """Read torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and join the process group.

    Args:
        device: ``cpu`` or ``cuda``.
        gpus: CUDA device ids by local rank (``--gpus 0,1``); default: the local rank.

    Raises:
        UsageError: CUDA asked for but not available, or a GPU id out of range.
    """
    rank = _env_int("RANK", 0)
    world = _env_int("WORLD_SIZE", 1)
    local = _env_int("LOCAL_RANK", rank)
    if gpus and not device.startswith("cuda"):  # never a silent CPU run of -gpus
        raise UsageError(f"gpus={list(gpus)} selects CUDA devices but device={device!r}; pass "
                         "device='cuda' (the CLI's --gpus does)")  # fmt: skip
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: CUDA is not available (no CUDA device visible to "
                             "PyTorch); use --device cpu")  # fmt: skip
        gpu = gpus[local] if gpus else (int(device.split(":")[1]) if ":" in device else local)
        if not 0 <= gpu < torch.cuda.device_count():
            raise UsageError(f"GPU {gpu} does not exist; this machine has "
                             f"{torch.cuda.device_count()} (ids 0..{torch.cuda.device_count() - 1})")  # fmt: skip
        torch.cuda.set_device(gpu)
        dev = torch.device("cuda", gpu)
    elif device == "cpu":
        dev = torch.device("cpu")
    else:
        raise UsageError(f"--device {device}: use cpu or cuda")
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo",
                                rank=rank, world_size=world)  # fmt: skip
        owns = True
    return DistContext(rank, world, local, dev, owns)


def teardown(ctx: DistContext) -> None:
    """Leave the process group if :func:`setup` joined it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_module(module: nn.Module, ctx: DistContext) -> None:
    """Rank 0's parameters and buffers everywhere (same start on every rank)."""
    if not ctx.enabled:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def average_buffers(module: nn.Module, ctx: DistContext) -> None:
    """Average floating-point buffers (batch-norm running statistics) over ranks (``sync_nets``)."""
    if not ctx.enabled:
        return
    with torch.no_grad():
        for buffer in module.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
                buffer.div_(ctx.world_size)


def all_reduce_mean(value: float, ctx: DistContext) -> float:
    """The mean of a float over ranks."""
    if not ctx.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor.item()) / ctx.world_size


def broadcast_float(value: float, ctx: DistContext) -> float:
    """Rank 0's value of a float, on every rank."""
    if not ctx.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every rank when it is true on one (a stop request seen by one process)."""
    if not ctx.enabled:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def all_gather_object(value: Any, ctx: DistContext) -> list[Any]:
    """Every rank's (picklable) ``value``, by rank, on every rank."""
    if not ctx.enabled:
        return [value]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s own random draws (augmentation, dropout): ``seed`` itself on rank
    0, so a one-process run draws as before, a different one on every other rank (Darknet's GPUs
    each draw their own images and masks). The model's initial values use ``seed`` on every rank."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0] >> 1)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def free_port() -> int:
    """A TCP port free on this machine now (for the rendezvous of :func:`launch`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})  # fmt: skip
    fn(*args)


def launch(fn: Callable[..., Any], nprocs: int, *args: Any) -> None:
    """Run ``fn(*args)`` in ``nprocs`` new processes set up as torchrun would (one machine).

    ``fn`` must be importable (a module-level function). Raises if any process fails.
    """
    import torch.multiprocessing as mp

    port = free_port()
    mp.start_processes(_entry, args=(nprocs, port, fn, args), nprocs=nprocs, join=True,
                       start_method="spawn")  # fmt: skip
