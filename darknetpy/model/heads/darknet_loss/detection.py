"""``[detection]`` (YOLOv1) in training mode: ``detection_layer.c: forward_detection_layer``, with
its truth grid built by ``data.c: fill_truth_region``.

Darknet trains YOLOv1 with its ``yolo train`` command, whose loader (``load_data_region``) writes
one truth per cell: ``1, one-hot class, x, y, w, h`` with x, y the offset inside the cell. darknetpy's
loader gives truth rows (x, y, w, h, class) relative to the input; :func:`fill_truth_region` turns
them into that grid, the first row of a cell winning (Darknet shuffles the rows first, with
``randomize_boxes``; here they stay in the loader's order).

The delta is with respect to the layer's output (after the class softmax when ``softmax=1``) and
is passed unchanged to the layer below (``backward_detection_layer``), so the surrogate
``-(delta * z).sum()`` over the head input has Darknet's gradient.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from ...boxes import box_iou
from ..records import HeadLoss, HeadStats
from .assign import Truths

if TYPE_CHECKING:
    from ..detection import DetectionOptions

__all__ = ["detection_loss", "fill_truth_region"]

f32 = np.float32


def fill_truth_region(rows: np.ndarray, side: int, classes: int) -> np.ndarray:
    """``data.c: fill_truth_region`` for one image: (side*side, 5 + classes) float32, each cell
    ``is_obj, one-hot class, x, y, w, h`` (x, y relative to the cell).

    ``rows`` are (x, y, w, h, class) relative to the image. Rows with w or h below .001 are
    skipped; a cell keeps its first row; a class >= classes marks the cell without a class. A row
    with x or y of 1 (or more) would fall outside the grid, where Darknet writes past the image's
    truth; it is skipped here.
    """
    truth = np.zeros((side * side, 5 + classes), f32)
    for x, y, w, h, cls in rows[:, :5].astype(f32):
        if w < f32(0.001) or h < f32(0.001):
            continue
        col, row = int(x * f32(side)), int(y * f32(side))
        if not (0 <= col < side and 0 <= row < side):
            continue
        cell = truth[col + row * side]
        if cell[0]:
            continue
        cell[0] = 1
        if 0 <= int(cls) < classes:
            cell[1 + int(cls)] = 1
        cell[1 + classes:] = (x * f32(side) - f32(col), y * f32(side) - f32(row), w, h)
    return truth


def _box(values: np.ndarray, side: int, sqrt: bool) -> np.ndarray:
    """An output box as ``forward_detection_layer`` compares it: x, y / side; w, h squared with
    ``sqrt``."""
    x, y, w, h = values.astype(f32)
    if sqrt:
        w, h = w * w, h * h
    return np.array([x / f32(side), y / f32(side), w, h], f32)


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    """``box.c: box_rmse`` (double arithmetic, returned as float)."""
    d = a.astype(np.float64) - b.astype(np.float64)
    return float(f32(math.sqrt(float((d * d).sum()))))


def detection_loss(out: torch.Tensor, truth: torch.Tensor | np.ndarray, o: DetectionOptions, *,
                   seen: int = 0, index: int = -1,
                   rng: np.random.Generator | None = None) -> HeadLoss:
    """``forward_detection_layer`` in training mode on the layer's output ``out`` (N, ...).

    Every confidence is pulled to 0 (``noobject_scale``); in a cell holding a truth, the classes
    to the one-hot class (``class_scale``), and one box, the *responsible* one, to the truth: the
    box of highest IoU with it (x, y as offsets in the cell, divided by side), or while every IoU
    is 0 the one of lowest RMSE below 20 (``forced=1``: box 1 for truths smaller than .1, else box
    0; ``random=1`` while fewer than 64000 images are seen: a random box, drawn from ``rng``). Its
    confidence goes to 1 (``object_scale``; to its IoU with ``rescore=1``) and its x, y, w, h to the
    truth's (``coord_scale``; to sqrt(w), sqrt(h) with ``sqrt=1``). cost = sum(delta²).

    Args:
        out: the layer output (detached).
        truth: (N, T, 5+) rows (x, y, w, h, class) relative to the network input.
        seen: images seen so far (``random=``).
        index: the layer index (for messages and the statistics).
        rng: the generator of ``random=1`` draws.
    """
    n = out.shape[0]
    values = out.detach().float().cpu().reshape(n, -1).numpy()
    truths = Truths.from_tensor(truth, o.max_boxes, batch=n, index=index, device="cpu")
    rows = torch.cat((truths.boxes, truths.classes.unsqueeze(-1).float()), -1).numpy()
    valid = truths.valid(o.classes, class_check_first=False, any_class=True).numpy()
    cells, c, nb = o.side * o.side, o.classes, o.num
    conf0, box0 = cells * c, cells * (c + nb)
    delta = np.zeros_like(values)
    delta[:, conf0:box0] = f32(o.noobject_scale) * (f32(0) - values[:, conf0:box0])
    avg_anyobj = float(values[:, conf0:box0].sum(dtype=np.float64))
    avg_iou = avg_cat = avg_allcat = avg_obj = 0.0
    count = 0
    random = o.random_box != 0 and seen < 64000
    if random and rng is None:
        rng = np.random.default_rng()
    for b in range(n):
        grid = fill_truth_region(rows[b][valid[b]], o.side, c)
        p, d = values[b], delta[b]
        for i in np.flatnonzero(grid[:, 0]):
            t = grid[i]
            cls = slice(i * c, (i + 1) * c)
            d[cls] = f32(o.class_scale) * (t[1:1 + c] - p[cls])
            avg_cat += float(p[cls][t[1:1 + c] != 0].sum(dtype=np.float64))
            avg_allcat += float(p[cls].sum(dtype=np.float64))
            tbox = t[1 + c:5 + c]
            truth_box = np.array([tbox[0] / f32(o.side), tbox[1] / f32(o.side), tbox[2], tbox[3]],
                                 f32)
            best, best_iou, best_rmse = -1, f32(0), f32(20)
            for j in range(nb):
                at = box0 + (i * nb + j) * 4
                box = _box(p[at:at + 4], o.side, o.sqrt)
                iou = f32(box_iou(box, truth_box))
                if best_iou > 0 or iou > 0:
                    if iou > best_iou:
                        best_iou, best = iou, j
                else:
                    rmse = f32(_rmse(box, truth_box))
                    if rmse < best_rmse:
                        best_rmse, best = rmse, j
            if o.forced:
                best = 1 if truth_box[2] * truth_box[3] < f32(0.1) else 0
            if random:
                best = int(rng.integers(nb))
            # flat indices as Darknet's: best = -1 (no box found) reaches the slot before
            at = box0 + (i * nb + best) * 4
            conf = conf0 + i * nb + best
            iou = f32(box_iou(_box(p[at:at + 4], o.side, o.sqrt), truth_box))
            avg_obj += float(p[conf])
            target = float(iou) if o.rescore else 1.0
            d[conf] = f32(float(f32(o.object_scale)) * (target - float(p[conf])))
            cs = float(f32(o.coord_scale))
            goal = [float(tbox[0]), float(tbox[1]), float(tbox[2]), float(tbox[3])]
            if o.sqrt:
                goal[2], goal[3] = math.sqrt(goal[2]), math.sqrt(goal[3])
            for k in range(4):
                d[at + k] = f32(cs * (goal[k] - float(p[at + k])))
            avg_iou += float(iou)
            count += 1
    cost = float(np.sum(delta.astype(np.float64) ** 2))
    stats = _stats(index, cost, count, n, avg_iou, avg_cat, avg_allcat, avg_obj,
                   avg_anyobj / (n * cells * nb), o.classes)
    return HeadLoss(torch.from_numpy(delta).view(out.shape), torch.tensor(cost, dtype=torch.float64),
                    stats)


def _stats(index: int, cost: float, count: int, batch: int, iou: float, cat: float,
           allcat: float, obj: float, anyobj: float, classes: int) -> HeadStats:
    """The line ``forward_detection_layer`` prints (NaN averages without truths)."""
    def per(x: float, k: int) -> float:
        return x / k if k else float("nan")

    line = (f"Detection Avg IOU: {per(iou, count):f}, Pos Cat: {per(cat, count):f}, "
            f"All Cat: {per(allcat, count * classes):f}, Pos Obj: {per(obj, count):f}, "
            f"Any Obj: {anyobj:f}, count: {count}")
    return HeadStats(layer=index, kind="detection", cost=cost, count=count,
                     avg_iou=per(iou, count), total_loss=cost / batch, avg_obj=per(obj, count),
                     avg_anyobj=anyobj, avg_cat=per(cat, count), line=line)
