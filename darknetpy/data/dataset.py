"""Building one training iteration: sampling, chunks, single / mixup / mosaic images (no model).

Mirrors ``data.c: load_threads`` (the ``batch`` images of an iteration are split into
``chunks`` calls of ``load_data_detection``: ``n_i = (i+1)*n/chunks - i*n/chunks``; Darknet uses
6 per GPU with OpenCV), ``load_data_detection`` [OpenCV version] (per chunk a coin decides whether
mixup/mosaic is used at all; each image is drawn uniformly with replacement) and
``get_random_paths_custom``.

Determinism: every random draw comes from a ``np.random.Generator`` seeded with
``(seed, iteration, tag, index)``: one per chunk (its mixup/mosaic coin) and one per image slot
(everything else). The batch of iteration k is therefore the same whatever the number of workers,
the order they run in, or whether the run was interrupted and resumed at k.

Unusable images (missing, unreadable, truncated) are skipped: the slot draws another image from
its own generator, so the result is still deterministic. A :class:`DataError` is raised only when
every image of the list is unusable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.utils.data

from ..errors import DataError
from .augment import AugmentConfig, draw_augmentation, jitter_crop, limit_blur
from .image import load_image
from .image_cache import ImageCache
from .labels import LabelReport, label_path, read_labels
from .mosaic import blend_truth_mosaic, cut_points, mosaic_piece
from .pixels import augment_image
from .truth import blend_truth, fill_truth_detection

__all__ = [
    "DARKNET_CHUNKS",
    "Events",
    "ImageCache",
    "TrainSource",
    "UNIT_LUT",
    "augment_detection",
    "build_iteration",
    "build_slot",
    "chunk_bounds",
    "chunk_mode",
    "slot_generator",
]

#: ``train_detector``: ``args.threads = 6 * ngpus`` loader calls per iteration (OpenCV build).
DARKNET_CHUNKS = 6

_CHUNK_TAG, _SLOT_TAG = 0, 1


def chunk_bounds(total: int, chunks: int) -> list[tuple[int, int]]:
    """``load_threads``: slot ranges ``[start, stop)`` of each loader call (some may be empty)."""
    chunks = max(chunks, 1)
    return [(i * total // chunks, (i + 1) * total // chunks) for i in range(chunks)]


def _generator(seed: int, iteration: int, tag: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, iteration, tag, index]))


def slot_generator(seed: int, iteration: int, slot: int) -> np.random.Generator:
    """The generator of image slot ``slot`` of ``iteration``."""
    return _generator(seed, iteration, _SLOT_TAG, slot)


def chunk_mode(aug: AugmentConfig, seed: int, iteration: int, chunk: int) -> int:
    """The mixup code a chunk uses: ``aug.mode`` with probability 1/2, else 0 (single images)."""
    coin = int(_generator(seed, iteration, _CHUNK_TAG, chunk).integers(2))
    return aug.mode if coin else 0


@dataclass
class Events:
    """What went wrong while building some images (collected per call, merged by the loader)."""

    bad_images: list[tuple[int, str]] = field(default_factory=list)  # (list index, reason)
    label_reports: list[LabelReport] = field(default_factory=list)  # only those not ``ok``

    def extend(self, other: Events) -> None:
        self.bad_images.extend(other.bad_images)
        self.label_reports.extend(other.label_reports)


class TrainSource:
    """The images of a training list and their labels, with per-process memory of bad files.

    Labels are read once per process and kept (they are small); images are decoded on every use
    unless an :class:`ImageCache` is given.
    """

    def __init__(self, paths: Sequence[Path], classes: int, cache: ImageCache | None = None) -> None:
        if not paths:
            raise DataError("the training list holds no image")
        self.paths = [Path(p) for p in paths]
        self.classes = classes
        self.cache = cache
        self._labels: dict[int, np.ndarray] = {}
        self._bad: dict[int, str] = dict(cache.errors) if cache is not None else {}
        if len(self._bad) == len(self.paths):
            raise self._all_bad()

    def _all_bad(self) -> DataError:
        example = next(iter(self._bad.values()), "")
        return DataError(
            f"every one of the {len(self.paths)} training images is unusable "
            f"(for example: {example}); check the train= list"
        )

    def image(self, index: int) -> np.ndarray:
        if self.cache is not None:
            return self.cache.get(index)
        return load_image(self.paths[index])

    def labels(self, index: int, events: Events) -> np.ndarray:
        boxes = self._labels.get(index)
        if boxes is None:
            boxes, report = read_labels(label_path(self.paths[index]), self.classes)
            self._labels[index] = boxes
            if not report.ok:
                events.label_reports.append(report)
        return boxes

    def draw(self, rng: np.random.Generator, events: Events) -> tuple[int, np.ndarray, np.ndarray]:
        """A uniformly drawn usable image: ``(index, uint8 RGB image, label rows)``."""
        while True:
            if len(self._bad) >= len(self.paths):
                raise self._all_bad()
            index = int(rng.integers(len(self.paths)))
            if index in self._bad:
                continue
            try:
                image = self.image(index)
            except DataError as exc:
                self._bad[index] = str(exc)
                events.bad_images.append((index, str(exc)))
                continue
            return index, image, self.labels(index, events)


def augment_detection(
    image: np.ndarray,
    boxes: np.ndarray,
    aug: AugmentConfig,
    w: int,
    h: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """One single (non-mosaic) training image and its truth, steps 1-4 of the module docstring.

    Args:
        image: uint8 (H, W, 3) RGB source.
        boxes: float32 (N, 5) label rows ``class, x, y, w, h``.
        aug: augmentation settings.
        w, h: network size of this iteration.

    Returns:
        ``(image, truth)``: uint8 (h, w, 3) RGB and float32 (max_boxes, 5) ``x, y, w, h, class``.
    """
    draws = draw_augmentation(rng, aug)
    oh, ow = image.shape[:2]
    crop = jitter_crop(ow, oh, w, h, draws, aug)
    truth, min_w_h = fill_truth_detection(boxes, crop, aug.classes, aug.max_boxes, w, h, rng)
    blur = limit_blur(draws.blur, min_w_h)
    return augment_image(image, crop, w, h, draws, blur, truth, rng), truth


def _single(
    source: TrainSource, aug: AugmentConfig, w: int, h: int, rng: np.random.Generator,
    events: Events,
) -> tuple[np.ndarray, np.ndarray]:
    _, image, boxes = source.draw(rng, events)
    return augment_detection(image, boxes, aug, w, h, rng)


def build_slot(
    source: TrainSource, aug: AugmentConfig, mode: int, w: int, h: int,
    rng: np.random.Generator, events: Events,
) -> tuple[np.ndarray, np.ndarray]:
    """One output image of ``load_data_detection`` and its truth.

    Args:
        mode: 0 single image, 1 mixup (two images blended 0.5/0.5, truths appended),
            3 mosaic (four pieces around a random cut point).

    Returns:
        ``(image, truth)``: uint8 (h, w, 3) RGB (float32 in [0, 1] for mixup), and float32
        (max_boxes, 5) rows ``x, y, w, h, class``.
    """
    if mode == 0:
        return _single(source, aug, w, h, rng, events)
    if mode == 1:
        first, truth = _single(source, aug, w, h, rng, events)
        second, second_truth = _single(source, aug, w, h, rng, events)
        blended = (second.astype(np.float32) / np.float32(255)) * np.float32(0.5) + (
            first.astype(np.float32) / np.float32(255)
        ) * np.float32(0.5)
        return blended, blend_truth(truth, second_truth)
    if mode != 3:
        raise DataError(f"unsupported detection mixup mode {mode}")
    cut_x, cut_y = cut_points(rng, w, h)
    canvas = np.zeros((h, w, 3), np.uint8)
    truth = np.zeros((aug.max_boxes, 5), np.float32)
    for index in range(4):
        _, image, boxes = source.draw(rng, events)
        draws = draw_augmentation(rng, aug)
        corner = index if rng.integers(2) == 0 else None  # "move each 2nd image to the corner"
        oh, ow = image.shape[:2]
        crop = jitter_crop(ow, oh, w, h, draws, aug, corner)
        piece_truth, min_w_h = fill_truth_detection(
            boxes, crop, aug.classes, aug.max_boxes, w, h, rng
        )
        blur = limit_blur(draws.blur, min_w_h)
        piece = mosaic_piece(index, crop, w, h, cut_x, cut_y)
        pixels = augment_image(image, crop, w, h, draws, blur, piece_truth, rng, region=piece.src)
        x0, y0, x1, y1 = piece.dst
        canvas[y0:y1, x0:x1] = pixels
        truth = blend_truth_mosaic(
            truth, piece_truth, piece, w, h, cut_x, cut_y, w, h, aug.mosaic_bound
        )
    return canvas, truth


def _new_tensor(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A tensor; in a DataLoader worker its storage is shared memory from the start, so
    handing it to the main process costs no copy (as ``default_collate`` does)."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    numel = int(np.prod(shape))
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(numel)
    return torch.empty(0, dtype=dtype).new(storage).view(*shape)


UNIT_LUT = np.arange(256, dtype=np.float32) / np.float32(255)  # mat_to_image: value / 255.f
UNIT_LUT.flags.writeable = False


def _to_chw_float(image: np.ndarray, out: np.ndarray) -> None:
    """uint8 HWC -> float32 CHW ``value/255.f`` written into ``out`` (float images copied)."""
    if image.dtype != np.uint8:
        out[:] = image.transpose(2, 0, 1)
        return
    for c, channel in enumerate(cv2.split(image)):
        cv2.LUT(channel, UNIT_LUT, dst=out[c])


def build_iteration(
    source: TrainSource, aug: AugmentConfig, seed: int, iteration: int, batch: int,
    w: int, h: int, chunks: int = DARKNET_CHUNKS,
) -> tuple[torch.Tensor, torch.Tensor, Events]:
    """All ``batch`` images of one training iteration.

    Returns:
        ``(images, truth, events)``: tensor (batch, 3, h, w) RGB, uint8 (0-255; ``value / 255.f``
        makes Darknet's float, see ``to_device_images`` in the trainer) unless a chunk of this
        iteration is a mixup (a blend is no byte): then float32 in [0, 1]; float32 tensor
        (batch, max_boxes, 5) rows ``x, y, w, h, class`` (zero rows after the last box); the
        :class:`Events` met on the way. In a DataLoader worker both live in shared memory.
    """
    bounds = [(chunk, start, stop) for chunk, (start, stop)
              in enumerate(chunk_bounds(batch, chunks)) if start != stop]  # fmt: skip
    modes = {chunk: chunk_mode(aug, seed, iteration, chunk) for chunk, _, _ in bounds}
    as_bytes = 1 not in modes.values()
    images_t = _new_tensor((batch, 3, h, w), torch.uint8 if as_bytes else torch.float32)
    truth_t = _new_tensor((batch, aug.max_boxes, 5))
    images, truth = images_t.numpy(), truth_t.numpy()
    events = Events()
    for chunk, start, stop in bounds:
        for slot in range(start, stop):
            image, truth[slot] = build_slot(
                source, aug, modes[chunk], w, h, slot_generator(seed, iteration, slot), events
            )
            if as_bytes:
                assert image.dtype == np.uint8, f"mode {modes[chunk]} built {image.dtype} pixels"
                images[slot] = image.transpose(2, 0, 1)
            else:
                _to_chw_float(image, images[slot])
    return images_t, truth_t, events
