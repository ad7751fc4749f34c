"""darknetpy.inference.backends / backend_cache: every runtime under darknetpy's pre/post-processing.

Done-when 3 of issue 15: onnxruntime and OpenVINO give the PyTorch model's detections (and
Darknet's dets.txt) on every golden detection network; a runtime that is not installed is one line
naming the extra; ``auto`` measures once, re-uses its choice, and measures again for a changed cfg.
"""

from __future__ import annotations

import json
import pickle
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import darknetpy
from darknetpy.errors import UsageError
from darknetpy.inference import backend_cache
from darknetpy.inference.backends import EXTRAS, BackendNote, require

from .conftest import GOLDEN, detection_networks, raccoon_eval_set, require_shared, tiny_cfg
from .test_bad_input_points import one_error_line, run_cli
from .test_inference import _rows, match_dets, read_dets

RUNTIMES = tuple(EXTRAS)  # onnxruntime, openvino
#: small enough for CI (a few seconds each); the deeper golden networks run with -m slow
FAST = {"yolov2-tiny", "yolov3-tiny", "yolov3-tiny-prn", "yolov4-tiny", "yolov4-tiny-3l",
        "yolov7-tiny", "yolov2"}  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Exported models and auto.json in a folder of this test module, not the user's cache."""
    folder = tmp_path_factory.mktemp("darknetpy-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DARKNETPY_CACHE", str(folder))
        yield folder


def _installed(backend: str) -> None:
    """The runtimes are part of CI's install (.[test,onnx,openvino]): a missing one fails here
    rather than skipping, so a broken install cannot pass unnoticed."""
    require(backend)


def _networks() -> list[object]:
    return [n if n in FAST else pytest.param(n, marks=pytest.mark.slow)
            for n in detection_networks()]  # fmt: skip


@pytest.mark.parametrize("name", _networks())
@pytest.mark.parametrize("backend", RUNTIMES)
def test_backend_gives_the_pytorch_models_detections(backend: str, name: str) -> None:
    require_shared()
    _installed(backend)
    folder = GOLDEN / name
    x = torch.from_numpy(np.load(folder / "input.npy"))[None]
    reference = darknetpy.load(folder / "net.cfg", folder / "net.weights", keep_unfused=False)
    model = darknetpy.load(folder / "net.cfg", folder / "net.weights", backend=backend,
                           keep_unfused=False)  # fmt: skip
    assert model.backend == backend and model.runner is not None
    # the head outputs: float32 noise only (README tolerance of a second implementation)
    for a, b in zip(model(x), reference(x), strict=True):
        assert a.shape == b.shape and a.dtype == torch.float32
        assert float((a - b).abs().max()) <= 3e-3 * float(b.abs().max()) + 1e-5
    header, darknet = read_dets(folder / "dets.txt")
    size = (header["width"], header["height"])
    kwargs = {"thresh": header["thresh"], "nms": header["nms"], "letter_box": header["letter_box"]}
    got = _rows(model.detect(x, size, **kwargs)[0])
    torch_rows = _rows(reference.detect(x, size, **kwargs)[0])
    for expected in (torch_rows, darknet):
        problems = match_dets(expected, got, header["thresh"], header["nms"])
        assert not problems, f"{backend}: {len(problems)} problems, e.g. {problems[:3]}"
    assert len(darknet) == 0 or len(got) > 0


@pytest.mark.parametrize("backend", RUNTIMES)
def test_backend_predicts_batches_and_pickles(backend: str, tmp_path: Path) -> None:
    """predict (batches of 2 and a remainder of 1) equals PyTorch's; a pickled model reopens its
    runtime from the cached file."""
    require_shared()
    _installed(backend)
    folder = GOLDEN / "yolov3-tiny"
    images = [str(require_shared() / "images" / f) for f in ("dog.jpg", "horses.jpg", "eagle.jpg")]
    model = darknetpy.load(folder / "net.cfg", folder / "net.weights", backend=backend)
    reference = darknetpy.load(folder / "net.cfg", folder / "net.weights")
    for p, q in zip(model.predict(images, thresh=0.1, batch_size=2),
                    reference.predict(images, thresh=0.1, batch_size=2), strict=True):
        assert len(p) > 0
        problems = match_dets(_relative(q), _relative(p), 0.1, 0.45)
        assert not problems, f"{p.source}: {len(problems)} problems, e.g. {problems[:3]}"
    again = pickle.loads(pickle.dumps(model))
    x = torch.rand(1, 3, 320, 320, generator=torch.Generator().manual_seed(1))
    for a, b in zip(again(x), model(x), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def _relative(p: darknetpy.Prediction) -> np.ndarray:
    """A prediction as dets.txt rows (class, prob, x, y, w, h relative to the image, 0)."""
    scale = np.array([p.width, p.height, p.width, p.height], np.float64)
    return _rows([[d.class_id, d.score, *(np.array(d.box.xywh()) / scale), 0.0]
                  for d in p.detections])  # fmt: skip


def test_another_input_size_runs_in_pytorch() -> None:
    """The export is at the cfg's size; a resized input (as darknet's resized networks) runs in the
    PyTorch runtime instead, with the same numbers as a PyTorch model."""
    _installed("onnxruntime")
    net = darknetpy.Network.from_text(tiny_cfg(backbone=(4, 8)), path="t.cfg")
    model = darknetpy.inference.inference_model.InferenceModel(net, backend="onnxruntime")
    x = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(2))
    (out,) = model(x)
    assert out.shape[-2:] == (24, 32)
    (ref,) = darknetpy.inference.inference_model.InferenceModel(net)(x)
    assert torch.equal(out, ref)


# ---------------------------------------------------------------- what cannot work
@pytest.mark.parametrize("backend", RUNTIMES)
def test_a_missing_backend_is_one_line_naming_the_extra(
    backend: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setitem(sys.modules, backend, None)  # `import <backend>` raises ImportError
    cfg = tmp_path / "t.cfg"
    cfg.write_text(tiny_cfg())
    with pytest.raises(UsageError) as info:
        darknetpy.load(cfg, None, backend=backend)
    message = str(info.value)
    assert "\n" not in message and f'pip install -e ".[{EXTRAS[backend]}]"' in message
    image = require_shared() / "images" / "dog.jpg"
    net = darknetpy.Network.from_text(tiny_cfg(), path=cfg)
    net.save_weights(tmp_path / "t.weights")
    status, _, err = run_cli(["detect", cfg, tmp_path / "t.weights", image, "--no-save",
                              "--backend", backend], capsys)  # fmt: skip
    line = one_error_line(status, err)
    assert f".[{EXTRAS[backend]}]" in line and backend in line


def test_auto_without_runtimes_is_torch_with_a_note(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in RUNTIMES:
        monkeypatch.setitem(sys.modules, name, None)
    cfg = tmp_path / "t.cfg"
    cfg.write_text(tiny_cfg())
    with pytest.warns(BackendNote, match="neither onnxruntime nor openvino"):
        model = darknetpy.load(cfg, None, backend="auto")
    assert model.backend == "torch" and model.runner is None


def test_runtimes_refuse_cuda_half_and_unknown_names(tmp_path: Path) -> None:
    cfg = tmp_path / "t.cfg"
    cfg.write_text(tiny_cfg())
    with pytest.raises(UsageError, match="float32 on the CPU"):
        darknetpy.load(cfg, None, half=True, backend="onnxruntime")
    with pytest.raises(UsageError, match="choose one of torch, onnxruntime, openvino, auto"):
        darknetpy.load(cfg, None, backend="tensorrt")


# ---------------------------------------------------------------- auto
def test_auto_measures_once_reuses_the_choice_and_remeasures_a_changed_cfg(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in RUNTIMES:
        _installed(name)
    folder = tmp_path / "cache"
    monkeypatch.setenv("DARKNETPY_CACHE", str(folder))
    cfg, weights = tmp_path / "t.cfg", tmp_path / "t.weights"
    cfg.write_text(tiny_cfg(backbone=(4, 8)))
    darknetpy.Network.from_cfg(cfg).save_weights(weights)
    measured: list[dict[str, float]] = []
    real_measure = backend_cache.measure

    def spy(runners: dict, x: torch.Tensor, **kwargs: int) -> dict[str, float]:
        ms = real_measure(runners, x, warmup=1, passes=2)
        assert set(ms) == {"torch", *RUNTIMES} and all(v > 0 for v in ms.values())
        measured.append(ms)
        return {**ms, "openvino": 0.0}  # openvino "fastest": the choice must follow the figures

    monkeypatch.setattr(backend_cache, "measure", spy)
    with pytest.warns(BackendNote, match="openvino runs"):
        first = darknetpy.load(cfg, weights, backend="auto")
    assert len(measured) == 1 and first.backend == "openvino"
    table = json.loads((folder / "auto.json").read_text())
    (entry,) = table.values()
    assert entry["backend"] == "openvino" and entry["size"] == [64, 64]

    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendNote)  # cached: no measurement, no note
        again = darknetpy.load(cfg, weights, backend="auto")
    assert len(measured) == 1 and again.backend == "openvino"
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    for a, b in zip(again(x), darknetpy.load(cfg, weights, backend="torch")(x), strict=True):
        assert torch.allclose(a, b, atol=1e-4)

    cfg.write_text(tiny_cfg(backbone=(4, 16)))  # a changed cfg: a new measurement
    with pytest.warns(BackendNote):
        darknetpy.load(cfg, None, backend="auto")
    assert len(measured) == 2 and len(json.loads((folder / "auto.json").read_text())) == 2


# ---------------------------------------------------------------- the commands
@pytest.mark.parametrize("backend", RUNTIMES)
def test_map_and_recall_with_a_backend_equal_torch(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _installed(backend)
    model = require_shared() / "golden" / "trained-raccoon"
    data = raccoon_eval_set(tmp_path).data
    outputs = {}
    for name in ("torch", backend):
        status, out, err = run_cli(["map", model / "net.cfg", data, model / "net.weights",
                                    "--no-coco", "--backend", name], capsys)  # fmt: skip
        assert status == 0, err
        outputs[name] = [line for line in out.splitlines() if "mAP@" in line or "class_id" in line]
        status, out, err = run_cli(["recall", model / "net.cfg", data, model / "net.weights",
                                    "--backend", name], capsys)  # fmt: skip
        assert status == 0, err
        outputs[name] += out.splitlines()[-1:]  # the totals: correct, total, proposals, IoU
    assert len(outputs["torch"]) >= 3 and outputs[backend] == outputs["torch"]


def test_the_default_is_auto_unless_darknetpy_backend_says_otherwise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg, weights = tmp_path / "t.cfg", tmp_path / "t.weights"
    cfg.write_text(tiny_cfg())
    darknetpy.Network.from_cfg(cfg).save_weights(weights)
    monkeypatch.setenv("DARKNETPY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DARKNETPY_BACKEND")
    monkeypatch.setattr(backend_cache, "measure", lambda runners, x: {"torch": 2.0,
                        **{name: 1.0 + i for i, name in enumerate(RUNTIMES) if name in runners}})
    with pytest.warns(BackendNote, match="onnxruntime runs"):
        assert darknetpy.load(cfg, weights).backend == "onnxruntime"  # the fastest measured
    assert darknetpy.load(cfg, weights, device="cpu", half=True).backend == "torch"  # fp16: torch
    monkeypatch.setenv("DARKNETPY_BACKEND", "openvino")
    assert darknetpy.load(cfg, weights).backend == "openvino"
    monkeypatch.setenv("DARKNETPY_BACKEND", "tensorrt")
    with pytest.raises(UsageError, match="DARKNETPY_BACKEND=tensorrt"):
        darknetpy.load(cfg, weights)
    monkeypatch.setenv("DARKNETPY_BACKEND", "auto")
    for name in RUNTIMES:
        monkeypatch.setitem(sys.modules, name, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendNote)  # the default says nothing without runtimes
        assert darknetpy.load(cfg, weights, backend=None).backend == "torch"


def test_auto_keeps_torch_unless_a_runtime_is_clearly_faster(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Within AUTO_MARGIN (3 %) of torch, noise could have decided: torch stays."""
    cfg = tmp_path / "t.cfg"
    cfg.write_text(tiny_cfg())
    monkeypatch.setenv("DARKNETPY_CACHE", str(tmp_path / "cache"))
    timings = {"torch": 100.0, **{name: 98.0 for name in RUNTIMES}}
    monkeypatch.setattr(backend_cache, "measure", lambda runners, x: dict(timings))
    with pytest.warns(BackendNote, match="torch runs"):
        assert darknetpy.load(cfg, None, backend="auto").backend == "torch"


def test_the_cache_keeps_the_recently_used_networks(tmp_path: Path) -> None:
    """A new weights file is a new export; beyond KEEP_MODELS the least recently used go."""
    _installed("onnxruntime")
    net = darknetpy.Network.from_text(tiny_cfg(), path="t.cfg")
    first = backend_cache.exported_model(net, "onnxruntime", folder=tmp_path)
    assert backend_cache.exported_model(net, "onnxruntime", folder=tmp_path) == first  # cached
    for k in range(backend_cache.KEEP_MODELS + 1):
        with torch.no_grad():
            next(net.parameters()).add_(1.0)  # other weights: another file
        backend_cache.exported_model(net, "onnxruntime", folder=tmp_path)
    kept = sorted((tmp_path / "models").glob("*.onnx"))
    assert len(kept) == backend_cache.KEEP_MODELS and first not in kept
