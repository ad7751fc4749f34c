"""``export_onnx(layout=...)``: each layout run by onnxruntime equals PyTorch's decode (1e-4 of the
input size on boxes), the decoded layouts give the same outputs in OpenCV DNN, and NMS in the graph
keeps darknetpy's own detections."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from darknetpy.cli import main
from darknetpy.errors import UsageError
from darknetpy.inference.export import NmsOptions, decode_heads, export_onnx, output_names
from darknetpy.inference.pipeline import prepare_image
from darknetpy.model.network import Network

from ..conftest import GOLDEN, SHARED, require_shared

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

# [yolo] with scale_x_y (yolov4-tiny), plain [yolo] (yolov3-tiny), [region] (yolov2-tiny), and
# Darknet-trained weights (trained-raccoon, whose boxes are real rather than degenerate)
NETWORKS = ["yolov4-tiny", "yolov3-tiny", "yolov2-tiny", "trained-raccoon"]
PLAIN_NMS = ["yolov3-tiny", "yolov3-tiny-prn", "yolov2-tiny", "yolov2"]  # nms_kind=default


def _golden(name: str, plain_nms: bool = False) -> tuple[Network, np.ndarray]:
    """The golden network and an input: its own (random weights), or a raccoon photo prepared as
    darknetpy prepares it (the trained network). ``plain_nms``: its cfg's ``nms_kind`` removed."""
    require_shared()
    text = (GOLDEN / name / "net.cfg").read_text()
    if plain_nms:
        text = re.sub(r"(?m)^nms_kind=.*$", "", text)
    net = Network.from_text(text)
    net.load_weights(GOLDEN / name / "net.weights")
    if name != "trained-raccoon":
        return net.eval(), np.load(GOLDEN / name / "input.npy")[None]
    folder = SHARED / "datasets" / "raccoon"
    image = folder / "obj" / "raccoon-93.jpg"  # a validation image Darknet finds a raccoon in
    x = prepare_image(str(image), (net.net.width, net.net.height), bool(net.net.letter_box)).input
    return net.eval(), x[None]


def _reference(net: Network, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """darknetpy's decode in PyTorch: boxes relative to the input, objectness, scores."""
    with torch.no_grad():
        outs = net(torch.from_numpy(x))
        b, o, s = decode_heads(net.head_layers(), outs, (x.shape[3], x.shape[2]))
    return b.numpy(), o.numpy(), s.numpy()


def _box_error(got: np.ndarray, want: np.ndarray) -> float:
    """Largest box difference relative to the input size, per unit of the box's own size where a
    random-weight box is larger than the image (exp amplifies float32 rounding there)."""
    return float((np.abs(got - want) / np.maximum(1.0, np.abs(want))).max())


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x})[0]


@pytest.mark.parametrize("name", NETWORKS)
def test_decoded_layouts_equal_pytorch_in_onnxruntime_and_opencv(name: str,
                                                                  tmp_path: Path) -> None:
    net, x = _golden(name)
    boxes, objectness, scores = _reference(net, x)
    w, h = x.shape[3], x.shape[2]
    classes = scores.shape[-1]
    rows = _run(export_onnx(net, tmp_path / "d.onnx", layout="decoded"), x)
    assert rows.shape == (1, boxes.shape[1], 5 + classes)
    assert _box_error(rows[..., :4], boxes) <= 1e-4
    np.testing.assert_allclose(rows[..., 4], objectness, rtol=0, atol=1e-4)
    np.testing.assert_allclose(rows[..., 5:], scores, rtol=0, atol=1e-4)
    t = _run(export_onnx(net, tmp_path / "t.onnx", layout="decoded-t"), x)
    assert t.shape == (1, 4 + classes, boxes.shape[1])
    scale = np.array([w, h, w, h], np.float32)
    assert _box_error(t[0, :4].T / scale, boxes[0]) <= 1e-4
    np.testing.assert_allclose(t[0, 4:].T, scores[0], rtol=0, atol=1e-4)
    if name == "trained-raccoon":  # real boxes: 1e-4 of the input size, plain
        assert np.abs(rows[..., :4] - boxes).max() <= 1e-4
        assert (scores > 0.1).any()

    cv2 = pytest.importorskip("cv2")
    for path, want in ((tmp_path / "d.onnx", rows), (tmp_path / "t.onnx", t)):
        cv_net = cv2.dnn.readNetFromONNX(str(path))
        cv_net.setInput(x)
        got = cv_net.forward()
        assert got.shape == want.shape
        if path.name == "t.onnx":
            got, want = got[0].T / np.r_[scale, np.ones(classes, np.float32)], want[0].T / np.r_[
                scale, np.ones(classes, np.float32)]
        assert _box_error(got[..., :4], want[..., :4]) <= 1e-4, path.name
        assert np.abs(got[..., 4:] - want[..., 4:]).max() <= 1e-4, path.name


def _darknetpy_rows(net: Network, x: np.ndarray, thresh: float, iou: float) -> np.ndarray:
    """darknetpy's detections after its own NMS as (x1, y1, x2, y2 input pixels, prob, class)."""
    w, h = x.shape[3], x.shape[2]
    dets = net.detections(torch.from_numpy(x), [(w, h)], thresh=thresh, nms=iou,
                          letter_box=False)[0]
    out = []
    for box, probs in zip(dets.boxes, dets.probs):
        for k in np.nonzero(probs > np.float32(thresh))[0]:
            cx, cy, bw, bh = box * np.array([w, h, w, h])
            out.append([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2, probs[k], k])
    return np.array(out, np.float64).reshape(-1, 6)


def _same_detections(got: np.ndarray, want: np.ndarray, size: float, thresh: float) -> None:
    """Each row of one side matches a row of the other (same class, box within 1e-4 of the input
    size, score within 1e-4), except a score within 5e-3 of the threshold (near-ties)."""
    for a, b in ((got, want), (want, got)):
        for row in a:
            same = b[(b[:, 5] == row[5]) & (np.abs(b[:, 4] - row[4]) <= 1e-4)]
            close = np.abs(same[:, :4] - row[:4]).max(1) <= 1e-4 * max(size, np.abs(row[:4]).max())
            assert close.any() or abs(row[4] - thresh) < 5e-3, row


@pytest.mark.parametrize("name", [*PLAIN_NMS, "trained-raccoon"])
def test_nms_in_the_graph_keeps_darknetpys_detections(name: str, tmp_path: Path) -> None:
    # trained-raccoon's cfg says greedynms (DIoU): both sides run IoU NMS on it
    net, x = _golden(name, plain_nms=True)
    thresh, iou = (0.05, 0.45) if name == "trained-raccoon" else (0.5, 0.45)
    path = export_onnx(net, tmp_path / "n.onnx", layout="nms",
                       nms=NmsOptions(iou, thresh, max_det=1000))
    got = _run(path, x)
    assert got.ndim == 2 and got.shape[1] == 7 and (got[:, 0] == 0).all()
    want = _darknetpy_rows(net, x, thresh, iou)
    assert len(want) > 0
    _same_detections(got[:, 1:].astype(np.float64), want, float(x.shape[3]), thresh)


def test_nms_layout_refuses_diou_nms_unless_told(tmp_path: Path) -> None:
    net, _ = _golden("yolov4-tiny")  # nms_kind=greedynms: DIoU
    with pytest.raises(UsageError, match="greedynms.*--plain-iou-nms"):
        export_onnx(net, tmp_path / "n.onnx", layout="nms")
    export_onnx(net, tmp_path / "n.onnx", layout="nms", nms=NmsOptions(plain_iou=True))
    assert output_names(net, layout="nms") == ["detections"]


def test_layouts_need_a_detection_head_and_a_known_name(tmp_path: Path) -> None:
    net = Network.from_text("[net]\nwidth=32\nheight=32\nchannels=3\n[convolutional]\nfilters=4\n"
                            "size=3\nstride=1\npad=1\nactivation=leaky\n")
    with pytest.raises(UsageError, match="--layout decoded needs a \\[yolo\\]"):
        export_onnx(net, tmp_path / "c.onnx", layout="decoded")
    with pytest.raises(UsageError, match="--layout boxes: one of raw, decoded"):
        export_onnx(net, tmp_path / "c.onnx", layout="boxes")
    assert not (tmp_path / "c.onnx").exists()


@pytest.mark.parametrize("kind", ["yolov8", "yolox"])
def test_modern_heads_decoded_and_nms_layouts(kind: str, tmp_path: Path) -> None:
    """The YOLOv8 and YOLOX heads' own decode in the graph; NMS on each box's best class."""
    if kind == "yolov8":
        from ..model.heads.test_v8_head import _cfg, _net

        net = _net(_cfg(64, 2, 4, (8, 16))).eval()
    else:
        from ..model.heads.test_yolox_head import _net as _yolox

        net = _yolox()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3)).numpy()
    boxes, _, scores = _reference(net, x)
    t = _run(export_onnx(net, tmp_path / "t.onnx", layout="decoded-t"), x)
    assert _box_error(t[0, :4].T / 64, boxes[0]) <= 1e-4
    np.testing.assert_allclose(t[0, 4:].T, scores[0], rtol=0, atol=1e-4)
    thresh = float(np.quantile(scores.max(-1), 0.9))
    got = _run(export_onnx(net, tmp_path / "n.onnx", layout="nms",
                           nms=NmsOptions(0.45, thresh, max_det=1000)), x)
    want = _darknetpy_rows(net, x, thresh, 0.45)
    assert len(want) > 0
    _same_detections(got[:, 1:].astype(np.float64), want, 64.0, thresh)


def test_cli_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_shared()
    out = tmp_path / "t.onnx"
    cfg, weights = GOLDEN / "yolov3-tiny" / "net.cfg", GOLDEN / "yolov3-tiny" / "net.weights"
    assert main(["export", str(cfg), str(weights), str(out), "--layout", "nms",
                 "--max-det", "5", "--score-thresh", "0.3"]) == 0
    assert "outputs detections" in capsys.readouterr().out
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rows = session.run(None, {"images": np.load(GOLDEN / "yolov3-tiny" / "input.npy")[None]})[0]
    assert len(rows) and (rows[:, 5] > 0.3).all()
    assert np.bincount(rows[:, 6].astype(int)).max() <= 5


def test_dynamic_batch_layouts(tmp_path: Path) -> None:
    """A batch of 3 through graphs traced with 2: each image's rows are its own."""
    net, x = _golden("yolov3-tiny")
    batch = np.concatenate([x, np.ascontiguousarray(x[:, :, ::-1]), x * np.float32(0.5)])
    boxes, objectness, scores = _reference(net, batch)
    rows = _run(export_onnx(net, tmp_path / "d.onnx", layout="decoded", dynamic_batch=True), batch)
    assert rows.shape[0] == 3 and _box_error(rows[..., :4], boxes) <= 1e-4
    got = _run(export_onnx(net, tmp_path / "n.onnx", layout="nms", dynamic_batch=True,
                           nms=NmsOptions(0.45, 0.5, max_det=1000)), batch)
    for b in range(3):
        want = _darknetpy_rows(net, batch[b : b + 1], 0.5, 0.45)
        mine = got[got[:, 0] == b][:, 1:].astype(np.float64)
        assert len(mine) == len(want) > 0
        _same_detections(mine, want, float(x.shape[3]), 0.5)
