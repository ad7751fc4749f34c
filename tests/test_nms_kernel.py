"""The compiled per-class NMS loop (``darknet_nms._classes_greedy``) gives what the numpy loop gives:
same probabilities zeroed, same final order, on ties, zero objectness and many classes."""

from __future__ import annotations

import numpy as np
import pytest

from darknetpy.model.heads import darknet_nms
from darknetpy.model.heads.detections import Detections
from darknetpy.model.heads.options import NmsKind


def _detections(seed: int, n: int, classes: int) -> Detections:
    rng = np.random.default_rng(seed)
    centres = rng.random((n, 2), dtype=np.float32) * 0.3 + 0.35  # crowded: many overlaps
    sizes = rng.random((n, 2), dtype=np.float32) * 0.3 + 0.05
    boxes = np.concatenate([centres, sizes], 1).astype(np.float32)
    objectness = rng.random(n, dtype=np.float32)
    objectness[rng.random(n) < 0.2] = 0
    probs = rng.random((n, classes), dtype=np.float32)
    probs = np.round(probs * 8) / 8  # ties: the stable sort decides them
    probs[probs < 0.5] = 0
    probs[objectness == 0] = 0
    return Detections(boxes, objectness, probs.astype(np.float32))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", [None, NmsKind.GREEDY, NmsKind.DIOU])
def test_compiled_class_loop_equals_the_numpy_loop(seed: int, kind: NmsKind | None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    dets = _detections(seed, 30 + 25 * seed, 3 + 7 * seed)

    def run() -> Detections:
        if kind is None:
            return darknet_nms.do_nms_sort(dets, 0.45)
        return darknet_nms.diounms_sort(dets, 0.45, kind, 0.6)

    fast = run()  # pairwise matrix + compiled loop
    monkeypatch.setattr(darknet_nms, "_PAIRWISE_MAX", 0)  # the box-by-box numpy loop
    slow = run()
    assert np.array_equal(fast.probs, slow.probs)
    assert np.array_equal(fast.boxes, slow.boxes)
    assert np.array_equal(fast.objectness, slow.objectness)
    assert (fast.probs == 0).sum() > (dets.probs == 0).sum()  # something was suppressed


def test_nan_probabilities_take_the_numpy_loop() -> None:
    dets = _detections(1, 40, 5)
    dets.probs[3, 2] = np.nan
    out = darknet_nms.do_nms_sort(dets, 0.45)
    assert np.isnan(out.probs).sum() == 1
