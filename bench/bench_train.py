"""Training throughput on this machine: images/s of whole training iterations of yolov4-tiny.

Usage::

    python3 bench/bench_train.py [--sizes 256 416] [--batch 16] [--iterations 3] [--device cpu]

Each row runs the real loop pieces of :mod:`darknetpy.training.train` on ``cfg/yolov4-tiny-raccoon.cfg``
(1 class) resized to the row's size, on the embedded ``data/raccoon``: load the iteration's batch
(augmentation in this process, as ``train`` does on <= 2 cores), forward, Darknet's loss, backward,
update. One warm-up iteration is not counted. ``cpu img/s`` divides by the CPU time of this process
instead of the wall time (a fairer figure on a busy machine).

Darknet's reference (its log of training that cfg on a CPU, OpenCV build, 256x256, batch 16):
2.2 img/s.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from darknetpy.training import distributed as D
from darknetpy.training.setup import prepare
from darknetpy.training.train import _train_step, _update

DARKNET_CPU = {256: 2.2}  # img/s, from Darknet's training log of the raccoon cfg


def bench(size: int, batch: int, iterations: int, device: str) -> tuple[float, float, float]:
    """(wall img/s, cpu img/s, seconds per iteration) at ``size``."""
    text = (REPO / "cfg" / "yolov4-tiny-raccoon.cfg").read_text()
    text = re.sub(r"(?m)^width=\d+", f"width={size}", text)
    text = re.sub(r"(?m)^height=\d+", f"height={size}", text)
    text = re.sub(r"(?m)^batch=\d+", f"batch={batch}", text)
    text = re.sub(r"(?m)^subdivisions=\d+", "subdivisions=1", text)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "yolov4-tiny-raccoon.cfg"
        cfg.write_text(text)
        ctx = D.setup(device)
        with contextlib.redirect_stdout(io.StringIO()):
            run = prepare(ctx, cfg, REPO / "data" / "raccoon" / "raccoon.data", None,
                          clear=False, amp="off", workers=0, seed=0, max_batches=None,
                          backup=Path(tmp) / "b", map_epochs=4, strict=False, progress=False,
                          cache=True)  # fmt: skip
        run.say = lambda line: None
        batches = run.loader.iterate(1, size=run.plan)
        wall = cpu = 0.0
        for i in range(iterations + 1):
            w0, c0 = time.perf_counter(), time.process_time()
            b = next(batches)
            run.net.train()
            _update(run, _train_step(run, b.images, b.truth))
            if ctx.device.type == "cuda":
                torch.cuda.synchronize()
            if i:  # the first iteration warms up (numba, allocator)
                wall += time.perf_counter() - w0
                cpu += time.process_time() - c0
        batches.close()
    images = batch * iterations
    threads = torch.get_num_threads()
    return images / wall, images / cpu * threads, wall / iterations


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 416])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}; batch {args.batch}")
    print(f"{'size':>6} {'s/iteration':>12} {'wall img/s':>11} {'cpu img/s':>10} "
          f"{'darknet img/s':>14}")
    for size in args.sizes:
        wall, cpu, per_it = bench(size, args.batch, args.iterations, args.device)
        ref = DARKNET_CPU.get(size)
        print(f"{size:>6} {per_it:>12.2f} {wall:>11.2f} {cpu:>10.2f} "
              f"{(f'{ref:.1f}' if ref else '-'):>14}")


if __name__ == "__main__":
    main()
