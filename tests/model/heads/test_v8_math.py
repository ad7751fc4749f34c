"""YOLOv8 head math (darknetpy.model.heads.v8) against ultralytics 8.4.190's golden data
(../shared/golden/modern/yolov8n) and small hand-checked cases."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from darknetpy.model.heads.v8 import decode_v8, nms_v8, task_aligned_assign, v8_loss
from darknetpy.model.heads.v8.geometry import anchor_points, ciou, dfl_expectation
from darknetpy.model.heads.v8.loss import bce_sparse_sum, dfl_loss, truth_to_gt

REPO = Path(__file__).resolve().parents[3]
SHARED = Path(os.environ.get("DARKNETPY_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden" / "modern" / "yolov8n"
SKIP = (
    "../shared/golden/modern/yolov8n not found: the ultralytics golden data is only beside a "
    "development checkout"
)

STRIDES = (8.0, 16.0, 32.0)
SHAPES = [(32, 32), (16, 16), (8, 8)]


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    if not GOLDEN.is_dir():
        pytest.skip(SKIP)
    out = {f"f/{k}": v for k, v in np.load(GOLDEN / "forward.npz").items() if not k[0].isdigit()}
    out.update({f"t/{k}": v for k, v in np.load(GOLDEN / "train.npz").items()})
    return out


def _levels(
    boxes: np.ndarray, scores: np.ndarray, shapes: list[tuple[int, int]]
) -> list[torch.Tensor]:
    """ultralytics' concatenated (N, 64, A) and (N, nc, A) -> per-level (N, 64 + nc, H, W)."""
    x = torch.cat((torch.from_numpy(boxes), torch.from_numpy(scores)), 1)
    out, start = [], 0
    for h, w in shapes:
        out.append(x[:, :, start : start + h * w].reshape(x.shape[0], -1, h, w).contiguous())
        start += h * w
    assert start == x.shape[2]
    return out


def _truth(targets: np.ndarray, batch: int) -> torch.Tensor:
    """ultralytics' (batch index, class, cx, cy, w, h) rows -> darknetpy (N, T, 5) truth, with a
    zero padding row in the middle of image 1 (ignored) to show padding may be anywhere."""
    per = [[r for r in targets if int(r[0]) == b] for b in range(batch)]
    t = max(len(p) for p in per) + 1
    truth = torch.zeros(batch, t, 5)
    for b, rows in enumerate(per):
        j = 0
        for r in rows:
            j += b == 1 and j == 1  # skip one slot: a zero row between real ones
            truth[b, j] = torch.tensor([*r[2:6], r[1]])
            j += 1
    return truth


def _rel_max(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


# ---- golden ----


def test_decode_matches_ultralytics(golden: dict[str, np.ndarray]) -> None:
    ref = golden["f/decoded"]  # (4 + nc, A)
    levels = _levels(golden["f/head/boxes"][None], golden["f/head/scores"][None], SHAPES)
    got = decode_v8(levels, STRIDES, 16)
    assert got.shape == (1, ref.shape[1], ref.shape[0])
    err = np.abs(got[0].T.numpy() - ref).max() / (ref.max() - ref.min())
    assert err < 1e-3 * 1e-2, err  # measured ~1e-7: far inside the README's 1e-3 of range


def _check_dets(got: np.ndarray, ref: np.ndarray, size: float) -> None:
    assert got.shape[0] == ref.shape[0]
    assert np.array_equal(got[:, 5], ref[:, 5])
    assert np.abs(got[:, 4] - ref[:, 4]).max() < 2e-3
    assert np.abs(got[:, :4] - ref[:, :4]).max() < 1e-3 * size


def test_nms_matches_dets_txt(golden: dict[str, np.ndarray]) -> None:
    """On ultralytics' own decoded tensor, and on darknetpy's decode of the raw head outputs.
    (Many scores tie to the last bit in this random-weight net: ties break as ultralytics' torch
    argsort breaks them.)"""
    header = (GOLDEN / "dets.txt").read_text().splitlines()[0]
    assert "conf_thres 0.4090000092983246 iou_thres 0.7" in header
    ref = np.loadtxt(GOLDEN / "dets.txt", ndmin=2)
    decoded = torch.from_numpy(golden["f/decoded"]).T[None]
    got = nms_v8(decoded, 0.4090000092983246, 0.7, max_det=300)[0].numpy()
    _check_dets(got, ref, 256)
    levels = _levels(golden["f/head/boxes"][None], golden["f/head/scores"][None], SHAPES)
    got = nms_v8(decode_v8(levels, STRIDES), 0.4090000092983246, 0.7)[0].numpy()
    _check_dets(got, ref, 256)
    assert np.all(np.diff(got[:, 4]) <= 0)


@pytest.fixture(scope="module")
def golden_loss(golden: dict[str, np.ndarray]):
    shapes = [tuple(int(v) for v in s) for s in golden["t/feat_shapes"]]
    levels = _levels(golden["t/boxes"], golden["t/scores"], shapes)
    levels = [x.requires_grad_(True) for x in levels]
    strides = [float(s) for s in golden["t/strides"]]
    loss = v8_loss(levels, _truth(golden["t/targets"], 2), strides)
    loss.total.backward()
    grad = torch.cat([x.grad.flatten(2) for x in levels], 2).numpy()
    return loss, grad


def test_loss_matches_ultralytics(golden: dict[str, np.ndarray], golden_loss) -> None:
    loss, _ = golden_loss
    ref_items, ref_loss = golden["t/loss_items"], golden["t/loss"]
    assert np.abs(loss.items.numpy() - ref_items).max() / np.abs(ref_items).min() < 1e-4
    assert np.abs(loss.scaled.numpy() - ref_loss).max() / np.abs(ref_loss).min() < 1e-4
    assert abs(float(loss.total.detach()) - ref_loss.sum()) / ref_loss.sum() < 1e-4
    assert (loss.box, loss.cls, loss.dfl) == tuple(float(v) for v in loss.items)


def test_loss_gradient_matches_ultralytics(golden: dict[str, np.ndarray], golden_loss) -> None:
    _, grad = golden_loss
    assert _rel_max(grad[:, :64], golden["t/grad_boxes"]) < 1e-4
    assert _rel_max(grad[:, 64:], golden["t/grad_scores"]) < 1e-4
    assert np.abs(golden["t/grad_boxes"]).max() > 0  # the box terms really reach the gradient


# ---- hand-checked ----


def test_anchor_points_are_cell_centres_row_major() -> None:
    points, stride = anchor_points([(2, 3), (1, 1)], [8, 16])
    assert points.tolist() == [
        [0.5, 0.5], [1.5, 0.5], [2.5, 0.5], [0.5, 1.5], [1.5, 1.5], [2.5, 1.5], [0.5, 0.5],
    ]
    assert stride.view(-1).tolist() == [8] * 6 + [16]


def test_dfl_expectation() -> None:
    logits = torch.full((3, 16), -1e4)
    logits[0, 5] = 0  # all mass on bin 5
    logits[1] = 0  # uniform: mean of 0..15
    logits[2, 2] = logits[2, 3] = 0  # half on 2, half on 3
    assert dfl_expectation(logits).tolist() == pytest.approx([5.0, 7.5, 2.5])


def test_decode_one_anchor_by_hand() -> None:
    reg_max, nc = 4, 2
    x = torch.full((1, 4 * reg_max + nc, 1, 2), -1e4)
    for side, bin_ in enumerate((1, 2, 3, 0)):  # l=1, t=2, r=3, b=0 at anchor 0
        x[0, side * reg_max + bin_, 0, 0] = 0
    x[0, 4 * reg_max :, 0, 0] = torch.tensor([0.0, math.log(3)])
    out = decode_v8([x], [8.0], reg_max)[0, 0]
    # centre (0.5, 0.5) cells; x1 = -0.5, y1 = -1.5, x2 = 3.5, y2 = 0.5 -> times 8
    assert out[:4].tolist() == pytest.approx([12.0, -4.0, 32.0, 16.0])
    assert out[4:].tolist() == pytest.approx([0.5, 0.75])


def test_dfl_target_interpolates_between_bins() -> None:
    logits = torch.randn(2, 4, 16)
    target = torch.tensor([[2.3, 0.0, 7.5, 20.0], [14.995, 1.0, 3.25, -1.0]])
    logp = torch.log_softmax(logits, -1)
    want = []
    for n in range(2):
        sides = []
        for s, t in enumerate(target[n].clamp(0, 14.99).tolist()):
            left = int(t)
            wl = left + 1 - t
            sides.append(-(logp[n, s, left] * wl + logp[n, s, left + 1] * (1 - wl)))
        want.append(sum(sides) / 4)
    assert dfl_loss(logits, target).tolist() == pytest.approx([float(w) for w in want], rel=1e-5)


def test_ciou_by_hand() -> None:
    a = torch.tensor([0.0, 0.0, 4.0, 2.0])
    assert float(ciou(a, a)) == pytest.approx(1.0, abs=1e-6)
    b = torch.tensor([2.0, 0.0, 6.0, 2.0])  # same shape, shifted: v = 0, CIoU = DIoU
    iou = 4 / 12
    assert float(ciou(a, b)) == pytest.approx(iou - 4 / (36 + 4), abs=1e-6)
    c = torch.tensor([0.0, 0.0, 2.0, 2.0])  # inside a: IoU 0.5, centre shift 1, aspect term
    v = 4 / math.pi**2 * (math.atan(1.0) - math.atan(2.0)) ** 2
    want = 0.5 - (1 / 20 + v * v / (1 - 0.5 + v))
    assert float(ciou(a, c)) == pytest.approx(want, abs=1e-6)


def test_truth_rows_to_pixel_corners() -> None:
    truth = torch.tensor([[[0.5, 0.25, 0.5, 0.5, 1.0], [0, 0, 0, 0, 0], [0.5, 0.5, 0.1, 0.1, 7]]])
    labels, boxes, mask = truth_to_gt(truth, (64.0, 32.0), classes=3)
    assert boxes[0, 0].tolist() == [16.0, 0.0, 48.0, 16.0]
    assert labels[0].tolist() == [1, 0, 7]
    assert mask[0].tolist() == [True, False, False]  # padding row; class outside [0, 3)


def _grid_points(h: int, w: int, stride: float) -> torch.Tensor:
    points, s = anchor_points([(h, w)], [stride])
    return points * s


def test_anchor_inside_two_boxes_goes_to_higher_iou() -> None:
    """Anchor (24, 24) is inside both truths and in both top-k lists: it goes to the truth its
    predicted box overlaps best, whichever order the truths come in."""
    points = _grid_points(4, 4, 16)  # centres 8, 24, 40, 56
    gt = torch.tensor([[[0.0, 0.0, 36.0, 36.0], [12.0, 12.0, 64.0, 64.0]]])
    pred = torch.tensor([10.0, 10.0, 40.0, 40.0]).repeat(1, 16, 1)  # IoU 0.44 with truth 0, 0.28
    logits = torch.zeros(1, 16, 2)
    at = 5  # (x 24, y 24)
    for order in ([0, 1], [1, 0]):
        a = task_aligned_assign(
            logits, pred, points, torch.tensor([[0, 1]])[:, order], gt[:, order],
            torch.ones(1, 2, dtype=torch.bool), min_side=16.0,
        )
        assert bool(a.foreground[0, at])
        assert a.truth[0, at].item() == order.index(0)
        assert a.labels[0, at].item() == 0
        assert a.boxes[0, at].tolist() == gt[0, 0].tolist()
    pred_far = torch.tensor([20.0, 20.0, 64.0, 64.0]).repeat(1, 16, 1)  # IoU 0.09, 0.72: truth 1
    a = task_aligned_assign(logits, pred_far, points, torch.tensor([[0, 1]]), gt,
                            torch.ones(1, 2, dtype=torch.bool), min_side=16.0)
    assert a.truth[0, at].item() == 1


def test_assignment_topk_and_normalised_scores() -> None:
    """A large truth holds 16 anchors; only topk of them become foreground, and the best anchor's
    target score equals the truth's best CIoU (the normalisation)."""
    points = _grid_points(4, 4, 16)
    gt = torch.tensor([[[0.0, 0.0, 64.0, 64.0], [0.0, 0.0, 0.0, 0.0]]])
    torch.manual_seed(0)
    pred = torch.tensor([4.0, 4.0, 60.0, 60.0]) + torch.randn(1, 16, 4)
    logits = torch.randn(1, 16, 3)
    mask = torch.tensor([[True, False]])
    a = task_aligned_assign(logits, pred, points, torch.tensor([[2, 0]]), gt, mask, topk=5)
    assert int(a.foreground.sum()) == 5
    assert (a.labels[a.foreground] == 2).all()
    iou = ciou(gt[0, 0], pred[0]).clamp(0)
    metric = logits[0, :, 2].sigmoid().sqrt() * iou**6
    top = metric.topk(5).indices
    assert sorted(a.foreground[0].nonzero().view(-1).tolist()) == sorted(top.tolist())
    best_iou = iou[top].max()
    want = metric[top] * best_iou / metric[top].max()
    assert a.score[0, top].tolist() == pytest.approx(want.tolist(), rel=1e-5)
    dense = a.dense_scores(3)
    assert dense[0, top, 2].tolist() == pytest.approx(want.tolist(), rel=1e-5)
    assert float(dense.sum()) == pytest.approx(float(a.score.sum()))


def test_small_truth_is_widened_to_the_second_stride() -> None:
    """A 4-pixel truth between anchors still gets candidates: its sides are widened to 16."""
    points = _grid_points(4, 4, 16)
    gt = torch.tensor([[[20.0, 20.0, 24.0, 24.0]]])
    pred = torch.tensor([18.0, 18.0, 26.0, 26.0]).repeat(1, 16, 1)
    label, valid = torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.bool)
    a = task_aligned_assign(torch.zeros(1, 16, 1), pred, points, label, gt, valid, min_side=16.0)
    assert a.foreground[0].nonzero().view(-1).tolist() == [5]  # only (24, 24) is inside 14..30


def test_bce_sparse_sum_equals_dense_bce() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 3, 7, requires_grad=True)
    where = (torch.tensor([0, 1, 1]), torch.tensor([2, 0, 1]), torch.tensor([3, 6, 0]))
    t = torch.tensor([0.3, 0.9, 0.05])
    dense = torch.zeros(2, 3, 7)
    dense[where] = t
    want = torch.nn.functional.binary_cross_entropy_with_logits(x, dense, reduction="sum")
    (gw,) = torch.autograd.grad(want, x)
    got = bce_sparse_sum(x, where, t)
    (gg,) = torch.autograd.grad(got * 2.0, x)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    assert torch.allclose(gg, 2.0 * gw, atol=1e-6)


def test_loss_without_truth_is_class_loss_only() -> None:
    torch.manual_seed(2)
    levels = [torch.randn(2, 67, 8, 8), torch.randn(2, 67, 4, 4)]
    levels = [x.requires_grad_(True) for x in levels]
    for truth in (torch.zeros(2, 0, 5), torch.zeros(2, 3, 5)):
        loss = v8_loss(levels, truth, [8, 16])
        assert loss.box == 0 and loss.dfl == 0
        logits = torch.cat([x[:, 64:].flatten(2) for x in levels], 2)
        want = torch.nn.functional.softplus(logits).sum() * 0.5 * 2  # cls gain, batch of 2
        assert float(loss.total.detach()) == pytest.approx(float(want.detach()), rel=1e-5)
        loss.total.backward()
        assert all(torch.isfinite(x.grad).all() for x in levels)


def test_nms_is_class_aware_and_strict() -> None:
    def row(cx: float, cy: float, w: float, h: float, scores: list[float]) -> list[float]:
        return [cx, cy, w, h, *scores]

    decoded = torch.tensor([
        row(50, 50, 20, 20, [0.9, 0.0]),
        row(51, 50, 20, 20, [0.8, 0.0]),  # same class, IoU 0.9: suppressed
        row(51, 50, 20, 20, [0.0, 0.7]),  # other class: kept
        row(80, 80, 10, 10, [0.5, 0.0]),  # exactly at the threshold: dropped (strict >)
        row(10, 10, 4, 4, [0.55, 0.6]),  # best class only
    ])
    rows = nms_v8(decoded, 0.5, 0.7)[0]
    assert rows[:, 5].tolist() == [0, 1, 1]
    assert rows[:, 4].tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert rows[:, 6].tolist() == [0, 2, 4]  # anchor indices
    assert rows[0, :4].tolist() == [40, 40, 60, 60]
    assert len(nms_v8(decoded, 0.5, 0.7, max_det=2)[0]) == 2
    assert len(nms_v8(decoded, 0.5, 0.7, agnostic=True)[0]) == 2  # the class-1 twin goes too
    assert nms_v8(decoded, 0.95, 0.7)[0].shape == (0, 7)


def test_nms_equals_a_plain_greedy_loop_per_class() -> None:
    """Random crowded boxes, 3 classes: the kernel keeps what a textbook loop keeps (float64 IoU,
    same class only, best first) - the rule ultralytics' class offset implements."""
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 100, (400, 2))
    wh = rng.uniform(5, 40, (400, 2))
    scores = rng.uniform(0.3, 1.0, (400, 3)) * (rng.uniform(size=(400, 3)) < 0.5)
    decoded = torch.from_numpy(np.concatenate((xy, wh, scores), 1).astype(np.float32))
    got = nms_v8(decoded, 0.25, 0.5, max_det=1000)[0].numpy()

    d = decoded.numpy().astype(np.float64)
    best, label = d[:, 4:].max(1), d[:, 4:].argmax(1)
    cand = [i for i in np.argsort(-best, kind="stable") if best[i] > 0.25]
    corners = np.concatenate((d[:, :2] - d[:, 2:4] / 2, d[:, :2] + d[:, 2:4] / 2), 1)

    def iou(i: int, j: int) -> float:
        a, b = corners[i], corners[j]
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
        return w * h / (area - w * h)

    kept: list[int] = []
    for i in cand:
        if all(label[k] != label[i] or iou(k, i) <= 0.5 for k in kept):
            kept.append(i)
    assert 20 < len(kept) < len(cand)  # a real test: many suppressed, many kept
    assert got[:, 6].astype(int).tolist() == kept
