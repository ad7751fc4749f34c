"""darknetpy.model.boxes against hand-computed values of darknet's box.c formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from darknetpy.model.boxes import (
    IouLoss,
    box_ciou,
    box_diou,
    box_diounms,
    box_giou,
    box_intersection,
    box_iou,
    box_iou_kind,
    box_union,
    corners_to_xywh,
    xywh_to_corners,
)


def f32(*values: float) -> np.ndarray:
    return np.array(values, np.float32)


A = f32(0.5, 0.5, 1, 1)
B_HALF = f32(1.0, 0.5, 1, 1)  # shifted by half a width: I = 0.5, U = 1.5


def test_iou_of_half_overlap() -> None:
    assert float(box_intersection(A, B_HALF)) == 0.5
    assert float(box_union(A, B_HALF)) == 1.5
    assert float(box_iou(A, B_HALF)) == pytest.approx(1 / 3, abs=1e-7)


def test_iou_of_identical_boxes_is_one() -> None:
    assert float(box_iou(A, A)) == 1.0


@pytest.mark.parametrize(
    "b",
    [
        f32(2.5, 0.5, 1, 1),  # disjoint in x only: negative overlap
        f32(1.5, 0.5, 1, 1),  # touching edges: intersection exactly 0
        f32(
            3.0, 3.0, 1, 1
        ),  # disjoint in x and y: two negative overlaps, product positive, still 0
    ],
)
def test_iou_zero_cases(b: np.ndarray) -> None:
    assert float(box_intersection(A, b)) == 0.0
    assert float(box_iou(A, b)) == 0.0


def test_iou_of_empty_boxes_is_zero_not_nan() -> None:
    empty = f32(0.3, 0.3, 0, 0)
    assert float(box_iou(empty, empty)) == 0.0  # darknet: U == 0 -> 0


def test_iou_with_nan_is_never_above_a_threshold() -> None:
    nan_box = f32(np.nan, 0.5, 1, 1)
    assert not box_iou(A, nan_box) > 0.0


def test_iou_with_infinite_width_follows_ieee_like_c() -> None:
    # enet-coco's golden boxes have w = inf and h ~ 0: darknet's I is inf*0 = NaN, never suppressing
    inf_box = f32(0.5, 0.5, np.inf, 0)
    assert np.isnan(box_iou(inf_box, inf_box))


def test_giou_of_disjoint_boxes() -> None:
    b = f32(2.5, 0.5, 1, 1)  # enclosing 3 x 1, union 2: giou = 0 - (3 - 2) / 3
    assert float(box_giou(A, b)) == pytest.approx(-1 / 3, abs=1e-7)


def test_giou_equals_iou_when_boxes_fill_their_hull() -> None:
    assert float(box_giou(A, B_HALF)) == pytest.approx(1 / 3, abs=1e-7)  # hull 1.5 x 1 == union


def test_diou_uses_darknets_fixed_exponent() -> None:
    # hull 1.5 x 1: c = 1.5² + 1² = 3.25; centre distance² d = 0.25
    expected = 1 / 3 - (0.25 / 3.25) ** 0.6
    assert float(box_diou(A, B_HALF)) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("beta", [0.6, 1.0, 2.0])
def test_diounms_term_uses_beta(beta: float) -> None:
    expected = 1 / 3 - (0.25 / 3.25) ** beta
    assert float(box_diounms(A, B_HALF, beta)) == pytest.approx(expected, abs=1e-6)


def test_ciou_hand_computed() -> None:
    truth = f32(
        1.0, 0.5, 2, 1
    )  # covers A entirely: I = 1, U = 2, iou = .5; hull 2 x 1: c = 5, d = .25
    v = 4 / math.pi**2 * (math.atan(2) - math.atan(1)) ** 2
    alpha = v / (1 - 0.5 + v + 1e-6)
    expected = 0.5 - (0.25 / 5 + alpha * v)
    assert float(box_ciou(A, truth)) == pytest.approx(expected, abs=1e-6)


def test_degenerate_hull_returns_iou() -> None:
    point = f32(0.2, 0.2, 0, 0)
    for fn in (box_giou, box_diou, box_ciou):
        assert float(fn(point, point)) == 0.0


def test_iou_kind_dispatch() -> None:
    b = f32(2.5, 0.5, 1, 1)
    assert float(box_iou_kind(A, b, IouLoss.GIOU)) == float(box_giou(A, b))
    assert float(box_iou_kind(A, B_HALF, IouLoss.DIOU)) == float(box_diou(A, B_HALF))
    assert float(box_iou_kind(A, B_HALF, IouLoss.CIOU)) == float(box_ciou(A, B_HALF))
    assert float(box_iou_kind(A, B_HALF, IouLoss.MSE)) == float(box_iou(A, B_HALF))


def test_torch_and_numpy_agree_bitwise_and_broadcast(rng: np.random.Generator) -> None:
    a = rng.uniform(0.05, 1, (7, 4)).astype(np.float32)
    b = rng.uniform(0.05, 1, (5, 4)).astype(np.float32)
    for fn in (box_iou, box_giou, box_diou, box_ciou):
        n = fn(a[:, None], b[None])
        t = fn(torch.from_numpy(a)[:, None], torch.from_numpy(b)[None])
        assert n.shape == (7, 5) and n.dtype == np.float32
        assert t.dtype == torch.float32
        np.testing.assert_array_equal(t.numpy(), n)
        # each entry equals the pairwise call
        assert n[3, 2] == fn(a[3], b[2])


def test_corner_conversions_round_trip() -> None:
    box = f32(2, 3, 4, 6)
    np.testing.assert_array_equal(xywh_to_corners(box), f32(0, 0, 4, 6))
    np.testing.assert_array_equal(corners_to_xywh(xywh_to_corners(box)), box)
    t = torch.tensor([[2.0, 3, 4, 6]])
    assert torch.equal(xywh_to_corners(t), torch.tensor([[0.0, 0, 4, 6]]))
