"""[detection] (YOLOv1): build checks, forward, decode of a hand-built output, thresholds and NMS,
and the training delta of forward_detection_layer, each against values worked out here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from darknetpy.errors import CfgError
from darknetpy.model.heads.base import compute_loss
from darknetpy.model.heads.darknet_loss.detection import fill_truth_region
from darknetpy.model.heads.detection import DetectionLayer
from darknetpy.model.heads.detections import network_detections
from darknetpy.model.network import Network

SIDE, NUM = 2, 2


def _net(classes: int = 3, extra: str = "sqrt=1\n", output: int | None = None) -> Network:
    inputs = SIDE * SIDE * (5 * NUM + classes)
    text = (f"[net]\nwidth=4\nheight=4\nchannels=1\n[connected]\noutput={output or inputs}\n"
            f"activation=linear\n[detection]\nclasses={classes}\ncoords=4\nside={SIDE}\nnum={NUM}\n"
            f"{extra}")
    return Network.from_text(text, path="d.cfg", strict=True).eval()


class Flat:
    """A [detection] output built by block: classes per cell, confidence and box per (cell, box)."""

    def __init__(self, classes: int) -> None:
        self.c = classes
        self.v = np.zeros(SIDE * SIDE * (5 * NUM + classes), np.float32)

    def cell(self, i: int, probs: list[float]) -> None:
        self.v[i * self.c:(i + 1) * self.c] = probs

    def box(self, i: int, j: int, conf: float, xywh: tuple[float, float, float, float]) -> None:
        cells = SIDE * SIDE
        self.v[cells * self.c + i * NUM + j] = conf
        at = cells * (self.c + NUM) + (i * NUM + j) * 4
        self.v[at:at + 4] = xywh

    def tensor(self) -> torch.Tensor:
        return torch.from_numpy(self.v.copy()).view(1, -1, 1, 1)


def _two_boxes() -> Flat:
    f = Flat(3)
    f.cell(3, [0.1, 0.7, 0.2])  # row 1, col 1
    f.box(3, 0, 0.9, (0.5, 0.25, 0.6, 0.4))
    f.box(3, 1, 0.3, (0.1, 0.1, 0.1, 0.1))
    f.cell(0, [0.8, 0.1, 0.1])
    f.box(0, 1, 0.5, (0.2, 0.4, 0.5, 0.5))
    f.cell(2, [0.1, 0.7, 0.2])  # row 1, col 0: box 0 lands on cell 3's box 0, weaker
    f.box(2, 0, 0.8, (1.5, 0.25, 0.6, 0.4))
    return f


def test_decode_reads_darknets_three_blocks() -> None:
    head = _net().layers[1]
    assert isinstance(head, DetectionLayer)
    c = head.decode(_two_boxes().tensor(), (4, 4))
    assert c.boxes.shape == (1, SIDE * SIDE * NUM, 4)
    # cell 3 box 0: ((.5 + 1) / 2, (.25 + 1) / 2), sqrt=1 squares w and h
    torch.testing.assert_close(c.boxes[0, 3 * NUM + 0], torch.tensor([0.75, 0.625, 0.36, 0.16]))
    torch.testing.assert_close(c.boxes[0, 0 * NUM + 1], torch.tensor([0.1, 0.2, 0.25, 0.25]))
    assert c.objectness[0, 3 * NUM].item() == pytest.approx(0.9)
    torch.testing.assert_close(c.scores[0, 3 * NUM], 0.9 * torch.tensor([0.1, 0.7, 0.2]))
    torch.testing.assert_close(c.scores[0, 0 * NUM + 1], 0.5 * torch.tensor([0.8, 0.1, 0.1]))


def test_decode_without_sqrt_keeps_w_h() -> None:
    head = _net(extra="").layers[1]
    c = head.decode(_two_boxes().tensor(), (4, 4))
    torch.testing.assert_close(c.boxes[0, 3 * NUM], torch.tensor([0.75, 0.625, 0.6, 0.4]))


def test_every_box_is_a_detection_then_greedy_nms_per_class() -> None:
    net = _net()
    head = net.layers[1]
    out = _two_boxes().tensor()
    raw = head.detections(out, (4, 4), 0.2)[0]
    assert len(raw) == SIDE * SIDE * NUM  # no objectness threshold, as Darknet
    # prob > thresh kept: cell 3 box 1 has 0.3 * 0.7 = .21 (kept), 0.3 * 0.2 = .06 (zeroed)
    np.testing.assert_allclose(raw.probs[3 * NUM + 1], [0, 0.21, 0], rtol=1e-6)
    dets = network_detections([head], [out], (640, 480), (4, 4), thresh=0.2, nms=0.45)[0]
    rows = dets.rows(0.2)
    found = {(r.class_id, round(r.prob, 4), round(r.x, 4), round(r.y, 4)) for r in rows}
    # cell 2's box 0 (.8 * .7 = .56) lies on cell 3's box 0 (.63): suppressed for class 1;
    # cell 3's box 1 (.21, tiny at (.55, .55)) does not overlap and stays
    assert found == {(1, 0.63, 0.75, 0.625), (0, 0.4, 0.1, 0.2), (1, 0.21, 0.55, 0.55)}
    assert head.nms_settings()[1] == 0.6


def test_network_detections_are_relative_to_the_image() -> None:
    net = _net()
    x = torch.zeros(1, 1, 4, 4)
    with torch.no_grad():
        net.layers[0].linear.weight.zero_()
        net.layers[0].linear.bias.copy_(_two_boxes().tensor().flatten())
    rows = net.detect(x, (640, 480), thresh=0.5)[0]
    assert [(r.class_id, round(r.x, 4), round(r.y, 4), round(r.w, 4), round(r.h, 4))
            for r in rows] == [(1, 0.75, 0.625, 0.36, 0.16)]


def test_softmax_applies_to_each_cells_classes_only() -> None:
    head = _net(extra="softmax=1\n").layers[1]
    x = torch.randn(2, head.in_shape.channels, 1, 1)
    y = head(x)
    split = SIDE * SIDE * 3
    cells = y.view(2, -1)[:, :split].view(2, SIDE * SIDE, 3)
    torch.testing.assert_close(cells, torch.softmax(x.view(2, -1)[:, :split].view(2, -1, 3), -1))
    assert torch.equal(y.view(2, -1)[:, split:], x.view(2, -1)[:, split:])
    assert torch.equal(_net().layers[1](x), x)  # softmax=0: the input as is


def test_build_checks_the_count_darknet_asserts() -> None:
    with pytest.raises(CfgError, match=r"d\.cfg:\d+ \[detection\]: .*= 52 values, but the layer "
                                       r"above .* gives 50; .*output=52"):
        _net(output=50)
    text = "[net]\nwidth=1\nheight=1\nchannels=1\n[connected]\noutput=8\n[detection]\nside=2\n"
    with pytest.raises(CfgError, match=r"coords=1: .*set coords=4"):
        Network.from_text(text, path="d.cfg")


def test_fill_truth_region_first_row_of_a_cell_wins() -> None:
    rows = np.array([[0.7, 0.8, 0.25, 0.36, 1], [0.9, 0.9, 0.5, 0.5, 0],
                     [0.2, 0.2, 0.0005, 0.5, 0], [0.2, 0.3, 0.1, 0.2, 7]], np.float32)
    grid = fill_truth_region(rows, SIDE, 2)
    assert grid[:, 0].tolist() == [1, 0, 0, 1]  # the tiny box is skipped
    np.testing.assert_allclose(grid[3], [1, 0, 1, 0.4, 0.6, 0.25, 0.36], rtol=1e-6)
    np.testing.assert_allclose(grid[0], [1, 0, 0, 0.4, 0.6, 0.1, 0.2], rtol=1e-6)  # class 7 >= 2


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    def overlap(x1: float, w1: float, x2: float, w2: float) -> float:
        return min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2)

    w, h = overlap(a[0], a[2], b[0], b[2]), overlap(a[1], a[3], b[1], b[3])
    inter = w * h if w > 0 and h > 0 else 0.0
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _loss_net() -> Network:
    return _net(classes=2, extra="sqrt=1\nrescore=1\nobject_scale=1\nnoobject_scale=.5\n"
                                 "class_scale=1\ncoord_scale=5\n")


def test_training_delta_is_forward_detection_layers(rng: np.random.Generator) -> None:
    net = _loss_net()
    head = net.layers[1]
    f = Flat(2)
    f.v[:] = rng.uniform(0.05, 0.95, f.v.shape)
    f.box(3, 0, 0.6, (0.45, 0.6, 0.55, 0.6))  # overlaps the truth: responsible
    f.box(3, 1, 0.7, (0.0, 0.0, 0.1, 0.1))  # no overlap
    z = f.tensor().requires_grad_()
    truth = torch.tensor([[[0.7, 0.8, 0.25, 0.36, 1], [0, 0, 0, 0, 0]]])  # cell 3: (.4, .6) in it
    terms = compute_loss(net, {1: z}, truth)
    terms.total.backward()
    delta = terms.deltas[1].flatten().numpy()
    p = f.v.astype(np.float64)
    cells = SIDE * SIDE
    expected = np.zeros_like(p)
    conf = slice(cells * 2, cells * (2 + NUM))
    expected[conf] = -0.5 * p[conf]  # every confidence toward 0, noobject_scale
    expected[3 * 2:4 * 2] = np.array([0, 1]) - p[3 * 2:4 * 2]  # the cell's classes, one-hot
    iou = _iou((0.45 / 2, 0.6 / 2, 0.55 ** 2, 0.6 ** 2), (0.4 / 2, 0.6 / 2, 0.25, 0.36))
    assert 0 < iou < 1
    expected[cells * 2 + 3 * NUM] = iou - 0.6  # rescore: toward the IoU, object_scale 1
    at = cells * (2 + NUM) + 3 * NUM * 4
    expected[at:at + 4] = 5 * (np.array([0.4, 0.6, 0.5, 0.6]) - [0.45, 0.6, 0.55, 0.6])
    np.testing.assert_allclose(delta, expected, rtol=1e-5, atol=1e-6)
    assert terms.costs[1] == pytest.approx(float((expected ** 2).sum()), rel=1e-5)
    torch.testing.assert_close(z.grad.flatten(), -torch.from_numpy(delta))
    stats = terms.stats[1]
    assert stats.count == 1 and stats.avg_iou == pytest.approx(iou, rel=1e-5)
    assert stats.line.startswith("Detection Avg IOU: ")


def test_without_any_overlap_the_box_of_lowest_rmse_is_responsible() -> None:
    net = _loss_net()
    f = Flat(2)
    f.box(3, 0, 0.5, (2.0, 2.0, 0.1, 0.1))  # (1, 1) in the layer's frame: far
    f.box(3, 1, 0.5, (1.2, 1.4, 0.1, 0.1))  # (.6, .7): nearer, still no overlap
    truth = torch.tensor([[[0.7, 0.8, 0.25, 0.36, 0]]])
    delta = compute_loss(net, {1: f.tensor()}, truth).deltas[1].flatten().numpy()
    box = SIDE * SIDE * (2 + NUM) + 3 * NUM * 4
    assert np.all(delta[box:box + 4] == 0)  # box 0 untouched
    np.testing.assert_allclose(delta[box + 4:box + 8],
                               5 * (np.array([0.4, 0.6, 0.5, 0.6]) - [1.2, 1.4, 0.1, 0.1]),
                               rtol=1e-5)
    assert delta[SIDE * SIDE * 2 + 3 * NUM + 1] == pytest.approx(0 - 0.5)  # rescore, IoU 0
    assert math.isclose(delta[SIDE * SIDE * 2 + 3 * NUM], -0.25)  # noobject .5 * -0.5


def test_forced_and_random_choose_the_responsible_box() -> None:
    truth = torch.tensor([[[0.7, 0.8, 0.25, 0.36, 0]]])  # w * h = .09 < .1: forced picks box 1
    f = Flat(2)
    f.box(3, 0, 0.5, (0.4, 0.6, 0.5, 0.6))  # a perfect match, ignored by forced=1
    conf = SIDE * SIDE * 2 + 3 * NUM
    forced = _net(classes=2, extra="sqrt=1\nforced=1\n")
    delta = compute_loss(forced, {1: f.tensor()}, truth).deltas[1].flatten()
    assert delta[conf + 1].item() == pytest.approx(1.0) and delta[conf].item() == -0.5  # noobject
    picked = _net(classes=2, extra="sqrt=1\nrandom=1\n")
    head = picked.layers[1]
    assert head.options.random == 0.0  # no multi-scale resizing for [detection]
    draws = np.random.default_rng(5).integers(NUM, size=1)
    assert draws[0] == 1  # not the best box (0): the draw is what decides
    head.rng = np.random.default_rng(5)
    delta = compute_loss(picked, {1: f.tensor()}, truth, seen=100).deltas[1].flatten()
    assert delta[conf + int(draws[0])].item() == pytest.approx(1.0 - (0.5 if draws[0] == 0 else 0))
    head.rng = np.random.default_rng(5)  # after 64000 images: the best box again
    delta = compute_loss(picked, {1: f.tensor()}, truth, seen=64000).deltas[1].flatten()
    assert delta[conf].item() == pytest.approx(0.5)
