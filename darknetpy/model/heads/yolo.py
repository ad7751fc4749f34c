"""``[yolo]``: the head of YOLOv3/v4 (``yolo_layer.c``)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from ..cfg import Options
from .base import Candidates
from .darknet_head import DarknetHead, by_cell, grid_cells, precise
from .darknet_loss import cached_spec, yolo_loss, yolo_spec
from .options import YoloOptions, parse_yolo_options
from .records import HeadLoss
from .yolo_box import exp_times_double, exp_times_traceable, get_yolo_box

__all__ = ["YoloLayer", "scale_xy"]


def scale_xy(xy: torch.Tensor, scale: float) -> torch.Tensor:
    """``x * s - 0.5 * (s - 1)`` in float32 (``forward_yolo_layer``'s ``scal_add_cpu``)."""
    if scale == 1.0:
        return xy  # darknet's x * 1 + (-0.0) is x exactly
    beta = float(np.float32(-0.5 * float(np.float32(np.float32(scale) - np.float32(1)))))
    return xy * scale + beta


class YoloLayer(DarknetHead):
    """``[yolo]``: darknet's ``l.output`` (``yolo_layer.c: forward_yolo_layer``).

    new_coords=0 applies the logistic to x, y, objectness and classes, *not* to w and h;
    new_coords=1 applies none (the conv before it is logistic). Then x and y become
    ``s * x - (s - 1) / 2`` with ``s = scale_x_y``. Channel ``a * (5 + classes) + e`` of anchor slot
    ``a`` holds entry ``e`` (x, y, w, h, objectness, classes).
    """

    darknet_name: ClassVar[str] = "yolo"
    options: YoloOptions

    @classmethod
    def parse(cls, opts: Options) -> YoloOptions:
        """``parser.c: parse_yolo``."""
        return parse_yolo_options(opts)

    @classmethod
    def formula(cls, o: YoloOptions) -> str:
        return f"classes={o.classes} with {o.num} masks ({o.num}*({o.classes}+5))"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.options
        n, _, h, w = x.shape
        v = x.view(n, o.num, o.entries, h, w)
        if o.new_coords:
            xy, rest = v[:, :, :2], v[:, :, 2:]
        else:
            xy = torch.sigmoid(v[:, :, :2])
            rest = torch.cat((v[:, :, 2:4], torch.sigmoid(v[:, :, 4:])), 2)
        return torch.cat((scale_xy(xy, o.scale_x_y), rest), 2).view(x.shape)

    def decode(self, output: torch.Tensor, net_size: tuple[int, int], *,
               traceable: bool = False) -> Candidates:
        """``yolo_layer.c: get_yolo_box`` for every cell and slot; prob = objectness x class."""
        o = self.options
        _, _, h, w = output.shape
        v = by_cell(precise(output, traceable), o.num, o.entries)
        col, row = grid_cells(h, w, o.num, v)
        anchors = torch.tensor(o.masked_anchors, dtype=v.dtype, device=v.device).reshape(-1, 2)
        anchors = anchors.repeat(h * w, 1)
        box = get_yolo_box(v[..., 0], v[..., 1], v[..., 2], v[..., 3], col, row, anchors[:, 0],
                           anchors[:, 1], (w, h), net_size, new_coords=bool(o.new_coords),
                           exp_times=exp_times_traceable if traceable else exp_times_double)
        obj = v[..., 4]
        return Candidates(torch.stack(box, -1), obj, obj.unsqueeze(-1) * v[..., 5:])

    def darknet_loss(self, z: torch.Tensor, truth: torch.Tensor | np.ndarray, *,
                     input_size: tuple[int, int], seen: int) -> HeadLoss:
        del seen
        spec = cached_spec(self.options, yolo_spec)
        return yolo_loss(z, truth, spec, input_size=input_size, index=self.index)
