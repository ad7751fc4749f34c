"""What a training run returns (:class:`TrainResult`), shared by the Darknet and the recipe loops."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..model.network import Network

__all__ = ["TrainResult"]


@dataclass(frozen=True)
class TrainResult:
    """What a run did. ``weights``: ``_final`` (``_last`` when interrupted)."""

    iteration: int
    weights: Path | None
    backup: Path
    best_map: float | None
    losses: tuple[tuple[int, float], ...]  # (iteration, avg loss), the resumed history included
    maps: tuple[tuple[int, float], ...]  # (iteration, mAP@0.5)
    interrupted: bool
    seconds: float
    images_per_second: float
    network: Network = field(repr=False, compare=False)
    skipped_updates: int = 0  # updates the fp16 gradient scaler skipped (inf/nan gradients)
