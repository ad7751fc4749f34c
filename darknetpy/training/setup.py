"""Setting up a Darknet training run (``detector.c: train_detector`` before its loop).

:func:`prepare` reads the cfg, the ``.data`` file and the initial weights (or a checkpoint to
resume exactly), applies ``max_batches``/``--gpus`` to ``[net]``, picks the batch norm of
darknet's CPU or GPU build, and builds the optimizer, EMA, the (maybe DDP-wrapped) model, the
loader, the resize plan and the save schedule: everything the loop of
:mod:`darknetpy.training.train` holds, in a :class:`Run`.
"""

from __future__ import annotations

import secrets
import sys
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..data.augment import AugmentConfig
from ..data.datafile import DataConfig, read_image_list, read_names
from ..data.image_cache import NodeShare, node_cache_file
from ..data.loader import build_train_loader
from ..errors import DataError, UsageError, WeightsError
from ..model.layers.common import BN_MOMENTUM_BY_BUILD
from ..model.layers.recurrent import refuse_training
from ..model.netconfig import NetConfig
from ..model.network import Network
from ..model.weights import WeightsHeader, read_weights
from . import distributed as D
from .checkpoint import (
    LoopState,
    SaveSchedule,
    basecfg,
    check_writable,
    default_saveweights,
    load_state,
)
from .device_settings import DeviceSettings, apply_settings, training_settings
from .launch_plan import gpu_lr_factor
from .multiscale import ResizePlan, map_interval, random_coef
from .optim import DarknetEMA, DarknetOptimizer, frozen_layers

__all__ = ["AMP_DTYPES", "HeadInputs", "Run", "has_unused_parameters", "prepare"]

AMP_DTYPES = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}


class HeadInputs(torch.nn.Module):
    """``{head index: tensor entering it}`` as a module forward, so DDP can wrap it."""

    def __init__(self, net: Network) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        return self.net.head_inputs(x)  # frees every other layer output as soon as it is used


def has_unused_parameters(net: Network) -> bool:
    """Whether a trainable layer feeds no detection head (DDP must then look for unused ones)."""
    needed, todo = set(), list(net.heads)
    while todo:
        index = todo.pop()
        if index >= 0 and index not in needed:
            needed.add(index)
            todo.extend(net.layers[index].sources)
    return any(p.requires_grad for layer in net.layers if layer.index not in needed
               for p in layer.parameters())  # fmt: skip


@dataclass
class Run:
    """What a Darknet training run holds between iterations (built by :func:`prepare`)."""

    ctx: D.DistContext
    cfg_path: Path
    data_path: Path
    net: Network
    c: NetConfig  # [net], max_batches and the learning rate (x processes) applied
    base: str
    backup: Path
    train_images: int
    loop: LoopState
    resumed: bool
    optimizer: DarknetOptimizer
    ema: DarknetEMA | None
    model: Any  # HeadInputs, maybe inside DistributedDataParallel
    autocast: Any
    scaler: Any
    loader: Any
    plan: ResizePlan
    saves: SaveSchedule
    every_map: int
    say: Callable[[str], None]
    bar: Any
    device_settings: DeviceSettings | None = None  # cudnn.benchmark, TF32, channels-last, workers


def prepare(ctx: D.DistContext, cfg_path: Path, data_path: Path, weights: Path | None, *,
            clear: bool, amp: str, workers: int | None, seed: int | None,
            max_batches: int | None, backup: str | Path | None, map_epochs: int, strict: bool,
            progress: bool | None, cache: bool | None, map: bool = False, lenient: bool = False,
            bn_momentum: str | None = None, gpu_lr_rule: str = "darknet",
            tf32: bool = False, darknet_cpu_defects: bool = False) -> Run:
    """Everything before the first iteration (arguments: :func:`darknetpy.training.train.train`);
    prints the run's summary line."""
    from tqdm import tqdm

    if amp not in AMP_DTYPES:
        raise UsageError(f"--amp {amp}: choose one of {', '.join(AMP_DTYPES)}")
    init_seed = seed if seed is not None else secrets.randbelow(2**31)
    torch.manual_seed(init_seed)  # initial values of the layers no weights file fills
    net = Network.from_cfg(cfg_path, strict=strict)
    refuse_training(net.layers)  # recurrent layers: forward only
    c = net.net if max_batches is None else replace(net.net, max_batches=max_batches)
    if c.batch == 1:
        raise UsageError(f"{cfg_path}: batch=1 cannot train (Darknet: 'You set incorrect value "
                         "batch=1 for Training'); set e.g. batch=64 subdivisions=16")  # fmt: skip
    if ctx.is_main and c.batch < 8:
        warnings.warn(f"{cfg_path}: batch={c.batch} is lower than 8; Darknet recommends 64",
                      stacklevel=3)  # fmt: skip
    if ctx.is_main and c.dynamic_minibatch:
        warnings.warn("dynamic_minibatch=1 is not supported: the mini-batch stays fixed",
                      stacklevel=3)  # fmt: skip
    lr_factor = gpu_lr_factor(ctx.world_size, gpu_lr_rule)  # darknet: lr *= ngpus
    c = net.net = replace(c, learning_rate=c.learning_rate * lr_factor)
    if not net.heads:
        raise UsageError(f"{cfg_path}: no [yolo], [region] or [Gaussian_yolo] layer; "
                         "darknetpy train trains detectors")  # fmt: skip
    head = net.layers[net.heads[-1]].options  # jitter, resize, random, max: the LAST head's

    dc = DataConfig.from_file(data_path, strict=strict)
    backup_dir = Path(backup if backup is not None else
                      dc.backup if "backup" in dc.lines else "backup")  # fmt: skip
    if ctx.is_main:
        check_writable(backup_dir)
    images = read_image_list(dc.train or Path("data/train.txt"), base=data_path.parent,
                             where=dc.where("train"))  # fmt: skip
    if map and dc.names is not None and len(read_names(dc.names)) != head.classes:
        raise DataError(f"{dc.names}: {len(read_names(dc.names))} names, but the last detection "
                        f"layer of {cfg_path} has classes={head.classes}; make them agree")

    header, state = WeightsHeader(), None
    if weights is not None:
        header = read_weights(weights, net, partial=True, lenient=lenient)
        state = None if clear else load_state(weights, header)
    loop = state["loop"] if state else LoopState()
    if state is None:
        loop.iteration = 0 if clear else header.seen // c.batch  # get_current_batch
        loop.iter_map = loop.iter_save = loop.iter_save_last = loop.iteration
    loop.seed = seed if seed is not None else (loop.seed if state else init_seed)
    if seed is None and not state:  # drawn at random (< 2**31): rank 0's on every rank
        loop.seed = int(D.broadcast_float(float(loop.seed), ctx))
    loop.width, loop.height = c.width, c.height

    net.to(ctx.device)
    settings = training_settings(ctx.device, amp=amp, tf32=tf32, workers=workers,
                                 world_size=ctx.world_size)  # fmt: skip
    apply_settings(settings, net)  # before DDP and the optimizer see the parameters
    build = bn_momentum or ("gpu" if ctx.device.type == "cuda" else "cpu")
    if build not in BN_MOMENTUM_BY_BUILD:
        raise UsageError(f"--darknet-build {build}: expected one of "
                         f"{', '.join(BN_MOMENTUM_BY_BUILD)}")
    if darknet_cpu_defects and build != "cpu":
        raise UsageError("--darknet-cpu-defects reproduces darknet's CPU build: it needs "
                         "--darknet-build cpu (the default on --device cpu)")
    net.set_darknet_build(build, cpu_defects=darknet_cpu_defects)
    for layer in list(net.layers)[:frozen_layers(net, 2**62)]:
        layer.requires_grad_(False)  # stopbackward=1 and train_only_bn: never a gradient
    optimizer = DarknetOptimizer(net, c, batch=c.batch)
    ema = DarknetEMA(net, c.ema_alpha, c.max_batches) if c.ema_alpha else None
    if state:
        try:
            optimizer.load_state_dict(state["optimizer"] or {})
        except ValueError as exc:
            raise WeightsError(f"{weights}: its training state does not fit {cfg_path} ({exc}); "
                               "pass --clear, or delete the .state.pt file") from None
        if ema is not None and state["ema"] is not None:
            ema.load_state_dict(state["ema"])
    scaler = torch.amp.GradScaler(ctx.device.type) if amp == "fp16" else None
    if scaler is not None and state and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])  # the scale reached, not 65536 again
    D.broadcast_module(net, ctx)
    model: Any = HeadInputs(net)
    if ctx.enabled:
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        # buffers (BN statistics) stay per rank between the sync_nets points, as in Darknet
        sync = ("forward_sync_buffers" if "forward_sync_buffers" in
                inspect.signature(DistributedDataParallel).parameters else "broadcast_buffers")
        model = DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            find_unused_parameters=has_unused_parameters(net), **{sync: False},
        )
    dtype = AMP_DTYPES[amp]

    aug = AugmentConfig.from_net(c, head)
    use_cache = len(images) <= 2000 if cache is None else cache
    node = None
    if use_cache and ctx.enabled:  # one cache per machine: local rank 0 builds, the others attach
        token = int(D.broadcast_float(float(secrets.randbelow(2**31)), ctx))
        node = NodeShare(node_cache_file(token), builder=ctx.local_rank == 0,
                         agree=lambda ok: not D.any_rank(not ok, ctx))  # fmt: skip
    loader = build_train_loader(
        images, aug, batch=c.batch, seed=D.rank_seed(loop.seed, ctx.rank),
        workers=settings.workers, cache=use_cache, pin_memory=settings.pin_memory, node=node,
    )
    start_index = loop.iteration // ctx.world_size + 1
    plan = ResizePlan((c.width, c.height), random_coef(head.random), c.resize_step, loop.seed,
                      c.max_batches, ctx.world_size, start_index, loop.iteration, loop.loop_count,
                      fresh=loop.avg_loss < 0)  # fmt: skip
    saves = SaveSchedule(dc.saveweights or default_saveweights(c.max_batches), dc.savelast,
                         loop.iter_save, loop.iter_save_last)  # fmt: skip

    show = ctx.is_main and (progress if progress is not None else sys.stderr.isatty())
    bar = tqdm(total=c.max_batches, initial=min(loop.iteration, c.max_batches), disable=not show,
               unit="it", dynamic_ncols=True, file=sys.stderr)  # fmt: skip

    def say(line: str) -> None:
        if show:
            bar.write(line, file=sys.stdout)
        elif ctx.is_main:
            print(line, flush=True)

    base = basecfg(cfg_path)
    say(f"{base}: {len(images)} training images; batch {c.batch} = {c.subdivisions} x "
        f"{c.mini_batch}; {ctx.world_size} process(es) on {ctx.device}, amp {amp}, "
        f"{settings.describe()}, batch norm of darknet's {build.upper()} build"
        f"{' with its back-propagation defects' if darknet_cpu_defects else ''}; seed "
        f"{loop.seed}; iteration {loop.iteration} of {c.max_batches}; checkpoints in {backup_dir}"
        + (f"; resuming exactly from {weights}" if state else ""))  # fmt: skip
    return Run(
        ctx, cfg_path, data_path, net, c, base, backup_dir, len(images), loop, state is not None,
        optimizer, ema, model,
        torch.autocast(ctx.device.type, dtype=dtype) if dtype else nullcontext(),
        scaler,
        loader, plan, saves, map_interval(map_epochs, len(images), c.batch), say, bar,
        device_settings=settings,
    )
