"""argparse ``type=`` converters shared by the command groups: a bad value is one usage line."""

from __future__ import annotations

import argparse

__all__ = ["add_backend_argument", "positive_int", "probability"]


def add_backend_argument(p: argparse.ArgumentParser) -> None:
    """``--backend``: what runs the network's forward pass (darknetpy.inference.backends)."""
    p.add_argument(
        "--backend", choices=("torch", "onnxruntime", "openvino", "auto"), default=None,
        help="what runs the network (preparation, decoding and NMS stay darknetpy's): torch, "
        "onnxruntime or openvino (CPU, float32; exported once to $DARKNETPY_CACHE or "
        "~/.cache/darknetpy), auto (the fastest installed here, measured once and cached; torch "
        "on CUDA); default: $DARKNETPY_BACKEND, else auto",
    )


def positive_int(text: str) -> int:
    """An integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: expected a positive integer")
    return value


def probability(text: str) -> float:
    """A number within [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: expected a number between 0 and 1")
    return value
