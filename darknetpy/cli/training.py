"""``train CFG DATA [WEIGHTS]``: arguments to :func:`darknetpy.training.train.train` keyword arguments.

Darknet's ``darknetpy detector train DATA CFG [WEIGHTS] -map -clear -gpus 0,1`` reaches here as
``train CFG DATA [WEIGHTS] --map --clear --gpus 0,1`` (translated in :mod:`darknetpy.cli`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import DarknetpyError, UsageError


def _gpus(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",") if part.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--gpus {text}: expected ids like 0,1,2") from None
    if not ids or any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError(f"--gpus {text}: expected distinct ids like 0,1,2")
    return ids


def _kwargs(args: argparse.Namespace, device: str) -> dict:
    return {
        "map": args.map, "clear": args.clear, "gpus": args.gpus, "device": device,
        "gpu_lr_rule": args.gpu_lr_rule, "lenient": args.lenient,
        "amp": args.amp, "workers": args.workers, "seed": args.seed,
        "max_batches": args.max_batches, "backup": args.backup, "map_epochs": args.map_epochs,
        "thresh": args.thresh, "iou_thresh": args.iou_thresh, "strict": args.strict,
        "progress": False if args.no_progress else None, "chart": not args.no_chart,
        "bn_momentum": args.bn_momentum, "tf32": args.tf32,
        "darknet_cpu_defects": args.darknet_cpu_defects,
    }


def _spawned(cfg: str, data: str, weights: str | None, kwargs: dict) -> None:
    """One process of ``--gpus 0,1`` (module level so that ``spawn`` can import it)."""
    import sys

    from ..errors import DarknetpyError
    from ..training.train import train

    try:
        result = train(cfg, data, weights, **kwargs)
    except DarknetpyError as exc:
        if os.environ.get("RANK", "0") == "0":
            print(f"darknetpy: error: {exc}", file=sys.stderr)
        sys.exit(2)
    if result.interrupted:
        sys.exit(130)


def _looks_like_cfg(path: str) -> bool | None:
    """True: a cfg (first section line), False: key=value lines, None: unreadable or unclear."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                text = line.strip()
                if text and text[0] not in "#;":
                    return text.startswith("[") if text.startswith("[") or "=" in text else None
    except OSError:
        return None
    return None


def _refuse_swapped(cfg: str, data: str) -> None:
    """Darknet's order (DATA CFG) given to darknetpy's own ``train CFG DATA``: say so, one line."""
    if _looks_like_cfg(cfg) is False and _looks_like_cfg(data) is True:
        raise UsageError(f"train {cfg} {data}: the .data and .cfg files look swapped; darknetpy "
                         f"train takes CFG DATA: darknetpy train {data} {cfg} (or Darknet's "
                         f"order: darknetpy detector train {cfg} {data})")  # fmt: skip


def cmd_train(args: argparse.Namespace) -> int:
    from ..training.launch_plan import plan_launch
    from ..training.train import train

    _refuse_swapped(args.cfg, args.data)
    plan = plan_launch(args.gpus, device=args.device, cpu_processes=args.cpu_processes,
                       lr_rule=args.gpu_lr_rule)  # fmt: skip
    kwargs = _kwargs(args, plan.device)
    processes = plan.processes
    if processes > 1 and "WORLD_SIZE" not in os.environ:  # -gpus 0,1 without torchrun
        import torch.multiprocessing as mp

        from ..training.distributed import launch

        try:
            launch(_spawned, processes, args.cfg, args.data, args.weights, kwargs)
        except mp.ProcessExitedException as exc:
            return int(exc.exit_code) if exc.exit_code and exc.exit_code > 0 else 1
        return 0
    local = os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE"))  # this machine's
    if args.gpus and local is not None and int(local) != processes:
        raise UsageError(f"--gpus lists {processes} ids but torchrun started {local} processes "
                         "on this machine (LOCAL_WORLD_SIZE); make them agree")  # fmt: skip
    try:
        result = train(Path(args.cfg), Path(args.data), args.weights and Path(args.weights),
                       **kwargs)  # fmt: skip
    except DarknetpyError:
        if os.environ.get("RANK", "0") != "0":  # torchrun: every rank raised it; rank 0 says it
            return 2
        raise
    if result.interrupted:
        return 130
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from ..training.launch_plan import GPU_LR_RULES
    from .darknet_forms import LENIENT_HELP

    p = sub.add_parser(
        "train", help="train a detector (darknet detector train)",
        description="Train like `darknet detector train DATA CFG [WEIGHTS]`: same schedule, loss, "
                    "augmentation and checkpoints (<backup>/<cfg>_last.weights every 100 "
                    "iterations, _<N> every 1000, _best with --map, _final). Resume by passing "
                    "a checkpoint as WEIGHTS.",
    )  # fmt: skip
    p.add_argument("cfg", help="the network .cfg ([net] batch, subdivisions, max_batches, ...)")
    p.add_argument("data", help="the .data file (train=, valid=, names=, backup=)")
    p.add_argument("weights", nargs="?", help="initial weights: pretrained, partial "
                   "(yolov4.conv.137) or a checkpoint to resume from")  # fmt: skip
    p.add_argument("--map", action="store_true", help="mAP@0.5 on valid= every 4 epochs "
                   "(at least 100 iterations) and at the end; keeps _best.weights")  # fmt: skip
    p.add_argument("--map-epochs", type=int, default=4, metavar="N",
                   help="epochs between mAP evaluations (darknet -mAP_epochs, default 4)")
    p.add_argument("--thresh", type=float, default=0.25,
                   help="confidence threshold of the printed precision/recall (default 0.25)")
    p.add_argument("--iou-thresh", type=float, default=0.5, help="IoU of a match (default 0.5)")
    p.add_argument("--clear", action="store_true",
                   help="start at iteration 0 whatever the weights file says")
    p.add_argument("--gpus", type=_gpus, metavar="0,1",
                   help="CUDA devices (darknet -gpus): one process per id on cuda:<id>, NCCL "
                        "between them; an error without CUDA")  # fmt: skip
    p.add_argument("--gpu-lr-rule", choices=tuple(GPU_LR_RULES), default="darknet",
                   help="with several processes: darknet (learning rate x N, AlexeyAB) or none "
                        "(the cfg's rate, hank-ai/darknet); default darknet")  # fmt: skip
    p.add_argument("--cpu-processes", type=int, metavar="N",
                   help="N training processes on the CPU (gloo), e.g. to test multi-process runs")
    p.add_argument("--lenient", action="store_true", help=LENIENT_HELP)
    p.add_argument("--device", choices=("cpu", "cuda"),
                   help="default cpu (cuda with --gpus)")
    p.add_argument("--darknet-build", "--bn-momentum", dest="bn_momentum", choices=("cpu", "gpu"),
                   metavar="BUILD",
                   help="batch norm of darknet's cpu build (running averages 0.1, [connected] "
                        "0.05; unbiased batch variance) or gpu build (0.01; cuDNN's, PyTorch's); "
                        "default: the build of --device")  # fmt: skip
    p.add_argument("--darknet-cpu-defects", action="store_true",
                   help="also reproduce the back-propagation defects of darknet's cpu build "
                        "(batch-norm biases untrained, gradients lost and accumulated; see "
                        "darknetpy.model.cpu_defects), to compare with a CPU darknet run")  # fmt: skip
    p.add_argument("--amp", choices=("off", "fp16", "bf16"), default="off",
                   help="mixed precision: fp16 (with gradient scaling) or bf16")
    p.add_argument("--tf32", action="store_true",
                   help="TensorFloat-32 for CUDA's fp32 convolutions (faster; off by default so "
                        "that fp32 on CUDA computes what the CPU does)")  # fmt: skip
    p.add_argument("--workers", type=int, metavar="N",
                   help="data-loading processes per training process (default: scaled to its "
                        "share of the cores; on CUDA at least 1)")  # fmt: skip
    p.add_argument("--seed", type=int, help="seed of every random draw (default: random, printed)")
    p.add_argument("--max-batches", type=int, metavar="N",
                   help="override [net] max_batches (quick runs)")
    p.add_argument("--backup", metavar="DIR",
                   help="checkpoint folder (default: backup= of the .data file, else backup/)")
    p.add_argument("--strict", action="store_true", help="unused cfg/.data keys are errors")
    p.add_argument("--dont-show", action="store_true",
                   help="accepted for darknet compatibility (darknetpy never opens a window)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-chart", action="store_true", help="do not write chart.png")
    p.set_defaults(func=cmd_train)
