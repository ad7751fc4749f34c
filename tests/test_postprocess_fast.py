"""The shortcuts of the NMS (classes without candidates skipped, one suppression matrix shared by
all classes) give exactly what a plain per-class loop over every class gives."""

from __future__ import annotations

import numpy as np
import pytest

from darknetpy.inference import postprocess as pp
from darknetpy.model.boxes import box_diou, box_iou
from darknetpy.model.heads.options import NmsKind


def _reference(dets: pp.Detections, thresh: float, suppress) -> pp.Detections:
    """``box.c: do_nms_sort`` written plainly: zero-objectness swapped to the end, then for every
    class a stable sort by prob and a greedy pass over the boxes with prob != 0."""
    probs = dets.probs.copy()
    n = len(probs)
    order = np.arange(n)
    k = n - 1
    i = 0
    while i <= k:
        if dets.objectness[order[i]] == 0:
            order[i], order[k] = order[k], order[i]
            k -= 1
        else:
            i += 1
    total = k + 1
    t = np.float32(thresh)
    for c in range(probs.shape[1]):
        live = order[:total]
        live = live[np.argsort(-probs[live, c], kind="stable")]
        order[:total] = live
        for a in range(total):
            ia = live[a]
            if probs[ia, c] == 0:
                continue
            for b in range(a + 1, total):
                ib = live[b]
                if probs[ib, c] != 0 and suppress(dets.boxes[ia], dets.boxes[ib]) > t:
                    probs[ib, c] = 0
    return pp.Detections(dets.boxes, dets.objectness, probs).take(order)


@pytest.mark.parametrize("kind", [NmsKind.DEFAULT, NmsKind.GREEDY])
def test_nms_equals_the_plain_per_class_loop(kind: NmsKind, rng: np.random.Generator) -> None:
    suppress = box_iou if kind is NmsKind.DEFAULT else box_diou
    skipped_some = False
    for trial in range(60):
        n = int(rng.integers(0, 40))
        classes = int(rng.integers(1, 9))
        boxes = (rng.random((n, 4)) * 0.5 + 0.05).astype(np.float32)
        if trial % 2:
            boxes = (np.round(boxes * 8) / 8).astype(np.float32)  # duplicates and ties
        objectness = rng.random(n).astype(np.float32)
        objectness[rng.random(n) < 0.25] = 0
        probs = (np.round(rng.random((n, classes)) * 4) / 4).astype(np.float32)
        probs[probs < 0.6] = 0
        probs[:, rng.random(classes) < 0.3] = 0  # classes without any candidate
        skipped_some |= bool((probs == 0).all(axis=0).any())
        dets = pp.Detections(boxes, objectness, probs)
        want = _reference(dets, 0.45, suppress)
        got = pp.apply_nms(dets, 0.45, kind, 0.6)
        np.testing.assert_array_equal(got.boxes, want.boxes)
        np.testing.assert_array_equal(got.objectness, want.objectness)
        np.testing.assert_array_equal(got.probs, want.probs)
    assert skipped_some
