"""The per-box delta formulas of the three heads, each a pure function over K positions.

``yolo_layer.c``: ``delta_yolo_box``, ``delta_yolo_class``; ``gaussian_yolo_layer.c``:
``get_gaussian_yolo_box``, ``delta_gaussian_yolo_box``, ``delta_gaussian_yolo_class``;
``region_layer.c``: ``get_region_box``, ``delta_region_box``, ``delta_region_class``. All work in
float32, like the C code (float64 drifts further from it).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ...boxes import box_giou, box_iou
from ..yolo_box import exp_times_float, get_yolo_box, shift_yolo_point
from .iou_grad import dx_box_iou, fix_nan_inf
from .specs import FLT_MAX, YoloSpec, device_tensor

_FOCAL_ALPHA = 0.5  # delta_yolo_class / delta_region_class: alpha hard-coded to 0.5
_SIGMA_CONST = 0.3  # delta_gaussian_yolo_box
_EPSI = float(np.float32(1e-9))


def _mult(spec: Any, cls: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Class multipliers (``counters_per_class``) of ``cls``; 1 without them or out of range."""
    ones = torch.ones(cls.shape, dtype=dtype, device=cls.device)
    if spec.class_multipliers is None:
        return ones
    table = device_tensor(tuple(spec.class_multipliers), dtype, cls.device)
    inside = (cls >= 0) & (cls < len(table))
    return torch.where(inside, table[cls.clamp(0, len(table) - 1)], ones)


def _focal_grad(p: torch.Tensor) -> torch.Tensor:
    """The focal-loss factor of ``delta_yolo_class`` / ``delta_region_class`` (before alpha) at
    the truth class's probability ``p``."""
    pt = p + np.float32(0.000000000000001)
    return -(1 - pt) * (2 * pt * torch.log(pt) + pt - 1)


# --------------------------------------------------------------------------------------------
# [yolo]
# --------------------------------------------------------------------------------------------
def _yolo_box(
    o: torch.Tensor,
    anchor: torch.Tensor,
    fi: torch.Tensor,
    fj: torch.Tensor,
    grid: tuple[int, int],
    input_size: tuple[int, int],
    new_coords: bool,
) -> torch.Tensor:
    """``get_yolo_box`` at K positions: (K, 4) x, y, w, h relative to the network input."""
    box = get_yolo_box(o[:, 0], o[:, 1], o[:, 2], o[:, 3], fi, fj, anchor[:, 0], anchor[:, 1], grid,
                       input_size, exp_times=exp_times_float, new_coords=new_coords)
    return torch.stack(box, dim=-1)


def _yolo_mse_target(
    truth: torch.Tensor,
    anchor: torch.Tensor,
    fi: torch.Tensor,
    fj: torch.Tensor,
    grid: tuple[int, int],
    input_size: tuple[int, int],
    new_coords: bool,
) -> torch.Tensor:
    """``delta_yolo_box``'s MSE targets (K, 4): tx, ty in the cell, tw, th inverting the size."""
    w, h = grid
    net_w, net_h = input_size
    tx = truth[:, 0] * w - fi
    ty = truth[:, 1] * h - fj
    if new_coords:
        tw = torch.sqrt(truth[:, 2] * net_w / (4 * anchor[:, 0]))
        th = torch.sqrt(truth[:, 3] * net_h / (4 * anchor[:, 1]))
    else:
        tw = torch.log(truth[:, 2] * net_w / anchor[:, 0])
        th = torch.log(truth[:, 3] * net_h / anchor[:, 1])
    return torch.stack((tx, ty, tw, th), dim=-1)


def yolo_box_deltas(
    o: torch.Tensor,
    truth: torch.Tensor,
    anchor: torch.Tensor,
    i: torch.Tensor,
    j: torch.Tensor,
    grid: tuple[int, int],
    input_size: tuple[int, int],
    norm: torch.Tensor,
    spec: YoloSpec,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``delta_yolo_box`` for K assignments: (box deltas (K, 4), IoU (K,), GIoU (K,)).

    Args:
        o: (K, 4) activated x, y and raw (or activated, new_coords) w, h at the position;
        truth: (K, 4); anchor: (K, 2) pixels; i, j: (K,) cell; norm: (K,) iou_normalizer · class
            multiplier. In float32, like the C code (float64 drifts further from it).
    """
    o = o.to(torch.float32)
    truth = truth.to(o)
    anchor = anchor.to(o)
    fi, fj = i.to(o), j.to(o)
    pred = _yolo_box(o, anchor, fi, fj, grid, input_size, spec.new_coords)
    iou = box_iou(pred, truth)
    giou = box_giou(pred, truth)
    norm = norm.to(o)
    if spec.iou_loss == "mse":
        scale = 2 - truth[:, 2] * truth[:, 3]
        target = _yolo_mse_target(truth, anchor, fi, fj, grid, input_size, spec.new_coords)
        return (scale * norm)[:, None] * (target - o), iou, giou
    pred = pred.clone()
    ones = torch.ones_like(pred[:, 2])
    pred[:, 2] = torch.where(pred[:, 2] == 0, ones, pred[:, 2])  # avoid nan
    pred[:, 3] = torch.where(pred[:, 3] == 0, ones, pred[:, 3])
    d = dx_box_iou(pred, truth, spec.iou_loss)
    if not spec.new_coords:
        d[:, 2:] = d[:, 2:] * torch.exp(o[:, 2:4])
    d = fix_nan_inf(d * norm[:, None])
    if spec.max_delta != FLT_MAX:
        d = d.clamp(-spec.max_delta, spec.max_delta)
    return d, iou, giou


def _class_deltas(
    cur: torch.Tensor, out: torch.Tensor, cls: torch.Tensor, spec: YoloSpec
) -> torch.Tensor:
    """``delta_yolo_class`` for K distinct positions: the new (K, C) class deltas.

    A position whose delta for the truth's class is already non-zero (an earlier truth hit it) only
    gets that class set, so the target becomes multi-label; otherwise every class is written.

    Args:
        cur: (K, C) current class deltas; out: (K, C) class outputs; cls: (K,) class ids.
    """
    k = torch.arange(cls.numel(), device=cur.device)
    mult = _mult(spec, cls, cur.dtype)
    eps = spec.label_smooth_eps
    y_pos = 1 * (1 - eps) + 0.5 * eps if eps else 1.0
    already = cur[k, cls] != 0

    # partial update: only the truth's class, the other classes keep their earlier deltas
    part = cur.clone()
    r = y_pos - out[k, cls]
    value = torch.where(torch.isfinite(r), r, cur[k, cls])
    if spec.class_multipliers is not None:
        value = value * mult
    part[k, cls] = value

    onehot = torch.zeros_like(out)
    onehot[k, cls] = 1
    if spec.focal_loss:
        full = (onehot - out) * (_FOCAL_ALPHA * _focal_grad(out[k, cls]))[:, None]
    else:
        target = onehot * (1 - eps) + 0.5 * eps if eps else onehot
        r_all = target - out
        full = torch.where(torch.isfinite(r_all), r_all, cur)
        if spec.class_multipliers is not None:
            full[k, cls] = full[k, cls] * (mult * spec.cls_normalizer)
    return torch.where(already[:, None], part, full)


# --------------------------------------------------------------------------------------------
# [Gaussian_yolo]
# --------------------------------------------------------------------------------------------
def _gaussian_boxes(
    o: torch.Tensor,
    anchor: torch.Tensor,
    i: torch.Tensor,
    j: torch.Tensor,
    grid: tuple[int, int],
    input_size: tuple[int, int],
    point: str,
) -> torch.Tensor:
    """``get_gaussian_yolo_box``; ``o`` (..., 8+) outputs, ``anchor`` (..., 2) pixels."""
    bx, by, bw, bh = get_yolo_box(o[..., 0], o[..., 2], o[..., 4], o[..., 6], i, j, anchor[..., 0],
                                  anchor[..., 1], grid, input_size, exp_times=exp_times_float)
    bx, by = shift_yolo_point(bx, by, bw, bh, point)
    return torch.stack((bx, by, bw, bh), dim=-1)


def _gaussian_targets(
    truth: torch.Tensor,
    anchor: torch.Tensor,
    fi: torch.Tensor,
    fj: torch.Tensor,
    grid: tuple[int, int],
    input_size: tuple[int, int],
    point: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``delta_gaussian_yolo_box``'s targets tx, ty (of the ``yolo_point``), tw, th."""
    w, h = grid
    tx, ty = truth[:, 0] * w - fi, truth[:, 1] * h - fj
    if point == "left_top":
        tx, ty = (
            (truth[:, 0] - truth[:, 2] / 2) * w - fi,
            (truth[:, 1] - truth[:, 3] / 2) * h - fj,
        )
    elif point == "right_bottom":
        tx, ty = (
            (truth[:, 0] + truth[:, 2] / 2) * w - fi,
            (truth[:, 1] + truth[:, 3] / 2) * h - fj,
        )
    tw = torch.log(truth[:, 2] * input_size[0] / anchor[:, 0])
    th = torch.log(truth[:, 3] * input_size[1] / anchor[:, 1])
    return tx, ty, tw, th


def _gaussian_nll_deltas(
    targets: tuple[torch.Tensor, ...], o: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gaussian negative log-likelihood deltas of ``delta_gaussian_yolo_box``: (μ deltas
    (K, 4), uncertainty deltas (K, 4)) for x, y, w, h; ``o`` (K, 8) μx, σx, μy, σy, ..."""
    mu, uc = [], []
    for target, m, s in zip(targets, o[:, 0::2].unbind(-1), o[:, 1::2].unbind(-1)):
        in_exp = (target - m) / s
        in_exp2 = in_exp**2
        normal = torch.exp(in_exp2 * (-1.0 / 2.0)) / (math.sqrt(math.pi * 2.0) * (s + _SIGMA_CONST))
        temp = (1.0 / 2.0) * 1.0 / (normal + _EPSI) * normal * scale
        mu.append(temp * in_exp * (1.0 / s))
        uc.append(temp * (in_exp2 / s - 1.0 / (s + _SIGMA_CONST)))
    return torch.stack(mu, dim=-1), torch.stack(uc, dim=-1)


def _gaussian_iou_deltas(
    pred: torch.Tensor, truth: torch.Tensor, o: torch.Tensor, spec: YoloSpec
) -> torch.Tensor:
    """``delta_gaussian_yolo_box`` with an IoU-family ``iou_loss``: ``dx_box_iou`` moved to the
    ``yolo_point`` and through ``exp`` on w, h."""
    d = dx_box_iou(pred, truth, spec.iou_loss)
    if spec.yolo_point == "left_top":
        d[:, 0], d[:, 1] = d[:, 0] - d[:, 2] / 2, d[:, 1] - d[:, 3] / 2
    elif spec.yolo_point == "right_bottom":
        d[:, 0], d[:, 1] = d[:, 0] + d[:, 2] / 2, d[:, 1] + d[:, 3] / 2
    d[:, 2] = d[:, 2] * torch.exp(o[:, 4])
    d[:, 3] = d[:, 3] * torch.exp(o[:, 6])
    return d


def gaussian_box_deltas(
    o: torch.Tensor,
    truth: torch.Tensor,
    anchor: torch.Tensor,
    i: torch.Tensor,
    j: torch.Tensor,
    grid: tuple[int, int],
    input_size: tuple[int, int],
    scale: torch.Tensor,
    norm: torch.Tensor,
    spec: YoloSpec,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``delta_gaussian_yolo_box`` for K assignments: (deltas (K, 8) to add, IoU (GIoU when the
    iou_loss is not mse) (K,)). ``o``: (K, 8) outputs; float32 as in C."""
    o = o.to(torch.float32)
    truth, anchor = truth.to(o), anchor.to(o)
    fi, fj = i.to(o), j.to(o)
    pred = _gaussian_boxes(o, anchor, fi, fj, grid, input_size, spec.yolo_point)
    iou = box_iou(pred, truth)
    giou = box_giou(pred, truth)
    pred[:, 2] = torch.where(pred[:, 2] == 0, torch.ones_like(fi), pred[:, 2])
    pred[:, 3] = torch.where(pred[:, 3] == 0, torch.ones_like(fi), pred[:, 3])
    targets = _gaussian_targets(truth, anchor, fi, fj, grid, input_size, spec.yolo_point)
    d_mu, d_uc = _gaussian_nll_deltas(targets, o, scale.to(o))
    if spec.iou_loss != "mse":
        iou = giou
        d_mu = _gaussian_iou_deltas(pred, truth, o, spec)
    d_mu = fix_nan_inf(d_mu * norm.to(o)[:, None])
    d_uc = fix_nan_inf(d_uc * spec.uc_normalizer)
    if spec.max_delta != FLT_MAX:
        d_mu = d_mu.clamp(-spec.max_delta, spec.max_delta)
        d_uc = d_uc.clamp(-spec.max_delta, spec.max_delta)
    # interleaved as the layer's channels: μx, σx, μy, σy, μw, σw, μh, σh
    return torch.stack((d_mu, d_uc), dim=-1).reshape(-1, 8), iou


def _gaussian_class_deltas(
    cur: torch.Tensor, out: torch.Tensor, cls: torch.Tensor, spec: YoloSpec
) -> torch.Tensor:
    """``delta_gaussian_yolo_class``: like delta_yolo_class, but "already hit" tests class 0's delta
    and there is no NaN guard and no focal loss.

    A class id outside [0, classes) (step B does not check it) gets all-negative targets on a first
    hit; on a repeated hit Darknet writes outside the anchor's channels, which is skipped here.
    """
    eps = spec.label_smooth_eps
    y_pos = 1 * (1 - eps) + 0.5 * eps if eps else 1.0
    mult = _mult(spec, cls, cur.dtype)[:, None]
    hot = cls[:, None] == torch.arange(out.shape[1], device=cur.device)  # none outside [0, C)
    part = torch.where(hot, (y_pos - out) * (1 if spec.class_multipliers is None else mult), cur)
    onehot = hot.to(out.dtype)
    full = (onehot * (1 - eps) + 0.5 * eps if eps else onehot) - out
    if spec.class_multipliers is not None:
        full = torch.where(hot, full * (mult * spec.cls_normalizer), full)
    return torch.where((cur[:, 0] != 0)[:, None], part, full)


# --------------------------------------------------------------------------------------------
# [region]
# --------------------------------------------------------------------------------------------
def _region_boxes(
    raw: torch.Tensor,
    anchor: torch.Tensor,
    i: torch.Tensor,
    j: torch.Tensor,
    grid: tuple[int, int],
) -> torch.Tensor:
    """``get_region_box``: (..., 4) from raw x, y, w, h; anchors in grid cells."""
    box = get_yolo_box(torch.sigmoid(raw[..., 0]), torch.sigmoid(raw[..., 1]), raw[..., 2], raw[..., 3],
                       i, j, anchor[..., 0], anchor[..., 1], grid, grid, exp_times=exp_times_float)
    return torch.stack(box, dim=-1)


def _region_box_deltas(
    o: torch.Tensor,
    truth: torch.Tensor,
    anchor: torch.Tensor,
    i: torch.Tensor,
    j: torch.Tensor,
    grid: tuple[int, int],
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``delta_region_box``: (deltas (..., 4), written with '=', and the IoU (...)).

    ``o`` holds the raw x, y, w, h; the x, y deltas carry σ' (unlike [yolo])."""
    w, h = grid
    sx, sy = torch.sigmoid(o[..., 0]), torch.sigmoid(o[..., 1])
    pred = _region_boxes(o, anchor, i, j, grid)
    iou = box_iou(pred, truth)
    tx, ty = truth[..., 0] * w - i, truth[..., 1] * h - j
    tw = torch.log(truth[..., 2] * w / anchor[..., 0])
    th = torch.log(truth[..., 3] * h / anchor[..., 1])
    delta = torch.stack(
        (
            scale * (tx - sx) * ((1 - sx) * sx),
            scale * (ty - sy) * ((1 - sy) * sy),
            scale * (tw - o[..., 2]),
            scale * (th - o[..., 3]),
        ),
        dim=-1,
    )
    return delta, iou


def _region_class_deltas(
    out: torch.Tensor, cls: torch.Tensor, scale: torch.Tensor, focal: bool
) -> torch.Tensor:
    """``delta_region_class`` (no tree): every class overwritten, ``scale·(onehot − p)``."""
    k = torch.arange(cls.numel(), device=out.device)
    onehot = torch.zeros_like(out)
    onehot[k, cls] = 1
    delta = scale[:, None] * (onehot - out)
    if focal:
        delta = delta * (_FOCAL_ALPHA * _focal_grad(out[k, cls]))[:, None]
    return delta
