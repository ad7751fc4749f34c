"""The network entry point: every detection head's loss, summed into one surrogate."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from ....errors import UsageError
from .gaussian import gaussian_yolo_loss
from .records import HeadLoss, HeadStats, LossTerms
from .region import region_loss
from .specs import cached_spec, region_spec, yolo_spec
from .yolo import yolo_loss


def head_loss(
    layer: Any,
    z: torch.Tensor,
    truth: torch.Tensor | np.ndarray,
    *,
    input_size: tuple[int, int],
    seen: int = 0,
) -> HeadLoss:
    """The loss of one head layer (``[yolo]``, ``[Gaussian_yolo]`` or ``[region]``)."""
    kind = getattr(layer, "darknet_name", None)
    index = int(getattr(layer, "index", -1))
    if kind == "yolo":
        spec = cached_spec(layer.options, yolo_spec)
        return yolo_loss(z, truth, spec, input_size=input_size, index=index)
    if kind == "Gaussian_yolo":
        spec = cached_spec(layer.options, yolo_spec)
        return gaussian_yolo_loss(z, truth, spec, input_size=input_size, index=index)
    if kind == "region":
        rspec = cached_spec(layer.options, region_spec)
        return region_loss(z, truth, rspec, seen=seen, index=index)
    raise UsageError(
        f"layer {index} ({kind}) is not a detection head ([yolo], [Gaussian_yolo], [region])"
    )


def compute_loss(
    net: Any,
    head_inputs: Mapping[int, torch.Tensor],
    truth: torch.Tensor | np.ndarray,
    *,
    input_size: tuple[int, int] | None = None,
    seen: int = 0,
) -> LossTerms:
    """Darknet's training losses of every detection head of ``net``.

    Args:
        net: a :class:`~darknetpy.model.network.Network` (reads ``layers`` and ``net.width/height``).
        head_inputs: ``{head layer index: tensor entering it (N, C, H, W)}``.
        truth: (N, T, 5+) rows (x, y, w, h, class) relative to the network input; the rows end at
            the first x == 0.
        input_size: the current network (width, height), when random resizing changed it.
        seen: images seen so far (``[region]`` pulls boxes toward their anchors while < 12800).
    Returns:
        :class:`LossTerms`; ``total.backward()`` leaves ``-delta`` in each head input's gradient.
    """
    if not head_inputs:
        raise UsageError("compute_loss: no head inputs given (the network has no detection head?)")
    if input_size is None:
        input_size = (int(net.net.width), int(net.net.height))
    total: torch.Tensor | None = None
    costs: dict[int, float] = {}
    stats: dict[int, HeadStats] = {}
    deltas: dict[int, torch.Tensor] = {}
    for index in sorted(head_inputs):
        z = head_inputs[index]
        result = head_loss(net.layers[index], z, truth, input_size=input_size, seen=seen)
        term = -(result.delta.to(z.dtype) * z).sum()
        total = term if total is None else total + term
        costs[index] = float(result.cost)
        stats[index] = result.stats
        deltas[index] = result.delta
    assert total is not None
    return LossTerms(
        total=total,
        costs=MappingProxyType(costs),
        stats=MappingProxyType(stats),
        deltas=MappingProxyType(deltas),
    )
