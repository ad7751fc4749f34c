"""The YOLOv8 (ultralytics 8.4.190) and YOLOX training augmentation (no torch, no model).

Pure functions on uint8 ``(H, W, 3)`` RGB images with an explicit ``np.random.Generator``; each
docstring names the reference function it reproduces.

* :mod:`.common`: pixel boxes in and darknetpy truth rows out, the 4-image mosaic layout both
  references share, the left-right flip.
* :mod:`.v8`: ``load_fit``, ``ultralytics_mosaic``, ``random_perspective``, ``box_candidates``,
  ``ultralytics_mixup``, ``random_hsv``, ``random_flip``, ``letterbox``.
* :mod:`.yolox`: ``fit_image``, ``yolox_mosaic``, ``yolox_random_affine``, ``yolox_mixup``,
  ``augment_hsv``, ``preproc``, ``train_transform``.
* :mod:`.sample`: :class:`ModernAugment` (settings, ``[net]`` keys), :class:`Stage` (close
  mosaic), :func:`build_modern_sample` (one image slot of a training iteration).
"""

from __future__ import annotations

from .sample import (
    KIND_DEFAULTS,
    KINDS,
    FitCache,
    ModernAugment,
    SampleSource,
    Stage,
    build_modern_sample,
    sample_index,
)

__all__ = [
    "FitCache",
    "KINDS",
    "KIND_DEFAULTS",
    "ModernAugment",
    "SampleSource",
    "Stage",
    "build_modern_sample",
    "sample_index",
]
