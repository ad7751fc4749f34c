"""The ``[yolov8]`` head (darknetpy.model.heads.v8.head): building from a cfg, forward = decode,
loss / detect / NMS through the network, against ultralytics' golden data where it is present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from darknetpy.errors import CfgError
from darknetpy.inference.export import export_onnx, output_names
from darknetpy.model.heads import HEADS, register_head
from darknetpy.model.heads.v8 import decode_v8, v8_loss
from darknetpy.model.heads.v8.head import V8Stats, YoloV8Head
from darknetpy.model.network import Network

REPO = Path(__file__).resolve().parents[3]
SHARED = Path(os.environ.get("DARKNETPY_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden" / "modern" / "yolov8n"
SKIP = "../shared/golden/modern/yolov8n not found: golden data is only beside a dev checkout"

TABLE = HEADS if "yolov8" in HEADS else register_head(HEADS, "yolov8", YoloV8Head)


def _cfg(size: int, classes: int, reg_max: int, strides: tuple[int, ...], extra: str = "") -> str:
    """Plain convolutions making one level per stride (each from the previous), then the head."""
    filters = 4 * reg_max + classes
    convs = []
    for k, s in enumerate(strides):
        step = s if k == 0 else s // strides[k - 1]
        convs.append(
            f"[convolutional]\nfilters={filters}\nsize=3\nstride={step}\npad=1\nactivation=linear\n"
        )
    layers = ",".join(str(-len(strides) + k) for k in range(len(strides)))
    return (
        f"[net]\nwidth={size}\nheight={size}\nchannels=3\n"
        + "".join(convs)
        + f"[yolov8]\nclasses={classes}\nreg_max={reg_max}\nlayers={layers}\n{extra}"
    )


def _net(text: str) -> Network:
    torch.manual_seed(0)
    return Network.from_text(text, heads=TABLE)


def test_build_and_forward_is_the_decode() -> None:
    net = _net(_cfg(64, 2, 4, (8, 16)))
    head = net.layers[2]
    assert isinstance(head, YoloV8Head) and head.per_level
    assert head.sources == (0, 1) and head.options.strides == (8.0, 16.0)
    assert head.classes == 2 and head.options.reg_max == 4 and head.options.max_det == 300
    x = torch.rand(2, 3, 64, 64)
    outs = net.forward_layers(x)
    decoded = outs[2]
    assert decoded.shape == (2, 8 * 8 + 4 * 4, 4 + 2)
    assert torch.equal(decoded, decode_v8([outs[0], outs[1]], (8.0, 16.0), 4))
    # another input size: same strides, more anchors
    assert net.forward_layers(torch.rand(1, 3, 96, 96))[2].shape == (1, 12 * 12 + 6 * 6, 6)


def test_cfg_keys_reach_the_loss() -> None:
    extra = "iou_normalizer=1\ncls_normalizer=2\ndfl_normalizer=3\ntal_topk=4\ntal_alpha=1\n"
    head = _net(_cfg(64, 2, 4, (8, 16), extra + "tal_beta=2\nmax_det=7\n")).layers[2]
    o = head.options.loss
    assert (o.box_gain, o.cls_gain, o.dfl_gain, o.topk, o.alpha, o.beta) == (1, 2, 3, 4, 1, 2)
    assert head.options.max_det == 7


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (_cfg(64, 2, 4, (8, 16)).replace("classes=2", "classes=3"), r"has 18 channels; .* needs"),
        (_cfg(64, 2, 4, (8, 16)).replace("reg_max=4", "reg_max=1"), "at least 2 bins"),
        (_cfg(64, 2, 4, (8, 16)).replace("layers=-2,-1", "layers=-2,5"), "refers to layer 5"),
        (_cfg(60, 2, 4, (8, 16)), "stride must be a whole number"),
    ],
)
def test_cfg_errors_name_the_line(text: str, match: str) -> None:
    with pytest.raises(CfgError, match=r"<string>:\d+ \[yolov8\]: .*" + match):
        _net(text)


def test_loss_through_the_network_backpropagates() -> None:
    net = _net(_cfg(64, 2, 4, (8, 16)))
    x = torch.rand(2, 3, 64, 64)
    inputs = net.head_inputs(x)
    assert [t.shape for t in inputs[2]] == [(2, 18, 8, 8), (2, 18, 4, 4)]
    truth = torch.tensor([[[0.5, 0.5, 0.4, 0.3, 1.0]], [[0.0, 0.0, 0.0, 0.0, 0.0]]])
    terms = net.compute_loss(inputs, truth)
    stats = terms.stats[2]
    assert isinstance(stats, V8Stats) and stats.kind == "yolov8" and stats.count > 0
    direct = v8_loss(inputs[2], truth, (8.0, 16.0), net.layers[2].options.loss)
    assert terms.total.item() == pytest.approx(direct.total.item(), rel=1e-6)
    assert stats.items == pytest.approx(tuple(direct.items.tolist()))
    assert terms.costs[2] == pytest.approx(tuple(direct.items.tolist()))  # (box, cls, dfl)
    assert sum(terms.costs[2]) * 2 == pytest.approx(terms.total.item(), rel=1e-5)  # x batch
    assert terms.cost == pytest.approx(terms.total.item())  # the mean of the heads' stats.cost
    assert stats.total_loss == pytest.approx(terms.total.item() / 2, rel=1e-5)
    terms.total.backward()
    assert float(net.layers[0].conv.weight.grad.abs().sum()) > 0


def test_detect_keeps_the_best_class_and_caps_at_max_det() -> None:
    net = _net(_cfg(64, 2, 4, (8, 16), "max_det=3\n"))
    x = torch.rand(1, 3, 64, 64)
    rows = net.detect(x, (64, 64), thresh=0.0, nms=0.99)[0]
    assert 0 < len(rows) <= 3
    decoded = net.forward_layers(x)[2][0]
    best = decoded[:, 4:].max(1).values
    for r in rows:  # every row is one anchor's best class and score
        assert np.isclose(best.detach().numpy(), r.prob).any() and r.objectness == 1.0
    probs = [r.prob for r in rows]
    assert probs == sorted(probs, reverse=True)


def test_export_outputs_are_the_decode() -> None:
    net = _net(_cfg(64, 2, 4, (8, 16))).eval()
    head = net.layers[2]
    out = net.forward_layers(torch.rand(1, 3, 64, 64))[2]
    boxes, objectness, scores = head.export_outputs(out, (64, 64))
    assert torch.allclose(boxes * 64, out[..., :4]) and torch.equal(scores, out[..., 4:])
    assert objectness.shape == (1, 80) and bool((objectness == 1).all())


# ---- golden ----


@pytest.fixture(scope="module")
def golden_head() -> tuple[Network, dict[str, np.ndarray]]:
    if not GOLDEN.is_dir():
        pytest.skip(SKIP)
    data = dict(np.load(GOLDEN / "train.npz"))
    data["decoded"] = np.load(GOLDEN / "forward.npz")["decoded"]
    return _net(_cfg(256, 3, 16, (8, 16, 32))), data


def _levels(boxes: np.ndarray, scores: np.ndarray) -> list[torch.Tensor]:
    x = torch.cat((torch.from_numpy(boxes), torch.from_numpy(scores)), 1)
    out, start = [], 0
    for h in (32, 16, 8):
        out.append(x[:, :, start : start + h * h].reshape(x.shape[0], -1, h, h).contiguous())
        start += h * h
    return out


def test_golden_loss_through_compute_loss(golden_head) -> None:
    net, g = golden_head
    levels = [t.requires_grad_(True) for t in _levels(g["boxes"], g["scores"])]
    rows = g["targets"]
    truth = torch.zeros(2, 5, 5)
    for b in range(2):
        mine = rows[rows[:, 0] == b]
        truth[b, : len(mine)] = torch.from_numpy(np.concatenate((mine[:, 2:6], mine[:, 1:2]), 1))
    terms = net.compute_loss({3: levels}, truth)
    assert abs(terms.total.item() - g["loss"].sum()) / g["loss"].sum() < 1e-4
    items = np.array(terms.stats[3].items)
    assert np.abs(items - g["loss_items"]).max() / np.abs(g["loss_items"]).min() < 1e-4
    costs = np.array(terms.costs[3])  # the contract: costs[head] = (box, cls, dfl)
    assert np.abs(costs - g["loss_items"]).max() / np.abs(g["loss_items"]).min() < 1e-4
    terms.total.backward()
    grad = torch.cat([t.grad.flatten(2) for t in levels], 2).numpy()
    assert np.abs(grad[:, 64:] - g["grad_scores"]).max() < 1e-4 * np.abs(g["grad_scores"]).max()
    assert np.abs(grad[:, :64] - g["grad_boxes"]).max() < 1e-4 * np.abs(g["grad_boxes"]).max()


def test_golden_detections_and_nms_match_dets_txt(golden_head) -> None:
    net, g = golden_head
    head = net.layers[3]
    decoded = torch.from_numpy(g["decoded"]).T[None]
    dets = head.detections(decoded, (256, 256), 0.4090000092983246)[0]
    kept = head.nms(dets, 0.7)
    ref = np.loadtxt(GOLDEN / "dets.txt", ndmin=2)
    assert len(kept) == len(ref)
    xy, wh = kept.boxes[:, :2] * 256, kept.boxes[:, 2:] * 256
    got = np.concatenate((xy - wh / 2, xy + wh / 2), 1)
    assert np.abs(got - ref[:, :4]).max() < 1e-3 * 256
    assert np.abs(kept.probs.max(1) - ref[:, 4]).max() < 2e-3
    assert np.array_equal(kept.probs.argmax(1), ref[:, 5].astype(int))


def test_onnx_export_matches_pytorch(tmp_path: Path) -> None:
    pytest.importorskip("onnx", reason="onnx is an optional dependency (pip install darknetpy[onnx])")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is an optional dependency")
    net = _net(_cfg(64, 2, 4, (8, 16))).eval()
    path = export_onnx(net, tmp_path / "v8.onnx", with_decode=True, fuse=False)
    x = torch.rand(1, 3, 64, 64)
    got = ort.InferenceSession(str(path)).run(None, {"images": x.numpy()})
    names = output_names(net, with_decode=True)
    assert names[0] == "head_2" and "boxes" in names
    want = net.forward_layers(x)[2].detach().numpy()
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
