"""What a detection head's loss returns (:class:`HeadLoss`), the network's sum (:class:`LossTerms`),
and the truth rows a training step hands to the heads (:class:`TruthRows`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True, eq=False)
class TruthRows:
    """A mini-batch's truth rows ``(x, y, w, h, class, ...)`` twice: on the loss's device and as
    the loader's host array, so that a head can size its work (truth slots in use, truths per
    cell) without reading the device.

    Attributes:
        rows: (N, T, 5+) float32 on the device of the head inputs (zero rows end an image's list).
        host: the same values, (N, T, 5+) float32 in host memory.
    """

    rows: torch.Tensor
    host: np.ndarray


class LazyMapping(Mapping):
    """``{key: value}`` whose values are computed on the first read (each a zero-argument callable),
    so that figures living on the device are read only when someone looks at them."""

    def __init__(self, sources: Mapping[Any, Any]) -> None:
        self._sources = dict(sources)
        self._values: dict[Any, Any] = {}

    def __getitem__(self, key: Any) -> Any:
        if key not in self._values:
            source = self._sources[key]
            self._values[key] = source() if callable(source) else source
        return self._values[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._sources)

    def __len__(self) -> int:
        return len(self._sources)


@dataclass(frozen=True)
class HeadStats:
    """One head's figures as Darknet prints them after a training forward pass.

    ``class_loss``, ``iou_loss``, ``uc_loss`` and ``total_loss`` are already divided by the
    mini-batch, as printed; ``cost`` is Darknet's ``*l.cost`` (not divided). ``count`` is the
    number of (truth, anchor) assignments (1 when there were none, as Darknet sets it).
    """

    layer: int
    kind: str  # the head's section name: "yolo", "Gaussian_yolo", "region", ...
    cost: float
    count: int
    avg_iou: float
    class_loss: float = 0.0
    iou_loss: float = 0.0
    uc_loss: float = 0.0
    total_loss: float = 0.0
    avg_obj: float = 0.0
    avg_anyobj: float = 0.0
    avg_cat: float = 0.0
    recall50: float = 0.0
    recall75: float = 0.0
    line: str = ""  # the line Darknet writes to stderr for this head


@dataclass(frozen=True)
class HeadLoss:
    """The result for one head: its delta (Darknet's heads), cost, statistics and training scalar.

    Attributes:
        delta: Darknet's ``l.delta`` (the head input's shape, detached), or None for a head whose
            loss is differentiated by autograd.
        cost: 0-dim float64 (on the input's device): what the head prints and
            :attr:`LossTerms.cost` averages.
        stats: the printed figures, or a zero-argument callable making them (Darknet's heads: the
            figures stay on the device until read).
        total: the scalar ``backward()`` starts from. Darknet's heads give
            ``-(delta * z).sum()`` over their input ``z`` (see :meth:`with_surrogate`), so its
            gradient is exactly ``-delta``.
        terms: the loss terms a head reports instead of one cost (``[yolov8]``: box, cls, dfl;
            ``[yolox]``: total, iou, obj, cls, l1, num_fg/num_gt); None for Darknet's heads, whose
            :attr:`LossTerms.costs` entry stays the one float ``cost``.
    """

    delta: torch.Tensor | None
    cost: torch.Tensor
    stats: HeadStats | Callable[[], HeadStats]
    total: torch.Tensor | None = None
    terms: tuple[float, ...] | None = None

    def with_surrogate(self, z: torch.Tensor) -> HeadLoss:
        """This result with ``total = -(delta * z).sum()`` (Darknet's heads back-propagate
        ``delta``)."""
        assert self.delta is not None
        return replace(self, total=-(self.delta.to(z.dtype) * z).sum())


@dataclass(frozen=True)
class LossTerms:
    """Darknet's training losses for every detection head.

    Attributes:
        total: scalar surrogate; its gradient w.r.t. each head input is ``-deltas[i]``.
        costs: ``{layer index: cost}``: Darknet's ``*l.cost`` (one float, what
            ``get_network_cost`` averages) for Darknet's heads; the tuple :attr:`HeadLoss.terms`
            for a head reporting several terms (``[yolov8]``: box, cls, dfl; ``[yolox]``: total,
            iou, obj, cls, l1, num_fg/num_gt).
        stats: ``{layer index: HeadStats}``.
        deltas: ``{layer index: Darknet's delta}`` (detached, the head input's shape).
        cost_tensor: :attr:`cost` as a 0-dim float64 tensor on the loss's device (None where not
            computed): what a training step sums without reading the device.
    """

    total: torch.Tensor
    costs: Mapping[int, float | tuple[float, ...]]
    stats: Mapping[int, HeadStats]
    deltas: Mapping[int, torch.Tensor] = field(default_factory=dict)
    cost_tensor: torch.Tensor | None = None

    @property
    def cost(self) -> float:
        """Darknet's ``get_network_cost``: the mean of the head costs (a head whose costs entry
        is a tuple of terms counts with its ``stats.cost``)."""
        values = [v if isinstance(v, float) else self.stats[i].cost for i, v in self.costs.items()]
        return sum(values) / max(len(values), 1)
