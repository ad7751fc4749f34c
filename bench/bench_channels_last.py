"""Channels-last against NCHW for fp32 CPU training of ``cfg/yolov4-tiny-raccoon.cfg``.

Usage::

    OMP_NUM_THREADS=1 python3 bench/bench_channels_last.py [--rounds 6] [--batch 16] [--size 224]

One run of the trainer's own pieces (:func:`~darknetpy.training.setup.prepare`,
:func:`~darknetpy.training.train._train_step`: forward, Darknet's loss, backward of every
mini-batch) on ``data/raccoon``. The batches are built once up front; then each round times one
iteration in NCHW and one in channels-last (model and batch converted), alternating which goes
first, from the same weights (no update, so both formats see identical inputs). The figure is the
CPU time of this process (fairer than wall time on a shared machine); the table gives the median
per format, the ratio, and the largest difference of the iteration loss between the formats.

The result decides :func:`darknetpy.training.device_settings.use_channels_last` on the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from darknetpy.training import distributed as D  # noqa: E402
from darknetpy.training.setup import prepare  # noqa: E402
from darknetpy.training.train import _train_step  # noqa: E402


def _cfg(tmp: Path, size: int, batch: int) -> Path:
    text = (REPO / "cfg" / "yolov4-tiny-raccoon.cfg").read_text()
    for key, value in (("width", size), ("height", size), ("batch", batch), ("subdivisions", 1)):
        text = re.sub(rf"(?m)^{key}=\d+", f"{key}={value}", text)
    path = tmp / "yolov4-tiny-raccoon.cfg"
    path.write_text(text)
    return path


def bench(rounds: int, batch: int, size: int) -> dict[str, list[float]]:
    """``{"nchw": [cpu s, ...], "channels_last": [...], "loss_diff": [...]}`` over ``rounds``."""
    with tempfile.TemporaryDirectory() as tmp:
        ctx = D.setup("cpu")
        with contextlib.redirect_stdout(io.StringIO()):
            run = prepare(ctx, _cfg(Path(tmp), size, batch), REPO / "data/raccoon/raccoon.data",
                          None, clear=False, amp="off", workers=0, seed=0, max_batches=None,
                          backup=Path(tmp) / "b", map_epochs=4, strict=False, progress=False,
                          cache=True)  # fmt: skip
        batches = [run.loader.get(i, size, size) for i in range(1, rounds + 2)]
        run.net.train()
        out: dict[str, list[float]] = {"nchw": [], "channels_last": [], "loss_diff": []}
        for i, b in enumerate(batches):
            order = ("nchw", "channels_last") if i % 2 else ("channels_last", "nchw")
            losses = {}
            for fmt in order:
                memory = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
                run.net.to(memory_format=memory)
                images = b.images.contiguous(memory_format=memory)
                run.optimizer.zero_grad()
                c0 = time.process_time()
                losses[fmt] = _train_step(run, images, b.truth)
                if i:  # the first round warms up (oneDNN primitives, allocator)
                    out[fmt].append(time.process_time() - c0)
            if i:
                out["loss_diff"].append(abs(losses["nchw"] - losses["channels_last"]))
        return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    args = p.parse_args()
    out = bench(args.rounds, args.batch, args.size)
    nchw, cl = statistics.median(out["nchw"]), statistics.median(out["channels_last"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}; yolov4-tiny-raccoon {args.size}x{args.size}, "
          f"batch {args.batch}, {args.rounds} rounds (CPU seconds per iteration, median)")
    print(f"{'format':>14} {'cpu s/it':>9} {'img/cpu s':>10} {'vs NCHW':>8}")
    for name, value in (("NCHW", nchw), ("channels-last", cl)):
        print(f"{name:>14} {value:>9.3f} {args.batch / value:>10.2f} {nchw / value:>7.2f}x")
    print(f"largest |loss(NCHW) - loss(channels-last)|: {max(out['loss_diff']):.3g}")


if __name__ == "__main__":
    main()
