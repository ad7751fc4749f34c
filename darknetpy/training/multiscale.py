"""Darknet's multi-scale training: a new network size every 10 iterations (``detector.c:
train_detector``, spec §7.4), as a pure function of the loader index so batches can be built ahead.

Enabled when the LAST ``[yolo]``/``[region]`` layer has ``random`` != 0 (coefficient 1.4 for
``random=1``, else the value itself). At a resize point ``r = rand_scale(coef)`` (U(1, coef),
inverted with probability 1/2) and the size is ``round(r*init/resize_step + 1) * resize_step``;
the first resize of a run and those in the last 100 iterations use the largest size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..data.augment import rand_scale

__all__ = ["ResizePlan", "map_interval", "random_coef", "random_size"]

f32 = np.float32
_RESIZE_TAG = 7  # seed-sequence tag of the resize draws


def _round(x: float) -> int:
    """C ``roundl``: halves away from zero."""
    return math.floor(abs(x) + 0.5) * (1 if x >= 0 else -1)


def _dim(r: float, init: int, step: int) -> int:
    """``roundl(r*init/step + 1) * step`` in C float arithmetic."""
    return _round(float(f32(f32(f32(r) * f32(init)) / f32(step)) + f32(1))) * step


def random_coef(random: float) -> float:
    """``rand_coef``: 0 (off), 1.4 for ``random=1``, else ``random``."""
    return 0.0 if not random else (1.4 if random == 1 else float(random))


def random_size(r: float, coef: float, init: tuple[int, int], step: int,
                use_max: bool) -> tuple[int, int]:
    """The network size after a resize with draw ``r``.

    Note the ``+1``: for 416 and coef 1.4 the sizes are 448..608 when r >= 1, 320..416 below
    (a size above the initial one for r < 1 becomes the initial one); ``use_max`` gives
    ``_dim(coef)``; never below ``step``.

    Example:
        >>> random_size(1.0, 1.4, (416, 416), 32, False), random_size(0.5, 1.4, (416, 416), 32, True)
        ((448, 448), (608, 608))
    """
    w, h = _dim(r, init[0], step), _dim(r, init[1], step)
    if r < 1 and (w > init[0] or h > init[1]):
        w, h = init
    if use_max:
        w, h = _dim(coef, init[0], step), _dim(coef, init[1], step)
    return max(w, step), max(h, step)


def map_interval(map_epochs: int, train_images: int, batch: int) -> int:
    """``calc_map_for_each = max(mAP_epochs * train_images / batch, 100)`` (integer division)."""
    return max(map_epochs * train_images // batch, 100)


@dataclass(frozen=True)
class ResizePlan:
    """Loader index -> network ``(width, height)``.

    Loader index ``start_index + j`` is loop step ``j`` of this run, trained at iteration
    ``start_iteration + j*world``. Resize points are the steps where Darknet's ``count`` (kept across
    an exact resume: ``start_count``) is a multiple of 10; the size drawn there holds until the next
    point, or until an mAP evaluation after a step listed in ``resets`` puts the initial size back.
    """

    init: tuple[int, int]
    coef: float  # 0: no random resize
    step: int
    seed: int
    max_batches: int
    world: int
    start_index: int
    start_iteration: int
    start_count: int
    fresh: bool  # no average loss yet (Darknet's avg_loss < 0): the first resize is the maximum
    resets: tuple[int, ...] = ()

    def __call__(self, index: int) -> tuple[int, int]:
        if not self.coef:
            return self.init
        point = index - (self.start_count + index - self.start_index) % 10
        if any(point <= r < index for r in self.resets):
            return self.init
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _RESIZE_TAG, point]))
        iteration = self.start_iteration + (point - self.start_index) * self.world
        use_max = (point == self.start_index and self.fresh) or iteration > self.max_batches - 100
        return random_size(float(rand_scale(rng, self.coef)), self.coef, self.init, self.step,
                           use_max)  # fmt: skip
