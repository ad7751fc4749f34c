"""Network-level parity with a real darknet build (../shared/golden):

* every layer's output of every golden network (forward.npz), within the README's tolerances;
* every cfg darknet parsed (structure.json): layer types, output shapes, BFLOPs and .weights size.
"""

from __future__ import annotations

import json
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from darknetpy.model.cfg import CfgWarning, read_cfg
from darknetpy.errors import CfgError
from darknetpy.model.build import UNSUPPORTED
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


def _unsupported_section(path: Path) -> str | None:
    return next((s.name for s in read_cfg(path)[1:] if s.name in UNSUPPORTED), None)


@pytest.mark.parametrize("cfg", sorted(_structure()))
def test_structure_matches_darknet(cfg: str) -> None:
    require_shared()
    expected = _structure()[cfg]
    path = SHARED / "cfg" / cfg
    if "error" in expected or _unsupported_section(path):
        # darknet failed to parse it, or it has layers darknetpy does not build (recurrent,
        # [detection], [local]): a CfgError naming the file, not a crash or a silent network.
        with pytest.raises(CfgError, match=rf"{path.name}:\d+ \["):
            _quiet_build(path, meta=True)
        return
    network = _quiet_build(path, meta=True)
    rows = expected["layers"]
    assert len(network.layers) == len(rows)
    for layer, (index, kind, channels, height, width, bflops) in zip(network.layers, rows):
        shape = layer.out_shape
        mine = (layer.darknet_name, shape.channels, shape.height, shape.width)
        if not getattr(layer, "darknet_sized", True):
            # darknet leaves out_w/h/c at 0 for [softmax], [cost] and [contrastive]; the tensor
            # keeps its input's shape here.
            assert shape == layer.in_shape
            mine = (layer.darknet_name, 0, 0, 0)
        assert mine == (kind, channels, height, width), f"layer {index}"
        assert layer.bflops() == pytest.approx(bflops, rel=0.01, abs=1e-6), f"layer {index}"
    size = HEADER_BYTES + sum(layer.darknet_byte_count() for layer in network.layers)
    assert size == expected["weights_bytes"]


def test_recurrent_cfgs_are_refused_with_the_section_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "r.cfg"
    cfg.write_text("[net]\nwidth=8\nheight=8\nchannels=3\n[convolutional]\nsize=1\n\n[rnn]\n"
                   "output=4\n")
    with pytest.raises(CfgError, match=r"r.cfg:8 \[rnn\]: recurrent layers are not supported"):
        Network.from_cfg(cfg)


HEADS = ("[yolo]", "[region]", "[Gaussian_yolo]", "[net]")


@pytest.mark.parametrize("cfg", sorted(_structure()))
def test_no_key_of_a_layer_section_is_reported_unused(cfg: str) -> None:
    """Darknet's cfgs use only keys darknet reads: none may be reported unused (heads and [net]
    are other modules' sections; darknet itself reports a few of their keys)."""
    require_shared()
    path = SHARED / "cfg" / cfg
    if "error" in _structure()[cfg] or _unsupported_section(path):
        pytest.skip("darknet or darknetpy refuses this cfg")
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
