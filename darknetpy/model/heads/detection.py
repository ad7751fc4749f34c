"""``[detection]``: the YOLOv1 head (``detection_layer.c``) and its options record
(``parser.c: parse_detection``).

The layer reads the flat output of a ``[connected]`` of ``side*side*((1+coords)*num + classes)``
values, laid out as three blocks: every cell's class probabilities (``side*side*classes``), every
(cell, box) confidence (``side*side*num``), every (cell, box) x, y, w, h
(``side*side*num*coords``); cells row-major, boxes innermost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..cfg import Options
from ..layers.base import BuildContext, DarknetLayer
from .base import Candidates
from .darknet_head import DarknetHead, precise
from .darknet_loss.detection import detection_loss
from .detections import Detections
from .option_readers import c_float, check_positive
from .options import NmsKind
from .records import HeadLoss

__all__ = ["DetectionLayer", "DetectionOptions", "parse_detection_options"]


@dataclass(frozen=True)
class DetectionOptions:
    """``[detection]`` (YOLOv1, ``parser.c: parse_detection``)."""

    classes: int = 1
    coords: int = 4
    rescore: bool = False
    num: int = 1
    side: int = 7
    softmax: bool = False
    sqrt: bool = False
    max_boxes: int = 200
    coord_scale: float = 1.0
    forced: bool = False
    object_scale: float = 1.0
    noobject_scale: float = 1.0
    class_scale: float = 1.0
    jitter: float = 0.2
    resize: float = 1.0
    random_box: float = 0.0  # `random=`: the responsible box drawn at random early in training
    reorg: int = 0

    @property
    def random(self) -> float:
        """The multi-scale coefficient training reads from the last head: 0. ``[detection]``'s
        ``random=`` picks boxes (:attr:`random_box`), and Darknet's ``yolo train`` never resizes
        (its ``[connected]`` input could not change)."""
        return 0.0

    @property
    def inputs(self) -> int:
        """Values the layer reads: ``side*side*((1+coords)*num + classes)`` (darknet asserts it)."""
        return self.side * self.side * ((1 + self.coords) * self.num + self.classes)


def parse_detection_options(opts: Options) -> DetectionOptions:
    """``[detection]`` keys into :class:`DetectionOptions` (``parser.c: parse_detection``).

    Raises:
        CfgError: ``coords`` other than 4 (darknet's decoding strides the boxes by 4 whatever
            ``coords`` says; its default 1 would read past the buffer), or a non-positive count.
    """
    coords = opts.get_int("coords", 1)
    if coords != 4:
        raise opts.error(
            f"coords={coords}: darknet's [detection] decoding reads 4 box values per box "
            "(get_detection_detections); set coords=4", "coords")
    values = {key: opts.get_int(key, default) for key, default in
              (("classes", 1), ("num", 1), ("side", 7))}
    for key, value in values.items():
        check_positive(opts, key, value)
    return DetectionOptions(
        classes=values["classes"],
        coords=coords,
        rescore=opts.get_bool("rescore", False),
        num=values["num"],
        side=values["side"],
        softmax=opts.get_bool("softmax", False),
        sqrt=opts.get_bool("sqrt", False),
        max_boxes=opts.get_int("max", 200),
        coord_scale=c_float(opts.get_float("coord_scale", 1.0)),
        forced=opts.get_bool("forced", False),
        object_scale=c_float(opts.get_float("object_scale", 1.0)),
        noobject_scale=c_float(opts.get_float("noobject_scale", 1.0)),
        class_scale=c_float(opts.get_float("class_scale", 1.0)),
        jitter=c_float(opts.get_float("jitter", 0.2)),
        resize=c_float(opts.get_float("resize", 1.0)),
        random_box=c_float(opts.get_float("random", 0.0)),
        reorg=opts.get_int("reorg", 0),
    )


class DetectionLayer(DarknetHead):
    """``[detection]`` (YOLOv1): ``l.output`` is the input, with a softmax over each cell's classes
    when ``softmax=1`` (``forward_detection_layer``); nothing else is activated.

    Decoding (``get_detection_detections``): box ``(x + col) / side, (y + row) / side`` and
    ``w, h`` (squared with ``sqrt=1``), confidence ``scale``, class probability
    ``scale * class``, for *every* cell and box. Darknet's ``get_network_boxes`` multiplies these
    by the image's width and height and never letterbox-corrects them, so its ``detector test``
    draws them off the image; darknetpy keeps them relative to the network input, as Darknet's own
    ``yolo test`` command does (``yolo.c``: ``get_detection_boxes(l, 1, 1, ...)``). Darknet keeps
    ``out_w/out_h/out_c`` at 0 (its layer table prints 0 x 0 x 0); the tensor keeps its input's
    shape here.
    """

    darknet_name: ClassVar[str] = "detection"
    darknet_sized: ClassVar[bool] = False
    options: DetectionOptions
    rng: np.random.Generator | None = None  # the training draws of random=1 (None: fresh ones)

    @classmethod
    def build(cls, opts: Options, ctx: BuildContext) -> DetectionLayer:
        """The head on the layer just above, once its output holds ``options.inputs`` values."""
        o = parse_detection_options(opts)
        if ctx.index == 0:
            raise opts.error("[detection] cannot be the first layer: it reads the output of a "
                             f"[connected] with output={o.inputs}")
        prev = ctx.prev_shape
        if prev.numel != o.inputs:
            above = ctx.layers[ctx.index - 1]
            raise opts.error(
                f"side={o.side}, num={o.num}, coords={o.coords}, classes={o.classes} read "
                f"side*side*((1+coords)*num+classes) = {o.inputs} values, but the layer above "
                f"({above.where()}) gives {prev.numel}; darknet asserts they are equal: set its "
                f"output={o.inputs}")
        return cls(opts.section, ctx.index, (ctx.index - 1,), prev, prev, o)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.options
        if not o.softmax:
            return x
        n = x.shape[0]
        flat = x.reshape(n, -1)
        split = o.side * o.side * o.classes
        classes = torch.softmax(flat[:, :split].reshape(n, -1, o.classes), -1)
        return torch.cat((classes.reshape(n, -1), flat[:, split:]), 1).reshape(x.shape)

    def decode(self, output: torch.Tensor, net_size: tuple[int, int], *,
               traceable: bool = False) -> Candidates:
        """``detection_layer.c: get_detection_detections`` with ``w = h = 1``: boxes relative to
        the network input, objectness ``scale``, scores ``scale * class``."""
        del net_size
        o = self.options
        n = output.shape[0]
        p = precise(output, traceable).reshape(n, -1)
        cells = o.side * o.side
        classes = p[:, :cells * o.classes].reshape(n, cells, 1, o.classes)
        scale = p[:, cells * o.classes:cells * (o.classes + o.num)].reshape(n, cells, o.num)
        box = p[:, cells * (o.classes + o.num):].reshape(n, cells, o.num, 4)
        cell = torch.arange(cells, device=p.device)
        col = (cell % o.side).to(p.dtype).view(1, cells, 1)
        row = torch.div(cell, o.side, rounding_mode="floor").to(p.dtype).view(1, cells, 1)
        w, h = box[..., 2], box[..., 3]
        if o.sqrt:
            w, h = w * w, h * h
        boxes = torch.stack(((box[..., 0] + col) / o.side, (box[..., 1] + row) / o.side, w, h), -1)
        scores = scale.unsqueeze(-1) * classes
        return Candidates(boxes.reshape(n, cells * o.num, 4), scale.reshape(n, cells * o.num),
                          scores.reshape(n, cells * o.num, o.classes))

    def detections(self, output: torch.Tensor, net_size: tuple[int, int],
                   thresh: float) -> list[Detections]:
        """*Every* cell and box, class probabilities ``scale * class`` zeroed where <= thresh
        (``get_detection_detections``; no objectness threshold)."""
        c = self.decode(output, net_size)
        t = np.float32(thresh)
        out = []
        for b in range(c.boxes.shape[0]):
            prob = c.scores[b].numpy()
            out.append(Detections(c.boxes[b].numpy(), c.objectness[b].numpy(),
                                  np.where(prob > t, prob, np.float32(0))))
        return out

    def nms_settings(self) -> tuple[NmsKind, float]:
        """``[detection]`` has no ``nms_kind``: ``do_nms_sort``."""
        return NmsKind.DEFAULT, 0.6

    def darknet_loss(self, z: torch.Tensor, truth: torch.Tensor | np.ndarray, *,
                     input_size: tuple[int, int], seen: int) -> HeadLoss:
        del input_size
        return detection_loss(self.forward(z.detach()), truth, self.options, seen=seen,
                              index=self.index, rng=self.rng)

    def extra_repr(self) -> str:
        o = self.options
        return (f"{DarknetLayer.extra_repr(self)}, side={o.side}, num={o.num}, "
                f"classes={o.classes}")
