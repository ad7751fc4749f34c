"""INT8 post-training quantization (darknetpy.inference.quantize): a quick calibration of the
Darknet-trained raccoon model, run through darknetpy's pipeline, finds the float32 model's
detections; the command lines and their one-line errors. The mAP figure (fp32 against INT8 on the
whole validation split) is ``bench/bench_int8.py``'s."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest

from darknetpy.cli import main
from darknetpy.errors import UsageError
from darknetpy.inference import pipeline
from darknetpy.inference.inference_model import load
from darknetpy.inference.quantize import (
    calibration_inputs,
    head_convolutions,
    int8_model,
    quantize_int8,
)
from darknetpy.model.network import Network

from ..conftest import GOLDEN, SHARED, require_shared

pytest.importorskip("onnx")

DATA = SHARED / "datasets" / "raccoon" / "raccoon.data"
CFG = GOLDEN / "trained-raccoon" / "net.cfg"
WEIGHTS = GOLDEN / "trained-raccoon" / "net.weights"


def _network() -> Network:
    require_shared()
    net = Network.from_cfg(CFG)
    net.load_weights(WEIGHTS)
    return net.eval()


def _valid_images() -> list[str]:
    """Validation images where Darknet's own ``detector test`` finds a raccoon above 15 %."""
    names = ("raccoon-93", "raccoon-94", "raccoon-40", "raccoon-188", "raccoon-173")
    return [str(DATA.parent / "obj" / f"{n}.jpg") for n in names]


def _detections(model: object, images: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    found = pipeline.detect_images(model, images, net_size=(256, 256), letter_box=False,
                                   thresh=0.05, nms=0.45)  # type: ignore[arg-type]
    out = []
    for f in found:  # NMS zeroes a suppressed box's probabilities: leave those out
        score = f.detections.probs.max(1)
        out.append((f.detections.boxes[score > 0], score[score > 0]))
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of each (x, y, w, h) row of ``a`` with each of ``b``."""
    a1, a2 = a[:, None, :2] - a[:, None, 2:] / 2, a[:, None, :2] + a[:, None, 2:] / 2
    b1, b2 = b[None, :, :2] - b[None, :, 2:] / 2, b[None, :, :2] + b[None, :, 2:] / 2
    inter = np.clip(np.minimum(a2, b2) - np.maximum(a1, b1), 0, None).prod(-1)
    return inter / (a[:, None, 2:].prod(-1) + b[None, :, 2:].prod(-1) - inter)


def test_calibration_inputs_are_prepared_as_inference_images() -> None:
    net = _network()
    first = next(calibration_inputs(net, DATA, 1))
    folder = DATA.parent
    image = folder / (folder / "train.txt").read_text().split()[0]
    want = pipeline.prepare_image(str(image), (256, 256), False).input
    assert first.shape == (1, 3, 256, 256) and first.dtype == np.float32
    assert np.array_equal(first[0], want)
    assert len(list(calibration_inputs(net, DATA, 3))) == 3
    assert head_convolutions(net) == [29, 36]  # the convolutions under yolov4-tiny's two [yolo]


@pytest.mark.parametrize("engine", ["openvino", "onnxruntime"])
def test_quantized_model_finds_the_float32_detections(engine: str, tmp_path: Path) -> None:
    """Quick calibration (8 images): the best float32 detections of a few validation images are
    found by the INT8 model (a box with IoU above 0.5, as mAP@0.5 matches them, scoring at least
    half as high)."""
    pytest.importorskip("nncf" if engine == "openvino" else "onnxruntime")
    pytest.importorskip(engine)
    net = _network()
    out = quantize_int8(net, tmp_path / ("m.xml" if engine == "openvino" else "m.onnx"), DATA,
                        engine=engine, images=8)
    model = int8_model(CFG, WEIGHTS, out)
    assert model.backend == f"{engine} int8"
    images = _valid_images()
    fp32 = _detections(load(CFG, WEIGHTS, half=False, backend="torch"), images)
    int8 = _detections(model, images)
    checked = 0
    for (boxes, scores), (boxes8, scores8) in zip(fp32, int8):
        for box, score in zip(boxes[scores > 0.1], scores[scores > 0.1]):
            iou = _iou(box[None], boxes8)[0]
            assert len(boxes8) and (iou > 0.5).any(), (box, score)
            assert scores8[iou > 0.5].max() > score / 2
            checked += 1
    assert checked >= 5


def test_cli_int8_export_and_map(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("nncf")
    require_shared()
    out = tmp_path / "r.xml"
    assert main(["export", str(CFG), str(WEIGHTS), str(out), "--int8", "--calibrate", str(DATA),
                 "--calibrate-images", "4"]) == 0
    assert "INT8, openvino, calibrated on 4 train images" in capsys.readouterr().out
    assert out.is_file() and out.with_suffix(".bin").is_file()
    # the errors: one line each, non-zero status
    assert main(["export", str(CFG), str(WEIGHTS), str(tmp_path / "a.xml"), "--int8"]) != 0
    assert "--int8 needs --calibrate DATA" in capsys.readouterr().err
    assert main(["export", str(CFG), str(WEIGHTS), str(tmp_path / "a.onnx"), "--int8",
                 "--calibrate", str(DATA)]) != 0
    assert "writes a .xml file" in capsys.readouterr().err
    assert main(["map", str(CFG), str(DATA), str(WEIGHTS), "--int8", "--backend", "torch"]) != 0
    err = capsys.readouterr().err
    assert "add --backend openvino" in err and len(err.strip().splitlines()) == 1


def test_missing_quantizer_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net = _network()
    real_import = builtins.__import__

    def no_nncf(name: str, *args: object, **kwargs: object) -> object:
        if name == "nncf" or name.startswith("nncf."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_nncf)
    with pytest.raises(UsageError, match=r'needs nncf and openvino: pip install -e "\.\[openvino\]"'):
        quantize_int8(net, tmp_path / "m.xml", DATA)
    with pytest.raises(UsageError, match="--int8-engine tensorrt: one of openvino, onnxruntime"):
        quantize_int8(net, tmp_path / "m.xml", DATA, engine="tensorrt")


@pytest.mark.slow
def test_map_int8_within_001_of_fp32(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 15's target: ``map --backend openvino --int8`` (100 calibration images) within 0.01
    of the float32 mAP@0.5 on the raccoon validation split (Darknet's own figure, map.json)."""
    pytest.importorskip("nncf")
    require_shared()
    import json

    monkeypatch.setenv("DARKNETPY_CACHE", str(tmp_path))
    fp32 = json.loads((GOLDEN / "trained-raccoon" / "map.json").read_text())["0"]["map"]
    out = tmp_path / "map.json"
    assert main(["map", str(CFG), str(DATA), str(WEIGHTS), "--backend", "openvino", "--int8",
                 "--no-coco", "--json", str(out)]) == 0
    int8 = json.loads(out.read_text())["map50"]
    assert abs(int8 - fp32) <= 0.01, (int8, fp32)
    assert len(list((tmp_path / "int8").glob("*.xml"))) == 1  # quantized once, kept
