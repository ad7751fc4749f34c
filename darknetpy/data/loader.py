"""The training data loader: batches of augmented images for each iteration.

Darknet's loader (``detector.c: train_detector``, ``data.c: load_threads``) has no epochs: every
iteration draws ``batch * subdivisions`` images uniformly with replacement, augments them at the
network size of that iteration, and hands them over as one block, which the trainer splits into
subdivisions. :class:`TrainLoader` does the same.

Usage::

    aug = AugmentConfig(width=416, height=416, classes=80, jitter=0.3, mosaic=True, ...)
    loader = build_train_loader(read_image_list(data.train), aug, batch=64, workers=4, seed=0)
    batch = loader.get(1, 416, 416)                        # one iteration, in this process
    for batch in loader.iterate(start=1, stop=max_batches + 1,
                                size=lambda it: (416, 416)):   # workers, prefetching
        images, truth = batch.images, batch.truth           # (64, 3, h, w), (64, max, 5)
    print(loader.summary())                                 # unusable images / label problems

* ``batch`` is the cfg's full batch (all subdivisions together).
* ``get(iteration, width, height)`` builds an iteration synchronously; ``iterate`` builds them in
  ``workers`` processes (a ``torch.utils.data.DataLoader`` whose sampler yields
  ``(iteration, width, height)``; each worker builds a whole iteration) and yields them in order.
  ``size`` maps an iteration to its network size; it must be a pure function (Darknet's random
  resize every 10 iterations can be derived from ``(seed, iteration)``), since workers build
  iterations ahead. To change the size unpredictably, stop iterating and call ``iterate`` again
  from the current iteration (the prefetched batches are dropped, as Darknet drops its preloaded
  batch on a resize).
* Workers are started with ``forkserver`` (``spawn`` where unavailable), so scripts that use
  ``iterate`` with workers need the usual ``if __name__ == "__main__":`` guard.
* The result of iteration k depends only on ``(images, aug, batch, seed, chunks, k, size)``: not
  on ``workers``, the cache or the order of calls, so a run resumed at k sees the same batches.
* ``images``: (batch, 3, h, w) RGB: uint8 (a quarter of float32's bytes through shared and pinned
  memory; the trainer makes it float, ``value / 255``, on the device), or float32 in [0, 1] in an
  iteration with a mixup chunk (a blend of two images is not a byte). ``truth``: float32
  (batch, max_boxes, 5) rows ``x, y, w, h, class`` relative to the image, zero-padded; the first
  row with ``x == 0`` ends the list, as in Darknet.
* With workers, the worker processes live as long as the loader (``persistent_workers``): a new
  ``iterate`` after a resize reuses them; :meth:`TrainLoader.close` ends them.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import cv2
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import DataError
from .augment import AugmentConfig
from .dataset import DARKNET_CHUNKS, UNIT_LUT, Events, TrainSource, build_iteration
from .image_cache import NodeShare, build_image_cache
from .labels import LabelReport

__all__ = ["Batch", "DataSummary", "TrainLoader", "build_train_loader", "unit_float"]

SizeFn = Callable[[int], tuple[int, int]]


@dataclass(frozen=True, eq=False)
class Batch:
    """One iteration's data."""

    iteration: int
    width: int
    height: int
    images: torch.Tensor  # (batch, 3, height, width) RGB: uint8, or float32 in [0, 1] (mixup)
    truth: torch.Tensor  # float32 (batch, max_boxes, 5): x, y, w, h, class; zero-padded
    events: Events = field(default_factory=Events, repr=False, compare=False)
    cpu_seconds: float = field(default=0.0, compare=False)  # CPU time spent building it

    def pin_memory(self) -> Batch:
        """A copy in pinned memory (called by the DataLoader when ``pin_memory=True``)."""
        return replace(self, images=self.images.pin_memory(), truth=self.truth.pin_memory())


@dataclass(frozen=True)
class DataSummary:
    """Unusable images and label problems seen so far.

    Attributes:
        images: images in the training list.
        bad_images: ``{path: reason}`` of images that could not be decoded (skipped).
        label_files: ``{path: report}`` of label files that were missing or had dropped or
            clipped boxes (each file counted once, however often it was drawn).
    """

    images: int
    bad_images: dict[Path, str]
    label_files: dict[Path, LabelReport]

    @property
    def missing_labels(self) -> int:
        return sum(r.missing or r.not_label_file for r in self.label_files.values())

    @property
    def dropped_boxes(self) -> int:
        return sum(r.dropped for r in self.label_files.values())

    def __str__(self) -> str:
        lines = [
            (
                f"{self.images} images; {len(self.bad_images)} unusable (skipped); "
                f"{self.missing_labels} without a label file (background); "
                f"{self.dropped_boxes} label lines dropped"
            )
        ]
        for reason in list(self.bad_images.values())[:5]:
            lines.append(f"  bad image: {reason}")
        for path, report in list(self.label_files.items())[:5]:
            if report.dropped:
                lines.append(
                    f"  {path}: dropped {report.malformed} malformed, {report.non_finite} NaN/inf, "
                    f"{report.bad_class} bad class, {report.invalid} invalid"
                )
        return "\n".join(lines)


class _IterationDataset(Dataset):
    """``dataset[(iteration, w, h)]`` -> the whole iteration (built in a worker)."""

    def __init__(
        self, source: TrainSource, aug: AugmentConfig, batch: int, seed: int, chunks: int
    ) -> None:
        self.source, self.aug, self.batch, self.seed, self.chunks = source, aug, batch, seed, chunks

    def __len__(self) -> int:  # pragma: no cover - map-style datasets need it; never used
        return 2**62

    def __getitem__(self, key: tuple[int, int, int]) -> Batch:
        iteration, w, h = key
        cpu = time.process_time()
        images, truth, events = build_iteration(
            self.source, self.aug, self.seed, iteration, self.batch, w, h, self.chunks
        )
        return Batch(iteration, w, h, images, truth, events, time.process_time() - cpu)


class _PlanSampler(Sampler):
    """``(iteration, w, h)`` from ``start``; :class:`TrainLoader` re-aims it before each ``iterate``
    (the DataLoader, and with it the persistent workers, stays the same)."""

    def __init__(self, start: int, stop: int | None, size: SizeFn) -> None:
        self.start, self.stop, self.size = start, stop, size

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        iteration = self.start
        while self.stop is None or iteration < self.stop:
            w, h = self.size(iteration)
            yield iteration, int(w), int(h)
            iteration += 1


@lru_cache(maxsize=8)
def _unit_lut(device: torch.device) -> torch.Tensor:
    return torch.tensor(UNIT_LUT, device=device)


def unit_float(images: torch.Tensor) -> torch.Tensor:
    """Batch images as float32 in [0, 1] on their device: uint8 ``value / 255.f`` (Darknet's
    ``mat_to_image``) by a table look-up, bit-identical on every device (CUDA's division by a
    scalar multiplies by its reciprocal, which rounds 126 of the 256 values differently); float
    images (mixup iterations) unchanged."""
    if images.dtype != torch.uint8:
        return images
    return _unit_lut(images.device)[images.long()]


def _identity(batch: Batch) -> Batch:
    return batch


def _worker_init(_: int) -> None:
    cv2.setNumThreads(1)  # one core per worker; parallelism comes from the workers
    torch.set_num_threads(1)


def _worker_context() -> multiprocessing.context.BaseContext:
    """Workers start from a clean process: a plain ``fork`` copies OpenCV's and OpenMP's thread
    pools in whatever state they are, which can deadlock the child (seen with OpenCV 5)."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


class TrainLoader:
    """Training batches for Darknet-style iterations (see the module docstring)."""

    def __init__(
        self,
        source: TrainSource,
        aug: AugmentConfig,
        batch: int,
        workers: int,
        seed: int,
        chunks: int = DARKNET_CHUNKS,
        pin_memory: bool = False,
        prefetch: int = 2,
    ) -> None:
        if batch < 1:
            raise DataError(f"batch must be >= 1, got {batch}")
        if seed < 0:
            raise DataError(f"seed must be >= 0, got {seed}")
        self.source, self.aug, self.batch, self.workers = source, aug, batch, max(workers, 0)
        self.seed, self.chunks, self.pin_memory, self.prefetch = seed, chunks, pin_memory, prefetch
        self._dataset = _IterationDataset(source, aug, batch, seed, chunks)
        self._sampler = _PlanSampler(1, None, lambda _it: (aug.width, aug.height))
        self._loader: DataLoader | None = None  # built at the first iterate with workers
        self._bad: dict[Path, str] = {}
        self._labels: dict[Path, LabelReport] = {}
        if source.cache is not None:  # found while decoding everything up front
            self._record(Events(bad_images=sorted(source.cache.errors.items())))

    def _record(self, events: Events) -> None:
        for index, reason in events.bad_images:
            self._bad.setdefault(self.source.paths[index], reason)
        for report in events.label_reports:
            self._labels.setdefault(report.path, report)

    def get(self, iteration: int, width: int, height: int) -> Batch:
        """Iteration ``iteration`` at network size ``width`` x ``height``, built in this process."""
        batch = self._dataset[(iteration, width, height)]
        self._record(batch.events)
        return batch

    def iterate(
        self, start: int, stop: int | None = None, size: SizeFn | tuple[int, int] | None = None
    ) -> Iterator[Batch]:
        """Iterations ``start, start+1, ...`` (up to ``stop``, exclusive; forever if None).

        Args:
            start: the first iteration.
            stop: one past the last iteration, or None.
            size: ``(width, height)`` for every iteration, or a pure function of the iteration
                returning it; default the cfg's size.
        """
        if size is None:
            size = (self.aug.width, self.aug.height)
        size_fn: SizeFn = size if callable(size) else (lambda _it, s=tuple(size): s)
        if self.workers == 0:
            sampler: Iterator[tuple[int, int, int]] = iter(_PlanSampler(start, stop, size_fn))
            for key in sampler:
                yield self.get(*key)
            return
        self._sampler.start, self._sampler.stop, self._sampler.size = start, stop, size_fn
        if self._loader is None:
            self._loader = DataLoader(
                self._dataset,
                batch_size=None,
                sampler=self._sampler,
                num_workers=self.workers,
                collate_fn=_identity,
                pin_memory=self.pin_memory,
                prefetch_factor=self.prefetch,
                worker_init_fn=_worker_init,
                multiprocessing_context=_worker_context(),
                persistent_workers=True,  # a resize's new iterate reuses the started workers
            )
        for batch in self._loader:
            self._record(batch.events)
            yield batch

    def close(self) -> None:
        """End the worker processes (a later ``iterate`` starts new ones)."""
        loader, self._loader = self._loader, None
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()

    def summary(self) -> DataSummary:
        """Unusable images and label problems met so far (in this process and its workers)."""
        return DataSummary(len(self.source.paths), dict(self._bad), dict(self._labels))


def build_train_loader(
    images: Sequence[Path],
    aug: AugmentConfig,
    batch: int,
    workers: int,
    seed: int,
    cache: bool = False,
    chunks: int = DARKNET_CHUNKS,
    pin_memory: bool = False,
    node: NodeShare | None = None,
) -> TrainLoader:
    """A :class:`TrainLoader` over ``images`` (label files found with ``label_path``).

    Args:
        images: the training image paths (:func:`~darknetpy.data.datafile.read_image_list`).
        aug: augmentation settings.
        batch: images per iteration (the cfg's ``batch``, all subdivisions together).
        workers: worker processes (0: build in the calling process).
        seed: base seed; iteration k's batch depends only on (seed, k, size).
        cache: decode every image once up front into shared memory (see :class:`ImageCache`);
            without room for it in ``/dev/shm``, a warning and no cache.
        chunks: loader calls per iteration, each with its own mixup/mosaic coin (Darknet: 6 per GPU).
        pin_memory: pin the batches (faster host-to-GPU copies).
        node: with several training processes on a machine, one cache for all of them
            (:func:`~darknetpy.data.image_cache.build_image_cache`; every process must call this).

    Raises:
        DataError: empty list, or (with ``cache``) every image unusable.
    """
    image_cache = None
    if cache:
        # batches on their way from the workers also live in /dev/shm (float32, up to ~2x the
        # area after a random resize)
        in_flight = (max(workers, 0) * 2 + 1) * batch * 3 * aug.width * aug.height * 4 * 2
        image_cache = build_image_cache(images, max(workers, os.cpu_count() or 1), node=node,
                                        reserve=in_flight if workers > 0 else 0)  # fmt: skip
    source = TrainSource(images, aug.classes, image_cache)
    return TrainLoader(source, aug, batch, workers, seed, chunks, pin_memory)
