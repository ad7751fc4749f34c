"""cfg/yolov8{n,s,m,l,x}.cfg and cfg/yolov8n-raccoon.cfg: what ``import-ultralytics`` writes for
ultralytics' ``yolov8.yaml`` scales, with ultralytics' parameter counts and (at 640) GFLOPs, and
their ``.weights`` saved and read back byte for byte.

The figures are ultralytics 8.4.190's own for the COCO models (80 classes, 640): ``model.info()``
parameters (batch norm included) and the GFLOPs of the fused model (2 x multiply-adds, as Darknet's
BFLOPs).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from darknetpy.model.network import Network
from darknetpy.tools.import_ultralytics import import_ultralytics, net_section
from tests.conftest import GOLDEN, REPO, SKIP_REASON

CFG = REPO / "cfg"
# scale: (parameters, GFLOPs at 640) as ultralytics reports them
ULTRALYTICS = {
    "n": (3_157_200, 8.74),
    "s": (11_166_560, 28.60),
    "m": (25_902_640, 78.94),
    "l": (43_691_520, 165.15),
    "x": (68_229_648, 257.80),
}
REG_MAX = 16
SLOW_SCALES = ("m", "l", "x")


def build(path: Path, *, meta: bool = False) -> Network:
    if not meta:
        return Network.from_cfg(path)
    with torch.device("meta"):  # shapes and counts only: no memory, no initialisation
        return Network.from_cfg(path)


def scale_param(scale: str):
    marks = [pytest.mark.slow] if scale in SLOW_SCALES else []
    return pytest.param(scale, marks=marks, id=scale)


@pytest.mark.parametrize("scale", list(ULTRALYTICS))
def test_parameter_count(scale: str) -> None:
    """ultralytics counts every parameter, the DFL's fixed ``arange(16)`` 1x1 conv included (hence
    its 'parameters' exceed its 'gradients' by 16); darknetpy's head applies that projection as a
    constant."""
    net = build(CFG / f"yolov8{scale}.cfg", meta=True)
    trainable = sum(p.numel() for p in net.parameters())
    assert trainable + REG_MAX == ULTRALYTICS[scale][0]


@pytest.mark.parametrize("scale", list(ULTRALYTICS))
def test_bflops_at_640(scale: str) -> None:
    net = build(CFG / f"yolov8{scale}.cfg", meta=True)
    assert (net.net.width, net.net.height) == (640, 640)
    total = sum(row["bflops"] for row in net.summary_rows())
    assert total == pytest.approx(ULTRALYTICS[scale][1], rel=0.02)
    assert f"Total BFLOPS {total:.3f}" in net.summary()


@pytest.mark.parametrize("scale", [scale_param(s) for s in ULTRALYTICS])
def test_weights_save_and_reload_byte_for_byte(tmp_path: Path, scale: str) -> None:
    torch.manual_seed(0)
    net = build(CFG / f"yolov8{scale}.cfg")
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for layer in net.layers:
            for tensor in layer.darknet_tensors():
                tensor.copy_(torch.from_numpy(rng.random(tuple(tensor.shape), dtype=np.float32)))
    net.save_weights(tmp_path / "a.weights")
    again = build(CFG / f"yolov8{scale}.cfg")
    again.load_weights(tmp_path / "a.weights")
    again.save_weights(tmp_path / "b.weights")
    data = (tmp_path / "a.weights").read_bytes()
    assert data == (tmp_path / "b.weights").read_bytes()
    values = sum(t.numel() for layer in net.layers for t in layer.darknet_tensors())
    assert len(data) == 20 + 4 * values


def test_raccoon_cfg() -> None:
    """The embedded raccoon set's YOLOv8n: 1 class, 224 x 224, batch 16, 40 epochs (400 iterations
    of
    the 160 training images), the yolov8 recipe."""
    net = build(REPO / "cfg" / "yolov8n-raccoon.cfg", meta=True)
    assert (net.net.width, net.net.height, net.net.batch) == (224, 224, 16)
    head = net.layers[-1]
    assert head.section.name == "yolov8"
    assert net.layers[head.sources[0]].out_shape.channels == 4 * REG_MAX + 1
    text = (REPO / "cfg" / "yolov8n-raccoon.cfg").read_text()
    assert "recipe=yolov8" in text and "epochs=40" in text and "letter_box=1" in text


def cfg_variants() -> list[tuple[str, dict, object]]:
    """(file name, the model dict, the [net] section) of each committed cfg."""
    model = json.loads((GOLDEN / "modern" / "yolov8n" / "model.yaml").read_text())
    model["yaml_file"] = "yolov8.yaml"
    coco = [(f"yolov8{s}.cfg", {**model, "nc": 80, "scale": s}, net_section(640, 640))
            for s in ULTRALYTICS]
    raccoon = ("yolov8n-raccoon.cfg", {**model, "nc": 1, "scale": "n"},
               net_section(224, 224, batch=16, epochs=40))
    return [*coco, raccoon]


@pytest.mark.skipif(not (GOLDEN / "modern" / "yolov8n" / "model.yaml").is_file(),
                    reason=SKIP_REASON)
def test_committed_cfgs_are_what_the_importer_writes() -> None:
    """The cfgs are generated: ``import_ultralytics(yolov8.yaml with nc and scale)`` (the golden
    model.yaml holds ultralytics' yolov8.yaml rows and scales)."""
    for name, model, net in cfg_variants():
        assert (CFG / name).read_text() == import_ultralytics(model, net=net).cfg_text, name
