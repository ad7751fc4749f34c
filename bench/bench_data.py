"""Training data throughput: images/s per loader worker at 416x416, with and without the cache.

Usage::

    python3 bench/bench_data.py [--data ../shared/datasets/raccoon/raccoon.data] [--size 416]
                                [--batch 64] [--iterations 4] [--workers 1]

Each row runs ``TrainLoader.iterate`` with ``--workers`` DataLoader workers (decode unless cached,
mosaic with Darknet's per-chunk coin, jitter 0.3, HSV, flip, float conversion and the transfer
to the main process) and prints:

* ``wall img/s/worker``: images delivered per second of wall time, divided by the workers;
* ``cpu img/s/worker``: images per CPU-second the workers spent building them (robust on a busy
  machine; excludes the hand-over to the main process);
* the same for ``workers=0`` (everything in this process) as ``in-process``.

Targets: >= 100 img/s/worker with the cache, >= 40 without.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from darknetpy.data import AugmentConfig, DataConfig, build_train_loader, read_image_list

SHARED = Path(__file__).resolve().parents[2] / "shared"


def run(images, aug, args, cache: bool, workers: int) -> tuple[float, float, float]:
    """(wall img/s/worker, cpu img/s/worker, cache build seconds)."""
    start = time.perf_counter()
    loader = build_train_loader(images, aug, args.batch, workers=workers, seed=0, cache=cache)
    build = time.perf_counter() - start
    size = (args.size, args.size)
    if workers == 0:
        cv2.setNumThreads(1)
        torch.set_num_threads(1)
        loader.get(0, *size)  # warm-up (numba, caches)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in loader.iterate(1, 1 + args.iterations, size):
            pass
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        count = args.batch * args.iterations
        return count / wall, count / cpu, build
    first = None
    cpu = 0.0
    for batch in loader.iterate(0, workers + args.iterations, size):
        if batch.iteration < workers:  # worker start-up and warm-up are not counted
            first = time.perf_counter()
            continue
        cpu += batch.cpu_seconds
    wall = time.perf_counter() - first
    count = args.batch * args.iterations
    return count / wall / workers, count / cpu, build


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "datasets/raccoon/raccoon.data")
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    data = DataConfig.from_file(args.data)
    images = read_image_list(data.train, base=data.path.parent)
    aug = AugmentConfig(
        width=args.size, height=args.size, classes=data.classes or 1, jitter=0.3, hue=0.1,
        saturation=1.5, exposure=1.5, flip=True, mosaic=True,
    )
    print(f"{len(images)} images from {args.data}, {args.size}x{args.size}, batch {args.batch}, "
          f"{args.iterations} iterations, mosaic=1 (per-chunk coin), jitter=0.3, hsv, flip")
    header = f"{'cache':>6} {'mode':>12} {'wall img/s/worker':>18} {'cpu img/s/worker':>17}"
    print(header)
    print("-" * len(header))
    for cache in (True, False):
        for workers in (args.workers, 0):
            wall, cpu, build = run(images, aug, args, cache, workers)
            mode = f"{workers} worker" + ("s" if workers > 1 else "") if workers else "in-process"
            extra = f"   (cache built in {build:.1f} s)" if cache and workers else ""
            print(f"{'yes' if cache else 'no':>6} {mode:>12} {wall:>18.1f} {cpu:>17.1f}{extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
