"""A head is one registered class: toy heads defined here, outside the package, are used by detect,
the loss and the export without any other change (issue 11).

``ToyHead`` is an anchor-free head on the layer just above (one box per cell: x, y, w, h, classes).
``ToyLevels`` reads several layers (``layers=``, one (N, C, H, W) tensor per level) and returns its
decoded (N, A, 4 + classes) tensor, the shape of the coming ``[yolov8]`` / ``[yolox]`` heads.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import torch

from darknetpy.errors import CfgError
from darknetpy.inference.export import decode_heads, output_names
from darknetpy.model.cfg import Options
from darknetpy.model.heads import HEADS, Candidates, DetectionHead, register_head
from darknetpy.model.heads.darknet_nms import do_nms_sort
from darknetpy.model.heads.detections import Detections
from darknetpy.model.heads.records import HeadLoss, HeadStats
from darknetpy.model.layers.base import BuildContext, Shape
from darknetpy.model.network import Network

CLASSES = 2


def _toy_candidates(v: torch.Tensor, h: int, w: int) -> Candidates:
    """(N, H*W, 4 + classes) sigmoid outputs, row-major cells -> boxes relative to the input."""
    col = torch.arange(w, dtype=v.dtype).repeat(h)
    row = torch.arange(h, dtype=v.dtype).repeat_interleave(w)
    boxes = torch.stack(((col + v[..., 0]) / w, (row + v[..., 1]) / h, v[..., 2], v[..., 3]), -1)
    return Candidates(boxes, torch.ones_like(v[..., 0]), v[..., 4:])


class ToyHead(DetectionHead):
    darknet_name: ClassVar[str] = "toy"
    max_det: ClassVar[int] = 2

    def __init__(self, *args: object, classes: int) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.options = {"classes": classes}
        self.nms_calls = 0

    @property
    def classes(self) -> int:
        return self.options["classes"]

    @classmethod
    def build(cls, opts: Options, ctx: BuildContext) -> ToyHead:
        classes = opts.get_int("classes")
        prev = ctx.prev_shape
        if prev.channels != 4 + classes:
            raise opts.error(f"needs {4 + classes} channels, got {prev.channels}")
        return cls(opts.section, ctx.index, (ctx.index - 1,), prev, prev, classes=classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)

    def decode(self, output: torch.Tensor, net_size: tuple[int, int], *,
               traceable: bool = False) -> Candidates:
        n, c, h, w = output.shape
        return _toy_candidates(output.reshape(n, c, h * w).transpose(1, 2), h, w)

    def nms(self, dets: Detections, thresh: float) -> Detections:
        """Class-aware NMS, then the ``max_det`` best (what anchor-free heads do)."""
        self.nms_calls += 1
        kept = do_nms_sort(dets, thresh)
        best = np.argsort(-kept.probs.max(1), kind="stable")[: self.max_det]
        return kept.take(best)

    def loss(self, inputs: torch.Tensor | list[torch.Tensor], truth: torch.Tensor | np.ndarray, *,
             input_size: tuple[int, int], seen: int = 0) -> HeadLoss:
        assert isinstance(inputs, torch.Tensor)
        total = (torch.sigmoid(inputs) ** 2).sum()
        cost = total.detach().double()
        return HeadLoss(None, cost, HeadStats(self.index, "toy", float(cost), 1, 0.0), total)


class ToyLevels(DetectionHead):
    """``[toy_levels] layers=-1,-2``: each level (N, 4 + classes, H, W); forward gives
    (N, A, 4 + classes)."""

    darknet_name: ClassVar[str] = "toy_levels"
    per_level: ClassVar[bool] = True

    def __init__(self, *args: object, classes: int, grids: tuple[tuple[int, int], ...]) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.options = {"classes": classes}
        self.grids = grids

    @property
    def classes(self) -> int:
        return self.options["classes"]

    @classmethod
    def build(cls, opts: Options, ctx: BuildContext) -> ToyLevels:
        sources = tuple(ctx.resolve(opts, "layers", r) for r in opts.get_ints("layers"))
        shapes = [ctx.shape_of(s) for s in sources]
        classes = shapes[0].channels - 4
        anchors = sum(s.height * s.width for s in shapes)
        return cls(opts.section, ctx.index, sources, shapes[0], Shape(4 + classes, anchors, 1),
                   classes=classes, grids=tuple((s.height, s.width) for s in shapes))

    def forward(self, *levels: torch.Tensor) -> torch.Tensor:
        flat = [torch.sigmoid(v).flatten(2).transpose(1, 2) for v in levels]
        return torch.cat(flat, 1)

    def decode(self, output: torch.Tensor, net_size: tuple[int, int], *,
               traceable: bool = False) -> Candidates:
        parts, start = [], 0
        for h, w in self.grids:
            parts.append(_toy_candidates(output[:, start:start + h * w], h, w))
            start += h * w
        return Candidates(*(torch.cat([getattr(p, k) for p in parts], 1)
                            for k in ("boxes", "objectness", "scores")))

    def nms(self, dets: Detections, thresh: float) -> Detections:
        return do_nms_sort(dets, thresh)

    def loss(self, inputs: torch.Tensor | list[torch.Tensor], truth: torch.Tensor | np.ndarray, *,
             input_size: tuple[int, int], seen: int = 0) -> HeadLoss:
        assert isinstance(inputs, list) and len(inputs) == len(self.grids)
        total = sum((torch.sigmoid(v) ** 2).mean() for v in inputs)
        cost = total.detach().double()
        return HeadLoss(None, cost, HeadStats(self.index, "toy_levels", float(cost), 1, 0.0), total)


TOY_CFG = f"""[net]
width=32
height=32
channels=3
[convolutional]
filters={4 + CLASSES}
size=3
stride=4
pad=1
activation=linear
[toy]
classes={CLASSES}
"""

LEVELS_CFG = f"""[net]
width=32
height=32
channels=3
[convolutional]
filters={4 + CLASSES}
size=3
stride=4
pad=1
activation=linear
[convolutional]
filters={4 + CLASSES}
size=3
stride=2
pad=1
activation=linear
[toy_levels]
layers=-1,-2
"""


@pytest.fixture
def toy_heads() -> dict:
    return register_head(register_head(HEADS, "toy", ToyHead), "toy_levels", ToyLevels)


def _net(cfg: str, heads: dict) -> Network:
    torch.manual_seed(0)
    net = Network.from_text(cfg, heads=heads)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return net


def test_register_head_returns_a_new_table_and_checks_its_rows() -> None:
    table = register_head(HEADS, "toy", ToyHead)
    assert table["toy"] is ToyHead and "toy" not in HEADS
    assert {"yolo", "Gaussian_yolo", "region"} <= set(HEADS) and set(table) == set(HEADS) | {"toy"}
    with pytest.raises(ValueError, match=r"\[yolo\] is already built by YoloLayer"):
        register_head(HEADS, "yolo", ToyHead)
    with pytest.raises(TypeError, match="not a DetectionHead subclass"):
        register_head(HEADS, "toy", int)  # type: ignore[arg-type]


def test_an_unregistered_head_is_an_error_never_a_yolo_layer() -> None:
    with pytest.raises(CfgError, match=r"<string>:11 \[toy\]: unknown section \[toy\]"):
        Network.from_text(TOY_CFG)


def test_detect_uses_the_heads_decode_and_nms(toy_heads: dict) -> None:
    net = _net(TOY_CFG, toy_heads)
    assert net.heads == (1,) and isinstance(net.layers[1], ToyHead)
    x = torch.rand(1, 3, 32, 32)
    rows = net.detect(x, (64, 32), thresh=0.1, nms=0.45)[0]
    assert net.layers[1].nms_calls == 1
    assert 0 < len({(r.x, r.y) for r in rows}) <= ToyHead.max_det
    # the rows are the head's own decode, thresholded: every prob is one of the head's scores
    cand = net.layers[1].decode(net(x)[0], (32, 32))
    scores = cand.scores[0].detach().numpy()
    for r in rows:
        assert r.prob > 0.1 and np.isclose(scores[:, r.class_id], r.prob).any()
    assert net.detect(x, (64, 32), thresh=0.1, nms=0)[0]  # nms=0 skips it, as darknet
    assert net.layers[1].nms_calls == 1


def test_loss_uses_the_heads_loss(toy_heads: dict) -> None:
    net = _net(TOY_CFG, toy_heads)
    x = torch.rand(2, 3, 32, 32)
    inputs = net.head_inputs(x)
    assert set(inputs) == {1} and inputs[1].shape == (2, 4 + CLASSES, 8, 8)
    terms = net.compute_loss(inputs, torch.zeros(2, 1, 5))
    assert terms.stats[1].kind == "toy" and not terms.deltas
    assert terms.total.item() == pytest.approx((torch.sigmoid(inputs[1]) ** 2).sum().item())
    terms.total.backward()
    assert float(net.layers[0].conv.weight.grad.abs().sum()) > 0


def test_export_uses_the_heads_decode(toy_heads: dict) -> None:
    net = _net(TOY_CFG, toy_heads).eval()
    x = torch.rand(1, 3, 32, 32)
    assert output_names(net, with_decode=True) == ["head_1", "boxes", "objectness", "scores"]
    boxes, objectness, scores = decode_heads(net.head_layers(), net(x), (32, 32))
    cand = net.layers[1].decode(net(x)[0], (32, 32), traceable=True)
    assert torch.equal(boxes, cand.boxes) and torch.equal(scores, cand.scores)
    assert boxes.shape == (1, 64, 4) and objectness.shape == (1, 64)


def test_export_onnx_runs_the_toy_head(toy_heads: dict, tmp_path) -> None:
    pytest.importorskip("onnx", reason="onnx is optional (pip install darknetpy[onnx])")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is an optional dependency")
    from darknetpy.inference.export import export_onnx

    net = _net(TOY_CFG, toy_heads).eval()
    path = export_onnx(net, tmp_path / "toy.onnx", with_decode=True, fuse=False)
    x = torch.rand(1, 3, 32, 32)
    got = ort.InferenceSession(str(path)).run(None, {"images": x.numpy()})
    want = decode_heads(net.head_layers(), net(x), (32, 32))
    np.testing.assert_allclose(got[1], want[0].detach().numpy(), rtol=1e-5, atol=1e-6)


def test_a_head_reading_several_levels(toy_heads: dict) -> None:
    net = _net(LEVELS_CFG, toy_heads)
    x = torch.rand(2, 3, 32, 32)
    head = net.layers[2]
    assert isinstance(head, ToyLevels) and head.sources == (1, 0)
    decoded = net.forward_layers(x)[2]
    assert decoded.shape == (2, 4 * 4 + 8 * 8, 4 + CLASSES)  # (N, A, 4 + nc)
    inputs = net.head_inputs(x)
    assert [v.shape[-1] for v in inputs[2]] == [4, 8]  # one tensor per level, in layers= order
    terms = net.compute_loss(inputs, torch.zeros(2, 1, 5))
    terms.total.backward()
    assert terms.stats[2].kind == "toy_levels"
    assert float(net.layers[0].conv.weight.grad.abs().sum()) > 0
    rows = net.detect(x[:1], (32, 32), thresh=0.2)[0]
    assert rows and all(0 <= r.class_id < CLASSES for r in rows)
