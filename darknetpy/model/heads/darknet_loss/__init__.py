"""Darknet's detection losses as surrogates whose gradient is exactly Darknet's delta.

Darknet does not differentiate a loss: each head computes ``l.delta`` (target minus output, on
the *activated* outputs) and back-propagates it unchanged to the previous layer
(``backward_yolo_layer``: ``prev.delta += l.delta``). darknetpy computes the same delta without
autograd and returns ``total = -sum(delta * z)`` over every head input ``z``, so
``d total / d z == -delta`` elementwise. That holds for new_coords=1 too: there ``z`` is already
the logistic output of the conv, whose backward applies ``y(1-y)`` exactly as Darknet's does.

Modules, each mirroring Darknet's C functions it names:

* :mod:`darknetpy.model.heads.records`: :class:`HeadStats`, :class:`HeadLoss`, :class:`LossTerms` (what
  is returned, shared by every head);
* :mod:`.specs`: :class:`YoloSpec`, :class:`RegionSpec`, read from a layer's options record;
* :mod:`.iou_grad`: ``box.c: dx_box_iou`` (the IoU measures themselves are in
  :mod:`darknetpy.model.boxes`);
* :mod:`.deltas`: the per-box formulas ``delta_yolo_box``, ``delta_yolo_class``,
  ``delta_gaussian_yolo_box``, ``delta_gaussian_yolo_class``, ``delta_region_box``,
  ``delta_region_class``;
* :mod:`.assign`: truth rows, best anchors, best-truth IoUs, the ``iou_thresh`` multi-anchor
  matching of ``process_batch``, and the rounds that keep Darknet's order on shared positions;
* :mod:`.yolo`, :mod:`.gaussian`, :mod:`.region`: ``forward_yolo_layer``,
  ``forward_gaussian_yolo_layer``, ``forward_region_layer`` in training mode, called by each head's
  ``loss`` (:mod:`darknetpy.model.heads.yolo` etc.); the network's sum is
  :func:`darknetpy.model.heads.base.compute_loss`;

Vectorised over batch, anchors and cells, and nothing waits for the device (issue 16): the
(truth, anchor) pairs have fixed shapes with a ``take`` mask, what sizes the work (truth slots in
use, truths sharing a cell) comes from the host copy of the truths
(:class:`~darknetpy.model.heads.records.TruthRows`), costs stay tensors and the printed
:class:`HeadStats` are read when first looked at (``tests/training/test_host_syncs.py`` counts
the reads). Deliberate differences, where Darknet would read or
write outside its buffers: a truth's cell index is clamped to the grid, and a [yolo]/[region]
truth with a negative class is skipped like one with class >= classes. Not reproduced: the SAT
``adversarial`` pass, the ``badlabels_rejection_percentage`` / ``num_sigmas_reject_badlabels`` /
``equidistant_point`` filters, and the GPU-only ``delta_normalizer`` and ``loss_scale`` factors
of ``backward_yolo_layer_gpu`` (the CPU build, which produced the golden data, applies neither).
"""

from __future__ import annotations

from ..records import HeadLoss, HeadStats, LossTerms
from .assign import CellFn, Truths, best_anchors, best_truth_ious, yolo_assignments
from .deltas import gaussian_box_deltas, yolo_box_deltas
from .gaussian import gaussian_yolo_activate, gaussian_yolo_loss
from .iou_grad import dx_box_iou, fix_nan_inf
from .region import region_activate, region_loss, region_output
from .specs import FLT_MAX, RegionSpec, YoloSpec, cached_spec, region_spec, yolo_spec
from .yolo import scale_x_y_args, yolo_activate, yolo_boxes, yolo_loss

__all__ = [
    "FLT_MAX",
    "CellFn",
    "HeadLoss",
    "HeadStats",
    "LossTerms",
    "RegionSpec",
    "Truths",
    "YoloSpec",
    "best_anchors",
    "best_truth_ious",
    "cached_spec",
    "dx_box_iou",
    "fix_nan_inf",
    "gaussian_box_deltas",
    "gaussian_yolo_activate",
    "gaussian_yolo_loss",
    "region_activate",
    "region_loss",
    "region_output",
    "region_spec",
    "scale_x_y_args",
    "yolo_activate",
    "yolo_assignments",
    "yolo_box_deltas",
    "yolo_boxes",
    "yolo_loss",
    "yolo_spec",
]
