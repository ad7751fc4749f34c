"""The whole GPU check of issue 16 in one command (``bench/gpu_check.sh``), under 10 minutes.

Usage::

    bench/gpu_check.sh                     # on a machine with CUDA: every check, then one table
    python3 bench/gpu_check.py --cpu-dry-run --iterations 2   # without CUDA: the CPU side only

Checks, in order (each a row of the table; a failing row does not stop the others):

1. ``compare``: the first ``--iterations`` losses of ``cfg/yolov4-tiny-raccoon.cfg`` on
   ``data/raccoon``, seed 0, fp32, TF32 off, darknet's CPU batch-norm averages on both sides, on
   the CPU and on CUDA: equal within float32 noise (relative difference <= ``--tolerance``).
   ``--cpu-dry-run`` compares two CPU runs instead (the same code; they must agree exactly).
2. ``amp-train``: ``--amp-iterations`` (200) iterations of the same cfg with ``--amp fp16`` and
   ``--map``: the mAP@0.5 reached, images/s, the loss finite and falling.
3. ``train yolov4-tiny`` / ``train yolov4``: images/s of whole training iterations at batch 64
   (``cfg/yolov4-tiny.cfg`` at 416, ``cfg/yolov4.cfg`` at 608 in its 8 subdivisions) with AMP
   fp16, the loader's default workers building the batches, 2 warm-up iterations not counted.
4. ``detect fp16``: images/s of ``InferenceModel.detect`` (forward, decode, NMS) for yolov4-tiny
   and yolov4 in half precision, batch 32 of random pixels, random weights.
5. ``ddp``: ``darknetpy train ... --gpus 0,..,N-1`` over every GPU of the machine, 20 iterations:
   the loss lines and images/s (skipped on a machine with one GPU: NCCL needs one GPU per rank).

Exit status: 0 every check passed; 1 a check failed (its row says which); 3 no CUDA on this machine
(one line, nothing run; with ``--cpu-dry-run`` the CPU side of ``compare`` runs and the status is
0). ``--budget`` seconds (540) bounds the whole run: checks that would start after it are skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

NO_CUDA = 3
RACCOON_CFG = REPO / "cfg" / "yolov4-tiny-raccoon.cfg"
RACCOON_DATA = REPO / "data" / "raccoon" / "raccoon.data"
LOSS_LINE = re.compile(r"^\s*(\d+): (\S+), (\S+) avg loss", re.M)


@dataclass
class Row:
    """One line of the table."""

    check: str
    status: str  # ok, FAIL, skip
    figure: str
    detail: str = ""


def _net_cfg(src: Path, tmp: Path, **keys: int) -> Path:
    """``src`` with ``[net]`` keys replaced (``width``, ``batch``, ...), written into ``tmp``."""
    text = src.read_text()
    for key, value in keys.items():
        text, n = re.subn(rf"(?m)^{key}\s*=\s*\d+", f"{key}={value}", text, count=1)
        if n != 1:
            raise SystemExit(f"gpu_check: {src} has no {key}= line")
    path = tmp / src.name
    path.write_text(text)
    return path


def _losses(out: str) -> list[float]:
    return [float(m.group(2)) for m in LOSS_LINE.finditer(out)]


def raccoon_losses(device: str, iterations: int, tmp: Path) -> list[float]:
    """The first ``iterations`` losses of the raccoon cfg on ``device`` (fp32, TF32 off)."""
    from darknetpy.training.train import train

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        train(RACCOON_CFG, RACCOON_DATA, device=device, seed=0, max_batches=iterations,
              workers=0, amp="off", tf32=False, bn_momentum="cpu", progress=False, chart=False,
              cache=True, backup=tmp / f"compare-{device}")  # fmt: skip
    return _losses(buffer.getvalue())


def check_compare(iterations: int, tolerance: float, dry_run: bool, tmp: Path) -> Row:
    """The dry run compares the CPU with a second CPU run (the same code path; must be equal)."""
    other = "cpu" if dry_run else "cuda"
    name = f"compare cpu/{other}" + (" (dry run)" if dry_run else "")
    cpu = raccoon_losses("cpu", iterations, tmp / "a")
    gpu = raccoon_losses(other, iterations, tmp / "b")
    if len(gpu) != len(cpu) or not cpu:
        return Row(name, "FAIL", f"{len(cpu)} vs {len(gpu)} loss lines")
    rel = [abs(a - b) / max(abs(a), 1e-12) for a, b in zip(cpu, gpu)]
    status = "ok" if max(rel) <= tolerance else "FAIL"
    return Row(name, status, f"max rel diff {max(rel):.2e} over {len(rel)} it",
               "cpu " + " ".join(f"{v:.5f}" for v in cpu)
               + f" | {other} " + " ".join(f"{v:.5f}" for v in gpu))  # fmt: skip


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def check_amp_training(iterations: int, tmp: Path, device: str = "cuda", amp: str = "fp16") -> Row:
    from darknetpy.training.train import train

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = train(RACCOON_CFG, RACCOON_DATA, device=device, amp=amp, seed=0, map=True,
                       max_batches=iterations, progress=False, chart=False,
                       backup=tmp / "amp")  # fmt: skip
    losses = _losses(buffer.getvalue())
    maps = [m for _, m in result.maps]
    good = (losses and all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
            and maps and math.isfinite(maps[-1]))  # fmt: skip
    return Row(f"amp-train {iterations} it", "ok" if good else "FAIL",
               f"mAP@0.5 {maps[-1] if maps else float('nan'):.3f}, "
               f"{result.images_per_second:.0f} img/s",
               f"loss {losses[0]:.2f} -> {losses[-1]:.2f}" if losses else "no loss lines")


def train_speed(cfg: Path, size: int, batch: int, subdivisions: int, tmp: Path,
                iterations: int = 5, warmup: int = 2, device: str = "cuda",
                amp: str = "fp16") -> float:
    """Images/s of whole training iterations (load, forward, loss, backward, update) under AMP."""
    from darknetpy.training import distributed as D
    from darknetpy.training.setup import prepare
    from darknetpy.training.train import _train_step, _update

    path = _net_cfg(cfg, tmp, width=size, height=size, batch=batch, subdivisions=subdivisions)
    ctx = D.setup(device)
    with contextlib.redirect_stdout(io.StringIO()):
        run = prepare(ctx, path, RACCOON_DATA, None, clear=False, amp=amp, workers=None,
                      seed=0, max_batches=None, backup=tmp / f"speed-{cfg.stem}", map_epochs=4,
                      strict=False, progress=False, cache=True)  # fmt: skip
    run.say = lambda line: None
    batches = run.loader.iterate(1, size=(size, size))
    try:
        for i in range(warmup + iterations):
            if i == warmup:
                _sync(device)
                start = time.perf_counter()
            b = next(batches)
            run.net.train()
            _update(run, _train_step(run, b.images, b.truth))
        _sync(device)
        return batch * iterations / (time.perf_counter() - start)
    finally:
        batches.close()
        run.loader.close()


def detect_speed(cfg: Path, size: int, batch: int = 32, iterations: int = 10,
                 device: str = "cuda") -> float:
    """Images/s of ``detect`` (forward, decode, NMS) on random pixels (fp16 on CUDA)."""
    import warnings

    import torch

    from darknetpy.inference.inference_model import load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load(cfg, None, device=device, half=device.startswith("cuda"), keep_unfused=False)
    x = torch.rand(batch, 3, size, size, device=device)
    sizes = [(size, size)] * batch
    for _ in range(3):
        model.detect(x, sizes)
    _sync(device)
    start = time.perf_counter()
    for _ in range(iterations):
        model.detect(x, sizes)
    _sync(device)
    return batch * iterations / (time.perf_counter() - start)


def check_ddp(gpus: int, iterations: int, tmp: Path, timeout: float) -> Row:
    if gpus < 2:
        return Row("ddp", "skip", f"{gpus} GPU", "NCCL needs one GPU per rank")
    ids = ",".join(str(i) for i in range(gpus))
    cmd = [sys.executable, "-m", "darknetpy", "train", str(RACCOON_CFG), str(RACCOON_DATA),
           "--gpus", ids, "--seed", "0", "--max-batches", str(iterations * gpus),
           "--backup", str(tmp / "ddp"), "--no-progress", "--no-chart"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    losses = _losses(done.stdout)
    if done.returncode != 0 or not losses or not all(math.isfinite(v) for v in losses):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Row(f"ddp {gpus} GPUs", "FAIL", f"exit {done.returncode}", tail)
    images = 16 * iterations * gpus  # the raccoon cfg's batch per GPU per update
    return Row(f"ddp {gpus} GPUs", "ok", f"{images / seconds:.0f} img/s (wall, with start-up)",
               f"{len(losses)} loss lines, {losses[0]:.2f} -> {losses[-1]:.2f}")


def _timed(name: str, fn: Callable[[], Row | float], unit: str = "img/s") -> Row:
    try:
        value = fn()
    except Exception as exc:  # a row says what failed; the other checks still run
        line = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
        return Row(name, "FAIL", "error", line)
    return value if isinstance(value, Row) else Row(name, "ok", f"{value:.1f} {unit}")


def print_table(rows: list[Row], header: str) -> None:
    print(header)
    width = max(len(r.check) for r in rows)
    fig = max(len(r.figure) for r in rows)
    print(f"{'check':<{width}}  {'status':<6}  {'figure':<{fig}}  detail")
    for r in rows:
        print(f"{r.check:<{width}}  {r.status:<6}  {r.figure:<{fig}}  {r.detail}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="without CUDA: run the CPU side of the comparison and print the table")
    p.add_argument("--iterations", type=int, default=5, help="iterations compared (default 5)")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="largest relative loss difference CPU/CUDA (default 1e-3)")
    p.add_argument("--amp-iterations", type=int, default=200)
    p.add_argument("--budget", type=float, default=540.0, help="seconds for the whole run")
    args = p.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.cpu_dry_run:
        print(f"gpu_check: CUDA is not available on this machine (torch {torch.__version__}); "
              f"nothing checked (exit {NO_CUDA}); --cpu-dry-run runs the CPU side")  # fmt: skip
        return NO_CUDA
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    started = time.perf_counter()
    rows: list[Row] = []

    def budget_left() -> float:
        return args.budget - (time.perf_counter() - started)

    with tempfile.TemporaryDirectory(prefix="gpu_check-") as name:
        tmp = Path(name)
        rows.append(_timed("compare cpu/cuda", lambda: check_compare(
            args.iterations, args.tolerance, not cuda, tmp)))  # fmt: skip
        if cuda:
            steps: list[tuple[str, Callable[[], Row | float], str]] = [
                ("amp-train", lambda: check_amp_training(args.amp_iterations, tmp), ""),
                ("train yolov4-tiny b64 416 fp16",
                 lambda: train_speed(REPO / "cfg/yolov4-tiny.cfg", 416, 64, 1, tmp), "img/s"),
                ("train yolov4 b64 608 fp16",
                 lambda: train_speed(REPO / "cfg/yolov4.cfg", 608, 64, 8, tmp), "img/s"),
                ("detect yolov4-tiny 416 fp16",
                 lambda: detect_speed(REPO / "cfg/yolov4-tiny.cfg", 416), "img/s"),
                ("detect yolov4 608 fp16",
                 lambda: detect_speed(REPO / "cfg/yolov4.cfg", 608), "img/s"),
                ("ddp", lambda: check_ddp(torch.cuda.device_count(), 20, tmp,
                                          max(budget_left(), 30)), ""),
            ]  # fmt: skip
            for label, fn, unit in steps:
                if budget_left() <= 0:
                    spent = f"time budget of {args.budget:.0f} s spent"
                    rows.append(Row(label, "skip", "-", spent))
                    continue
                rows.append(_timed(label, fn, unit))
    device = torch.cuda.get_device_name(0) if cuda else "no CUDA (--cpu-dry-run)"
    print_table(rows, f"gpu_check: torch {torch.__version__}, {device}, "
                      f"{torch.cuda.device_count() if cuda else 0} GPU(s), "
                      f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    return 1 if any(r.status == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
