"""What every detection head is: :class:`DetectionHead`, and the network's loss over its heads.

A head is a layer (its ``forward`` is what :meth:`Network.forward_layers` returns for it) that
also owns:

* its options record (``self.options``, parsed once by :meth:`DetectionHead.build`);
* :meth:`~DetectionHead.head_input`: what the loss scores, taken from the layer outputs: the one
  tensor entering a Darknet head, or the list of per-level tensors (``layers=``) of an anchor-free
  head;
* :meth:`~DetectionHead.decode`: every candidate box as :class:`Candidates` (detection, evaluation
  and export all start from it);
* :meth:`~DetectionHead.detections`: the candidates above a threshold as Darknet's detection arrays;
* :meth:`~DetectionHead.nms`: its NMS (Darknet's heads: per-class greedy / DIoU; anchor-free heads:
  class-aware with ``max_det``);
* :meth:`~DetectionHead.loss`: its training loss as a
  :class:`~darknetpy.model.heads.records.HeadLoss`;
* :meth:`~DetectionHead.export_outputs`: the decoded tensors an ONNX export appends.

Which class builds which section is the ``HEADS`` table of :mod:`darknetpy.model.heads`; nothing
else dispatches on a head's kind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import torch

from ...errors import UsageError
from ..cfg import Options
from ..layers.base import BuildContext, DarknetLayer
from .detections import Detections
from .records import HeadLoss, LazyMapping, LossTerms, TruthRows

__all__ = ["Candidates", "DetectionHead", "HeadInput", "compute_loss"]

HeadInput = torch.Tensor | Sequence[torch.Tensor]  # one tensor, or one per level


@dataclass(frozen=True)
class Candidates:
    """Every candidate box of one head, in its detection order (Darknet's: cells row-major, anchor
    slots innermost), before any threshold.

    Attributes:
        boxes: (N, B, 4) centre x, y, width, height relative to the network input.
        objectness: (N, B); 1 for heads without one (``[region]`` sets every detection's to 1).
        scores: (N, B, classes) each class's probability (Darknet's ``prob``: objectness x class).
        uncertainty: (N, B, 4) ``[Gaussian_yolo]``'s sigma of x, y, w, h, else None.
    """

    boxes: torch.Tensor
    objectness: torch.Tensor
    scores: torch.Tensor
    uncertainty: torch.Tensor | None = None


class DetectionHead(DarknetLayer):
    """The base of every detection head (see the module docstring for what a head owns).

    Subclasses set ``darknet_name`` (the section name), store their options record in ``options``
    and implement :meth:`build`, ``forward``, :meth:`decode`, :meth:`nms` and :meth:`loss`.
    """

    darknet_name: ClassVar[str] = "head"
    #: True for heads reading several levels (``layers=``): :meth:`head_input` is then a list.
    per_level: ClassVar[bool] = False
    #: True for heads whose :meth:`loss` takes a :class:`TruthRows` (else they get its ``rows``).
    takes_truth_rows: ClassVar[bool] = False
    options: Any

    @classmethod
    def build(cls, opts: Options, ctx: BuildContext) -> DetectionHead:
        """Parse the section (``opts``) into this head as layer ``ctx.index``.

        Raises:
            CfgError: ``path:line [section]: what; what to do`` for any bad key or input shape.
        """
        raise NotImplementedError(f"{cls.__name__}.build")

    @property
    def classes(self) -> int:
        """How many classes the head scores."""
        return int(self.options.classes)

    # ---- training ----
    def head_input(self, outputs: Mapping[int, torch.Tensor]) -> HeadInput:
        """What :meth:`loss` scores, picked from the layer outputs (``{index: tensor}``): the tensor
        entering the head, or for a :attr:`per_level` head the list of its source tensors."""
        if self.per_level:
            return [outputs[i] for i in self.sources]
        return outputs[self.sources[0]]

    def loss(self, inputs: HeadInput, truth: torch.Tensor | np.ndarray, *,
             input_size: tuple[int, int], seen: int = 0) -> HeadLoss:
        """This head's training loss.

        Args:
            inputs: :meth:`head_input` (with the graph to back-propagate through).
            truth: (N, T, 5+) rows (x, y, w, h, class) relative to the network input; zero rows end.
            input_size: the current network input (width, height).
            seen: images seen so far.

        Returns:
            a :class:`HeadLoss` whose ``total`` is the scalar to back-propagate.
        """
        raise NotImplementedError(f"{type(self).__name__}.loss")

    # ---- inference ----
    def decode(self, output: torch.Tensor, net_size: tuple[int, int], *,
               traceable: bool = False) -> Candidates:
        """Every candidate box from this head's output (what ``forward`` returned).

        Args:
            output: the head's output for a batch.
            net_size: the network input (width, height) it was computed at.
            traceable: for ONNX export: tensor operations only, on the output's device
                (otherwise the head may compute as its reference does, e.g. Darknet's
                double-precision ``exp``).
        """
        raise NotImplementedError(f"{type(self).__name__}.decode")

    def detections(self, output: torch.Tensor, net_size: tuple[int, int],
                   thresh: float) -> list[Detections]:
        """Per image, the candidates kept at ``thresh``, boxes relative to the network input.

        The default is Darknet's ``get_yolo_detections``: a candidate needs objectness > thresh, and
        its class probabilities not :meth:`score_kept` (<= thresh) are zeroed (both compared as C
        floats). A head thresholding otherwise overrides this and :meth:`score_kept`.
        """
        c = self.decode(output, net_size)
        t = np.float32(thresh)
        out = []
        for b in range(c.boxes.shape[0]):
            keep = c.objectness[b] > float(t)
            prob = c.scores[b][keep].numpy()
            unc = None if c.uncertainty is None else c.uncertainty[b][keep].numpy()
            prob = np.where(self.score_kept(prob, thresh), prob, np.float32(0))
            out.append(Detections(c.boxes[b][keep].numpy(), c.objectness[b][keep].numpy(),
                                  prob, unc))
        return out

    def score_kept(self, probs: np.ndarray, thresh: float) -> np.ndarray:
        """Which class probabilities are detections at ``thresh``: the head's threshold rule, used
        by :meth:`detections` and by the rows and predictions listed from its detections.

        Darknet's: ``prob > thresh`` as C floats (``get_yolo_detections``, ``draw_detections``).
        """
        return probs > np.float32(thresh)

    def nms(self, dets: Detections, thresh: float) -> Detections:
        """This head's NMS over one image's joined detection arrays (IoU threshold ``thresh``).

        The network applies the *last* head's NMS to the detections of all its heads, as Darknet's
        commands use the last detection layer's ``nms_kind``.
        """
        raise NotImplementedError(f"{type(self).__name__}.nms")

    def export_outputs(
        self, output: torch.Tensor, net_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The ``boxes``, ``objectness`` and ``scores`` an ONNX export with decoding appends
        (:meth:`decode` with ``traceable=True``).

        Raises:
            UsageError: the head cannot be decoded in a traced graph.
        """
        c = self.decode(output.float(), net_size, traceable=True)
        return c.boxes, c.objectness, c.scores


def compute_loss(
    net: Any, head_inputs: Mapping[int, HeadInput], truth: torch.Tensor | np.ndarray | TruthRows,
    *, input_size: tuple[int, int] | None = None, seen: int = 0,
) -> LossTerms:
    """Every head's loss (:meth:`DetectionHead.loss`), summed into one training scalar.

    Args:
        net: the :class:`~darknetpy.model.network.Network` (reads ``layers`` and
            ``net.width/height``).
        head_inputs: ``{head layer index: DetectionHead.head_input}`` (see ``Network.head_inputs``).
        truth: (N, T, 5+) rows (x, y, w, h, class) relative to the network input; rows end at the
            first x == 0. A :class:`TruthRows` (rows on the device and their host copy) lets
            Darknet's heads compute without waiting for the device.
        input_size: the current network (width, height), when random resizing changed it.
        seen: images seen so far (``[region]`` pulls boxes toward their anchors while < 12800).

    Returns:
        :class:`LossTerms`; for Darknet's heads ``total.backward()`` leaves ``-delta`` in each head
        input's gradient. ``costs`` and ``stats`` are read from the device on first access;
        ``cost_tensor`` stays there.

    Raises:
        UsageError: no head inputs, or an index that is not a detection head.
    """
    if not head_inputs:
        raise UsageError("compute_loss: no head inputs given (the network has no detection head?)")
    if input_size is None:
        input_size = (int(net.net.width), int(net.net.height))
    total: torch.Tensor | None = None
    costs: dict[int, Any] = {}
    stats: dict[int, Any] = {}
    deltas: dict[int, torch.Tensor] = {}
    cost_sum: torch.Tensor | None = None
    rows = truth.rows if isinstance(truth, TruthRows) else truth
    for index in sorted(head_inputs):
        layer = net.layers[index]
        if not isinstance(layer, DetectionHead):
            raise UsageError(
                f"layer {index} ({getattr(layer, 'darknet_name', type(layer).__name__)}) is not a "
                "detection head"
            )
        result = layer.loss(head_inputs[index], truth if layer.takes_truth_rows else rows,
                            input_size=input_size, seen=seen)  # fmt: skip
        assert result.total is not None, f"{type(layer).__name__}.loss gave no total"
        total = result.total if total is None else total + result.total
        stats[index] = result.stats
        if result.terms is None:
            costs[index] = (lambda c=result.cost: float(c))  # read when looked at
            cost = result.cost.to(torch.float64)
        else:
            costs[index] = tuple(result.terms)
            head_stats = result.stats() if callable(result.stats) else result.stats
            cost = torch.tensor(float(head_stats.cost), dtype=torch.float64)
        cost_sum = cost.to(total.device) if cost_sum is None else cost_sum + cost.to(total.device)
        if result.delta is not None:
            deltas[index] = result.delta
    assert total is not None and cost_sum is not None
    return LossTerms(total=total, costs=LazyMapping(costs), stats=LazyMapping(stats),
                     deltas=MappingProxyType(deltas), cost_tensor=cost_sum / len(costs))
