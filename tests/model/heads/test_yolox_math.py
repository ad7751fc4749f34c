"""The YOLOX head's math (darknetpy/model/heads/yolox) against Megvii's YOLOX golden data
(../shared/golden/modern/yolox-tiny) and hand-checked cases."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from darknetpy.model.heads.yolox import decode_yolox, postprocess_yolox, yolox_loss
from darknetpy.model.heads.yolox.assign import (
    center_prior,
    dynamic_ks,
    pairwise_iou_cxcywh,
    simota_matching,
)
from darknetpy.model.heads.yolox.decode import anchor_points, decode_boxes
from darknetpy.model.heads.yolox.loss import iou_loss, l1_target
from darknetpy.model.heads.yolox.postprocess import nms

REPO = Path(__file__).resolve().parents[3]
SHARED = Path(os.environ.get("DARKNETPY_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden" / "modern" / "yolox-tiny"
STRIDES = (8, 16, 32)
PARTS = (("reg_preds", slice(0, 4)), ("obj_preds", slice(4, 5)), ("cls_preds", slice(5, None)))


def _golden() -> Path:
    if not GOLDEN.is_dir():
        pytest.skip(f"{GOLDEN} not found: YOLOX golden data is only beside a development checkout")
    return GOLDEN


def _levels(npz: np.lib.npyio.NpzFile, prefix: str, batch: bool) -> list[torch.Tensor]:
    """The per-level (N, 5 + nc, H, W) contract tensors from the reference's reg/obj/cls maps."""
    levels = []
    for k in range(len(STRIDES)):
        parts = [npz[f"{prefix}{name}/{k}"] for name, _ in PARTS]
        level = torch.from_numpy(np.concatenate(parts, axis=0 if not batch else 1))
        levels.append(level if batch else level[None])
    return levels


def _truth(labels: np.ndarray, size: int) -> torch.Tensor:
    """YOLOX labels (class, cx, cy, w, h pixels) as darknetpy truth (x, y, w, h, class) relative."""
    lab = torch.from_numpy(labels)
    return torch.cat([lab[..., 1:5] / size, lab[..., 0:1]], dim=-1)


# --- golden ---------------------------------------------------------------------------------


def test_decode_matches_yolox_decoded() -> None:
    fwd = np.load(_golden() / "forward.npz")
    decoded = decode_yolox(_levels(fwd, "", batch=False), STRIDES)[0].numpy()
    ref = fwd["decoded"]
    assert decoded.shape == ref.shape == (32 * 32 + 16 * 16 + 8 * 8, 8)
    assert np.abs(decoded - ref).max() <= 1e-3 * np.abs(ref).max()


def test_postprocess_reproduces_dets_txt() -> None:
    golden = _golden()
    fwd = np.load(golden / "forward.npz")
    header = (golden / "dets.txt").read_text().splitlines()[0]
    assert "conf 0.29600000381469727 nms 0.45" in header
    ref = np.loadtxt(golden / "dets.txt", ndmin=2)
    decoded = torch.from_numpy(fwd["decoded"])[None]
    dets = postprocess_yolox(decoded, 0.29600000381469727, 0.45)[0].numpy()
    assert len(dets) == len(ref) > 0
    assert np.all(np.diff(dets[:, 4] * dets[:, 5]) <= 0)  # best first
    unused = list(range(len(dets)))
    for row in ref:
        match = [
            i for i in unused
            if dets[i, 6] == row[6]
            and abs(dets[i, 4] * dets[i, 5] - row[4] * row[5]) <= 2e-3
            and np.abs(dets[i, :4] - row[:4]).max() <= 1e-3 * 256
        ]
        assert match, f"no detection matches reference row {row}"
        unused.remove(match[0])


@pytest.mark.parametrize("part", ["no_l1", "l1"])
def test_loss_and_gradients_match_yolox(part: str) -> None:
    train = np.load(_golden() / "train.npz")
    assert tuple(train["strides"]) == STRIDES
    levels = [x.requires_grad_() for x in _levels(train, f"{part}/out/", batch=True)]
    loss = yolox_loss(levels, _truth(train["labels"], 256), STRIDES, use_l1=part == "l1")
    loss.total.backward()
    got = np.array([float(term.detach()) for term in loss])
    ref = train[f"{part}/loss"]
    assert (ref[4] == 0) == (part == "no_l1")
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-12)
    for k, level in enumerate(levels):
        assert level.grad is not None
        for name, channels in PARTS:
            grad_ref = train[f"{part}/grad/{name}/{k}"]
            err = np.abs(level.grad[:, channels].numpy() - grad_ref).max()
            assert err <= 1e-4 * np.abs(grad_ref).max(), f"{name}/{k}"


# --- hand-checked ---------------------------------------------------------------------------


def test_decode_hand_values() -> None:
    level = torch.zeros(1, 6, 2, 3)
    level[0, :, 1, 2] = torch.tensor([0.5, -0.5, math.log(2.0), 0.0, 0.0, 2.0])
    out = decode_yolox([level], [16])[0]
    assert out.shape == (6, 6)
    # anchor 5 = row 1, column 2: centre ((2 + .5) * 16, (1 - .5) * 16), size (2 * 16, 16)
    torch.testing.assert_close(out[5, :4], torch.tensor([40.0, 8.0, 32.0, 16.0]))
    torch.testing.assert_close(out[5, 4:], torch.sigmoid(torch.tensor([0.0, 2.0])))
    torch.testing.assert_close(out[1, :4], torch.tensor([16.0, 0.0, 16.0, 16.0]))


def test_l1_target_inverts_decode() -> None:
    grid, stride = anchor_points([(4, 4), (2, 2)], [8, 16])
    raw = torch.randn(len(grid), 4, generator=torch.Generator().manual_seed(0))
    boxes = decode_boxes(raw, grid, stride)
    torch.testing.assert_close(l1_target(boxes, grid, stride), raw, atol=1e-5, rtol=1e-5)


def test_center_prior_is_strict_1p5_strides() -> None:
    grid, stride = anchor_points([(4, 4)], [8])  # cell centres 4, 12, 20, 28
    prior = center_prior(torch.tensor([[16.0, 16.0, 100.0, 100.0]]), grid, stride)[0].view(4, 4)
    # |centre - 16| < 12 strictly: 12 and 20 in, 4 and 28 (exactly 12 away) out; size plays no role
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[1:3, 1:3] = True
    assert torch.equal(prior, expected)


def test_iou_loss_hand_values() -> None:
    pred = torch.tensor([[10.0, 10, 4, 4], [10, 10, 4, 4], [10, 10, 4, 4]])
    target = torch.tensor([[10.0, 10, 4, 4], [30, 30, 4, 4], [11, 10, 2, 4]])
    # IoUs 1, 0 and 8/16
    torch.testing.assert_close(iou_loss(pred, target), torch.tensor([0.0, 1.0, 0.75]))
    torch.testing.assert_close(
        pairwise_iou_cxcywh(pred[:1], target), torch.tensor([[1.0, 0.0, 0.5]])
    )


def test_dynamic_k_sums_top10_ious() -> None:
    ious = torch.zeros(3, 12)
    ious[0, :12] = 0.25  # top 10 sum 2.5 -> 2 (the two extra anchors do not count)
    ious[1, :3] = torch.tensor([0.9, 0.95, 0.99])  # 2.84 -> 2
    ious[2, 0] = 0.3  # 0.3 -> 0 -> clamped to 1
    assert dynamic_ks(ious, torch.tensor([True, True, True])).tolist() == [2, 2, 1]
    assert dynamic_ks(ious, torch.tensor([True, False, True])).tolist() == [2, 0, 1]
    # fewer than 10 candidates: all are summed
    assert dynamic_ks(torch.full((1, 4), 0.8), torch.tensor([True])).tolist() == [3]


def test_simota_takes_k_cheapest_and_resolves_ambiguity_by_cost() -> None:
    cost = torch.tensor([[1.0, 2.0, 5.0, 9.0], [7.0, 1.5, 0.5, 9.0], [torch.inf] * 4])
    ious = torch.tensor([[0.9, 0.8, 0.1, 0.0], [0.2, 0.6, 0.7, 0.0], [0.0] * 4])
    found = simota_matching(cost, ious, torch.tensor([2, 2, 0]))
    # truth 0 takes anchors 0, 1; truth 1 takes 2, 1; anchor 1 goes to truth 1 (1.5 < 2.0)
    assert found.fg.tolist() == [True, True, True, False]
    assert found.gt_index.tolist()[:3] == [0, 1, 1]
    torch.testing.assert_close(found.iou, torch.tensor([0.9, 0.6, 0.7, 0.0]))


def test_simota_ambiguity_uses_least_cost_over_all_truths() -> None:
    # Anchor 0 is taken by truths 0 and 1; truth 2 took anchor 1 but is also cheapest at anchor 0:
    # as in the reference (torch.min over every truth), anchor 0 goes to truth 2.
    cost = torch.tensor([[1.0, 2.0], [3.0, 9.0], [0.5, 0.4]])
    ious = torch.tensor([[0.5, 0.1], [0.4, 0.1], [0.3, 0.2]])
    found = simota_matching(cost, ious, torch.tensor([1, 1, 1]))
    assert found.fg.tolist() == [True, True]
    assert found.gt_index.tolist() == [2, 2]
    torch.testing.assert_close(found.iou, torch.tensor([0.3, 0.2]))


def _random_levels(nc: int, size: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 5 + nc, size // s, size // s, generator=gen) * 0.5 for s in STRIDES]


def test_padding_rows_anywhere_are_ignored() -> None:
    levels = _random_levels(nc=3, size=64, seed=1)
    truth = torch.tensor([[[0.5, 0.5, 0.3, 0.4, 1.0], [0.2, 0.7, 0.2, 0.2, 2.0]]] * 2)
    padded = torch.zeros(2, 4, 5)
    padded[:, [0, 3]] = truth  # padding in between and at the end
    a = yolox_loss(levels, truth, STRIDES, use_l1=True)
    b = yolox_loss(levels, padded, STRIDES, use_l1=True)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y)
    assert float(a.fg_per_gt) > 0 and float(a.iou) > 0 and float(a.l1) > 0


def test_no_truth_gives_objectness_only() -> None:
    levels = [x.requires_grad_() for x in _random_levels(nc=2, size=64, seed=2)]
    loss = yolox_loss(levels, torch.zeros(2, 3, 5), STRIDES, use_l1=True)
    obj = torch.cat([x[:, 4].flatten() for x in levels])
    expected = torch.nn.functional.softplus(obj).sum()  # BCE against 0, divided by max(0, 1)
    torch.testing.assert_close(loss.total, expected)
    assert [float(t.detach()) for t in (loss.iou, loss.cls, loss.l1)] == [0.0, 0.0, 0.0]
    loss.total.backward()
    assert all(float(x.grad[:, :4].abs().max()) == 0 for x in levels)


def test_nms_is_class_aware_unless_agnostic() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 9], [50, 50, 60, 60]])
    scores = torch.tensor([0.9, 0.8, 0.95, 0.5])
    classes = torch.tensor([0.0, 0.0, 1.0, 0.0])
    # IoU(0, 1) = 81/119 > .45: box 1 goes; box 2 (class 1) overlaps box 0 but survives per class
    assert nms(boxes, scores, classes, 0.45).tolist() == [2, 0, 3]
    assert nms(boxes, scores, None, 0.45).tolist() == [2, 3]
    assert nms(boxes, scores, classes, 0.7).tolist() == [2, 0, 1, 3]


def test_postprocess_threshold_and_rows() -> None:
    decoded = torch.tensor([[[20.0, 20, 10, 10, 0.9, 0.1, 0.8], [20, 20, 10, 10, 0.5, 0.5, 0.1]]])
    (dets,) = postprocess_yolox(decoded, 0.3, 0.45)
    # scores .72 and .25: only the first passes; row x1 y1 x2 y2 obj cls_conf class
    torch.testing.assert_close(dets, torch.tensor([[15.0, 15, 25, 25, 0.9, 0.8, 1.0]]))
    assert postprocess_yolox(decoded, 0.9, 0.45)[0].shape == (0, 7)


def _nms_loop(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, thresh: float
) -> list[int]:
    """torchvision's CPU nms loop in plain Python (float32), applied class by class."""
    keep: list[int] = []
    for i in sorted(range(len(scores)), key=lambda i: -scores[i]):  # sorted() is stable
        if all(classes[k] != classes[i] or _iou32(boxes[k], boxes[i]) <= thresh for k in keep):
            keep.append(i)
    return keep


def _iou32(a: np.ndarray, b: np.ndarray) -> np.float32:
    w = max(np.float32(0), min(a[2], b[2]) - max(a[0], b[0]))
    h = max(np.float32(0), min(a[3], b[3]) - max(a[1], b[1]))
    area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
    return np.float32(w * h / (area_a + area_b - w * h))


@pytest.mark.parametrize("seed", range(5))
def test_nms_matches_a_plain_greedy_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-10, 100, (300, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(1, 40, (300, 2)).astype(np.float32)], 1)
    scores = rng.choice(np.linspace(0.1, 1, 40), 300).astype(np.float32)  # ties included
    classes = rng.integers(0, 3, 300).astype(np.float32)
    got = nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(classes), 0.45)
    assert got.tolist() == _nms_loop(boxes, scores, classes, 0.45)
