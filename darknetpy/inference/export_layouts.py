"""The output layouts an ONNX export can have (``darknetpy export --layout``).

Every decoded layout is built from the same three tensors, each head's own traceable decode
(:func:`darknetpy.inference.export.decode_heads`: ``yolo_layer.c: get_yolo_box`` with
``scale_x_y`` and ``new_coords``, ``region_layer.c: get_region_box`` with its exp/softmax,
``gaussian_yolo_layer.c``, the YOLOv8 and YOLOX heads' decode), so the graph computes what
darknetpy's detection path computes. ``N`` is the batch, ``A`` every head's boxes in darknet's
detection order (heads in layer order, each head's cells row-major, anchor slots innermost):

* ``raw``: the heads' outputs as darknet computes them (``head_<i>``), no decoding;
* ``decoded``: one output ``detections`` ``(N, A, 5 + C)``: centre x, y, width, height
  **relative to the network input** (0..1, as OpenCV's Darknet importer reports them), darknet's
  ``objectness``, then one score per class **as darknet reports it** (``prob`` in
  ``get_yolo_detections``: objectness x class probability; x (1 - mean sigma) for
  ``[Gaussian_yolo]``), before thresholding;
* ``decoded-t``: one output ``output0`` ``(N, 4 + C, A)``, the ultralytics layout: centre x, y,
  width, height **in input pixels**, then the same per-class scores (objectness already
  multiplied in), no objectness row;
* ``nms``: ``decoded`` followed by ONNX ``NonMaxSuppression`` in the graph, one output
  ``detections`` ``(K, 7)``: batch index, x1, y1, x2, y2 **in input pixels**, score, class.

NMS in the graph is greedy IoU per class (darknet's ``box.c: do_nms_sort``): a box is kept when
its score is above ``score_thresh`` (darknet's ``prob > thresh``) and no better-scoring box of its
class overlaps it by IoU above ``iou_thresh``; at most ``max_det`` boxes per class and image. Rows
come per image, then per class, best first. For the YOLOv8 and YOLOX heads only each box's best
class enters NMS (their ``multi_label=False`` rule). Boxes whose scores tie may come out in
another order than darknet's sort (``qsort`` is not stable): near-ties, as the golden tests
define them. ``nms_kind=greedynms`` and ``diounms`` (DIoU NMS, ``diounms_sort``) have no ONNX
operator and are refused unless ``NmsOptions(plain_iou=True)`` (``--plain-iou-nms``) accepts
IoU NMS in their place (DIoU suppresses fewer boxes than IoU at the same threshold).

The boxes are in the network input's frame: undo a letterbox with
:func:`darknetpy.model.heads.detections.correct_yolo_boxes`, or scale by the image size for a
stretched input.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import UsageError

__all__ = [
    "LAYOUTS",
    "NmsOptions",
    "check_layout",
    "decoded",
    "decoded_t",
    "layout_output_names",
    "nms_rows",
]

LAYOUTS = ("raw", "decoded", "decoded-t", "nms")


class NmsOptions:
    """The in-graph NMS settings: IoU threshold, score threshold, boxes kept per class."""

    def __init__(self, iou_thresh: float = 0.45, score_thresh: float = 0.25,
                 max_det: int = 100, plain_iou: bool = False) -> None:
        if not 0 <= iou_thresh <= 1:
            raise UsageError(f"--iou-thresh {iou_thresh}: an IoU between 0 and 1")
        if max_det < 1:
            raise UsageError(f"--max-det {max_det}: at least 1 box per class")
        self.iou_thresh = float(iou_thresh)
        self.score_thresh = float(score_thresh)
        self.max_det = int(max_det)
        self.plain_iou = plain_iou  # IoU NMS even where the cfg says DIoU (the user's choice)


def check_layout(layout: str, heads: Sequence[object], where: str,
                 nms: NmsOptions | None = None) -> None:
    """``layout`` is one of :data:`LAYOUTS` and fits the network.

    Raises:
        UsageError: an unknown layout, a decoded layout without detection heads, or ``nms`` on a
            head whose NMS kind has no ONNX operator.
    """
    if layout not in LAYOUTS:
        raise UsageError(f"--layout {layout}: one of {', '.join(LAYOUTS)}")
    if layout != "raw" and not heads:
        raise UsageError(
            f"{where}: --layout {layout} needs a [yolo], [region], [Gaussian_yolo] or other "
            "detection layer; this network has none (use --layout raw)"
        )
    if layout == "nms" and heads and not (nms and nms.plain_iou):
        settings = getattr(heads[-1], "nms_settings", None)
        kind = settings()[0] if settings is not None else None
        if kind is not None and str(getattr(kind, "value", kind)) not in ("default", "cornersnms"):
            raise UsageError(
                f"{where}: --layout nms: this cfg's nms_kind={getattr(kind, 'value', kind)} has "
                "no ONNX operator (ONNX NonMaxSuppression is greedy IoU); export --layout "
                "decoded and run darknetpy's NMS on it, or pass --plain-iou-nms to accept IoU NMS"
            )


def layout_output_names(layout: str) -> list[str]:
    """The ONNX output names of a decoded layout (``raw`` keeps :func:`output_names`)."""
    return ["output0"] if layout == "decoded-t" else ["detections"]


def decoded(boxes: Tensor, objectness: Tensor, scores: Tensor) -> Tensor:
    """``(N, A, 5 + C)``: boxes relative to the input, objectness, darknet's per-class prob."""
    return torch.cat([boxes, objectness.unsqueeze(-1), scores], -1)


def decoded_t(boxes: Tensor, scores: Tensor, net_size: tuple[int, int]) -> Tensor:
    """``(N, 4 + C, A)``: boxes in input pixels, then the per-class scores (ultralytics')."""
    w, h = net_size
    pixels = boxes * torch.tensor([w, h, w, h], dtype=boxes.dtype)
    return torch.cat([pixels, scores], -1).transpose(1, 2)


def best_class_only(scores: Tensor) -> Tensor:
    """Each box's scores with every class but its best set to 0 (``multi_label=False``)."""
    best = scores.amax(-1, keepdim=True)
    return scores * (scores >= best).to(scores.dtype)


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (``center_point_box=1``) as one traced node. The PyTorch forward
    only stands in while tracing (one row of zeros); the runtime computes the real selection."""

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, max_det: int, iou: float,  # type: ignore[override]
                score: float) -> Tensor:
        return torch.zeros(1, 3, dtype=torch.int64)

    @staticmethod
    def symbolic(g, boxes, scores, max_det: int, iou: float, score: float):  # type: ignore[no-untyped-def]
        return g.op(
            "NonMaxSuppression",
            boxes,
            scores,
            g.op("Constant", value_t=torch.tensor([max_det], dtype=torch.int64)),
            g.op("Constant", value_t=torch.tensor([iou], dtype=torch.float32)),
            g.op("Constant", value_t=torch.tensor([score], dtype=torch.float32)),
            center_point_box_i=1,
        )


def nms_rows(boxes: Tensor, scores: Tensor, net_size: tuple[int, int], options: NmsOptions,
             best_only: bool) -> Tensor:
    """``(K, 7)`` rows (batch, x1, y1, x2, y2 in input pixels, score, class) after ONNX
    ``NonMaxSuppression`` per class (traced; see the module docstring)."""
    w, h = net_size
    pixels = boxes * torch.tensor([w, h, w, h], dtype=boxes.dtype)
    if best_only:
        scores = best_class_only(scores)
    per_class = scores.transpose(1, 2).contiguous()  # (N, C, A), as the operator wants
    picked = _NonMaxSuppression.apply(
        pixels, per_class, options.max_det, options.iou_thresh, options.score_thresh
    )
    image, cls, box = picked[:, 0], picked[:, 1], picked[:, 2]
    xywh = pixels[image, box]
    corners = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
    score = per_class[image, cls, box]
    return torch.cat(
        [image.unsqueeze(1).float(), corners, score.unsqueeze(1), cls.unsqueeze(1).float()], 1
    )
