"""Training batches of the ``yolov8``/``yolox`` recipes (:func:`darknetpy.data.modern.build_modern_sample`).

Unlike Darknet's loader (images drawn with replacement), the references go through the training set
in epochs: sample ``p`` of the run starts from image ``sample_index(seed, p, count)`` (a fresh
permutation each epoch), so iteration ``k`` (1-based) holds samples ``(k-1)*batch .. k*batch-1``.
Each slot has its own generator (``slot_generator(seed, k, slot)``), so iteration ``k`` depends only
on ``(images, aug, batch, seed, k, size)``: a run resumed at ``k`` sees the same batches. The next
iteration is built in a background thread while the current one trains (OpenCV releases the GIL).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..data.dataset import Events, TrainSource, slot_generator
from ..data.image_cache import build_image_cache
from ..data.loader import Batch
from ..data.modern import FitCache, ModernAugment, Stage, build_modern_sample, sample_index

__all__ = ["RecipeBatches"]


class RecipeBatches:
    """Iteration ``k`` -> :class:`~darknetpy.data.loader.Batch` of the recipe's augmentation."""

    def __init__(self, images: Sequence[Path], classes: int, aug: ModernAugment, batch: int,
                 seed: int, size: tuple[int, int], cache: bool = True) -> None:
        image_cache = build_image_cache(images, 2) if cache else None  # None: /dev/shm too small
        self.source = TrainSource(images, classes, image_cache)
        self.aug, self.batch, self.seed, self.size = aug, batch, seed, size
        self.events = Events()
        self.fit_cache = FitCache()  # resized images kept, as the references' caches (one thread)

    def build(self, iteration: int) -> Batch:
        """All ``batch`` images of ``iteration`` (1-based), uint8 RGB (N, 3, h, w): the loop makes
        them float32 in [0, 1] on its device (``to_device_images``), a quarter of the bytes."""
        w, h = self.size
        images = np.empty((self.batch, h, w, 3), np.uint8)
        truth = np.zeros((self.batch, self.aug.max_boxes, 5), np.float32)
        stage = Stage.at(self.aug, iteration)
        events = Events()
        count = len(self.source.paths)
        for slot in range(self.batch):
            first = sample_index(self.seed, (iteration - 1) * self.batch + slot, count)
            images[slot], truth[slot] = build_modern_sample(
                self.source, first, (w, h), stage, slot_generator(self.seed, iteration, slot),
                self.aug, events, cache=self.fit_cache,
            )
        x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        return Batch(iteration, w, h, x, torch.from_numpy(truth), events)

    def iterate(self, start: int) -> Iterator[Batch]:
        """Iterations ``start, start + 1, ...``, each built while the previous one trains."""
        with ThreadPoolExecutor(1, thread_name_prefix="recipe-batches") as pool:
            ahead: Future[Batch] = pool.submit(self.build, start)
            k = start
            try:
                while True:
                    batch = ahead.result()
                    k += 1
                    ahead = pool.submit(self.build, k)
                    self.events.extend(batch.events)
                    yield batch
            finally:
                ahead.cancel()
