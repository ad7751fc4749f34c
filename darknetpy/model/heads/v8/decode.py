"""The YOLOv8 head's read-out: per-level raw maps -> decoded boxes and class scores.

A level's raw map is ``(N, 4 * reg_max + nc, H, W)``: the box logits first (side-major: channel
``side * reg_max + bin`` for sides l, t, r, b), then the class logits. Anchors are ordered level by
level and row-major within a level, as ultralytics concatenates them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .geometry import anchor_points, dfl_expectation, dist_to_xywh

__all__ = ["decode_v8", "dfl_distances", "flatten_levels", "level_shapes", "split_levels"]


def level_shapes(level_outputs: Sequence[torch.Tensor]) -> list[tuple[int, int]]:
    """``(H, W)`` of each level map."""
    return [(int(x.shape[-2]), int(x.shape[-1])) for x in level_outputs]


def flatten_levels(level_outputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-level ``(N, C, H, W)`` maps -> ``(N, C, A)``, anchors level by level, row-major
    (``nn/modules/head.py: Detect.forward_head``'s concatenation). Channels stay the middle
    axis: every per-anchor operation then runs on contiguous rows of A."""
    n, c = level_outputs[0].shape[:2]
    return torch.cat([x.reshape(n, c, -1) for x in level_outputs], 2)


def split_levels(
    level_outputs: Sequence[torch.Tensor], reg_max: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-level maps -> box logits ``(N, 4 * reg_max, A)`` and class logits ``(N, nc, A)``, each
    contiguous (``Detect.forward_head``'s ``boxes`` and ``scores``). Splitting each level before
    concatenating keeps the DFL softmax on contiguous memory and the backward to one copy."""
    n = level_outputs[0].shape[0]
    box = 4 * reg_max
    parts = [x.reshape(n, x.shape[1], -1).split((box, x.shape[1] - box), 1) for x in level_outputs]
    return torch.cat([b for b, _ in parts], 2), torch.cat([c for _, c in parts], 2)


def dfl_distances(box_logits: torch.Tensor, reg_max: int) -> torch.Tensor:
    """``(N, 4 * reg_max, A)`` box logits -> ``(N, A, 4)`` distances ``(l, t, r, b)`` in grid
    units: the DFL expectation per side (``nn/modules/block.py: DFL.forward``)."""
    n, _, a = box_logits.shape
    return dfl_expectation(box_logits.reshape(n, 4, reg_max, a), 2).transpose(1, 2)


def decode_v8(
    level_outputs: Sequence[torch.Tensor], strides: Sequence[float], reg_max: int = 16
) -> torch.Tensor:
    """Decoded predictions ``(N, A, 4 + nc)``: ``cx, cy, w, h`` in input pixels, then sigmoid class
    scores (``nn/modules/head.py: Detect._inference``, which returns the transpose,
    ``(N, 4 + nc, A)``).

    Each side's distance is the DFL expectation over ``reg_max`` bins, in grid units; the box is
    built around the cell centre and scaled by the level's stride.
    """
    box_logits, cls_logits = split_levels(level_outputs, reg_max)
    points, stride = anchor_points(
        level_shapes(level_outputs), strides, dtype=box_logits.dtype, device=box_logits.device
    )
    boxes = dist_to_xywh(dfl_distances(box_logits, reg_max), points) * stride
    return torch.cat((boxes, cls_logits.sigmoid().transpose(1, 2)), -1)
