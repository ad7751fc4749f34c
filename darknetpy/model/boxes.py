"""Box geometry of darknet's ``src/box.c``: IoU, GIoU, DIoU, CIoU and the DIoU-NMS term.

Boxes are ``(..., 4)`` arrays ``(x, y, w, h)``: centre and size, as darknet's ``box`` struct. Every
function works on ``torch.Tensor`` and on ``numpy.ndarray`` alike and broadcasts ``a`` against ``b``
(pass ``a[:, None]`` and ``b[None]`` for a pairwise matrix). Arithmetic follows the C source step
by step in float32, with the few ``pow``/``atan`` calls darknet evaluates in double done in float64,
so strict ``> thresh`` comparisons (NMS) land on the same side as darknet's.

Darknet's quirks kept on purpose:

* the intersection is 0 when either overlap is negative, but *not* clamped otherwise, and
  ``box_iou`` is 0 whenever the intersection or the union is exactly 0;
* NaN boxes give NaN (never > thresh, so never suppressed); ``fmin``/``fmax`` skip NaN as C's do.
"""

from __future__ import annotations

from enum import Enum
from types import MappingProxyType
from typing import TypeVar

import numpy as np
import torch

Array = TypeVar("Array", torch.Tensor, np.ndarray)

_PI = 3.14159265358979323846  # M_PI


class IouLoss(Enum):
    """darknet's ``IOU_LOSS`` (``darknet.h``): a head's box loss, also its ``iou_thresh_kind``."""

    IOU = "iou"
    GIOU = "giou"
    MSE = "mse"
    DIOU = "diou"
    CIOU = "ciou"


IOU_LOSSES: MappingProxyType[str, IouLoss] = MappingProxyType({k.value: k for k in IouLoss})
"""``iou_loss=`` values. Darknet maps any other string to IoU silently; darknetpy refuses it."""

IOU_KINDS: MappingProxyType[str, IouLoss] = MappingProxyType(
    {k.value: k for k in IouLoss if k is not IouLoss.MSE}
)
"""``iou_thresh_kind=`` values (darknet prints "Wrong iou_thresh_kind" and uses IoU otherwise)."""


# ---- array-namespace helpers (torch and numpy share one implementation) ----
def _is_torch(x: object) -> bool:
    return isinstance(x, torch.Tensor)


def _where(cond: Array, a: Array | float, b: Array | float) -> Array:
    if _is_torch(cond):
        ref = a if _is_torch(a) else b
        dtype = ref.dtype if _is_torch(ref) else torch.float32
        a_t = a if _is_torch(a) else torch.as_tensor(a, dtype=dtype, device=cond.device)
        b_t = b if _is_torch(b) else torch.as_tensor(b, dtype=dtype, device=cond.device)
        return torch.where(cond, a_t, b_t)
    return np.where(cond, a, b).astype(np.result_type(a, b, np.float32), copy=False)


def _fmin(a: Array, b: Array) -> Array:
    return torch.fmin(a, b) if _is_torch(a) else np.fmin(a, b)


def _fmax(a: Array, b: Array) -> Array:
    return torch.fmax(a, b) if _is_torch(a) else np.fmax(a, b)


def _f64(x: Array) -> Array:
    return x.double() if _is_torch(x) else np.asarray(x, dtype=np.float64)


def _as_f32(x: Array, like: Array) -> Array:
    return x.to(like.dtype) if _is_torch(x) else np.asarray(x, dtype=like.dtype)


def _atan(x: Array) -> Array:
    return torch.atan(x) if _is_torch(x) else np.arctan(x)


def _split(box: Array) -> tuple[Array, Array, Array, Array]:
    return box[..., 0], box[..., 1], box[..., 2], box[..., 3]


def _errstate():
    return np.errstate(all="ignore")


# ---- conversions ----
def xywh_to_corners(box: Array) -> Array:
    """``(x, y, w, h)`` to ``(left, top, right, bottom)`` (darknet's ``to_tblr``, reordered)."""
    x, y, w, h = _split(box)
    parts = (x - w / 2, y - h / 2, x + w / 2, y + h / 2)
    return torch.stack(parts, -1) if _is_torch(box) else np.stack(parts, -1)


def corners_to_xywh(box: Array) -> Array:
    """``(left, top, right, bottom)`` to ``(x, y, w, h)``."""
    left, top, right, bottom = _split(box)
    parts = ((left + right) / 2, (top + bottom) / 2, right - left, bottom - top)
    return torch.stack(parts, -1) if _is_torch(box) else np.stack(parts, -1)


# ---- box.c ----
def overlap(x1: Array, w1: Array, x2: Array, w2: Array) -> Array:
    """Signed 1-D overlap of two segments given by centre and length (``box.c: overlap``)."""
    left = _fmax_c(x1 - w1 / 2, x2 - w2 / 2)
    right = _fmin_c(x1 + w1 / 2, x2 + w2 / 2)
    return right - left


def _fmax_c(a: Array, b: Array) -> Array:
    # C's `a > b ? a : b` (not fmax: a NaN comparison picks b)
    return _where(a > b, a, b)


def _fmin_c(a: Array, b: Array) -> Array:
    return _where(a < b, a, b)


def box_intersection(a: Array, b: Array) -> Array:
    """Intersection area, 0 if either overlap is negative (``box.c: box_intersection``)."""
    ax, ay, aw, ah = _split(a)
    bx, by, bw, bh = _split(b)
    with _errstate():
        w = overlap(ax, aw, bx, bw)
        h = overlap(ay, ah, by, bh)
        return _where((w < 0) | (h < 0), 0.0, w * h)


def box_union(a: Array, b: Array) -> Array:
    """``area(a) + area(b) - intersection`` (``box.c: box_union``)."""
    with _errstate():
        inter = box_intersection(a, b)
        return a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter


def box_iou(a: Array, b: Array) -> Array:
    """Darknet's IoU: ``I / U``, or 0 when ``I == 0`` or ``U == 0`` (``box.c: box_iou``).

    Example:
        >>> float(box_iou(np.array([0.5, 0.5, 1, 1], "f"), np.array([1.0, 0.5, 1, 1], "f")))
        0.3333333432674408
    """
    with _errstate():
        inter = box_intersection(a, b)
        union = box_union(a, b)
        zero = (inter == 0) | (union == 0)
        return _where(zero, 0.0, inter / _where(zero, 1.0, union))


def _enclosing(a: Array, b: Array) -> tuple[Array, Array]:
    """Width and height of the smallest box enclosing both (``box.c: box_c``, fmin/fmax)."""
    ax, ay, aw, ah = _split(a)
    bx, by, bw, bh = _split(b)
    top = _fmin(ay - ah / 2, by - bh / 2)
    bot = _fmax(ay + ah / 2, by + bh / 2)
    left = _fmin(ax - aw / 2, bx - bw / 2)
    right = _fmax(ax + aw / 2, bx + bw / 2)
    return right - left, bot - top


def box_giou(a: Array, b: Array) -> Array:
    """Generalised IoU ``iou - (C - U)/C``, or IoU when the hull area is 0 (``box.c: box_giou``)."""
    with _errstate():
        w, h = _enclosing(a, b)
        c = w * h
        iou = box_iou(a, b)
        u = box_union(a, b)
        safe_c = _where(c == 0, 1.0, c)
        return _where(c == 0, iou, iou - (c - u) / safe_c)


def _centre_ratio(a: Array, b: Array) -> tuple[Array, Array, Array]:
    """``(iou, d²/c², c == 0)`` with c the enclosing diagonal, d the centre distance."""
    w, h = _enclosing(a, b)
    c = w * w + h * h
    iou = box_iou(a, b)
    dx = a[..., 0] - b[..., 0]
    dy = a[..., 1] - b[..., 1]
    d = dx * dx + dy * dy
    zero = c == 0
    return iou, d / _where(zero, 1.0, c), zero


def box_diounms(a: Array, b: Array, beta: float) -> Array:
    """``iou - (d²/c²)**beta``; plain IoU when c == 0 (``box.c: box_diounms``, DIoU-NMS)."""
    with _errstate():
        iou, ratio, zero = _centre_ratio(a, b)
        term = _as_f32(_f64(ratio) ** beta, iou)  # C: pow() in double, stored in a float
        return _where(zero, iou, iou - term)


def box_diou(a: Array, b: Array) -> Array:
    """Distance IoU as darknet computes it: ``iou - (d²/c²)**0.6`` (``box.c: box_diou``).

    The exponent 0.6 is hard-coded in darknet (the paper's DIoU uses 1); ``greedynms`` relies on it.
    """
    return box_diounms(a, b, 0.6)


def box_ciou(a: Array, b: Array) -> Array:
    """Complete IoU ``iou - (d²/c² + alpha·v)`` with ``b`` the truth (``box.c: box_ciou``)."""
    with _errstate():
        iou, ratio, zero = _centre_ratio(a, b)
        ar_gt = b[..., 2] / b[..., 3]
        ar_pred = a[..., 2] / a[..., 3]
        diff = _atan(_f64(ar_gt)) - _atan(_f64(ar_pred))
        ar_loss = _as_f32(4 / (_PI * _PI) * diff * diff, iou)
        # C: (1 - iou + ar_loss) in float, then + 0.000001 and the division in double
        alpha = _as_f32(_f64(ar_loss) / (_f64(1 - iou + ar_loss) + 0.000001), iou)
        return _where(zero, iou, iou - (ratio + alpha * ar_loss))


def box_iou_kind(a: Array, b: Array, kind: IouLoss) -> Array:
    """The IoU variant named by ``kind`` (``box.c: box_iou_kind``; MSE means plain IoU there)."""
    if kind is IouLoss.GIOU:
        return box_giou(a, b)
    if kind is IouLoss.DIOU:
        return box_diou(a, b)
    if kind is IouLoss.CIOU:
        return box_ciou(a, b)
    return box_iou(a, b)
