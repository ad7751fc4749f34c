"""Darknet's box decode, written once for detection, export and the loss.

``yolo_layer.c: get_yolo_box`` (and its twins ``gaussian_yolo_layer.c: get_gaussian_yolo_box``,
``region_layer.c: get_region_box``)::

    x = (col + out_x) / grid_w          w = exp(out_w) * anchor_w / size_w     (new_coords=0)
    y = (row + out_y) / grid_h          w = out_w * out_w * 4 * anchor_w / size_w   (new_coords=1)

``size`` is the network input for ``[yolo]``/``[Gaussian_yolo]`` (anchors in pixels) and the grid
for ``[region]`` (anchors in cells). The functions only use ``+ - * /`` and the ``exp_times``
policy, so they run on NumPy arrays and on tensors alike. The one place the three users differ is
how ``exp(t) * anchor / size`` is evaluated, and each keeps its own arithmetic:

* :func:`exp_times_double`: Darknet's C evaluates ``exp`` in double and stores a float
  (detection: boxes stay finite for large ``t`` whenever the result fits a float);
* :func:`exp_times_float`: in the tensor's own dtype (the loss, as it always computed it);
* :func:`exp_times_traceable`: ``exp(t + log(anchor / size))`` (ONNX export: one traceable graph,
  finite wherever the product fits a float).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

__all__ = [
    "ExpTimes",
    "exp_times_double",
    "exp_times_float",
    "exp_times_traceable",
    "get_yolo_box",
    "shift_yolo_point",
]

T = TypeVar("T", np.ndarray, torch.Tensor)
ExpTimes = Callable[[Any, Any, Any], Any]  # (t, anchor, size) -> exp(t) * anchor / size


def exp_times_double(t: T, anchor: Any, size: Any) -> T:
    """``exp(t) * anchor / size`` in double, returned in ``t``'s float dtype (Darknet's C)."""
    if isinstance(t, torch.Tensor):
        anchor = torch.as_tensor(anchor, device=t.device)
        return (torch.exp(t.double()) * anchor.double() / size).to(t.dtype)
    with np.errstate(over="ignore"):
        wide = np.exp(t.astype(np.float64)) * np.asarray(anchor, np.float64) / size
        return wide.astype(t.dtype)


def exp_times_float(t: torch.Tensor, anchor: Any, size: Any) -> torch.Tensor:
    """``exp(t) * anchor / size`` in ``t``'s dtype (what the loss's deltas are computed from)."""
    return torch.exp(t) * anchor / size


def exp_times_traceable(t: torch.Tensor, anchor: torch.Tensor, size: Any) -> torch.Tensor:
    """``exp(t + log(anchor / size))``: traceable to ONNX, finite wherever the product fits a
    float."""
    return torch.exp(t + torch.log(anchor / size))


def get_yolo_box(
    out_x: T, out_y: T, out_w: T, out_h: T, col: Any, row: Any, anchor_w: Any, anchor_h: Any,
    grid: tuple[int, int], size: tuple[Any, Any], *, exp_times: ExpTimes, new_coords: bool = False,
) -> tuple[T, T, T, T]:
    """``get_yolo_box`` / ``get_region_box``: centre x, y and width, height relative to the input.

    Args:
        out_x, out_y: the (activated) offsets in the cell; out_w, out_h: the size outputs.
        col, row: the cell of each value; anchor_w, anchor_h: its anchor (pixels, or cells for
            ``[region]``); grid: the head's (width, height) in cells; size: what the anchors are
            divided by (the network input, or the grid for ``[region]``).
        exp_times: how ``exp(t) * anchor / size`` is evaluated (see the module docstring).
        new_coords: ``[yolo] new_coords=1`` (sizes ``(2 out)^2 * anchor``, no exp).
    """
    w, h = grid
    x = (col + out_x) / w
    y = (row + out_y) / h
    if new_coords:
        bw = out_w * out_w * 4 * anchor_w / size[0]
        bh = out_h * out_h * 4 * anchor_h / size[1]
    else:
        bw = exp_times(out_w, anchor_w, size[0])
        bh = exp_times(out_h, anchor_h, size[1])
    return x, y, bw, bh


def shift_yolo_point(x: T, y: T, w: T, h: T, point: str) -> tuple[T, T]:
    """``[Gaussian_yolo] yolo_point=``: the predicted point to the box centre
    (``gaussian_yolo_layer.c: get_gaussian_yolo_box``)."""
    if point == "left_top":
        return x + w / 2, y + h / 2
    if point == "right_bottom":
        return x - w / 2, y - h / 2
    return x, y
