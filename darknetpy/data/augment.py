"""Training augmentation settings and the random geometry of one image (no torch, no model).

Mirrors the per-image part of ``data.c: load_data_detection`` [OpenCV version] (draws, crop
rectangle, move-to-corner rule), ``utils.c: rand_scale, rand_precalc_random, rand_int`` and
``parser.c: parse_net_options`` (mixup code).

Every function is pure; randomness comes from an explicit ``np.random.Generator``. Arithmetic that
Darknet does in C ``float`` with truncating ``int`` conversions is done the same way (float32,
truncation toward zero), so crop offsets come out as in Darknet for the same draws. Darknet's own
random stream (``rand()``) is not reproduced; the distributions are.

One training image, in Darknet's order (spec §8.3-8.7;
:func:`darknetpy.data.dataset.augment_detection` chains them):

1. :func:`draw_augmentation`: jitter uniforms, flip coin, hue/saturation/exposure, blur mode, noise.
2. :func:`jitter_crop`: crop rectangle (jitter, ``resize``, training ``letter_box``, mosaic's
   move-to-corner rule, invalid-crop fallback).
3. :func:`darknetpy.data.truth.fill_truth_detection`: shuffle, ``correct_boxes``, truncate to
   ``max``, filter; then :func:`limit_blur`.
4. :func:`darknetpy.data.pixels.augment_image`: crop with mean-colour padding,
   ``cv::resize(INTER_LINEAR)``, flip, HSV in uint8, blur, non-negative Gaussian noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

import numpy as np

from ..errors import CfgError

__all__ = [
    "CORNER_RULES",
    "DETECTION_MODES",
    "AugmentConfig",
    "Crop",
    "Draws",
    "HeadAugment",
    "detection_mode",
    "draw_augmentation",
    "jitter_crop",
    "limit_blur",
    "mixup_code",
    "rand_int",
    "rand_precalc_random",
    "rand_scale",
    "rand_uniform",
]

F32 = np.float32

#: What ``load_data_detection`` does for each (normalised) mixup code.
DETECTION_MODES = MappingProxyType({0: "single image", 1: "mixup", 3: "mosaic"})


def mixup_code(mixup: int, cutmix: bool, mosaic: bool) -> int:
    """``net->mixup`` as ``parse_net_options`` sets it: 4 mosaic+cutmix, 2 cutmix, 3 mosaic, else mixup."""
    if mosaic and cutmix:
        return 4
    if cutmix:
        return 2
    if mosaic:
        return 3
    return mixup


def detection_mode(code: int) -> int:
    """``load_data_detection``: cutmix is unsupported for detection (2 -> 0, 4 -> 3)."""
    return {2: 0, 4: 3}.get(code, code)


class NetAugment(Protocol):
    """What augmentation reads from ``[net]``: :class:`darknetpy.model.netconfig.NetConfig` fits (the data
    stage never imports the model)."""

    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def hue(self) -> float: ...
    @property
    def saturation(self) -> float: ...
    @property
    def exposure(self) -> float: ...
    @property
    def flip(self) -> bool: ...
    @property
    def blur(self) -> int: ...
    @property
    def gaussian_noise(self) -> int: ...
    @property
    def mixup(self) -> int: ...
    @property
    def cutmix(self) -> bool: ...
    @property
    def mosaic(self) -> bool: ...
    @property
    def mosaic_bound(self) -> bool: ...
    @property
    def letter_box(self) -> bool: ...


class HeadAugment(Protocol):
    """What augmentation reads from a detection layer's options: the records of
    :mod:`darknetpy.model.heads.options` and :mod:`darknetpy.model.heads.region` all fit."""

    @property
    def classes(self) -> int: ...
    @property
    def jitter(self) -> float: ...
    @property
    def resize(self) -> float: ...
    @property
    def max_boxes(self) -> int: ...


@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    """The augmentation settings of a detection training run (Darknet's ``load_args``).

    Built by the trainer with :meth:`from_net` from the cfg's ``[net]`` and the LAST
    ``[yolo]``/``[region]`` layer (``classes``, ``jitter``, ``resize``, ``max``).
    ``saturation``/``exposure`` of 0 become 1, as ``load_thread``.

    Attributes:
        width, height: the cfg's network size (each iteration may use another, see the loader).
        classes: classes of the last detection layer; labels with a larger id are dropped.
        jitter, resize: crop jitter and scale range of the last detection layer.
        hue, saturation, exposure: colour jitter ranges (``[net]``).
        flip: mirror half of the images.
        blur: 0 off; 1 blur background; N > 1 blur everything with kernel (N/2)*2+1.
        gaussian_noise: noise sigma (0 off), clamped to [0, 127].
        mixup, cutmix, mosaic: the ``[net]`` keys; see :func:`mixup_code`.
        mosaic_bound: clip mosaic boxes to their own quadrant.
        letter_box: keep the aspect ratio when cropping (incompatible with mosaic).
        max_boxes: ``max`` of the last detection layer (truth slots per image).
    """

    width: int
    height: int
    classes: int
    jitter: float = 0.2
    resize: float = 1.0
    hue: float = 0.0
    saturation: float = 1.0
    exposure: float = 1.0
    flip: bool = True
    blur: int = 0
    gaussian_noise: int = 0
    mixup: int = 0
    cutmix: bool = False
    mosaic: bool = False
    mosaic_bound: bool = False
    letter_box: bool = False
    max_boxes: int = 200

    def __post_init__(self) -> None:
        if self.saturation == 0:
            object.__setattr__(self, "saturation", 1.0)
        if self.exposure == 0:
            object.__setattr__(self, "exposure", 1.0)
        if self.width < 1 or self.height < 1 or self.classes < 1 or self.max_boxes < 1:
            raise CfgError(
                f"augmentation needs width, height, classes and max >= 1, got width={self.width} "
                f"height={self.height} classes={self.classes} max={self.max_boxes}"
            )
        if self.mode not in DETECTION_MODES:
            raise CfgError(
                f"[net] mixup={self.mixup} is not supported for detection; use mixup=1, mosaic=1 "
                f"or neither (modes: {dict(DETECTION_MODES)})"
            )
        if self.mode == 3 and self.letter_box:
            raise CfgError(
                "[net] letter_box=1 and mosaic=1 cannot be combined (Darknet: 'Combination: "
                "letter_box=1 & mosaic=1 - isn't supported'); remove one of them"
            )

    @classmethod
    def from_net(cls, net: NetAugment, head: HeadAugment) -> AugmentConfig:
        """The settings ``detector.c: train_detector`` puts in ``load_args``: ``[net]``'s size
        and augmentation keys, and ``classes``, ``jitter``, ``resize``, ``max`` of ``head`` (the
        options of the network's last detection layer).

        Raises:
            CfgError: as the constructor (e.g. ``letter_box=1`` with ``mosaic=1``).
        """
        return cls(
            width=net.width,
            height=net.height,
            classes=head.classes,
            jitter=head.jitter,
            resize=head.resize,
            hue=net.hue,
            saturation=net.saturation,
            exposure=net.exposure,
            flip=net.flip,
            blur=net.blur,
            gaussian_noise=net.gaussian_noise,
            mixup=net.mixup,
            cutmix=net.cutmix,
            mosaic=net.mosaic,
            mosaic_bound=net.mosaic_bound,
            letter_box=net.letter_box,
            max_boxes=head.max_boxes,
        )

    @property
    def mode(self) -> int:
        """The normalised mixup code: 0 single images, 1 mixup, 3 mosaic (:data:`DETECTION_MODES`)."""
        return detection_mode(mixup_code(self.mixup, self.cutmix, self.mosaic))


# --------------------------------------------------------------------------- random helpers


def rand_int(rng: np.random.Generator, low: int, high: int) -> int:
    """``rand_int``: an integer in [low, high], both inclusive (bounds swapped if reversed)."""
    if high < low:
        low, high = high, low
    return int(rng.integers(low, high + 1))


def rand_uniform(rng: np.random.Generator, low: float, high: float) -> np.float32:
    """``rand_uniform_strong``: U(low, high) in float32 (bounds swapped if reversed)."""
    if high < low:
        low, high = high, low
    return F32(rng.random(dtype=np.float32) * (F32(high) - F32(low)) + F32(low))


def rand_scale(rng: np.random.Generator, s: float) -> np.float32:
    """``rand_scale``: U(1, s), inverted with probability 1/2."""
    scale = rand_uniform(rng, 1.0, s)
    if rng.integers(2):
        return scale
    return F32(1.0 / float(scale))


def rand_precalc_random(low: float, high: float, r: float) -> np.float32:
    """``rand_precalc_random``: ``r*(high-low) + low`` in float32 for a pre-drawn ``r`` in [0, 1]."""
    low, high = F32(low), F32(high)
    if high < low:
        low, high = high, low
    return F32(F32(r) * (high - low) + low)


def _add_trunc(base: int, value: np.float32) -> int:
    """C's ``int += float``: convert to float, add, truncate toward zero."""
    return int(F32(base) + F32(value))


# --------------------------------------------------------------------------- draws and crop


@dataclass(frozen=True)
class Draws:
    """The random decisions for one image (the ``augmentation_calculated`` block)."""

    r1: float
    r2: float
    r3: float
    r4: float
    resize_r1: float
    resize_r2: float
    flip: bool
    dhue: float
    dsat: float
    dexp: float
    blur: int
    gaussian_noise: int


def draw_augmentation(rng: np.random.Generator, aug: AugmentConfig) -> Draws:
    """Draw one image's augmentation as ``load_data_detection`` does."""
    resize_r1, resize_r2 = (float(v) for v in rng.random(2, dtype=np.float32))
    r1, r2, r3, r4 = (float(v) for v in rng.random(4, dtype=np.float32))
    flip = bool(rng.integers(2)) if aug.flip else False
    dhue = float(rand_uniform(rng, -aug.hue, aug.hue))
    dsat = float(rand_scale(rng, aug.saturation))
    dexp = float(rand_scale(rng, aug.exposure))
    blur = 0
    if aug.blur:
        blur = (0, 1, aug.blur)[rand_int(rng, 0, 2)]
    noise = aug.gaussian_noise if aug.gaussian_noise and rand_int(rng, 0, 1) == 1 else 0
    return Draws(r1, r2, r3, r4, resize_r1, resize_r2, flip, dhue, dsat, dexp, blur, noise)


@dataclass(frozen=True)
class Crop:
    """The source rectangle of one augmented image, in source pixels (may extend outside it).

    ``pleft``/``pright``/``ptop``/``pbot`` are the offsets Darknet computes (negative = padding),
    before mosaic's flip swap; ``swidth``/``sheight`` the rectangle's size; ``ow``/``oh`` the
    source size.
    """

    pleft: int
    pright: int
    ptop: int
    pbot: int
    swidth: int
    sheight: int
    ow: int
    oh: int
    flip: bool

    @property
    def is_full_image(self) -> bool:
        return (self.pleft, self.ptop, self.swidth, self.sheight) == (0, 0, self.ow, self.oh)

    def box_transform(self) -> tuple[np.float32, np.float32, np.float32, np.float32]:
        """``(dx, dy, sx, sy)`` as ``load_data_detection`` passes them to ``fill_truth_detection``."""
        sx = F32(F32(self.swidth) / F32(self.ow))
        sy = F32(F32(self.sheight) / F32(self.oh))
        dx = F32(F32(F32(self.pleft) / F32(self.ow)) / sx)
        dy = F32(F32(F32(self.ptop) / F32(self.oh)) / sy)
        return dx, dy, F32(1.0 / float(sx)), F32(1.0 / float(sy))


#: Mosaic's "move the image to the corner" rule: (flip, piece) -> (zero pleft, zero ptop).
#: Zeroing a side moves its offset to the opposite side (``pright += pleft, pleft = 0``).
CORNER_RULES = MappingProxyType(
    {
        (False, 0): (True, True), (False, 1): (False, True),
        (False, 2): (True, False), (False, 3): (False, False),
        (True, 0): (False, True), (True, 1): (True, True),
        (True, 2): (False, False), (True, 3): (True, False),
    }
)


def jitter_crop(
    ow: int, oh: int, w: int, h: int, draws: Draws, aug: AugmentConfig, corner: int | None = None
) -> Crop:
    """The crop rectangle of ``load_data_detection`` (spec §8.3, §8.9 move-to-corner).

    Args:
        ow, oh: source image size.
        w, h: network size of this iteration.
        draws: the image's :class:`Draws`.
        aug: jitter, resize, letter_box.
        corner: mosaic piece (0 TL, 1 TR, 2 BL, 3 BR) whose move-to-corner coin came up, else None.
    """
    dw = int(F32(ow) * F32(aug.jitter))
    dh = int(F32(oh) * F32(aug.jitter))
    resize = F32(aug.resize)
    resize_down = F32(1.0) / resize if resize > 1 else resize
    resize_up = F32(1.0) / resize if resize < 1 else resize
    min_rdw = int(F32(ow) * (F32(1) - F32(1) / resize_down) / F32(2))
    min_rdh = int(F32(oh) * (F32(1) - F32(1) / resize_down) / F32(2))
    max_rdw = int(F32(ow) * (F32(1) - F32(1) / resize_up) / F32(2))
    max_rdh = int(F32(oh) * (F32(1) - F32(1) / resize_up) / F32(2))

    pleft = int(rand_precalc_random(-dw, dw, draws.r1))
    pright = int(rand_precalc_random(-dw, dw, draws.r2))
    ptop = int(rand_precalc_random(-dh, dh, draws.r3))
    pbot = int(rand_precalc_random(-dh, dh, draws.r4))
    high_w, high_h = (0, 0) if resize < 1 else (max_rdw, max_rdh)
    pleft = _add_trunc(pleft, rand_precalc_random(min_rdw, high_w, draws.resize_r1))
    pright = _add_trunc(pright, rand_precalc_random(min_rdw, high_w, draws.resize_r2))
    ptop = _add_trunc(ptop, rand_precalc_random(min_rdh, high_h, draws.resize_r1))
    pbot = _add_trunc(pbot, rand_precalc_random(min_rdh, high_h, draws.resize_r2))

    if aug.letter_box:
        img_ar = F32(ow) / F32(oh)
        net_ar = F32(w) / F32(h)
        if img_ar / net_ar > 1:  # the crop must get taller
            delta = (F32(ow) / net_ar - F32(oh)) / F32(2)
            ptop, pbot = int(F32(ptop) - delta), int(F32(pbot) - delta)
        else:
            delta = (F32(oh) * net_ar - F32(ow)) / F32(2)
            pleft, pright = int(F32(pleft) - delta), int(F32(pright) - delta)

    if corner is not None:
        zero_left, zero_top = CORNER_RULES[(draws.flip, corner)]
        if zero_left:
            pright, pleft = pright + pleft, 0
        else:
            pleft, pright = pleft + pright, 0
        if zero_top:
            pbot, ptop = pbot + ptop, 0
        else:
            ptop, pbot = ptop + pbot, 0

    swidth = ow - pleft - pright
    sheight = oh - ptop - pbot
    if swidth <= 0 or sheight <= 0 or ow - pleft <= 0 or oh - ptop <= 0:
        # Darknet: "WARNING: invalid resize"; pright/pbot are NOT reset
        swidth, sheight, pleft, ptop = ow, oh, 0, 0
    return Crop(pleft, pright, ptop, pbot, swidth, sheight, ow, oh, draws.flip)


def limit_blur(blur: int, min_w_h: int) -> int:
    """``if (min_w_h/8 < blur && blur > 1) blur = min_w_h/8`` (integer division): no strong blur
    when an object is small (or when there is none: min_w_h = 0)."""
    if blur > 1 and min_w_h // 8 < blur:
        return min_w_h // 8
    return blur
