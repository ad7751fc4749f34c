"""darknetpy.tools.import_yolox: YOLOX checkpoints as Darknet cfg + weights, against the golden
YOLOX-tiny (../shared/golden/modern/yolox-tiny, made by Megvii's source)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from darknetpy.errors import CfgError, WeightsError
from darknetpy.inference.export import decode_heads, export_onnx
from darknetpy.model.layers.resample import space_to_depth
from darknetpy.model.network import Network
from darknetpy.tools.import_yolox import (
    build_imported,
    fold_focus_stem,
    guess_yolox_flags,
    import_yolox,
    read_yolox_state,
    write_yolox,
)
from darknetpy.tools.yolox_cfg import yolox_layout

from ..conftest import GOLDEN, SHARED, require_shared

FOLDER = GOLDEN / "modern" / "yolox-tiny"
# The golden's meta.json says bn_eps 0.001, but its outputs are those of batch norms with PyTorch's
# 1e-5 (the model was built without YOLOX's init_yolo): with 1e-5 every tensor below matches to
# ~1e-6 of its range, with 1e-3 they differ by up to 1.6e-3. The eps is not in a state dict.
GOLDEN_BN_EPS = 1e-5


def golden() -> Path:
    require_shared()
    if not (FOLDER / "state_dict.pt").is_file():
        pytest.skip(f"{FOLDER} not found")
    return FOLDER


def golden_import(head: bool = True) -> tuple[Network, dict]:
    """The golden model imported (RGB as the golden fed it), and its yolox.json."""
    folder = golden()
    spec = json.loads((folder / "yolox.json").read_text())
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["input"].startswith("BGR->RGB order as given here")  # YOLOX saw input.npy as is
    cfg, tensors = import_yolox(folder / "state_dict.pt", spec["depth"], spec["width"],
                                spec["num_classes"], spec["depthwise"], spec["act"],
                                size=meta["size"], input_order="rgb", bn_eps=GOLDEN_BN_EPS)
    if not head:
        cfg = cfg[: cfg.index("\n# YOLOX's decoupled")]
    return build_imported(cfg, tensors).eval(), spec


def within(actual: np.ndarray, expected: np.ndarray, tol: float) -> float:
    """The largest difference as a fraction of ``expected``'s largest absolute value."""
    assert actual.shape == expected.shape
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12))


def test_golden_fpn_and_raw_predictions() -> None:
    net, spec = golden_import(head=False)
    layout = yolox_layout(spec["depth"], spec["width"], spec["num_classes"], size=256)
    forward = np.load(FOLDER / "forward.npz")
    x = torch.from_numpy(np.load(FOLDER / "input.npy"))[None] / 255
    with torch.no_grad():
        outputs = net.forward_layers(x)
    for k in range(3):
        assert within(outputs[layout.fpn[k]][0].numpy(), forward[f"fpn/{k}"], 1e-4) < 1e-4, k
        level = outputs[layout.outputs[k]][0].numpy()
        for name, part in (("reg", slice(0, 4)), ("obj", slice(4, 5)), ("cls", slice(5, None))):
            error = within(level[part], forward[f"{name}_preds/{k}"], 1e-4)
            assert error < 1e-4, (name, k, error)


def test_golden_training_outputs_batch_of_two() -> None:
    """``train.npz``'s raw head outputs (two images, batch norms on running statistics)."""
    net, spec = golden_import(head=False)
    layout = yolox_layout(spec["depth"], spec["width"], spec["num_classes"], size=256)
    train = np.load(FOLDER / "train.npz")
    with torch.no_grad():
        outputs = net.forward_layers(torch.from_numpy(train["input"]) / 255)
    for k in range(3):
        level = outputs[layout.outputs[k]].numpy()
        for name, part in (("reg", slice(0, 4)), ("obj", slice(4, 5)), ("cls", slice(5, None))):
            assert within(level[:, part], train[f"no_l1/out/{name}_preds/{k}"], 1e-4) < 1e-4


def yolox_head_registered() -> bool:
    """Whether ``[yolox]`` is a known section (the head is another helper's work)."""
    try:
        Network.from_text("[net]\nwidth=32\nheight=32\nchannels=3\n[yolox]\nlayers=-1\n")
    except CfgError as exc:
        return "unknown section [yolox]" not in str(exc)
    return True


needs_head = pytest.mark.skipif(not yolox_head_registered(),
                                reason="the [yolox] head is not registered yet")


@needs_head
def test_golden_decoded() -> None:
    net, _ = golden_import()
    x = torch.from_numpy(np.load(FOLDER / "input.npy"))[None] / 255
    with torch.no_grad():
        decoded = net.forward_layers(x)[len(net.layers) - 1][0].numpy()
    assert within(decoded, np.load(FOLDER / "forward.npz")["decoded"], 1e-3) < 1e-3


@needs_head
def test_golden_detections() -> None:
    net, _ = golden_import()
    thresholds = json.loads((FOLDER / "meta.json").read_text())["nms"]
    conf, nms = thresholds["conf"], thresholds["nms"]
    assert not thresholds["class_agnostic"]
    lines = (FOLDER / "dets.txt").read_text().splitlines()
    expected = np.array([[float(v) for v in line.split()] for line in lines[1:]])
    x = torch.from_numpy(np.load(FOLDER / "input.npy"))[None] / 255
    with torch.no_grad():
        (rows,) = net.detect(x, (256, 256), thresh=conf, nms=nms)
    assert len(rows) == len(expected)
    # darknetpy's rows: (class, prob, x, y, w, h, objectness), box relative to the image
    got = np.array([[r[2] - r[4] / 2, r[3] - r[5] / 2, r[2] + r[4] / 2, r[3] + r[5] / 2]
                    for r in rows]) * 256
    scores = np.array([[r[0], float(r[1]), float(r[6])] for r in rows])
    for want in expected:
        box, obj, cls_conf, cls = want[:4], want[4], want[5], int(want[6])
        match = np.abs(got - box).max(axis=1) < 1e-3 * 256
        match &= scores[:, 0] == cls
        assert match.any(), want
        i = int(np.argmax(match))
        assert abs(scores[i, 1] - obj * cls_conf) < 2e-3
        assert abs(scores[i, 2] - obj) < 2e-3


@needs_head
def test_golden_onnx_equals_pytorch(tmp_path: Path) -> None:
    """ONNX export of the imported golden (decoded head + boxes/objectness/scores): onnxruntime
    computes what PyTorch computes."""
    pytest.importorskip("onnx", reason="onnx is an optional dependency (pip install darknetpy[onnx])")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is an optional dependency")
    net, _ = golden_import()
    path = export_onnx(net, tmp_path / "yolox.onnx", with_decode=True)
    x = torch.from_numpy(np.load(FOLDER / "input.npy"))[None] / 255
    got = ort.InferenceSession(str(path)).run(None, {"images": x.numpy()})
    with torch.no_grad():
        decoded = net(x)[0].numpy()
        want = decode_heads(net.head_layers(), net(x), (256, 256))
    assert within(got[0], decoded, 1e-4) < 1e-4
    for a, b in zip(got[1:], want):
        assert within(a, b.numpy(), 1e-4) < 1e-4


# ------------------------------------------------------------------------------------ the stem
def focus(x: torch.Tensor) -> torch.Tensor:
    """YOLOX's Focus slicing (network_blocks.py)."""
    return torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2],
                      x[..., 1::2, 1::2]), dim=1)


@pytest.mark.parametrize("order", ["rgb", "bgr"])
def test_fold_focus_stem_makes_reorg3d_a_focus(order: str) -> None:
    """conv(reorg3d(x / 255), folded) == conv(focus(x)) with x in YOLOX's channel order."""
    gen = torch.Generator().manual_seed(0)
    rgb = torch.rand(2, 3, 8, 12, generator=gen, dtype=torch.float64)
    weight = torch.randn(5, 12, 3, 3, generator=gen, dtype=torch.float64)
    pixels = (rgb.flip(1) if order == "bgr" else rgb) * 255  # what YOLOX is fed
    expected = F.conv2d(focus(pixels), weight, padding=1)
    got = F.conv2d(space_to_depth(rgb, 2), fold_focus_stem(weight, order), padding=1)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-9)
    with pytest.raises(AssertionError):  # the permutation matters: unfolded weights differ
        torch.testing.assert_close(F.conv2d(space_to_depth(rgb, 2), weight * 255, padding=1),
                                   expected)


# ------------------------------------------------------------------------------------- errors
def random_yolox_state(depth: float, width: float, classes: int, depthwise: bool = False,
                       ) -> dict[str, torch.Tensor]:
    """A state dict with YOLOX's keys and shapes for these flags (what the layout says)."""
    gen = torch.Generator().manual_seed(1)
    layout = yolox_layout(depth, width, classes, depthwise, size=64)
    state = {}
    for _, source in layout.convs:
        for key, shape in source.shapes().items():
            value = torch.rand(shape, generator=gen)
            state[key] = value + 0.5 if key.endswith("running_var") else value - 0.5
    return state


def test_guess_flags_from_state() -> None:
    assert guess_yolox_flags(random_yolox_state(0.33, 0.25, 7, True)) == (
        "--depth 0.33 --width 0.25 --classes 7 --depthwise")
    assert guess_yolox_flags(random_yolox_state(0.67, 0.75, 80)) == (
        "--depth 0.67 --width 0.75 --classes 80")
    assert guess_yolox_flags({"x": torch.zeros(1)}) is None


@pytest.mark.parametrize(("flags", "key", "found"), [
    ((0.33, 0.5, 3, False), "backbone.backbone.stem.conv.conv.weight", "(32, 12, 3, 3)"),
    ((0.33, 0.375, 80, False), "head.cls_preds.0.weight", "(3, 96, 1, 1)"),
    ((0.67, 0.375, 3, False), "backbone.backbone.dark2.1.m.1.conv1.conv.weight", "missing"),
    ((0.33, 0.375, 3, True), "backbone.backbone.dark2.0.dconv.conv.weight", "missing"),
])
def test_wrong_flags_name_the_key_and_the_right_flags(flags: tuple, key: str, found: str) -> None:
    state = random_yolox_state(0.33, 0.375, 3)
    with pytest.raises(WeightsError) as info:
        import_yolox(state, *flags)
    message = str(info.value)
    assert "\n" not in message
    assert key in message and found in message
    assert "looks like --depth 0.33 --width 0.375 --classes 3" in message
    if found != "missing":
        assert "expected (" in message


def test_extra_keys_are_refused() -> None:
    state = random_yolox_state(0.33, 0.375, 3)
    state["head.extra.weight"] = torch.zeros(2)
    with pytest.raises(WeightsError, match=r"head\.extra\.weight \(2,\) is not part of YOLOX"):
        import_yolox(state, 0.33, 0.375, 3)


def test_checkpoint_forms(tmp_path: Path) -> None:
    """YOLOX's {'model': ...} checkpoints, DataParallel prefixes, num_batches_tracked."""
    state = random_yolox_state(0.33, 0.375, 2)
    wrapped = {"start_epoch": 3, "best_ap": 0.5,
               "model": {f"module.{k}": v for k, v in state.items()}}
    wrapped["model"]["module.head.stems.0.bn.num_batches_tracked"] = torch.tensor(5)
    torch.save(wrapped, tmp_path / "ckpt.pth")
    assert read_yolox_state(tmp_path / "ckpt.pth").keys() == state.keys()
    _, a = import_yolox(tmp_path / "ckpt.pth", 0.33, 0.375, 2)
    _, b = import_yolox(state, 0.33, 0.375, 2)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        read_yolox_state(tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="no such file"):
        read_yolox_state(tmp_path / "missing.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(WeightsError, match="expected a YOLOX checkpoint"):
        read_yolox_state(tmp_path / "list.pth")


# ------------------------------------------------------------------------------ files and CLI
@needs_head
def test_write_yolox_files_reload(tmp_path: Path) -> None:
    """The written cfg + .weights load into a network equal to the imported one."""
    state = random_yolox_state(0.33, 0.25, 2, depthwise=True)
    net = write_yolox(state, tmp_path / "n.cfg", tmp_path / "n.weights", 0.33, 0.25, 2, True,
                      size=64)
    again = Network.from_cfg(tmp_path / "n.cfg", strict=True)
    again.load_weights(tmp_path / "n.weights")
    for key, value in net.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    # a bare state dict: PyTorch's eps (a model built without init_yolo); YOLOX's trainer form: 1e-3
    assert all(layer.bn.eps == 1e-5 for layer in again.layers if getattr(layer, "bn", None))
    torch.save({"model": state, "start_epoch": 1}, tmp_path / "ckpt.pth")
    trained = write_yolox(tmp_path / "ckpt.pth", tmp_path / "c.cfg", tmp_path / "c.weights", 0.33,
                          0.25, 2, True, size=64)
    assert all(layer.bn.eps == 1e-3 for layer in trained.layers if getattr(layer, "bn", None))
    torch.save(state, tmp_path / "s.pth")
    with pytest.raises(WeightsError, match="refusing to overwrite"):
        write_yolox(tmp_path / "s.pth", tmp_path / "s.pth", tmp_path / "w", 0.33, 0.25, 2, True)


@needs_head
def test_cli_import_yolox_golden(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from darknetpy.cli import main

    folder = golden()
    spec = json.loads((folder / "yolox.json").read_text())
    out_cfg, out_weights = tmp_path / "g.cfg", tmp_path / "g.weights"
    status = main(["import-yolox", str(folder / "state_dict.pt"), str(out_cfg), str(out_weights),
                   "--depth", str(spec["depth"]), "--width", str(spec["width"]),
                   "--classes", str(spec["num_classes"]), "--size", "256"])  # the defaults
    assert status == 0, capsys.readouterr().err
    assert f"saved {out_cfg}" in capsys.readouterr().out
    net = Network.from_cfg(out_cfg, strict=True)
    net.load_weights(out_weights)
    reference, _ = golden_import()
    for key, value in reference.state_dict().items():
        assert torch.equal(value, net.state_dict()[key]), key
    status = main(["import-yolox", str(folder / "state_dict.pt"), str(out_cfg), str(out_weights),
                   "--depth", "0.33", "--width", "0.5", "--classes", "3"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert "looks like --depth 0.33 --width 0.375 --classes 3" in err


# ------------------------------------------------------- other sizes, against YOLOX's own source
YOLOX_SOURCE = Path(os.environ.get("DARKNETPY_YOLOX_SRC",
                                   Path(__file__).parents[3] / "ref" / "yolox"))
REFERENCE_SCRIPT = r'''
import importlib, json, sys, types
sys.path[:0] = [sys.argv[1], sys.argv[2]]
for _ in range(20):  # YOLOX's package imports loguru, psutil, cv2...: none is used by its models
    try:
        importlib.import_module("yolox.models")
        break
    except ModuleNotFoundError as exc:
        stub = types.ModuleType(exc.name)
        stub.__path__ = []
        stub.__getattr__ = lambda name: (lambda *a, **k: None)
        sys.modules[exc.name] = stub
        for name in [n for n in sys.modules if n.startswith("yolox")]:
            del sys.modules[name]
import torch
from yolox.models import YOLOX, YOLOPAFPN, YOLOXHead
from darknetpy.tools.import_yolox import build_imported, import_yolox
from darknetpy.tools.yolox_cfg import yolox_layout
depth, width, classes, depthwise, act, size = json.loads(sys.argv[3])
torch.manual_seed(0)
model = YOLOX(YOLOPAFPN(depth, width, depthwise=depthwise, act=act),
              YOLOXHead(classes, width, depthwise=depthwise, act=act))
for m in model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):  # yolox_base.py: init_yolo, then random statistics
        m.eps = 1e-3
        m.running_mean.uniform_(-0.5, 0.5); m.running_var.uniform_(0.5, 1.5)
        m.weight.data.uniform_(0.5, 1.5); m.bias.data.uniform_(-0.3, 0.3)
model.eval().head.decode_in_inference = False
rgb = torch.rand(2, 3, size, size)
with torch.no_grad():
    fpn = model.backbone(rgb.flip(1) * 255)  # YOLOX is fed BGR 0-255
    raw = model(rgb.flip(1) * 255)
cfg, tensors = import_yolox({"model": model.state_dict()}, depth, width, classes, depthwise, act,
                            size=size, input_order="bgr")  # the trainer's form: eps 1e-3
net = build_imported(cfg[: cfg.index("\n# YOLOX's decoupled")], tensors).eval()
layout = yolox_layout(depth, width, classes, depthwise, act, size=size)
with torch.no_grad():
    outs = net.forward_layers(rgb)
errors = [float((outs[layout.fpn[k]] - fpn[k]).abs().max() / fpn[k].abs().max()) for k in range(3)]
levels = torch.cat([outs[i].flatten(2) for i in layout.outputs], 2).permute(0, 2, 1)
levels = torch.cat([levels[..., :4], levels[..., 4:].sigmoid()], -1)
errors.append(float((levels - raw).abs().max() / raw.abs().max()))
print(json.dumps(errors))
'''


@pytest.mark.slow
@pytest.mark.parametrize("spec", [(0.33, 0.25, 5, True, "silu", 128),
                                  (0.33, 0.5, 80, False, "silu", 160),
                                  (0.67, 0.75, 2, False, "relu", 96),
                                  (1.33, 1.25, 3, False, "lrelu", 64)], ids=str)
def test_other_sizes_against_yolox_source(spec: tuple) -> None:
    """nano (depthwise), s, m, x with random weights: the imported network fed RGB [0, 1] computes
    YOLOX's FPN maps and raw head output on the BGR 0-255 image (``--input-order bgr``)."""
    if not (YOLOX_SOURCE / "yolox" / "models" / "yolo_head.py").is_file():
        pytest.skip(f"YOLOX's source not found at {YOLOX_SOURCE} (set DARKNETPY_YOLOX_SRC)")
    standin = SHARED / "tools" / "torchvision-standin"  # YOLOX's utils import torchvision
    run = subprocess.run([sys.executable, "-c", REFERENCE_SCRIPT, str(YOLOX_SOURCE), str(standin),
                          json.dumps(spec)], capture_output=True, text=True, check=False,
                         cwd=Path(__file__).parents[2])
    assert run.returncode == 0, run.stderr[-2000:]
    errors = json.loads(run.stdout.splitlines()[-1])
    assert max(errors) < 1e-4, errors
