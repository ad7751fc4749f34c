"""One training sample of the YOLOv8 or YOLOX recipe: settings, stage, and the step chains.

:func:`build_modern_sample` builds one image slot of a training iteration when the cfg's
``[net] recipe=`` is ``yolov8`` or ``yolox`` (``darknetpy.training.recipe_data`` calls it;
:class:`ModernAugment` holds the settings, filled from ``[net]`` by the trainer;
:data:`KIND_DEFAULTS` are the references' own defaults). It returns what the Darknet path returns
for a slot: a uint8 ``(h, w, 3)`` RGB network input and float32 ``(max_boxes, 5)`` truth rows
``x, y, w, h, class`` relative, zero-padded.

The slot's first image is given (an epoch-shuffled order: :func:`sample_index`); the other images
of a mosaic or mixup are drawn uniformly from the source with the slot's generator, as YOLOX and
ultralytics with a RAM cache do (without one, ultralytics draws them from its buffer of recently
loaded images). Each step draws from the one generator: the distributions are the references',
the random streams are not.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np

from ...errors import CfgError, DataError
from .common import pixel_boxes, to_truth
from .v8 import (
    load_fit,
    random_flip,
    random_hsv,
    random_perspective,
    ultralytics_mixup,
    ultralytics_mosaic,
)
from .yolox import fit_image, train_transform, yolox_mixup, yolox_mosaic, yolox_random_affine

__all__ = [
    "KINDS",
    "KIND_DEFAULTS",
    "FitCache",
    "ModernAugment",
    "SampleSource",
    "Stage",
    "build_modern_sample",
    "sample_index",
]

#: The recipes with their own augmentation (``[net] recipe=``).
KINDS = ("yolov8", "yolox")

Pair = tuple[np.ndarray, np.ndarray]  # uint8 image, float32 (N, 5) pixel boxes x1 y1 x2 y2 class


@dataclass(frozen=True, kw_only=True)
class ModernAugment:
    """The augmentation of a YOLOv8 or YOLOX training run (``[net]`` keys of the same names).

    Attributes:
        kind: ``yolov8`` (ultralytics ``v8_transforms``) or ``yolox`` (``MosaicDetection`` +
            ``TrainTransform``).
        mosaic_prob: probability that an image is a 4-image mosaic.
        mixup_prob: probability of mixing in another image (yolox: mosaic images only).
        degrees, translate, shear: affine ranges (``U(±degrees)``, ``±translate`` of the size,
            ``U(±shear)`` degrees).
        scale_range: the affine scale factor's range (ultralytics ``1 ± scale``; YOLOX
            ``mosaic_scale``).
        perspective: ultralytics' perspective term (yolov8 only).
        hsv_gains: yolov8: ``hsv_h, hsv_s, hsv_v`` fractions (multiplicative LUT); yolox: additive
            offsets in OpenCV's 8-bit HSV (``augment_hsv``'s 5, 30, 30).
        hsv_prob: probability of the HSV step (YOLOX ``hsv_prob``; ultralytics always).
        flip_prob: left-right flip probability (``fliplr``, ``flip_prob``).
        flipud_prob: up-down flip probability (ultralytics ``flipud``; yolov8 only).
        mixup_scale: YOLOX's mixup jitter range.
        max_boxes: truth rows per image (YOLOX ``max_labels``).
        close_mosaic_iteration: from this training iteration on (1-based: iteration k is the
            batch trained while the count goes from k-1 to k) no mosaic and no mixup
            (ultralytics ``close_mosaic``, YOLOX ``no_aug_epochs``); 0: never.
    """

    kind: str
    mosaic_prob: float
    mixup_prob: float
    degrees: float
    translate: float
    scale_range: tuple[float, float]
    shear: float
    perspective: float = 0.0
    hsv_gains: tuple[float, float, float]
    hsv_prob: float = 1.0
    flip_prob: float = 0.5
    flipud_prob: float = 0.0
    mixup_scale: tuple[float, float] = (0.5, 1.5)
    max_boxes: int
    close_mosaic_iteration: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise CfgError(f"augmentation kind {self.kind!r} is not one of {', '.join(KINDS)}")
        for name, count in (("scale_range", 2), ("hsv_gains", 3), ("mixup_scale", 2)):
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) != count:
                raise CfgError(f"[net] {name}= needs {count} numbers, got {len(values)}")
            object.__setattr__(self, name, values)
        for name in ("mosaic_prob", "mixup_prob", "hsv_prob", "flip_prob", "flipud_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise CfgError(f"[net] {name}={getattr(self, name)} must lie in [0, 1]")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise CfgError(f"[net] scale_range={lo},{hi} needs 0 < low <= high")
        if self.kind == "yolox" and (self.perspective or self.flipud_prob):
            raise CfgError("[net] perspective= and flipud_prob= are yolov8 steps; YOLOX has neither")
        if self.max_boxes < 1:
            raise CfgError(f"augmentation needs max >= 1 truth rows, got {self.max_boxes}")

    @classmethod
    def for_kind(cls, kind: str, **overrides: Any) -> ModernAugment:
        """The reference's defaults for ``kind`` with ``overrides`` (field names) applied."""
        if kind not in KIND_DEFAULTS:
            raise CfgError(f"augmentation kind {kind!r} is not one of {', '.join(KIND_DEFAULTS)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise CfgError(f"unknown augmentation settings {unknown}; known: {sorted(known)}")
        return replace(KIND_DEFAULTS[kind], **overrides)


#: The references' defaults: ultralytics/cfg/default.yaml (mosaic 1.0, mixup 0.0, degrees 0,
#: translate 0.1, scale 0.5, shear 0, perspective 0, hsv 0.015/0.7/0.4, fliplr 0.5, flipud 0)
#: and yolox/exp/yolox_base.py (mosaic_prob 1.0, mixup_prob 1.0, degrees 10, translate 0.1,
#: mosaic_scale (0.1, 2), shear 2, hsv_prob 1.0, flip_prob 0.5, mixup_scale (0.5, 1.5),
#: TrainTransform max_labels 120). ultralytics keeps every box; 300 rows hold a mosaic of
#: COCO's busiest images.
KIND_DEFAULTS: MappingProxyType[str, ModernAugment] = MappingProxyType(
    {
        "yolov8": ModernAugment(
            kind="yolov8", mosaic_prob=1.0, mixup_prob=0.0, degrees=0.0, translate=0.1,
            scale_range=(0.5, 1.5), shear=0.0, perspective=0.0, hsv_gains=(0.015, 0.7, 0.4),
            max_boxes=300,
        ),
        "yolox": ModernAugment(
            kind="yolox", mosaic_prob=1.0, mixup_prob=1.0, degrees=10.0, translate=0.1,
            scale_range=(0.1, 2.0), shear=2.0, hsv_gains=(5.0, 30.0, 30.0), max_boxes=120,
        ),
    }
)


@dataclass(frozen=True)
class Stage:
    """What the training stage allows: ``mosaic``/``mixup`` off in the close-mosaic epochs."""

    mosaic: bool = True
    mixup: bool = True

    @classmethod
    def at(cls, aug: ModernAugment, iteration: int) -> Stage:
        """The stage of loader iteration ``iteration`` (see ``close_mosaic_iteration``)."""
        closed = 0 < aug.close_mosaic_iteration <= iteration
        return cls(mosaic=not closed, mixup=not closed)


class SampleSource(Protocol):
    """What the builders read (:class:`darknetpy.data.dataset.TrainSource` fits)."""

    def image(self, index: int) -> np.ndarray: ...
    def labels(self, index: int, events: Any) -> np.ndarray: ...
    def draw(self, rng: np.random.Generator, events: Any) -> tuple[int, np.ndarray, np.ndarray]: ...


def sample_index(seed: int, position: int, count: int) -> int:
    """The image of sample ``position`` (0, 1, ... over the run): the images in a fresh random
    order every ``count`` samples, as an epoch of a shuffled loader (each image first once)."""
    epoch, offset = divmod(position, count)
    order = np.random.default_rng(np.random.SeedSequence([seed, 2, epoch])).permutation(count)
    return int(order[offset])


class FitCache:
    """Fitted (resized) training images by ``(kind, index, w, h)``, up to ``budget`` bytes, the
    oldest dropped first: ultralytics' and YOLOX's image caches hold the resized image too, so a
    mosaic costs no resize for an image seen before. Cached arrays are read-only."""

    def __init__(self, budget: int = 512 << 20) -> None:
        self.budget, self.nbytes = budget, 0
        self._items: dict[tuple[str, int, int, int], np.ndarray] = {}

    def get(self, key: tuple[str, int, int, int], make: Any) -> np.ndarray:
        image = self._items.get(key)
        if image is None:
            image = make()
            if image.nbytes <= self.budget:
                image.flags.writeable = False
                while self.nbytes + image.nbytes > self.budget:
                    self.nbytes -= self._items.pop(next(iter(self._items))).nbytes
                self._items[key] = image
                self.nbytes += image.nbytes
        return image


@dataclass
class _Draws:
    """Where one sample's images come from: the source, its generator, the fit cache."""

    source: SampleSource
    rng: np.random.Generator
    events: Any
    cache: FitCache | None
    w: int
    h: int

    def load(self, index: int | None) -> tuple[int, np.ndarray, np.ndarray]:
        """Image ``index`` (a drawn one if None or unusable): ``(index, image, label rows)``."""
        if index is not None:
            try:
                return index, self.source.image(index), self.source.labels(index, self.events)
            except DataError:
                pass
        return self.source.draw(self.rng, self.events)

    def fitted(self, index: int | None, kind: str) -> Pair:
        """The image fitted into w x h as the reference's dataset loads it, and pixel boxes:
        yolov8 :func:`load_fit` (boxes scaled by the new size), yolox :func:`fit_image`
        (boxes scaled by ``r``)."""
        index, image, labels = self.load(index)
        h0, w0 = image.shape[:2]
        if kind == "yolov8":
            make = lambda: load_fit(image, self.w, self.h)  # noqa: E731
        else:
            make = lambda: fit_image(image, self.w, self.h)[0]  # noqa: E731
        key = (kind, index, self.w, self.h)
        fitted = make() if self.cache is None else self.cache.get(key, make)
        if kind == "yolov8":
            return fitted, pixel_boxes(labels, fitted.shape[1], fitted.shape[0])
        r = min(self.h / h0, self.w / w0)
        return fitted, pixel_boxes(labels, w0 * r, h0 * r)


def _v8_pre(first: Pair, draws: _Draws, stage: Stage, aug: ModernAugment) -> Pair:
    """v8_transforms' ``pre_transform``: Mosaic (with probability) then RandomPerspective."""
    image, boxes = first
    w, h, rng = draws.w, draws.h, draws.rng
    if stage.mosaic and aug.mosaic_prob > 0 and rng.random() < aug.mosaic_prob:
        others = [draws.fitted(None, "yolov8") for _ in range(3)]
        image, boxes = ultralytics_mosaic([(image, boxes), *others], w, h, rng)
    return random_perspective(
        image, boxes, w, h, rng, degrees=aug.degrees, translate=aug.translate,
        scale=aug.scale_range, shear=aug.shear, perspective=aug.perspective,
    )


def build_v8_sample(index: int | None, draws: _Draws, stage: Stage, aug: ModernAugment) -> Pair:
    """ultralytics ``v8_transforms`` for image ``index``: ``(image, pixel boxes)`` at w x h."""
    rng = draws.rng
    image, boxes = _v8_pre(draws.fitted(index, "yolov8"), draws, stage, aug)
    if stage.mixup and aug.mixup_prob > 0 and rng.random() < aug.mixup_prob:
        other = _v8_pre(draws.fitted(None, "yolov8"), draws, stage, aug)
        image, boxes = ultralytics_mixup((image, boxes), other, rng)
    if aug.hsv_prob > 0 and rng.random() < aug.hsv_prob:
        image = random_hsv(image, rng, *aug.hsv_gains)
    return random_flip(image, boxes, rng, aug.flip_prob, aug.flipud_prob)


def _labelled(draws: _Draws, tries: int = 64) -> Pair | None:
    """``mixup``'s ``while len(cp_labels) == 0`` draw, given up after ``tries`` (no labels)."""
    for _ in range(tries):
        image, boxes = draws.fitted(None, "yolox")
        if len(boxes):
            return image, boxes
    return None


def build_yolox_sample(index: int | None, draws: _Draws, stage: Stage, aug: ModernAugment) -> Pair:
    """YOLOX ``MosaicDetection.__getitem__`` + ``TrainTransform`` for image ``index``."""
    w, h, rng = draws.w, draws.h, draws.rng
    image, boxes = draws.fitted(index, "yolox")  # pull_item: load_resized_img
    if stage.mosaic and aug.mosaic_prob > 0 and rng.random() < aug.mosaic_prob:
        others = [draws.fitted(None, "yolox") for _ in range(3)]
        image, boxes = yolox_mosaic([(image, boxes), *others], w, h, rng)
        image, boxes = yolox_random_affine(
            image, boxes, w, h, rng, degrees=aug.degrees, translate=aug.translate,
            scales=aug.scale_range, shear=aug.shear,
        )
        if stage.mixup and len(boxes) and aug.mixup_prob > 0 and rng.random() < aug.mixup_prob:
            other = _labelled(draws)
            if other is not None:
                image, boxes = yolox_mixup(image, boxes, *other, rng, aug.mixup_scale)
    return train_transform(
        image, boxes, w, h, rng, flip_prob=aug.flip_prob, hsv_prob=aug.hsv_prob,
        hsv=aug.hsv_gains,
    )


_BUILDERS = MappingProxyType({"yolov8": build_v8_sample, "yolox": build_yolox_sample})


def build_modern_sample(
    source: SampleSource, index: int | None, size: tuple[int, int], stage: Stage,
    rng: np.random.Generator, aug: ModernAugment, events: Any = None,
    cache: FitCache | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One training image of ``aug.kind``'s recipe, with ``index`` as its first image.

    Args:
        source: the training images and labels (other images are drawn from it with ``rng``).
        index: the image this sample starts from (None: drawn); an unusable one is replaced.
        size: network ``(width, height)`` of this iteration.
        stage: whether mosaic/mixup are allowed (:meth:`Stage.at`).
        rng: every random draw of the sample.
        aug: the settings.
        events: passed to ``source`` (bad images, label problems).
        cache: fitted images kept between calls (same results, fewer resizes).

    Returns:
        ``(image, truth)``: uint8 ``(h, w, 3)`` RGB and float32 ``(aug.max_boxes, 5)`` rows
        ``x, y, w, h, class`` relative to the image, zero rows after the last box.
    """
    w, h = size
    draws = _Draws(source, rng, events, cache, w, h)
    image, boxes = _BUILDERS[aug.kind](index, draws, stage, aug)
    return image, to_truth(boxes, w, h, aug.max_boxes)
