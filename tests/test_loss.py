"""Darknet's detection losses (the darknetpy.model.heads.darknet_loss package).

Parity: every golden ``train.npz`` (one training forward pass of a real Darknet build) — the gradient
of ``LossTerms.total`` w.r.t. each head input must equal Darknet's delta (its negative gradient),
the cost Darknet's ``*l.cost``, and the head's forward its ``l.output``. Then hand-worked cases for
the rules the golden networks do not exercise (ignore condition, several truths on one cell,
truth_thresh, label smoothing, focal loss, counters_per_class, [Gaussian_yolo], [region] details).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from darknetpy.model.boxes import box_giou, box_iou
from darknetpy.errors import UsageError
from darknetpy.model.heads import compute_loss
from darknetpy.model.heads.darknet_loss import (
    LossTerms,
    dx_box_iou,
    gaussian_yolo_activate,
    region_output,
    region_spec,
    yolo_activate,
    yolo_spec,
)
from darknetpy.model.network import Network

from .conftest import GOLDEN, require_shared

DELTA_RTOL, DELTA_ATOL = 1e-4, 1e-5  # ../shared/README.md: train.npz deltas
COST_RTOL = 1e-4


def _train_networks() -> list[str]:
    if not GOLDEN.is_dir():
        return []
    return sorted(p.name for p in GOLDEN.iterdir() if (p / "train.npz").is_file())


def _build(path_or_text: Path | str) -> Network:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(path_or_text, Path):
            return Network.from_cfg(path_or_text)
        return Network.from_text(path_or_text)


# ---------------------------------------------------------------------------------------------
# golden parity
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", _train_networks() or ["<no golden data>"])
def test_golden_train_deltas_costs_outputs(name: str) -> None:
    shared = require_shared()
    folder = shared / "golden" / name
    if not (folder / "train.npz").is_file():
        pytest.skip(f"{folder}/train.npz not found")
    gold = np.load(folder / "train.npz")
    net = _build(folder / "net.cfg")
    heads = sorted({int(k.split(":")[0]) for k in gold.files if ":" in k})
    assert heads == list(net.heads)
    inputs = {i: torch.tensor(gold[f"{i}:input"][None], requires_grad=True) for i in heads}
    terms = compute_loss(net, inputs, torch.tensor(gold["truth"][None]))
    terms.total.backward()
    for i in heads:
        want = gold[f"{i}:delta"][None]
        got = -inputs[i].grad.numpy()
        err = np.abs(got - want)
        worst = float((err - DELTA_RTOL * np.abs(want)).max())
        assert worst <= DELTA_ATOL, f"layer {i}: delta off by {err.max():.3g}"
        np.testing.assert_array_equal(terms.deltas[i].numpy(), got)
        cost = float(gold[f"{i}:cost"].ravel()[0])
        assert terms.costs[i] == pytest.approx(cost, rel=COST_RTOL), f"layer {i} cost"
        assert terms.stats[i].cost == terms.costs[i]
        layer = net.layers[i]
        with torch.no_grad():
            forward = layer(inputs[i].detach())
        if layer.darknet_name == "region":
            mine = region_output(inputs[i].detach(), region_spec(layer.options))
        else:
            mine = yolo_activate(inputs[i].detach(), yolo_spec(layer.options))
        for out in (forward, mine):
            np.testing.assert_allclose(
                out.numpy().ravel(), gold[f"{i}:output"].ravel(), rtol=1e-5, atol=1e-6
            )


# ---------------------------------------------------------------------------------------------
# hand-worked cases: tiny heads on a 2x2 grid, network input 64x64 (anchors 16 px = 0.25)
# ---------------------------------------------------------------------------------------------
def _head(section: str, filters: int, width: int = 2, height: int = 2) -> Network:
    return _build(
        f"[net]\nwidth={width}\nheight={height}\nchannels=3\n"
        f"[convolutional]\nfilters={filters}\nsize=1\nactivation=linear\n" + section
    )


def _loss(net: Network, z: torch.Tensor, truth: list[list[float]], **kw: object) -> LossTerms:
    z = z.clone().requires_grad_(True)
    rows = torch.tensor([truth], dtype=torch.float32).reshape(1, -1, 5)
    kw.setdefault("input_size", (64, 64))
    terms = compute_loss(net, {1: z}, rows, **kw)  # type: ignore[arg-type]
    terms.total.backward()
    assert z.grad is not None
    np.testing.assert_array_equal(-z.grad.numpy(), terms.deltas[1].numpy())
    return terms


def _yolo(extra: str = "", classes: int = 2, mask: str = "0", anchors: str = "16,16") -> Network:
    num = len(anchors.split(",")) // 2
    slots = len(mask.split(","))
    return _head(
        f"[yolo]\nmask={mask}\nanchors={anchors}\nclasses={classes}\nnum={num}\n{extra}",
        slots * (5 + classes),
    )


def _d(terms: LossTerms, slots: int, classes: int) -> np.ndarray:
    """Delta as (slot, entry, row, col)."""
    return terms.deltas[1].numpy().reshape(slots, -1, 2, 2)


def test_one_truth_one_anchor_mse_by_hand() -> None:
    net = _yolo()
    terms = _loss(net, torch.zeros(1, 7, 2, 2), [[0.3, 0.7, 0.25, 0.25, 1]])
    d = _d(terms, 1, 2)[0]
    # cell i = (int)(0.3*2) = 0, j = (int)(0.7*2) = 1; outputs x = y = obj = classes = 0.5, w = h = 0
    # scale = 2 - w*h = 1.9375, iou_normalizer 0.75; tx = 0.6, ty = 0.4, tw = ln(0.25*64/16) = 0
    np.testing.assert_allclose(d[:, 1, 0], [0.1453125, -0.1453125, 0, 0, 0.5, -0.5, 0.5], atol=1e-7)
    for j, i in ((0, 0), (0, 1), (1, 1)):  # no overlap with the truth: negatives
        np.testing.assert_allclose(d[:, j, i], [0, 0, 0, 0, -0.5, 0, 0], atol=1e-7)
    assert terms.costs[1] == pytest.approx(1.5 + 2 * 0.1453125**2, rel=1e-6)
    stats = terms.stats[1]
    assert stats.count == 1
    assert stats.avg_iou == pytest.approx(0.04 / 0.085, rel=1e-5)  # pred (.25,.75,.25,.25)
    assert (
        "Region 1 Avg (IOU: 0.470588), count: 1, class_loss = 1.500000, iou_loss = 0.042231"
        in stats.line
    )


@pytest.mark.parametrize(
    ("class_logit", "smooth", "expected"),
    [(0.0, 0, 0.0), (-3.0, 0, -0.5), (0.0, 1, 0.0625 / (17 / 64) ** 2 - 0.5)],
)
def test_ignore_needs_a_class_prob_above_quarter(
    class_logit: float, smooth: int, expected: float
) -> None:
    # truth 16 px: anchor 0 (16,16) is best; slot 1 (17,17) at the same cell overlaps it with
    # IoU 0.0625/(17/64)^2 = 0.8858 > ignore_thresh, ignored only if some class prob > 0.25
    net = _yolo(f"objectness_smooth={smooth}\n", classes=1, mask="0,1", anchors="16,16,17,17")
    z = torch.zeros(1, 12, 2, 2)
    z[0, 6 + 5, 1, 1] = class_logit
    d = _d(_loss(net, z, [[0.75, 0.75, 0.25, 0.25, 0]]), 2, 1)
    assert d[0, 4, 1, 1] == pytest.approx(0.5)  # the positive
    assert d[1, 4, 1, 1] == pytest.approx(expected, abs=1e-6)
    assert d[1, 4, 0, 0] == pytest.approx(-0.5)  # no overlap: negative


@pytest.mark.parametrize(("iou_thresh", "divide"), [(1.0, 1), (0.2, 2)])
def test_two_truths_on_one_cell(iou_thresh: float, divide: int) -> None:
    net = _yolo(f"iou_thresh={iou_thresh}\n", classes=3)
    truth = [[0.3, 0.7, 0.25, 0.25, 0], [0.35, 0.65, 0.25, 0.25, 2]]  # both at cell (0, 1)
    d = _d(_loss(net, torch.zeros(1, 8, 2, 2), truth), 1, 3)[0, :, 1, 0]
    box = 1.9375 * 0.75 * np.array([(0.6 - 0.5) + (0.7 - 0.5), (0.4 - 0.5) + (0.3 - 0.5), 0, 0])
    np.testing.assert_allclose(d[:4], box / divide, atol=1e-7)  # summed, averaged per class
    # first truth writes every class, the second only its own: multi-label
    np.testing.assert_allclose(d[4:], [0.5, 0.5, -0.5, 0.5], atol=1e-7)


def test_truth_thresh_makes_overlapping_anchor_positive() -> None:
    net = _yolo("truth_thresh=0.4\n", classes=1, mask="0,1", anchors="16,16,17,17")
    d = _d(_loss(net, torch.zeros(1, 12, 2, 2), [[0.75, 0.75, 0.25, 0.25, 0]]), 2, 1)
    # slot 1 (IoU 0.886 > 0.4): objectness and class toward 1, box toward the truth with anchor 1
    tw = 1.9375 * 0.75 * math.log(16 / 17)
    np.testing.assert_allclose(d[1, :, 1, 1], [0, 0, tw, tw, 0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(d[0, :, 1, 1], [0, 0, 0, 0, 0.5, 0.5], atol=1e-7)


@pytest.mark.parametrize(
    ("extra", "obj", "classes", "x"),
    [
        ("", 0.5, [-0.5, 0.5], 0.1453125),
        ("label_smooth_eps=0.1\n", 0.5, [-0.45, 0.45], 0.1453125),
        # pt = 0.5: g = -(1 - pt)(2 pt ln pt + pt - 1) = 0.5965736, delta = (y - p) * 0.5 * g
        ("focal_loss=1\n", 0.5, [-0.1491434, 0.1491434], 0.1453125),
        # multipliers max/count = (1, 4); class 1: 0.5 * 4 * cls_normalizer 0.5; obj and box x4
        ("counters_per_class=100,25\ncls_normalizer=0.5\n", 2.0, [-0.5, 1.0], 0.58125),
    ],
)
def test_class_and_objectness_variants(
    extra: str, obj: float, classes: list[float], x: float
) -> None:
    d = _d(_loss(_yolo(extra), torch.zeros(1, 7, 2, 2), [[0.3, 0.7, 0.25, 0.25, 1]]), 1, 2)
    np.testing.assert_allclose(d[0, :, 1, 0], [x, -x, 0, 0, obj, *classes], atol=1e-6)


def test_new_coords_mse_targets_by_hand() -> None:
    # new_coords=1: no activation, x' = 2x - 0.5; w = 4 t^2 anchor: target tw = sqrt(w*Nw/(4*pw))
    net = _yolo("new_coords=1\nscale_x_y=2\n")
    z = torch.full((1, 7, 2, 2), 0.5)
    d = _d(_loss(net, z, [[0.3, 0.7, 0.25, 0.25, 1]]), 1, 2)[0, :, 1, 0]
    k = 1.9375 * 0.75
    np.testing.assert_allclose(d[:4], [k * (0.6 - 0.5), k * (0.4 - 0.5), 0, 0], atol=1e-7)
    tw = math.sqrt(0.25 * 64 / (4 * 16))  # 0.5, equal to the output 0.5
    assert tw == 0.5


def test_ciou_box_delta_is_dx_box_iou_times_exp_and_normalizer() -> None:
    net = _yolo("iou_loss=ciou\niou_normalizer=0.07\n")
    z = torch.zeros(1, 7, 2, 2)
    z[0, 2, 1, 0] = 0.3  # w = exp(0.3) * 16/64
    d = _d(_loss(net, z, [[0.3, 0.7, 0.25, 0.25, 1]]), 1, 2)[0, :4, 1, 0]
    pred = torch.tensor([0.25, 0.75, math.exp(0.3) * 0.25, 0.25], dtype=torch.float64)
    truth = torch.tensor([0.3, 0.7, 0.25, 0.25], dtype=torch.float64)
    g = dx_box_iou(pred, truth, "ciou").numpy() * 0.07
    g[2] *= math.exp(0.3)  # no scale factor, no 1/2, exp(tw) only on w, h
    np.testing.assert_allclose(d, g, rtol=1e-5, atol=1e-8)


# ---------------------------------------------------------------------------------------------
# dx_box_iou
# ---------------------------------------------------------------------------------------------
def test_dx_box_iou_by_hand() -> None:
    # pred t,b,l,r = .4,.6,.4,.6; truth .4,.6,.45,.65: I = .15*.2 = .03, U = .05;
    # only dI/dr = Ih = .2 is non-zero; p_t = .006/.0025 = 2.4, p_b = -2.4, p_l = 2.4, p_r = 4
    g = dx_box_iou(
        torch.tensor([0.5, 0.5, 0.2, 0.2], dtype=torch.float64),
        torch.tensor([0.55, 0.5, 0.2, 0.2], dtype=torch.float64),
        "iou",
    )
    np.testing.assert_allclose(g.numpy(), [6.4, 0.0, 1.6, -4.8], atol=1e-9)


def _numeric(
    fn: Callable[[torch.Tensor], torch.Tensor], box: torch.Tensor, k: int, eps: float = 1e-7
) -> float:
    up, down = box.clone(), box.clone()
    up[k] += eps
    down[k] -= eps
    return float((fn(up) - fn(down)) / (2 * eps))


def _random_pairs(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Overlapping (pred, truth) boxes, float64."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(20):
        truth = np.r_[rng.uniform(0.3, 0.7, 2), rng.uniform(0.1, 0.4, 2)]
        pred = truth + np.r_[rng.uniform(-0.1, 0.1, 2), rng.uniform(-0.05, 0.05, 2)]
        pairs.append((torch.tensor(pred), torch.tensor(truth)))
    return pairs


def _diag2(b: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Squared diagonal of the box enclosing ``b`` and ``truth``."""
    lo = torch.minimum(b[:2] - b[2:] / 2, truth[:2] - truth[2:] / 2)
    hi = torch.maximum(b[:2] + b[2:] / 2, truth[:2] + truth[2:] / 2)
    return ((hi - lo) ** 2).sum()


def _distance_ratio(b: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """-d^2/c^2 (the DIoU term with exponent 1, which the gradient uses)."""
    return -((b[:2] - truth[:2]) ** 2).sum() / _diag2(b, truth)


@pytest.mark.parametrize("kind", ["iou", "giou"])
def test_dx_box_iou_is_the_gradient_with_darknets_factor_two_on_size(kind: str) -> None:
    measure = box_iou if kind == "iou" else box_giou
    for pred, truth in _random_pairs(1):
        g = dx_box_iou(pred, truth, kind).numpy()
        for k, factor in ((0, 1), (1, 1), (2, 2), (3, 2)):  # dw = dr - dl: no 1/2
            want = factor * _numeric(partial(measure, b=truth), pred, k)
            assert g[k] == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_dx_box_iou_diou_term_has_darknets_sign_on_the_diagonal_part() -> None:
    # The DIoU addition is d(-S/C)/dw for w, h, but for x, y Darknet writes
    # (2 (t - p) C - S dC/dx) / C^2 where the derivative has + S dC/dx: reproduce, don't fix.
    for pred, truth in _random_pairs(2):
        c, dist = float(_diag2(pred, truth)), float(((pred[:2] - truth[:2]) ** 2).sum())
        extra = (dx_box_iou(pred, truth, "diou") - dx_box_iou(pred, truth, "iou")).numpy()
        for k in range(4):
            want = _numeric(partial(_distance_ratio, truth=truth), pred, k)
            if k < 2:
                want -= 2 * dist * _numeric(partial(_diag2, truth=truth), pred, k) / c**2
            assert extra[k] == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_dx_box_iou_does_not_clamp_the_intersection() -> None:
    # pred l,r = .15,.25, truth .55,.65 (same t, b = .45,.55): Iw = -0.3, Ih = 0.1, I = -0.03,
    # U = 0.05; only dI/dr = Ih: p_t = -1.2, p_b = 1.2, p_l = -1.2, p_r = 2
    pred = torch.tensor([0.2, 0.5, 0.1, 0.1], dtype=torch.float64)
    truth = torch.tensor([0.6, 0.5, 0.1, 0.1], dtype=torch.float64)
    np.testing.assert_allclose(
        dx_box_iou(pred, truth, "iou").numpy(), [0.8, 0, 3.2, 2.4], atol=1e-9
    )
    # GIoU, apart: the enclosing-box term alone, (C dU - U dC)/C^2 with C = 0.5 * 0.1 = U;
    # dU = (-.1, .1, -.1, 0) for (t, b, l, r), dC = (0, 0, -Ch, 0): p = (-2, 2, 0, 0)
    np.testing.assert_allclose(dx_box_iou(pred, truth, "giou").numpy(), [0, 0, 0, 4], atol=1e-9)
    d = dx_box_iou(pred, truth, "diou").numpy()
    # DIoU alone: dx = (2 (xt - xp) C - 2 Cw dCw/dx S) / C^2 with dCw/dx = -1 (l < tl)
    cw, ch, s = 0.5, 0.1, 0.16
    c = cw**2 + ch**2
    assert d[0] == pytest.approx((2 * 0.4 * c - 2 * cw * -1 * s) / c**2)


# ---------------------------------------------------------------------------------------------
# truth rows, input size, errors
# ---------------------------------------------------------------------------------------------
def test_truth_list_ends_at_first_zero_row_and_at_max() -> None:
    z = torch.randn(1, 7, 2, 2, generator=torch.Generator().manual_seed(0))
    one = [[0.3, 0.7, 0.25, 0.25, 1]]
    other = [0.8, 0.2, 0.5, 0.5, 0]
    base = _loss(_yolo(), z, one).deltas[1]
    after_zero = _loss(_yolo(), z, [*one, [0, 0.5, 0.5, 0.5, 0], other]).deltas[1]
    np.testing.assert_array_equal(after_zero.numpy(), base.numpy())
    capped = _loss(_yolo("max=1\n"), z, [*one, other]).deltas[1]
    np.testing.assert_array_equal(capped.numpy(), base.numpy())
    used = _loss(_yolo(), z, [*one, other]).deltas[1]
    assert not torch.equal(used, base)


def test_class_out_of_range_is_skipped() -> None:
    z = torch.zeros(1, 7, 2, 2)
    none = _loss(_yolo(), z, [[0, 0, 0, 0, 0]]).deltas[1]
    bad = _loss(_yolo(), z, [[0.3, 0.7, 0.25, 0.25, 2]]).deltas[1]  # classes=2
    np.testing.assert_array_equal(bad.numpy(), none.numpy())
    assert float(none.view(1, 7, 2, 2)[0, 4].sum()) == pytest.approx(-2.0)


def test_network_size_is_the_default_input_size() -> None:
    # 64x64 input pooled to the 2x2 grid gives the same loss as the 2x2 network told input 64x64
    big = _build(
        "[net]\nwidth=64\nheight=64\nchannels=3\n[maxpool]\nsize=32\nstride=32\n"
        "[convolutional]\nfilters=7\nsize=1\nactivation=linear\n"
        "[yolo]\nmask=0\nanchors=16,16\nclasses=2\nnum=1\n"
    )
    z = torch.randn(1, 7, 2, 2, generator=torch.Generator().manual_seed(1))
    truth = torch.tensor([[[0.3, 0.7, 0.4, 0.2, 1]]])
    from_net = compute_loss(big, {2: z}, truth)
    told = compute_loss(_yolo(), {1: z}, truth, input_size=(64, 64))
    np.testing.assert_array_equal(from_net.deltas[2].numpy(), told.deltas[1].numpy())
    other = compute_loss(_yolo(), {1: z}, truth, input_size=(96, 64))
    assert not torch.equal(other.deltas[1], told.deltas[1])


def test_batch_images_are_independent() -> None:
    g = torch.Generator().manual_seed(3)
    z = torch.randn(2, 7, 2, 2, generator=g)
    truth = torch.tensor(
        [
            [[0.3, 0.7, 0.25, 0.25, 1], [0.6, 0.6, 0.5, 0.3, 0]],
            [[0.8, 0.1, 0.1, 0.1, 0], [0, 0, 0, 0, 0]],
        ]
    )
    both = compute_loss(_yolo(), {1: z}, truth, input_size=(64, 64))
    for b in range(2):
        alone = compute_loss(_yolo(), {1: z[b : b + 1]}, truth[b : b + 1], input_size=(64, 64))
        np.testing.assert_array_equal(both.deltas[1][b].numpy(), alone.deltas[1][0].numpy())


def test_bad_truth_shapes_are_usage_errors() -> None:
    z = torch.zeros(1, 7, 2, 2)
    with pytest.raises(UsageError, match="rows x, y, w, h, class"):
        compute_loss(_yolo(), {1: z}, torch.zeros(1, 3, 4), input_size=(64, 64))
    with pytest.raises(UsageError, match="truth has 2 images"):
        compute_loss(_yolo(), {1: z}, torch.zeros(2, 3, 5), input_size=(64, 64))


# ---------------------------------------------------------------------------------------------
# [region] and [Gaussian_yolo]
# ---------------------------------------------------------------------------------------------
def _region(extra: str = "") -> Network:
    return _head(
        f"[region]\nanchors=1,1\nclasses=2\nnum=1\ncoords=4\nsoftmax=1\nbias_match=1\n{extra}", 7
    )


@pytest.mark.parametrize(("seen", "prior"), [(0, True), (12799, True), (12800, False)])
def test_region_prior_while_seen_below_12800(seen: int, prior: bool) -> None:
    z = torch.zeros(1, 7, 2, 2)
    z[0, 0] = 1.0  # x logit: sigma = 0.7310586, sigma' = 0.1966119
    d = _loss(_region(), z, [[0, 0, 0, 0, 0]], seen=seen).deltas[1].numpy()[0]
    # 0.01 * (0.5 - 0.7310586) * 0.1966119 toward the cell centre; w, h already at the anchor
    np.testing.assert_allclose(d[0], -0.000454289 if prior else 0.0, atol=1e-9)
    np.testing.assert_allclose(d[2:4], 0.0)
    np.testing.assert_allclose(d[4], -0.125)  # noobject: (0 - 0.5) * 0.5 * (1 - 0.5)


def test_region_truth_by_hand() -> None:
    z = torch.zeros(1, 7, 2, 2)
    z[0, 0] = 1.0
    terms = _loss(_region("object_scale=5\n"), z, [[0.3, 0.7, 0.5, 0.5, 1]], seen=20000)
    d = terms.deltas[1].numpy()[0, :, 1, 0]
    # x: (0.6 - 0.7310586) * 0.1966119 (sigma' applied); y: (0.4 - 0.5) * 0.25;
    # w: ln(0.5 * 2 / 1) - 0; obj: 5 * (1 - 0.5) * 0.25; softmax classes 0.5
    np.testing.assert_allclose(d, [-0.0257677, -0.025, 0, 0, 0.625, -0.5, 0.5], atol=1e-6)
    assert terms.costs[1] == pytest.approx(float((terms.deltas[1].double() ** 2).sum()))


def test_region_tree_is_not_supported(tmp_path: Path) -> None:
    net = _region(f"tree={tmp_path / 'nothing.tree'}\n")
    with pytest.raises(UsageError, match="softmax trees"):
        compute_loss(net, {1: torch.zeros(1, 7, 2, 2)}, torch.zeros(1, 1, 5))


def _gaussian(extra: str = "") -> Network:
    return _head(f"[Gaussian_yolo]\nmask=0\nanchors=16,16\nclasses=1\nnum=1\n{extra}", 10)


def test_gaussian_truth_by_hand() -> None:
    terms = _loss(_gaussian(), torch.zeros(1, 10, 2, 2), [[0.25, 0.75, 0.25, 0.25, 0]])
    d = terms.deltas[1].numpy()[0]
    # outputs: mu_x = mu_y = 0.5 = targets, w = h = 0 = ln(0.25*64/16): every mu delta is 0;
    # uncertainty: temp * (0 - 1/(sigma + 0.3)) with temp = scale/2 = 1.9375/2, sigma = 0.5
    uc = -(1.9375 / 2) / 0.8
    np.testing.assert_allclose(d[:, 1, 0], [0, uc, 0, uc, 0, uc, 0, uc, 0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(d[8, 0, 0], -0.5)
    assert terms.costs[1] == pytest.approx(float((terms.deltas[1].double() ** 2).sum()))


def test_gaussian_class_out_of_range_is_positive_with_negative_classes() -> None:
    # forward_gaussian_yolo_layer's truth loop does not check the class id
    d = _loss(_gaussian(), torch.zeros(1, 10, 2, 2), [[0.25, 0.75, 0.25, 0.25, 3]])
    np.testing.assert_allclose(d.deltas[1].numpy()[0, 8:, 1, 0], [0.5, -0.5], atol=1e-7)


def test_gaussian_activation_layout() -> None:
    net = _gaussian("scale_x_y=2\n")
    z = torch.randn(1, 10, 2, 2, generator=torch.Generator().manual_seed(4))
    out = gaussian_yolo_activate(z, yolo_spec(net.layers[1].options))
    s = torch.sigmoid(z)
    np.testing.assert_allclose(out[0, [1, 3, 5, 7, 8, 9]], s[0, [1, 3, 5, 7, 8, 9]], rtol=1e-6)
    np.testing.assert_allclose(out[0, [4, 6]], z[0, [4, 6]])
    np.testing.assert_allclose(out[0, [0, 2]], 2 * s[0, [0, 2]] - 0.5, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out.numpy(), net.layers[1](z).detach().numpy(), rtol=1e-6, atol=1e-7)
