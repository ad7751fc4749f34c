"""``box.c: dx_box_iou``: the analytic gradient of the IoU-family box loss.

The IoU, GIoU, DIoU and CIoU measures themselves are in :mod:`darknetpy.model.boxes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Edges = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # top, bottom, left, right


def _edges(box: torch.Tensor) -> Edges:
    """(top, bottom, left, right) of (..., 4) x, y, w, h boxes, as ``dx_box_iou`` derives them."""
    x, y, w, h = box.unbind(-1)
    return y - h / 2, y + h / 2, x - w / 2, x + w / 2


@dataclass(frozen=True)
class _Overlap:
    """``dx_box_iou``'s intersection, union and enclosing box, and the partials of intersection,
    union and enclosing area with respect to each predicted edge (keys ``t``, ``b``, ``l``,
    ``r``)."""

    i_w: torch.Tensor
    i_h: torch.Tensor
    inter: torch.Tensor
    union: torch.Tensor
    g_c: torch.Tensor
    d_inter: dict[str, torch.Tensor]
    d_union: dict[str, torch.Tensor]
    d_c: dict[str, torch.Tensor]


def _overlap(pred: Edges, truth: Edges) -> _Overlap:
    """The first half of ``dx_box_iou``: ``pred`` edges already ordered (top <= bottom, left <=
    right); the intersection is not clamped."""
    p_t, p_b, p_l, p_r = pred
    t_t, t_b, t_l, t_r = truth
    zero = torch.zeros_like(p_t)
    area = (p_b - p_t) * (p_r - p_l)
    i_h = torch.fmin(p_b, t_b) - torch.fmax(p_t, t_t)
    i_w = torch.fmin(p_r, t_r) - torch.fmax(p_l, t_l)
    inter = i_w * i_h
    union = area + (t_b - t_t) * (t_r - t_l) - inter
    g_cw = torch.fmax(p_r, t_r) - torch.fmin(p_l, t_l)
    g_ch = torch.fmax(p_b, t_b) - torch.fmin(p_t, t_t)
    d_area = {"t": -(p_r - p_l), "b": p_r - p_l, "l": -(p_b - p_t), "r": p_b - p_t}
    d_inter = {
        "t": torch.where(p_t > t_t, -i_w, zero),
        "b": torch.where(p_b < t_b, i_w, zero),
        "l": torch.where(p_l > t_l, -i_h, zero),
        "r": torch.where(p_r < t_r, i_h, zero),
    }
    d_c = {
        "t": torch.where(p_t < t_t, -g_cw, zero),
        "b": torch.where(p_b > t_b, g_cw, zero),
        "l": torch.where(p_l < t_l, -g_ch, zero),
        "r": torch.where(p_r > t_r, g_ch, zero),
    }
    d_union = {k: d_area[k] - d_inter[k] for k in d_area}
    return _Overlap(i_w, i_h, inter, union, g_cw * g_ch, d_inter, d_union, d_c)


def dx_box_iou(pred: torch.Tensor, truth: torch.Tensor, kind: str) -> torch.Tensor:
    """``box.c: dx_box_iou``: Darknet's analytic (dx, dy, dw, dh) of the IoU-family loss.

    ``pred`` and ``truth`` are (..., 4) x, y, w, h in network-input units. The intersection is not
    clamped; GIoU/DIoU/CIoU replace the IoU term by their extra term alone when the boxes do not
    overlap; dw and dh carry no ½. ``kind`` is ``giou``, ``diou``, ``ciou`` or anything else (IoU).
    """
    top, bot, left, right = _edges(pred)
    ordered = (
        torch.fmin(top, bot),
        torch.fmax(top, bot),
        torch.fmin(left, right),
        torch.fmax(left, right),
    )
    ov = _overlap(ordered, _edges(truth))
    zero = torch.zeros_like(top)
    union, inter = ov.union, ov.inter
    p = {
        k: torch.where(
            union > 0,
            (union * ov.d_inter[k] - inter * ov.d_union[k]) / (union * union),
            zero,
        )
        for k in ov.d_union
    }
    p["t"] = torch.where(top < bot, p["t"], p["b"])  # "correct corner selection" for flipped boxes
    p["l"] = torch.where(left < right, p["l"], p["r"])
    apart = (ov.i_w <= 0) | (ov.i_h <= 0)
    if kind == "giou":
        for k, value in p.items():
            term = (ov.g_c * ov.d_union[k] - union * ov.d_c[k]) / (ov.g_c * ov.g_c)
            p[k] = torch.where(apart, term, torch.where(ov.g_c > 0, value + term, value))
    grad = torch.stack((p["l"] + p["r"], p["t"] + p["b"], p["r"] - p["l"], p["b"] - p["t"]), -1)
    if kind in ("diou", "ciou"):
        terms = _diou_terms(pred, truth, inter / union, kind == "ciou")
        c2_positive = terms[..., 4:] > 0
        grad = torch.where(c2_positive, grad + terms[..., :4], grad)
        grad = torch.where(apart.unsqueeze(-1), terms[..., :4], grad)
    return grad


def _diou_terms(
    pred: torch.Tensor, truth: torch.Tensor, iou: torch.Tensor, ciou: bool
) -> torch.Tensor:
    """The DIoU (and CIoU aspect-ratio) part of ``dx_box_iou``: (..., 5) dx, dy, dw, dh and the
    squared enclosing diagonal c² (the terms apply only where it is > 0)."""
    px, py, pw, ph = pred.unbind(-1)
    tx, ty, tw, th = truth.unbind(-1)
    top, bot, left, right = _edges(pred)
    t_t, t_b, t_l, t_r = _edges(truth)
    p_t, p_b = torch.fmin(top, bot), torch.fmax(top, bot)
    p_l, p_r = torch.fmin(left, right), torch.fmax(left, right)
    c_w = torch.fmax(right, t_r) - torch.fmin(left, t_l)
    c_h = torch.fmax(bot, t_b) - torch.fmin(top, t_t)
    c2 = c_w * c_w + c_h * c_h
    c4 = c2 * c2
    dist2 = (px - tx) ** 2 + (py - ty) ** 2
    beyond_r, beyond_l = (p_r > t_r).to(px), (p_l < t_l).to(px)
    beyond_b, beyond_t = (p_b > t_b).to(px), (p_t < t_t).to(px)
    dx = (2 * (tx - px) * c2 - 2 * c_w * (beyond_r - beyond_l) * dist2) / c4
    dy = (2 * (ty - py) * c2 - 2 * c_h * (beyond_b - beyond_t) * dist2) / c4
    dw = 2 * c_w * (0.5 * beyond_r + 0.5 * beyond_l) * dist2 / c4
    dh = 2 * c_h * (0.5 * beyond_b + 0.5 * beyond_t) * dist2 / c4
    if ciou:
        diff = torch.atan(tw / th) - torch.atan(pw / ph)
        v = 4 / (math.pi * math.pi) * diff * diff
        alpha = v / (1 - iou + v + 0.000001)
        dw = dw + alpha * (8 / (math.pi * math.pi) * diff * ph)
        dh = dh + alpha * (-8 / (math.pi * math.pi) * diff * pw)
    return torch.stack((dx, dy, dw, dh, c2), dim=-1)


def fix_nan_inf(x: torch.Tensor) -> torch.Tensor:
    """``yolo_layer.c: fix_nan_inf``: NaN and ±inf become 0."""
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))
