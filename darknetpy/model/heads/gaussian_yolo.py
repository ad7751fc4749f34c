"""``[Gaussian_yolo]``: YOLOv3 with a Gaussian per box coordinate (``gaussian_yolo_layer.c``)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from ..cfg import Options
from .base import Candidates
from .darknet_head import DarknetHead, by_cell, grid_cells, precise
from .darknet_loss import cached_spec, gaussian_yolo_loss, yolo_spec
from .options import GaussianYoloOptions, parse_gaussian_yolo_options
from .records import HeadLoss
from .yolo import scale_xy
from .yolo_box import exp_times_double, exp_times_traceable, get_yolo_box, shift_yolo_point

__all__ = ["GaussianYoloLayer"]


class GaussianYoloLayer(DarknetHead):
    """``[Gaussian_yolo]``: darknet's ``l.output`` (``forward_gaussian_yolo_layer``).

    Per anchor slot the ``9 + classes`` channels are x, σx, y, σy, w, σw, h, σh, objectness,
    classes. The logistic applies to all but w and h; x and y are then scaled by ``scale_x_y``.
    """

    darknet_name: ClassVar[str] = "Gaussian_yolo"
    options: GaussianYoloOptions

    @classmethod
    def parse(cls, opts: Options) -> GaussianYoloOptions:
        """``parser.c: parse_gaussian_yolo``."""
        return parse_gaussian_yolo_options(opts)

    @classmethod
    def formula(cls, o: GaussianYoloOptions) -> str:
        return f"classes={o.classes} with {o.num} masks ({o.num}*({o.classes}+9))"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.options
        n, _, h, w = x.shape
        v = x.view(n, o.num, o.entries, h, w)
        s = torch.sigmoid(v)
        parts = (
            scale_xy(s[:, :, 0:1], o.scale_x_y),
            s[:, :, 1:2],  # x, σx
            scale_xy(s[:, :, 2:3], o.scale_x_y),
            s[:, :, 3:4],  # y, σy
            v[:, :, 4:5],
            s[:, :, 5:6],
            v[:, :, 6:7],
            s[:, :, 7:],  # w, σw, h, σh, obj, classes
        )
        return torch.cat(parts, 2).view(x.shape)

    def decode(self, output: torch.Tensor, net_size: tuple[int, int], *,
               traceable: bool = False) -> Candidates:
        """``get_gaussian_yolo_box`` for every cell and slot; prob = objectness x class x
        (1 - mean(σx, σy, σw, σh)) (``get_gaussian_yolo_detections``)."""
        o = self.options
        _, _, h, w = output.shape
        v = by_cell(precise(output, traceable), o.num, o.entries)
        col, row = grid_cells(h, w, o.num, v)
        anchors = torch.tensor(o.masked_anchors, dtype=v.dtype, device=v.device).reshape(-1, 2)
        anchors = anchors.repeat(h * w, 1)
        exp_times = exp_times_traceable if traceable else exp_times_double
        x, y, bw, bh = get_yolo_box(v[..., 0], v[..., 2], v[..., 4], v[..., 6], col, row,
                                    anchors[:, 0], anchors[:, 1], (w, h), net_size,
                                    exp_times=exp_times)
        x, y = shift_yolo_point(x, y, bw, bh, o.yolo_point.value)
        obj = v[..., 8]
        sigma = v[..., 1] + v[..., 3] + v[..., 5] + v[..., 7]
        if traceable:
            scores = obj.unsqueeze(-1) * v[..., 9:] * (1 - sigma / 4).unsqueeze(-1)
        else:  # darknet: (1.0 - uc_aver) in double, uc_aver = float(sum / 4.0)
            mean = (sigma.double() / 4.0).float()
            scores = ((obj.unsqueeze(-1) * v[..., 9:]).double()
                      * (1.0 - mean.double()).unsqueeze(-1)).float()
        return Candidates(torch.stack((x, y, bw, bh), -1), obj, scores, v[..., [1, 3, 5, 7]])

    def darknet_loss(self, z: torch.Tensor, truth: torch.Tensor | np.ndarray, *,
                     input_size: tuple[int, int], seen: int) -> HeadLoss:
        del seen
        spec = cached_spec(self.options, yolo_spec)
        return gaussian_yolo_loss(z, truth, spec, input_size=input_size, index=self.index)
