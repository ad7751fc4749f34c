"""Network-level parity with a real darknet build (../shared/golden):

* every layer's output of every golden network (forward.npz), within the README's tolerances;
* every cfg darknet parsed (structure.json): layer types, output shapes, BFLOPs and .weights size,
  and a forward pass (also of the YOLOv1 cfgs, which structure.json lacks).
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from darknetpy.errors import CfgError
from darknetpy.model.cfg import CfgWarning, Entry, Section, read_cfg
from darknetpy.model.network import Network

from .conftest import GOLDEN, SHARED, golden_networks, require_shared

HEADER_BYTES = 20  # version 0.2.5: three int32 and a uint64 `seen`


def _quiet_build(path: Path, *, meta: bool = False) -> Network:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CfgWarning)
        if meta:
            with torch.device("meta"):  # shapes and sizes only: no memory, no initialisation
                return Network.from_cfg(path)
        return Network.from_cfg(path)


# ------------------------------------------------------------------ forward parity
def compare_layer(mine: np.ndarray, golden: Any, key: str) -> tuple[float, list[str]]:
    """README tolerances for one layer: max |mine - darknet| over `sample` (and `full`) at most
    3e-3·max|darknet| + 1e-5, |sum - darknet sum| at most 3e-3·abssum + 1e-3.

    Returns the error relative to max|darknet| and the violations."""
    problems = []
    shape = tuple(int(v) for v in golden[f"{key}/shape"])
    if mine.size != int(np.prod(shape)):
        return float("inf"), [f"{key}: {mine.size} values, darknet has shape {shape}"]
    worst = 0.0
    references = [(mine[golden[f"{key}/sample_idx"]], golden[f"{key}/sample"])]
    if f"{key}/full" in golden.files:
        references.append((mine, golden[f"{key}/full"].ravel()))
    for got, ref in references:
        scale = float(np.abs(ref).max())
        error = float(np.abs(got - ref).max())
        worst = max(worst, error / scale if scale else error)
        if error > 3e-3 * scale + 1e-5:
            problems.append(f"{key}: max error {error:.3g} > 3e-3 * {scale:.3g} + 1e-5")
    sum_error = abs(float(mine.sum()) - float(golden[f"{key}/sum"]))
    sum_tolerance = 3e-3 * float(golden[f"{key}/abssum"]) + 1e-3
    if sum_error > sum_tolerance:
        problems.append(f"{key}: sum off by {sum_error:.3g} > {sum_tolerance:.3g}")
    return worst, problems


@pytest.mark.parametrize("name", golden_networks())
def test_every_layer_matches_darknet(name: str) -> None:
    require_shared()
    folder = GOLDEN / name
    network = _quiet_build(folder / "net.cfg").eval()
    network.load_weights(folder / "net.weights")
    x = torch.from_numpy(np.load(folder / "input.npy"))[None]
    with torch.no_grad():
        outputs = network.forward_layers(x)
    golden = np.load(folder / "forward.npz")
    worst, where, problems = 0.0, -1, []
    for index, output in enumerate(outputs):
        key = f"{index}:{network.layers[index].darknet_name}"
        if f"{key}/shape" not in golden.files:
            problems.append(f"{key}: no such layer in forward.npz (wrong type name?)")
            continue
        error, layer_problems = compare_layer(output[0].double().numpy().ravel(), golden, key)
        problems += layer_problems
        if error > worst:
            worst, where = error, index
    assert len(outputs) == len({k.split("/")[0] for k in golden.files})
    print(f"{name}: {len(outputs)} layers, worst error {worst:.2e} of max|darknet| (layer {where})")
    assert not problems, "\n".join(problems[:10])


# ------------------------------------------------------------------ structure
@lru_cache(maxsize=1)
def _structure() -> dict[str, Any]:
    path = GOLDEN / "structure.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _darknet_refused(expected: dict[str, Any]) -> bool:
    """Darknet stopped while parsing (an assertion): it never printed its table's total. The
    recurrent cfgs (rnn.cfg, gru.cfg, ...) have an "error" too, but after Darknet's whole table
    ("Total BFLOPS"): Darknet parsed them."""
    return "error" in expected and "Total BFLOPS" not in expected["error"]


def _printed_rows(table: str) -> list[tuple[int, str]]:
    """``(index, type)`` of the numbered rows of Darknet's printed layer table (the tail kept)."""
    return [(int(m[1]), m[2]) for m in re.finditer(r"^\s*(\d+) (\w+)", table, re.M)]


@pytest.mark.parametrize("cfg", sorted(_structure()))
def test_structure_matches_darknet(cfg: str) -> None:
    """Every cfg Darknet parsed builds with Darknet's layer types, shapes, BFLOPs and .weights
    size; the one Darknet refused (an assertion in parse_shortcut) is a one-line CfgError."""
    require_shared()
    expected = _structure()[cfg]
    path = SHARED / "cfg" / cfg
    if _darknet_refused(expected):
        with pytest.raises(CfgError, match=rf"^{re.escape(str(path))}:\d+ \[\w+\]: ") as info:
            _quiet_build(path, meta=True)
        assert "\n" not in str(info.value)
        return
    network = _quiet_build(path, meta=True)
    if "error" in expected:  # only the tail of Darknet's table was kept
        rows = _printed_rows(expected["error"])
        assert len(network.layers) == rows[-1][0] + 1
        for index, kind in rows:
            assert network.layers[index].darknet_name == kind, f"layer {index}"
        total = float(re.findall(r"Total BFLOPS ([\d.]+)", expected["error"])[-1])
        mine = sum(layer.bflops() for layer in network.layers)
        assert mine == pytest.approx(total, rel=0.01, abs=5e-4)  # printed with 3 decimals
        return
    rows = expected["layers"]
    assert len(network.layers) == len(rows)
    for layer, (index, kind, channels, height, width, bflops) in zip(network.layers, rows):
        shape = layer.out_shape
        mine = (layer.darknet_name, shape.channels, shape.height, shape.width)
        if not getattr(layer, "darknet_sized", True):
            # darknet leaves out_w/h/c at 0 for [softmax], [cost], [contrastive] and
            # [detection]; the tensor keeps its input's shape here.
            assert shape == layer.in_shape
            mine = (layer.darknet_name, 0, 0, 0)
        assert mine == (kind, channels, height, width), f"layer {index}"
        assert layer.bflops() == pytest.approx(bflops, rel=0.01, abs=1e-6), f"layer {index}"
    size = HEADER_BYTES + sum(layer.darknet_byte_count() for layer in network.layers)
    assert size == expected["weights_bytes"]


# Darknet's cfgs outside structure.json: the YOLOv1 family ([detection], [local], [crop]).
YOLOV1 = sorted(p.name for p in (SHARED / "cfg" / "yolov1").glob("*.cfg"))
# Their forward passes that build over 100 MB of weights are `slow`, as the other cfgs below.
SLOW_YOLOV1 = {"yolo.cfg", "yolo.train.cfg", "yolo2.cfg", "yolo-coco.cfg", "yolo-small.cfg"}
SLOW_BYTES = 150_000_000  # a full build of more weights than this takes seconds


def _forward_cases() -> list[Any]:
    structure = _structure()
    cases = [pytest.param(name, marks=pytest.mark.slow)
             if structure[name].get("weights_bytes", 0) > SLOW_BYTES else name
             for name in sorted(structure) if not _darknet_refused(structure[name])]
    cases += [pytest.param(f"yolov1/{name}", marks=pytest.mark.slow) if name in SLOW_YOLOV1
              else f"yolov1/{name}" for name in YOLOV1]
    return cases


def _at_size(sections: list[Section], size: int) -> list[Section]:
    net = sections[0]
    entries = [e for e in net.entries if e.key not in ("width", "height")]
    entries += [Entry("width", str(size), net.line), Entry("height", str(size), net.line)]
    return [dataclasses.replace(net, entries=tuple(entries)), *sections[1:]]


def _small_network(path: Path) -> Network:
    """``path``'s network at the smallest input of 32, 64, 128, 256 it builds at (its own when
    [net] has no width/height or none fits)."""
    sections = read_cfg(path)
    sized = {"width", "height"} <= {e.key for e in sections[0].entries}
    for size in (32, 64, 128, 256) if sized else ():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CfgWarning)
                return Network.from_sections(_at_size(sections, size), path=path)
        except CfgError:
            continue
    return _quiet_build(path)


@pytest.mark.parametrize("cfg", _forward_cases())
def test_every_cfg_darknet_parses_runs_a_forward_pass(cfg: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A real forward pass (random weights, a small input where the cfg allows it): every layer's
    output has the shape the layer declares."""
    require_shared()
    path = SHARED / "cfg" / cfg
    for section in read_cfg(path):
        if section.name == "region" and (tree := section.options.get("tree")):
            # YOLO9000's data/9k.tree is not in ../shared: a flat stand-in of as many classes
            stand_in = tmp_path / tree
            stand_in.parent.mkdir(parents=True, exist_ok=True)
            classes = int(section.options.get("classes", "1"))
            stand_in.write_text("".join(f"n{i} -1\n" for i in range(classes)))
            monkeypatch.chdir(tmp_path)
    network = _small_network(path).eval()
    first = network.layers[0].in_shape
    x = torch.rand(1, first.channels, first.height, first.width)
    with torch.no_grad():
        outputs = network.forward_layers(x)
    assert len(outputs) == len(network.layers)
    for layer, output in zip(network.layers, outputs):
        shape = layer.out_shape
        assert tuple(output.shape) == (1, shape.channels, shape.height, shape.width), layer.where()


HEADS = ("[yolo]", "[region]", "[Gaussian_yolo]", "[net]")


@pytest.mark.parametrize("cfg", sorted(_structure()))
def test_no_key_of_a_layer_section_is_reported_unused(cfg: str) -> None:
    """Darknet's cfgs use only keys darknet reads: none may be reported unused (heads and [net]
    are other modules' sections; darknet itself reports a few of their keys)."""
    require_shared()
    path = SHARED / "cfg" / cfg
    if _darknet_refused(_structure()[cfg]):
        pytest.skip("darknet refuses this cfg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CfgWarning)
        with torch.device("meta"):
            Network.from_cfg(path)
    unused = [str(w.message) for w in caught if issubclass(w.category, CfgWarning)]
    assert [m for m in unused if not any(head in m for head in HEADS)] == []


def test_head_inputs_are_kept_while_later_layers_run() -> None:
    """yolov4-tiny's first head input feeds the head only: it must survive until the run ends."""
    import warnings

    import torch

    from darknetpy import Network

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = Network.from_cfg(Path(__file__).resolve().parents[1] / "cfg" / "yolov4-tiny.cfg")
    net.eval()
    x = torch.rand(1, 3, 64, 64)
    inputs = net.head_inputs(x)
    every = net.forward_layers(x)
    assert sorted(inputs) == list(net.heads) == [30, 37]
    for head, tensor in inputs.items():
        # Darknet's initial BN statistics (variance 0) overflow: compare NaN/inf positions too
        torch.testing.assert_close(tensor, every[net.layers[head].sources[0]], rtol=0, atol=0,
                                   equal_nan=True)
