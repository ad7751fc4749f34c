"""Reading the values darknet's head parsers share (``parser.c: parse_yolo, parse_gaussian_yolo,
parse_region``): ``anchors=`` pairs, positive counts, numbers stored as C ``float``, file paths.

Used by :mod:`darknetpy.model.heads.options` (``[yolo]``, ``[Gaussian_yolo]``) and
:mod:`darknetpy.model.heads.region` (``[region]``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..cfg import CfgWarning, Options

__all__ = ["MAX_COUNT", "anchor_pairs", "c_float", "check_positive", "path_option"]

MAX_COUNT = 1 << 20  # classes / anchors beyond this cannot fit any real network


def anchor_pairs(
    opts: Options, count: int, *, overflow_is_error: bool
) -> tuple[tuple[float, float], ...]:
    """``count`` anchors from ``anchors=``; a missing value is 0.5, darknet's initial bias."""
    values = list(opts.get_floats("anchors", ()))
    where = opts.where(next((e for e in opts.section.entries if e.key == "anchors"), None))
    if len(values) > 2 * count:
        if overflow_is_error:
            raise opts.error(
                f"anchors= has {len(values)} values but num={count} allows {2 * count}; darknet "
                "writes past its anchor buffer here: set num= to the number of (w, h) pairs",
                "anchors",
            )
        warnings.warn(
            f"{where}: anchors= has {len(values)} values but num={count}; darknet reads only "
            "the first "
            f"{2 * count}: set num= to the number of (w, h) pairs",
            CfgWarning,
            stacklevel=4,
        )
        values = values[: 2 * count]
    elif len(values) < 2 * count:
        warnings.warn(
            f"{where}: anchors= has {len(values)} values but num={count} needs {2 * count}; "
            "darknet "
            "uses 0.5 for the missing ones",
            CfgWarning,
            stacklevel=4,
        )
        values += [0.5] * (2 * count - len(values))
    f32 = [c_float(v) for v in values]  # darknet keeps biases as float
    return tuple((f32[2 * i], f32[2 * i + 1]) for i in range(count))


def check_positive(opts: Options, key: str, value: int) -> None:
    """A count (``classes=``, ``num=``) is at least 1 and at most :data:`MAX_COUNT`."""
    if value < 1:
        raise opts.error(f"{key}={value} must be at least 1", key)
    if value > MAX_COUNT:
        raise opts.error(f"{key}={value} is implausibly large (at most {MAX_COUNT})", key)


def path_option(opts: Options, key: str) -> Path | None:
    """The file ``key=`` names (``tree=``, ``map=``), None without the key."""
    return Path(opts.get_str(key)) if opts.has(key) else None


def c_float(value: float) -> float:
    """A cfg number as darknet stores it (a C ``float``; beyond its range: +-inf)."""
    with np.errstate(over="ignore"):
        return float(np.float32(value))
