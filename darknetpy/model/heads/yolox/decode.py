"""YOLOX's anchor-free decode: one prediction per grid cell of each level.

Reproduces ``YOLOXHead.get_output_and_grid`` (training) and ``YOLOXHead.decode_outputs``
(inference) of Megvii's ``yolox/models/yolo_head.py``. Each level's tensor is ``(N, 5 + nc, H, W)``
with the channels box (4: x, y offsets and log w, h in cells), objectness (1) and classes (nc),
which is what ``torch.cat([reg_output, obj_output, cls_output], 1)`` is in the reference.
Anchors run level by level, row-major inside a level (``y * W + x``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["anchor_points", "decode_boxes", "decode_yolox", "flatten_levels"]


def flatten_levels(level_outputs: Sequence[Tensor]) -> Tensor:
    """Per-level ``(N, C, H, W)`` maps as one ``(N, A, C)`` tensor, ``A = sum(H * W)``.

    The reference's ``output.view(N, 1, C, H, W).permute(0, 1, 3, 4, 2).reshape(N, H * W, C)``
    then ``torch.cat(outputs, 1)`` (``get_output_and_grid`` / ``forward``).
    """
    return torch.cat([x.flatten(2).transpose(1, 2) for x in level_outputs], dim=1)


def anchor_points(
    shapes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Cell indices ``(A, 2)`` as (x, y) and the stride ``(A,)`` of every anchor.

    The reference's ``grid`` (``meshgrid`` of ``arange(H)``, ``arange(W)``, stacked as (xv, yv))
    and ``expanded_strides``, levels concatenated.
    """
    grids, stride_rows = [], []
    for (h, w), stride in zip(shapes, strides, strict=True):
        yv, xv = torch.meshgrid(
            torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij"
        )
        grids.append(torch.stack((xv, yv), 2).reshape(-1, 2))
        stride_rows.append(torch.full((h * w,), float(stride), device=device))
    return torch.cat(grids).to(dtype), torch.cat(stride_rows).to(dtype)


def decode_boxes(raw: Tensor, grid: Tensor, stride: Tensor) -> Tensor:
    """Box logits ``(..., A, 4)`` to (cx, cy, w, h) in input pixels.

    ``cxcy = (xy + grid) * stride`` and ``wh = exp(wh) * stride``, as ``get_output_and_grid``.
    """
    s = stride[:, None]
    return torch.cat([(raw[..., 0:2] + grid) * s, torch.exp(raw[..., 2:4]) * s], dim=-1)


def decode_yolox(level_outputs: Sequence[Tensor], strides: Sequence[int]) -> Tensor:
    """YOLOX's inference output ``(N, A, 5 + nc)``: cx, cy, w, h in input pixels, sigmoid
    objectness and sigmoid class scores (``YOLOXHead.forward`` in eval mode, then
    ``decode_outputs``).

    Args:
        level_outputs: one raw ``(N, 5 + nc, H, W)`` map per level: box (4), objectness, classes.
        strides: the input-pixel stride of each level (8, 16, 32 in YOLOX).

    Returns:
        The decoded anchors, level by level, row-major.
    """
    flat = flatten_levels(level_outputs)
    shapes = [(int(x.shape[-2]), int(x.shape[-1])) for x in level_outputs]
    grid, stride = anchor_points(shapes, strides, device=flat.device, dtype=flat.dtype)
    return torch.cat([decode_boxes(flat[..., :4], grid, stride), flat[..., 4:].sigmoid()], dim=-1)
