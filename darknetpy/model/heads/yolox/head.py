"""``[yolox]``: YOLOX's decoupled anchor-free head (Megvii's ``yolox/models/yolo_head.py``).

::

    [yolox]
    layers=106,118,130   # the per-level maps, finest first: each (5 + classes, H, W)
    classes=80           # optional: by default the channels of the levels minus 5

Each level is ``torch.cat([reg, obj, cls], 1)`` of YOLOX's head (box 4, objectness 1, classes):
the convolutions before it are ordinary Darknet sections. A level's stride is the network input
over its size. ``forward`` is YOLOX's eval-mode output (``decode_yolox``: (N, A, 5 + classes), cx,
cy, w, h in input pixels, sigmoid objectness and classes); the loss is ``get_losses`` (SimOTA,
``yolox_loss``) on the raw levels, its L1 term on while ``use_l1`` is set (the training loop sets
it for the last, no-mosaic epochs); detection is ``yolox/utils/boxes.py: postprocess``: score =
objectness x best class score, kept when >= thresh, class-aware NMS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ...cfg import Options
from ...layers.base import BuildContext, Shape
from ..base import Candidates, DetectionHead, HeadInput
from ..detections import Detections
from ..records import HeadLoss, HeadStats
from .decode import decode_yolox
from .loss import yolox_loss_details
from .postprocess import nms

__all__ = ["YoloxHead", "YoloxOptions"]


@dataclass(frozen=True)
class YoloxOptions:
    """``[yolox]`` as parsed: the class count and, per level, its stride in input pixels."""

    classes: int
    strides: tuple[int, ...]


def _strides(opts: Options, ctx: BuildContext, shapes: Sequence[Shape]) -> tuple[int, ...]:
    """Each level's stride: the network input over the level's size, the same on both axes."""
    net = ctx.input_shape
    strides = []
    for ref, shape in zip(opts.get_ints("layers"), shapes, strict=True):
        stride = net.height // shape.height
        if stride * shape.height != net.height or stride * shape.width != net.width:
            raise opts.error(
                f"layers={ref} is {shape.width} x {shape.height} for a {net.width} x {net.height} "
                "input: a [yolox] level must divide the input by one whole stride on both axes; "
                "make width/height in [net] multiples of the largest stride",
                "layers",
            )
        strides.append(stride)
    return tuple(strides)


class YoloxHead(DetectionHead):
    """``[yolox]``: the YOLOX head (see the module docstring)."""

    darknet_name: ClassVar[str] = "yolox"
    per_level: ClassVar[bool] = True
    options: YoloxOptions

    def __init__(self, *args: object, options: YoloxOptions) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.options = options
        self.strides = options.strides
        self.use_l1 = False  # YOLOX's head.use_l1: the training loop turns it on

    @classmethod
    def build(cls, opts: Options, ctx: BuildContext) -> YoloxHead:
        sources = tuple(ctx.resolve(opts, "layers", r) for r in opts.get_ints("layers"))
        shapes = [ctx.shape_of(s) for s in sources]
        classes = opts.get_int("classes", shapes[0].channels - 5)
        for ref, shape in zip(opts.get_ints("layers"), shapes, strict=True):
            if shape.channels != 5 + classes:
                raise opts.error(
                    f"layers={ref} has {shape.channels} channels; [yolox] with classes={classes} "
                    f"needs {5 + classes} per level (box 4, objectness 1, one per class): set "
                    f"filters={5 + classes} in the [convolutional] or [route] giving that level",
                    "layers",
                )
        if classes < 1:
            raise opts.error(f"classes={classes}: a [yolox] head needs at least one class")
        options = YoloxOptions(classes, _strides(opts, ctx, shapes))
        anchors = sum(s.height * s.width for s in shapes)
        return cls(opts.section, ctx.index, sources, shapes[0], Shape(5 + classes, anchors, 1),
                   options=options)

    def summary_extra(self) -> str:
        return f"classes {self.classes}, strides {','.join(map(str, self.strides))}"

    def forward(self, *levels: torch.Tensor) -> torch.Tensor:
        return decode_yolox(levels, self.strides)

    # ---- training ----
    def loss(self, inputs: HeadInput, truth: torch.Tensor | np.ndarray, *,
             input_size: tuple[int, int], seen: int = 0) -> HeadLoss:
        """YOLOX's ``get_losses`` (``yolox_loss``): ``cost`` is its total, ``stats.line`` prints
        every term.

        ``stats.count`` is the number of foreground anchors and ``avg_iou`` their mean IoU with
        their truth (as SimOTA measured it).
        """
        levels = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
        t = torch.as_tensor(truth, dtype=torch.float32, device=levels[0].device)[..., :5]
        width, height = input_size
        details = yolox_loss_details(levels, t, self.strides, use_l1=self.use_l1,
                                     input_size=(height, width))
        terms = details.terms
        num_fg = details.fg.sum()
        avg_iou = details.matched_iou.sum() / num_fg.clamp(min=1)
        total, iou, obj, cls, l1, fg_per_gt, fg, mean_iou = torch.stack(
            [*(x.detach().float() for x in terms), num_fg.float(), avg_iou]).tolist()
        line = (f"[yolox] layer {self.index}: total {total:.4f}, iou {iou:.4f}, obj {obj:.4f}, "
                f"cls {cls:.4f}, l1 {l1:.4f}, fg/gt {fg_per_gt:.3f}, fg {int(fg)}, "
                f"avg IoU {mean_iou:.4f}")
        stats = HeadStats(layer=self.index, kind=self.darknet_name, cost=total, count=int(fg),
                          avg_iou=mean_iou, class_loss=cls, iou_loss=iou, total_loss=total,
                          line=line)
        return HeadLoss(None, terms.total.detach().double(), stats, terms.total,
                        terms=(total, iou, obj, cls, l1, fg_per_gt))

    # ---- inference ----
    def decode(self, output: torch.Tensor, net_size: tuple[int, int], *,
               traceable: bool = False) -> Candidates:
        """Boxes relative to the input; ``scores`` = objectness x each class (YOLOX's score)."""
        width, height = net_size
        scale = output.new_tensor([width, height, width, height])
        obj = output[..., 4]
        return Candidates(output[..., :4] / scale, obj, obj[..., None] * output[..., 5:])

    def detections(self, output: torch.Tensor, net_size: tuple[int, int],
                   thresh: float) -> list[Detections]:
        """YOLOX's ``postprocess`` rule: one detection per anchor whose objectness x best class
        score is >= thresh, carrying that score for its best class only (other classes 0)."""
        width, height = net_size
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        out = []
        for image in output.detach().float().cpu():
            class_conf, class_pred = image[:, 5:].max(dim=1)
            score = image[:, 4] * class_conf
            keep = score >= thresh
            probs = torch.zeros(int(keep.sum()), image.shape[1] - 5)
            probs[torch.arange(len(probs)), class_pred[keep]] = score[keep]
            out.append(Detections((image[keep, :4] / scale).numpy(), image[keep, 4].numpy(),
                                  probs.numpy(), None))
        return out

    def score_kept(self, probs: np.ndarray, thresh: float) -> np.ndarray:
        """YOLOX keeps a score equal to the threshold (``postprocess``: ``>= conf_thre``)."""
        return probs >= np.float32(thresh)

    def nms(self, dets: Detections, thresh: float) -> Detections:
        """Class-aware greedy NMS on the best-class score (``batched_nms`` in ``postprocess``),
        best first."""
        if len(dets) == 0:
            return dets
        xywh = torch.from_numpy(dets.boxes)
        corners = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
        probs = torch.from_numpy(dets.probs)
        score, cls = probs.max(dim=1)
        return dets.take(nms(corners, score, cls, thresh).numpy())
