"""``darknetpy import-ultralytics``: the model description reader, the module -> section mapping
(checked against ultralytics' own outputs in golden/modern/yolov8n), the state-dict order, the
files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from darknetpy.errors import WeightsError
from darknetpy.model.network import Network
from darknetpy.tools.import_ultralytics import (
    import_ultralytics,
    imported_network,
    load_state_dict,
    write_import,
)
from darknetpy.tools.ultralytics_layers import detect_channels
from darknetpy.tools.ultralytics_yaml import (
    ModelYamlError,
    load_model_dict,
    make_divisible,
    model_scale,
    read_yaml_subset,
)
from tests.conftest import GOLDEN, SKIP_REASON

V8 = GOLDEN / "modern" / "yolov8n"
needs_golden = pytest.mark.skipif(not (V8 / "state_dict.pt").is_file(), reason=SKIP_REASON)

# An ultralytics-style model file (written here: rows in the form ultralytics' yamls use).
TINY_YAML = """\
# a two-level detector in ultralytics' model syntax
nc: 2 # classes
scales: # [depth, width, max_channels]
  a: [0.5, 0.25, 256]
  b: [1.0, 0.5, 128]
backbone:
  - [-1, 1, Conv, [32, 3, 2]] # 0
  - [-1, 2, C2f, [64, True]]
  - [-1, 1, Conv, [128, 3, 2]]
  - [-1, 1, SPPF, [128, 5]] # 3
head:
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 1], 1, Concat, [1]]
  - [-1, 2, C2f, [64]] # 6
  - [[6, 3], 1, Detect, [nc]]
"""


def tiny_model(scale: str = "a") -> dict:
    model = read_yaml_subset(TINY_YAML)
    model["scale"] = scale
    return model


# ---- the description ----
def test_yaml_subset_reads_ultralytics_rows() -> None:
    model = read_yaml_subset(TINY_YAML)
    assert model["nc"] == 2 and model["scales"]["b"] == [1.0, 0.5, 128]
    assert model["backbone"][1] == [-1, 2, "C2f", [64, True]]
    assert model["head"][0] == [-1, 1, "nn.Upsample", ["None", 2, "nearest"]]  # PyYAML keeps 'None'
    assert model["head"][-1] == [[6, 3], 1, "Detect", ["nc"]]


def test_yaml_subset_equals_pyyaml() -> None:
    yaml = pytest.importorskip("yaml")
    assert read_yaml_subset(TINY_YAML) == yaml.safe_load(TINY_YAML)


@pytest.mark.parametrize(("text", "words"), [
    ("a:\n  b:\n    c: 1\n", "deeper"),
    ("a: &x [1]\n", "anchors"),
    ("a: [1, 2\n", "unclosed"),
    ("  - [1]\n", "outside a block"),
])
def test_yaml_subset_refuses_what_it_cannot_read(text: str, words: str) -> None:
    with pytest.raises(ModelYamlError, match=words) as info:
        read_yaml_subset(text, "m.yaml")
    assert str(info.value).startswith("m.yaml:") and "\n" not in str(info.value)


def test_json_and_yaml_files_read_alike(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(TINY_YAML)
    (tmp_path / "m.json").write_text(json.dumps(read_yaml_subset(TINY_YAML)))
    a, _ = load_model_dict(tmp_path / "m.yaml")
    b, _ = load_model_dict(tmp_path / "m.json")
    keys = ("nc", "backbone", "head")
    assert {k: a[k] for k in keys} == {k: b[k] for k in keys}


def test_scale_from_argument_key_or_file_name() -> None:
    model = read_yaml_subset(TINY_YAML)
    with pytest.raises(ModelYamlError, match="scales a, b but says none"):
        model_scale(model, "m.yaml")
    assert model_scale(model, "m.yaml", "b").width == 0.5
    assert model_scale({**model, "scale": "a"}, "m.yaml").depth == 0.5
    named = {**model, "scales": {**model["scales"], "s": [1, 1, 64]}, "yaml_file": "yolov8s.yaml"}
    assert model_scale(named, "m.yaml").letter == "s"  # guess_model_scale: the letter after v8
    with pytest.raises(ModelYamlError, match="'z' is not one of"):
        model_scale(model, "m.yaml", "z")


def test_channel_and_repeat_scaling() -> None:
    """``parse_model``: channels ``make_divisible(min(c, max) * width, 8)``, repeats
    ``round(n * depth)``."""
    scale = model_scale(tiny_model("a"), "m")
    assert [scale.channels(c) for c in (32, 64, 1024)] == [8, 16, 64]
    # round(1.5) = 2, round(4.5) = 4 (Python rounds halves to even); n = 1 is kept
    assert [scale.repeats(n) for n in (1, 2, 3, 9)] == [1, 1, 2, 4]
    assert make_divisible(20, 8) == 24 and detect_channels(64, 3, 16) == (64, 64)
    assert detect_channels(256, 80, 16) == (64, 256) and detect_channels(32, 200, 16) == (64, 100)


# ---- the mapping ----
@pytest.mark.parametrize(("row", "words"), [
    ([-1, 3, "C3k2", [64, False]], "module C3k2 is not supported"),
    ([-1, 1, "Conv", [64, 4, 2]], "even kernel"),
    ([-1, 1, "nn.Upsample", [None, 2, "bilinear"]], "nearest"),
    ([5, 1, "Conv", [64, 3, 1]], "not an earlier row"),
])
def test_unsupported_rows_are_one_line_errors(row: list, words: str) -> None:
    model = tiny_model()
    model["backbone"] = [*model["backbone"][:2], row, *model["backbone"][3:]]
    with pytest.raises(ModelYamlError, match=words) as info:
        import_ultralytics(model)
    message = str(info.value)
    assert "row 2 (backbone)" in message and "\n" not in message


def test_tiny_model_builds_with_the_right_shapes() -> None:
    imported = import_ultralytics(tiny_model("b"), width=64, height=64)
    net = Network.from_text(imported.cfg_text)
    shapes = {i: net.layers[layer].out_shape for i, layer in imported.module_layers.items()
              if i < 7}
    assert (shapes[0].channels, shapes[0].height) == (16, 32)
    assert (shapes[3].channels, shapes[3].height) == (64, 16)  # SPPF: c2 = 128 * 0.5
    assert (shapes[5].channels, shapes[5].height) == (32 + 64, 32)  # Concat(Upsample(3), row 1)
    assert [net.layers[i].out_shape.channels for i in imported.levels] == [4 * 16 + 2] * 2
    assert "bn_eps=0.001" in imported.cfg_text and "[yolov8]" in imported.cfg_text


# ---- the golden yolov8n ----
@pytest.fixture(scope="module")
def golden_import():
    return import_ultralytics(V8 / "model.yaml", V8 / "state_dict.pt", width=256, height=256)


@pytest.fixture(scope="module")
def golden_outputs(golden_import):
    net = imported_network(golden_import).eval()
    x = torch.from_numpy(np.load(V8 / "input.npy"))[None].float()
    with torch.no_grad():
        return [out[0].numpy() for out in net.forward_layers(x)]


def _relative(got: np.ndarray, ref: np.ndarray) -> float:
    assert got.shape == ref.shape
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@needs_golden
def test_golden_every_module_output(golden_import, golden_outputs) -> None:
    """Each ultralytics module's output equals the darknetpy layer it maps to (1e-4 of its
    range)."""
    ref = np.load(V8 / "forward.npz")
    modules = [k for k in ref.files if ":" in k]
    assert len(modules) == 22
    for key in modules:
        layer = golden_import.module_layers[int(key.split(":")[0])]
        assert _relative(golden_outputs[layer], ref[key]) < 1e-4, key


@needs_golden
def test_golden_head_inputs_and_logits(golden_import, golden_outputs) -> None:
    """``head_in/k`` are modules 15, 18, 21; the [route] of each level holds ``head/boxes`` (64)
    then
    ``head/scores`` (nc), anchors row-major per level."""
    ref = np.load(V8 / "forward.npz")
    for k, module in enumerate((15, 18, 21)):
        layer = golden_import.module_layers[module]
        assert _relative(golden_outputs[layer], ref[f"head_in/{k}"]) < 1e-4
    levels = np.concatenate([golden_outputs[i].reshape(67, -1) for i in golden_import.levels], 1)
    assert _relative(levels[:64], ref["head/boxes"]) < 1e-4
    assert _relative(levels[64:], ref["head/scores"]) < 1e-4


@needs_golden
def test_golden_files_round_trip(tmp_path: Path, golden_import) -> None:
    """The written cfg + .weights load back into the same network, and save back byte for byte."""
    write_import(golden_import, tmp_path / "v8.cfg", tmp_path / "v8.weights")
    net = Network.from_cfg(tmp_path / "v8.cfg")
    net.load_weights(tmp_path / "v8.weights")
    net.save_weights(tmp_path / "again.weights")
    assert (tmp_path / "again.weights").read_bytes() == (tmp_path / "v8.weights").read_bytes()
    state = torch.load(V8 / "state_dict.pt", weights_only=True)
    first = net.layers[0]
    assert torch.equal(first.conv.weight, state["model.0.conv.weight"])
    assert torch.equal(first.bn.running_var, state["model.0.bn.running_var"])
    assert first.bn.eps == 1e-3


@needs_golden
def test_state_dict_problems_name_the_tensor() -> None:
    state = load_state_dict(V8 / "state_dict.pt")
    model = V8 / "model.yaml"
    missing = {k: v for k, v in state.items() if k != "9.cv2.bn.running_mean"}
    with pytest.raises(WeightsError, match="no 'model.9.cv2.bn.running_mean'"):
        import_ultralytics(model, missing)
    with pytest.raises(WeightsError, match="tensors the model does not use"):
        import_ultralytics(model, {**state, "23.conv.weight": torch.zeros(1)})
    with pytest.raises(WeightsError, match="another scale or class count"):
        import_ultralytics(model, {**state, "22.cv3.0.2.weight": torch.zeros(5, 64, 1, 1)})
    with pytest.raises(WeightsError, match="arange"):
        import_ultralytics(model, {**state, "22.dfl.conv.weight": torch.zeros(1, 16, 1, 1)})


def test_state_file_that_is_not_a_state_dict(tmp_path: Path) -> None:
    torch.save({"model": [1, 2]}, tmp_path / "ckpt.pt")
    with pytest.raises(WeightsError, match="state_dict"):
        load_state_dict(tmp_path / "ckpt.pt")


# ---- end to end: the imported network with the [yolov8] head ----
@needs_golden
def test_golden_decoded_head_output(golden_import, golden_outputs) -> None:
    """``forward_layers(x)[head]`` is ultralytics' eval-mode ``Detect`` output, transposed."""
    decoded = np.load(V8 / "forward.npz")["decoded"]
    assert _relative(golden_outputs[golden_import.head].T, decoded) < 1e-3


def _golden_dets() -> tuple[np.ndarray, float, float]:
    header = (V8 / "dets.txt").read_text().splitlines()[0]
    words = header.replace(";", " ").replace(")", " ").split()
    conf = float(words[words.index("conf_thres") + 1])
    iou = float(words[words.index("iou_thres") + 1])
    return np.loadtxt(V8 / "dets.txt", ndmin=2), conf, iou


def _matches(rows: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Which ``rows`` (x1 y1 x2 y2 score class, pixels) are ``row``: same class, score within 2e-3,
    box within 1e-3 of the input size (256)."""
    return ((rows[:, 5] == row[5]) & (np.abs(rows[:, 4] - row[4]) < 2e-3)
            & (np.abs(rows[:, :4] - row[:4]).max(1) < 1e-3 * 256))


@needs_golden
def test_golden_detect_equals_ultralytics_nms(golden_import) -> None:
    """``net.detect`` at ultralytics' thresholds gives dets.txt's detections (class, score within
    2e-3, box within 1e-3 of the input size).

    With random weights many candidates' scores tie to the last float32 bit (0.409495 ten times
    over), and a one-ulp difference from ultralytics' float rounding decides which of a tied group
    NMS keeps. So: the same count; every detection whose score ties with no other candidate is
    ultralytics' own; every other one is one of ultralytics' candidates (decoded, above the
    threshold) of that tied score. (The NMS itself on ultralytics' decoded output reproduces
    dets.txt exactly: the head's tests.)"""
    ref, conf, iou = _golden_dets()
    net = imported_network(golden_import)
    x = torch.from_numpy(np.load(V8 / "input.npy"))[None].float()
    rows = net.detect(x, (256, 256), thresh=conf, nms=iou)[0]
    got = np.array([[r.x - r.w / 2, r.y - r.h / 2, r.x + r.w / 2, r.y + r.h / 2, r.prob, r.class_id]
                    for r in rows])
    got[:, :4] *= 256
    decoded = np.load(V8 / "forward.npz")["decoded"].T
    score, label = decoded[:, 4:].max(1), decoded[:, 4:].argmax(1)
    keep = score > np.float32(conf)
    xy, wh = decoded[keep, :2], decoded[keep, 2:4]
    candidates = np.concatenate([xy - wh / 2, xy + wh / 2, score[keep, None], label[keep, None]], 1)
    assert len(got) == len(ref) > 0
    for row in got:
        assert _matches(candidates, row).any(), f"{row} is not one of ultralytics' candidates"
    for row in ref:
        tied = (np.abs(candidates[:, 4] - row[4]) < 1e-6).sum() > 1
        if not tied:
            assert _matches(got, row).any(), f"ultralytics' {row} is missing"
    assert sum(not (np.abs(candidates[:, 4] - r[4]) < 1e-6).sum() > 1 for r in ref) >= 4


@needs_golden
def test_cli_import_ultralytics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from darknetpy.cli import main

    cfg, weights = tmp_path / "v8.cfg", tmp_path / "v8.weights"
    assert main(["import-ultralytics", str(V8 / "model.yaml"), str(V8 / "state_dict.pt"), str(cfg),
                 str(weights), "--size", "256"]) == 0
    assert "3.01M parameters" in capsys.readouterr().out
    net = Network.from_cfg(cfg)
    net.load_weights(weights)
    assert (net.net.width, len(net.layers)) == (256, 105)


def test_cli_unsupported_module_is_one_line(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from darknetpy.cli import main

    model = tiny_model()
    model["head"][2] = [-1, 2, "C3k2", [64]]
    (tmp_path / "m.json").write_text(json.dumps(model))
    torch.save({}, tmp_path / "s.pt")
    assert main(["import-ultralytics", str(tmp_path / "m.json"), str(tmp_path / "s.pt"),
                 str(tmp_path / "o.cfg"), str(tmp_path / "o.weights")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("darknetpy: error:") and "module C3k2" in err and "row 6 (head)" in err
    assert "\n" not in err and not (tmp_path / "o.cfg").exists()


@pytest.mark.parametrize("k", [3, 5, 9])
def test_sppf_maxpool_is_torchs_same_padding_pool(k: int) -> None:
    """Darknet's ``[maxpool] size=k stride=1`` (k - 1 padding split with -FLT_MAX) is exactly
    ``nn.MaxPool2d(k, 1, k // 2)`` for odd k, which SPPF chains."""
    net = Network.from_text(
        f"[net]\nwidth=12\nheight=10\nchannels=4\n[maxpool]\nsize={k}\nstride=1\n")
    x = torch.randn(2, 4, 10, 12, generator=torch.Generator().manual_seed(k)) - 5
    assert torch.equal(net(x)[0], torch.nn.functional.max_pool2d(x, k, 1, k // 2))
