"""Milliseconds per training sample of the YOLOv8 / YOLOX augmentation (darknetpy.data.modern).

Usage::

    python3 bench/bench_modern_augment.py [--data data/raccoon/raccoon.data] [--samples 160]

One thread (``cv2.setNumThreads(1)``), images decoded once (``ImageCache``), as a loader worker
builds them. Reports CPU ms per sample (``time.process_time``, robust to other load on the machine)
and wall ms, for each kind at 224 and 640, mosaic on (the default recipe) and closed (the last
epochs), with and without the fit cache (warmed by one pass first).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from darknetpy.data.datafile import DataConfig, read_image_list  # noqa: E402
from darknetpy.data.dataset import Events, ImageCache, TrainSource, slot_generator  # noqa: E402
from darknetpy.data.modern import (  # noqa: E402
    FitCache,
    ModernAugment,
    Stage,
    build_modern_sample,
    sample_index,
)


def measure(source: TrainSource, aug: ModernAugment, size: int, stage: Stage,
            cache: FitCache | None, samples: int) -> tuple[float, float]:
    count = len(source.paths)
    cpu, wall = time.process_time(), time.perf_counter()
    for p in range(samples):
        build_modern_sample(source, sample_index(0, p, count), (size, size), stage,
                            slot_generator(0, 1 + p // 16, p % 16), aug, Events(), cache)
    return ((time.process_time() - cpu) * 1000 / samples,
            (time.perf_counter() - wall) * 1000 / samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/raccoon/raccoon.data"))
    parser.add_argument("--samples", type=int, default=160)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    data = DataConfig.from_file(args.data)
    images = read_image_list(data.train, base=args.data.parent)
    source = TrainSource(images, data.classes, ImageCache(images, threads=2))
    print(f"{len(images)} images; {args.samples} samples each; CPU ms / wall ms per sample")
    print("kind    size  stage   no cache        fit cache")
    for kind in ("yolov8", "yolox"):
        aug = ModernAugment.for_kind(kind)
        for size in (224, 640):
            for name, stage in (("mosaic", Stage()), ("closed", Stage(False, False))):
                plain = measure(source, aug, size, stage, None, args.samples)
                cache = FitCache()
                measure(source, aug, size, stage, cache, len(images))  # warm: every image once
                cached = measure(source, aug, size, stage, cache, args.samples)
                print(f"{kind:7s} {size:4d}  {name:6s}  {plain[0]:5.2f} / {plain[1]:5.2f}   "
                      f"{cached[0]:5.2f} / {cached[1]:5.2f}", flush=True)


if __name__ == "__main__":
    main()
