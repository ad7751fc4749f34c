"""darknetpy.tools.anchors: Darknet's calc_anchors k-means, its output format, and raccoon figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from darknetpy.tools.anchors import (
    average_iou,
    calc_anchors,
    format_anchors,
    format_counters_per_class,
    kmeans,
    plot_anchors,
    read_anchor_boxes,
    sort_by_area,
)
from darknetpy.errors import UsageError

from .conftest import require_shared


def brute_force_avg_iou(boxes: np.ndarray, anchors: np.ndarray) -> float:
    """Mean over boxes of the best corner-aligned IoU with any anchor, in float64."""
    b = boxes.astype(np.float64)[:, None, :]
    a = anchors.astype(np.float64)[None, :, :]
    inter = np.minimum(b[..., 0], a[..., 0]) * np.minimum(b[..., 1], a[..., 1])
    iou = inter / (b[..., 0] * b[..., 1] + a[..., 0] * a[..., 1] - inter)
    return float(iou.max(axis=1).mean())


def test_two_obvious_clusters() -> None:
    boxes = np.array([[10, 10], [12, 12], [11, 11], [100, 50], [104, 54]], dtype=np.float32)
    anchors, avg = calc_anchors(boxes, 2, seed=3)
    np.testing.assert_allclose(anchors, [[11, 11], [102, 52]], rtol=1e-6)
    # IoUs: 100/121, 121/144, 1, 5000/5304, 5304/5616 (each box vs its cluster's mean)
    expected = (100 / 121 + 121 / 144 + 1 + 5000 / 5304 + 5304 / 5616) / 5
    assert avg == pytest.approx(expected, abs=1e-6)


def test_empty_cluster_keeps_its_centre() -> None:
    boxes = np.array([[10, 10], [20, 20], [16, 16]], dtype=np.float32)
    # round 1: (10,10) -> centre 2; (20,20), (16,16) -> centre 0; centre 1 gets nothing
    centers, assignments, rounds = kmeans(boxes, [[15, 15], [100, 100], [10, 10]])
    np.testing.assert_allclose(centers, [[18, 18], [100, 100], [10, 10]])
    assert assignments.tolist() == [2, 0, 0] and rounds == 1


def test_converged_at_once_when_every_box_picks_centre_zero() -> None:
    # do_kmeans starts from all-zero assignments: if the first pass assigns everything to centre 0
    # it stops before any update (why Darknet special-cases k == 1)
    boxes = np.array([[10, 10], [10, 10], [50, 50]], dtype=np.float32)
    centers, _, rounds = kmeans(boxes, [[10, 10], [10, 10]])
    assert rounds == 0
    np.testing.assert_array_equal(centers, [[10, 10], [10, 10]])
    single, _, _ = kmeans(boxes, [[10, 10]])
    np.testing.assert_allclose(single, [[70 / 3, 70 / 3]], rtol=1e-6)


def test_sort_by_area_and_formats() -> None:
    anchors = sort_by_area(np.array([[30, 30], [10, 20], [20, 10], [5, 5]]))
    assert anchors.tolist() == [[5, 5], [10, 20], [20, 10], [30, 30]]  # tie kept in order
    assert format_anchors(np.array([[9.5, 13.4], [116.2, 90.0]]), 416) == " 10, 13, 116, 90"
    assert format_anchors(np.array([[1.23456, 2.0]]), 13) == "1.2346,2.0000"
    assert format_counters_per_class([3, 0, 7]) == "counters_per_class = 3, 0, 7"


def test_too_few_boxes() -> None:
    with pytest.raises(UsageError, match="2 boxes cannot make 3 clusters"):
        calc_anchors(np.ones((2, 2), dtype=np.float32), 3, seed=0)


def test_raccoon_nine_anchors(tmp_path: Path) -> None:
    data = require_shared() / "datasets" / "raccoon" / "raccoon.data"
    boxes = read_anchor_boxes(data, 416, 416)
    assert boxes.images == 160 and boxes.wh.shape == (sum(boxes.counts_per_class), 2)
    assert boxes.wh.shape[0] > 100 and not boxes.warnings
    anchors, avg = calc_anchors(boxes.wh, 9, seed=0)
    assert anchors.shape == (9, 2)
    area = anchors[:, 0] * anchors[:, 1]
    assert np.all(np.diff(area) >= 0)
    assert abs(avg - brute_force_avg_iou(boxes.wh, anchors)) <= 0.01
    assert avg == pytest.approx(average_iou(boxes.wh, anchors))
    assert 0.5 < avg <= 1.0
    again, avg_again = calc_anchors(boxes.wh, 9, seed=0)
    np.testing.assert_array_equal(anchors, again)
    assert avg == avg_again
    # every anchor is the mean of its cluster: a fixed point of one more k-means pass
    centers, _, rounds = kmeans(boxes.wh, anchors)
    np.testing.assert_allclose(sort_by_area(centers), anchors, rtol=1e-5)
    assert rounds <= 1
    png = plot_anchors(boxes.wh, anchors, tmp_path / "anchors.png", 416, 416)
    assert png.read_bytes()[:4] == b"\x89PNG"
