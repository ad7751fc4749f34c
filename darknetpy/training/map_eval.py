"""Training's mAP: ``validate_detector_map`` on the network being trained, as it is in memory.

Darknet's ``-map`` copies the training network's weights into a second network and evaluates it
(``detector.c: train_detector`` -> ``validate_detector_map(..., &net_map)``); here the network
itself runs in eval mode (inference batch norm, no gradient) through the one image -> detections
pipeline (:func:`darknetpy.evaluation.evaluate_network`), so no weights file is written and no cfg
re-parsed. A loop with EMA weights evaluates those: swap them in around the call.

With several processes every rank detects its own contiguous share of the ``valid=`` list; the
detections are gathered (in list order) and every rank scores them, so no rank waits in a
collective while another evaluates alone (a wait NCCL's timeout would end). A failure on any rank
reaches every rank at the gather, and all of them raise the same error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .. import errors
from ..errors import DarknetpyError, TrainingError
from ..evaluation import evaluate_network
from ..evaluation.commands import Distribute
from ..model.network import Network
from . import distributed as D

__all__ = ["network_map", "shard_bounds"]


def network_map(net: Network, data: str | Path, *, thresh: float = 0.25, iou_thresh: float = 0.5,
                device: str | torch.device | None = None,
                ctx: D.DistContext | None = None) -> float:
    """mAP@``iou_thresh`` (area under the curve: Darknet's ``-map``, points 0, no COCO AP) of
    ``net`` on the ``valid=`` list of ``data``; equals ``darknetpy map`` on the weights ``net``
    would save.

    Args:
        thresh: the confidence threshold of the TP/FP figures (not of the mAP).
        device: where the images go; None: where the network's parameters are.
        ctx: with several processes, call it on every rank: each detects a share of the list.

    Raises:
        DarknetpyError: the evaluation failed (on any rank: the same error on every rank).
    """
    distribute = None if ctx is None or not ctx.enabled else _sharded(ctx)
    metrics = evaluate_network(net, data, thresh=thresh, iou_thresh=iou_thresh, points=0,
                               coco=False, device=device, distribute=distribute)  # fmt: skip
    return float(metrics.map50)


def shard_bounds(count: int, rank: int, world: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous share of ``count`` items (sizes differ by at
    most one; concatenated by rank they are the whole list in order)."""
    return rank * count // world, (rank + 1) * count // world


def _sharded(ctx: D.DistContext) -> Distribute:
    def distribute(images: Sequence[Path], detect: Callable[[Sequence[Path]], list]) -> list:
        start, stop = shard_bounds(len(images), ctx.rank, ctx.world_size)
        part: Any
        try:
            part = ("ok", detect(images[start:stop]))
        except Exception as exc:  # noqa: BLE001 - carried to every rank, raised there
            part = ("error", type(exc).__name__, str(exc))
        parts = D.all_gather_object(part, ctx)  # every rank gets here, failed or not
        for rank, got in enumerate(parts):
            if got[0] == "error":
                raise _same_error(rank, got[1], got[2])
        return [found for got in parts for found in got[1]]

    return distribute


def _same_error(rank: int, kind: str, message: str) -> Exception:
    """The error of ``rank``, rebuilt on every rank: a darknetpy error keeps its type and one-line
    message; anything else becomes a :class:`TrainingError` naming the rank and the type."""
    cls = getattr(errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, DarknetpyError):
        return cls(message)
    return TrainingError(f"the mAP evaluation failed on rank {rank}: {kind}: {message}")
