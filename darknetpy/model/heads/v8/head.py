"""``[yolov8]``: the anchor-free DFL head of ultralytics' YOLOv8 (``nn/modules/head.py: Detect``)
as a darknetpy detection head.

The section reads its levels like ``[route]``: ``layers=`` lists the layers whose outputs are the
raw per-level maps, each ``(N, 4 * reg_max + classes, H, W)`` (box logits first, then class
logits); the convolutions that make them are ordinary ``[convolutional]`` sections. Each level's
stride is the network input size over the level's size, fixed when the network is built::

    [yolov8]
    classes=80
    layers=-9,-5,-1        # strides 8, 16, 32 at any input size
    # reg_max=16           # DFL bins per box side
    # max_det=300          # detections kept per image after NMS
    # iou_normalizer=7.5   # box (CIoU) loss gain (ultralytics `box`)
    # cls_normalizer=0.5   # class (BCE) loss gain (ultralytics `cls`)
    # dfl_normalizer=1.5   # DFL loss gain (ultralytics `dfl`)
    # tal_topk=10  tal_alpha=0.5  tal_beta=6   # task-aligned assignment

``iou_normalizer`` and ``cls_normalizer`` are Darknet's names for the same gains on ``[yolo]``; the
other keys are new (Darknet has no DFL, no task-aligned assignment and no detection cap).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ...cfg import Options, Section
from ...layers.base import BuildContext, Shape
from ..base import Candidates, DetectionHead, HeadInput
from ..detections import Detections
from ..records import HeadLoss, HeadStats
from .decode import decode_v8
from .loss import V8LossOptions, v8_loss
from .geometry import xywh_to_xyxy
from .nms import MAX_NMS, greedy_nms

__all__ = ["V8HeadOptions", "V8Stats", "YoloV8Head"]


@dataclass(frozen=True)
class V8HeadOptions:
    """A ``[yolov8]`` section, parsed. ``strides``: input pixels per cell of each level."""

    classes: int
    strides: tuple[float, ...]
    max_det: int = 300
    loss: V8LossOptions = V8LossOptions()

    @property
    def reg_max(self) -> int:
        return self.loss.reg_max


@dataclass(frozen=True)
class V8Stats(HeadStats):
    """:class:`HeadStats` of a ``[yolov8]`` head: ``iou_loss`` = box (CIoU), ``class_loss`` = cls
    (BCE), ``dfl_loss`` = DFL, each gain-scaled per image (ultralytics' ``loss_items``);
    ``total_loss`` their sum; ``count`` the foreground anchors."""

    dfl_loss: float = 0.0

    @property
    def items(self) -> tuple[float, float, float]:
        """``(box, cls, dfl)`` as ultralytics prints them."""
        return (self.iou_loss, self.class_loss, self.dfl_loss)


def _level_strides(opts: Options, net: Shape, levels: Sequence[Shape]) -> tuple[float, ...]:
    """Input size over level size, per level; it must be a whole number, the same in x and y."""
    strides = []
    for k, s in enumerate(levels):
        sx, sy = net.width / s.width, net.height / s.height
        if sx != sy or sx != int(sx) or sx < 1:
            raise opts.error(
                f"level {k} is {s.width}x{s.height} for a {net.width}x{net.height} input: its "
                "stride must be a whole number, the same across and down; make the input size a "
                "multiple of the largest stride",
                "layers",
            )
        strides.append(float(sx))
    return tuple(strides)


class YoloV8Head(DetectionHead):
    """``[yolov8]``: forward gives the decoded ``(N, A, 4 + classes)`` (``cx, cy, w, h`` in input
    pixels, sigmoid class scores; anchors level by level, row-major), as ultralytics' ``Detect``
    returns in eval mode (transposed)."""

    darknet_name: ClassVar[str] = "yolov8"
    per_level: ClassVar[bool] = True
    options: V8HeadOptions

    def __init__(self, section: Section, index: int, sources: Sequence[int], in_shape: Shape,
                 out_shape: Shape, options: V8HeadOptions) -> None:
        super().__init__(section, index, sources, in_shape, out_shape)
        self.options = options

    @classmethod
    def build(cls, opts: Options, ctx: BuildContext) -> YoloV8Head:
        classes = opts.get_int("classes")
        reg_max = opts.get_int("reg_max", 16)
        if classes < 1:
            raise opts.error(f"classes={classes}; [yolov8] needs at least 1 class", "classes")
        if reg_max < 2:
            raise opts.error(
                f"reg_max={reg_max}; the DFL head needs at least 2 bins (ultralytics' default: 16)",
                "reg_max",
            )
        refs = opts.get_ints("layers")
        if not refs:
            raise opts.error(
                "layers= is empty; list the per-level layers, e.g. layers=-9,-5,-1", "layers"
            )
        sources = tuple(ctx.resolve(opts, "layers", r) for r in refs)
        shapes = [ctx.shape_of(s) for s in sources]
        want = 4 * reg_max + classes
        for k, (s, shape) in enumerate(zip(sources, shapes)):
            if shape.channels != want:
                raise opts.error(
                    f"level {k} (layer {s}) has {shape.channels} channels; [yolov8] needs "
                    f"4*reg_max + classes = {want}: set filters={want} on that layer, or fix "
                    "classes=",
                    "layers",
                )
        loss = V8LossOptions(
            reg_max=reg_max,
            box_gain=opts.get_float("iou_normalizer", 7.5),
            cls_gain=opts.get_float("cls_normalizer", 0.5),
            dfl_gain=opts.get_float("dfl_normalizer", 1.5),
            topk=opts.get_int("tal_topk", 10),
            alpha=opts.get_float("tal_alpha", 0.5),
            beta=opts.get_float("tal_beta", 6.0),
        )
        if loss.topk < 1:
            raise opts.error(f"tal_topk={loss.topk}; it must be at least 1", "tal_topk")
        max_det = opts.get_int("max_det", 300)
        if max_det < 1:
            raise opts.error(f"max_det={max_det}; it must be at least 1", "max_det")
        strides = _level_strides(opts, ctx.input_shape, shapes)
        options = V8HeadOptions(classes, strides, max_det, loss)
        anchors = sum(s.height * s.width for s in shapes)
        out_shape = Shape(4 + classes, anchors, 1)
        return cls(opts.section, ctx.index, sources, shapes[0], out_shape, options)

    def summary_extra(self) -> str:
        strides = ",".join(f"{s:g}" for s in self.options.strides)
        return f"classes {self.classes}, reg_max {self.options.reg_max}, strides {strides}"

    def forward(self, *levels: torch.Tensor) -> torch.Tensor:
        return decode_v8(levels, self.options.strides, self.options.reg_max)

    # ---- training ----
    def loss(self, inputs: HeadInput, truth: torch.Tensor | np.ndarray, *,
             input_size: tuple[int, int], seen: int = 0) -> HeadLoss:
        """ultralytics' ``v8DetectionLoss`` on the per-level maps (see :func:`v8_loss`); ``total`` =
        ``(box + cls + dfl) * N`` as ultralytics back-propagates it; ``cost`` the same, detached.
        The input size comes from the level shapes and strides (``input_size`` agrees with it)."""
        del input_size, seen
        levels = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
        r = v8_loss(levels, torch.as_tensor(truth), self.options.strides, self.options.loss)
        box, cls, dfl = (float(v) for v in r.items)
        cost = r.total.detach().double()
        count = int(r.foreground)
        line = (
            f"v8 layer {self.index}: box {box:.4f}, cls {cls:.4f}, dfl {dfl:.4f} (per image), "
            f"fg {count}, avg IoU {float(r.avg_iou):.4f}"
        )
        stats = V8Stats(
            layer=self.index, kind=self.darknet_name, cost=float(cost), count=count,
            avg_iou=float(r.avg_iou), class_loss=cls, iou_loss=box, dfl_loss=dfl,
            total_loss=box + cls + dfl, line=line,
        )
        return HeadLoss(None, cost, stats, r.total, terms=(box, cls, dfl))

    # ---- inference ----
    def decode(self, output: torch.Tensor, net_size: tuple[int, int], *,
               traceable: bool = False) -> Candidates:
        """Boxes relative to the input, objectness 1 (the head has none), sigmoid class scores."""
        if not traceable:
            output = output.detach()
        w, h = net_size
        boxes = output[..., :4] / output.new_tensor([w, h, w, h])
        return Candidates(boxes, torch.ones_like(output[..., 0]), output[..., 4:])

    def detections(self, output: torch.Tensor, net_size: tuple[int, int],
                   thresh: float) -> list[Detections]:
        """ultralytics' candidates (``non_max_suppression``, ``multi_label=False``): an anchor whose
        best class score is above ``thresh``, labelled with that class alone."""
        c = self.decode(output, net_size)
        best, label = c.scores.max(-1)
        out = []
        for b in range(best.shape[0]):
            keep = torch.nonzero(best[b] > float(np.float32(thresh))).view(-1)
            score = best[b, keep].float().numpy()
            probs = np.zeros((len(keep), self.classes), np.float32)
            probs[np.arange(len(keep)), label[b, keep].numpy()] = score
            boxes = c.boxes[b, keep].float().numpy()
            out.append(Detections(boxes, np.ones(len(keep), np.float32), probs))
        return out

    def nms(self, dets: Detections, thresh: float) -> Detections:
        """Class-aware greedy NMS at IoU ``thresh``, then the ``max_det`` best, best first
        (ultralytics' ``non_max_suppression``; see :mod:`.nms`)."""
        if len(dets) == 0:
            return dets
        score, label = torch.from_numpy(dets.probs).max(1)
        index = torch.arange(len(dets))
        if len(dets) > MAX_NMS:  # ultralytics' max_nms: only the best boxes enter NMS
            index = score.argsort(descending=True, stable=True)[:MAX_NMS]
        xyxy = xywh_to_xyxy(torch.from_numpy(dets.boxes)[index])
        keep = greedy_nms(xyxy, score[index], label[index], thresh)[: self.options.max_det]
        return dets.take(index[keep].numpy())
