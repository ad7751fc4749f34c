"""The runtimes bench_runtimes.py puts side by side: one callable per runtime for the network alone
(a prepared (1, 3, H, W) input -> the head outputs) and one for the whole job (a BGR uint8 photo ->
boxes after NMS).

* ``darknetpy torch``: ``darknetpy.load(cfg, weights, backend="torch")`` (batch norm folded,
  channels-last, oneDNN-prepacked convolutions);
* ``darknetpy default``: ``darknetpy.load(cfg, weights)`` as a user gets it (its ``backend`` is
  printed: ``auto`` measures the installed runtimes once and keeps the fastest);
* ``onnxruntime`` / ``openvino``: darknetpy's ONNX export of the same network (raw head outputs) in
  the runtime itself for the network alone (numpy in, numpy out, the settings of
  :mod:`darknetpy.inference.backends`), and ``load(..., backend=...)`` end to end, so Darknet's
  resize, decode and NMS stay darknetpy's;
* ``opencv dnn``: ``cv2.dnn.readNetFromDarknet`` (OpenCV 4.x), ``blobFromImage`` (a plain stretch,
  not Darknet's resize), its ``[yolo]`` decode and ``NMSBoxesBatched``, as OpenCV's samples do;
* ``openvino int8`` / ``onnxruntime int8``: an INT8 model of the network (helper I's export), when
  one is given or found in ``bench/.cache``.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from common import CACHE, IMAGES, SHARED, interleaved, median

THRESH, NMS = 0.25, 0.45
Call = Callable[[], object]


def cpu_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def quietly(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


PAUSE = 0.05  # s between two timed calls: a runtime's spinning worker threads go quiet first


def interleaved_settled(calls: dict[str, Call], rounds: int, warmup: int = 2,
                        pause: float = PAUSE) -> dict[str, list[float]]:
    """Seconds per call of each contender, round-robin as :func:`common.interleaved`, with an
    untimed ``pause`` before each call: onnxruntime's intra-op threads spin after a run (by
    default) and steal the cores from whatever runs next (measured: PyTorch's yolov4-tiny 104 ms
    right after a spinning onnxruntime call, 75 ms after a non-spinning one)."""
    import time

    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            time.sleep(pause)
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


# ---------------------------------------------------------------- darknetpy
def load_model(cfg: Path, weights: Path, backend: str | None) -> Any:
    """``darknetpy.load`` with ``backend`` (None: the default), or None where this darknetpy has no
    ``backend`` argument and one is asked for."""
    from darknetpy.inference.inference_model import load

    kwargs: dict[str, Any] = {"keep_unfused": False}
    if backend is not None:
        if "backend" not in inspect.signature(load).parameters:
            return None
        kwargs["backend"] = backend
    return quietly(load, cfg, weights, **kwargs)


def forget_auto(cfg: Path) -> bool:
    """Drop ``auto``'s cached choice for ``cfg`` (``auto.json`` in darknetpy's cache folder), so
    that the default backend is measured again now, on this machine as it is; True if one was
    dropped. A choice made on a busier machine would otherwise stay."""
    import json

    try:
        from darknetpy.inference.backend_cache import cache_dir
    except ImportError:
        return False
    path = cache_dir() / "auto.json"
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    kept = {k: v for k, v in table.items()
            if not (isinstance(v, dict) and v.get("cfg") == str(cfg))}
    if len(kept) == len(table):
        return False
    path.write_text(json.dumps(kept, indent=1, sort_keys=True), encoding="utf-8")
    return True


def backend_of(model: Any) -> str:
    return str(getattr(model, "backend", "torch"))


def model_e2e(model: Any, photo: np.ndarray) -> Call:
    return lambda: model.predict(photo, thresh=THRESH, nms=NMS)


def count(result: object) -> int:
    """Detections in one image's result: darknetpy's [Prediction] or OpenCV's list."""
    if isinstance(result, list) and result and hasattr(result[0], "detections"):
        return len(result[0].detections)
    return len(result)  # type: ignore[arg-type]


# ---------------------------------------------------------------- onnxruntime / OpenVINO
def onnx_file(cfg: Path, weights: Path) -> Path:
    """darknetpy's raw-head ONNX export of the network, written once beside the weights."""
    from darknetpy.inference.export import export_onnx
    from darknetpy.model.network import Network

    path = CACHE / f"{weights.stem}.onnx"
    if not path.exists() or path.stat().st_mtime < weights.stat().st_mtime:
        network = quietly(Network.from_cfg, cfg)
        network.load_weights(weights)
        quietly(export_onnx, network, path)
    return path


def _backends_module() -> Any:
    try:
        from darknetpy.inference import backends
    except ImportError:
        return None
    return backends


def ort_session(path: Path, threads: int) -> Any:
    """An onnxruntime session with darknetpy's settings (its backends module where present)."""
    import onnxruntime as ort

    backends = _backends_module()
    if backends is not None and hasattr(backends, "OnnxRuntimeBackend"):
        options = backends.OnnxRuntimeBackend.session_options(threads)
    else:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])


def ort_forward(path: Path, threads: int, x: np.ndarray) -> Call:
    session = ort_session(path, threads)
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: x})


def ov_forward(path: Path, threads: int, x: np.ndarray) -> Call:
    """OpenVINO's compiled model (static shape) with darknetpy's settings."""
    import openvino as ov

    backends = _backends_module()
    if backends is not None and hasattr(backends, "OpenVinoBackend"):
        config = backends.OpenVinoBackend.config(threads)
    else:
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({model.inputs[0].any_name: list(x.shape)})
    request = core.compile_model(model, "CPU", config).create_infer_request()
    return lambda: request.infer({0: x})


def int8_forward(path: Path, threads: int, x: np.ndarray) -> Call:
    """An INT8 model: OpenVINO IR (.xml) or a QDQ .onnx in onnxruntime."""
    if path.suffix == ".xml":
        return ov_forward(path, threads, x)
    return ort_forward(path, threads, x)


# ---------------------------------------------------------------- OpenCV DNN
def opencv_net(cfg: Path, weights: Path) -> Any:
    """cv2.dnn's Darknet importer (OpenCV 4.x; None where this OpenCV lacks it)."""
    import cv2

    if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromDarknet"):
        return None
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return net


def opencv_forward(net: Any, blob: np.ndarray) -> Call:
    names = net.getUnconnectedOutLayersNames()

    def run() -> object:
        net.setInput(blob)
        return net.forward(names)

    return run


def opencv_e2e(net: Any, size: int, photo: np.ndarray) -> Call:
    """OpenCV's usual YOLO pipeline: blobFromImage (stretch, RGB, /255), forward, boxes whose class
    score exceeds THRESH, class-wise NMS (``NMSBoxesBatched``)."""
    import cv2

    names = net.getUnconnectedOutLayersNames()
    h, w = photo.shape[:2]
    scale = np.array([w, h, w, h], np.float32)

    def run() -> list[tuple[int, float, tuple[float, ...]]]:
        blob = cv2.dnn.blobFromImage(photo, 1 / 255.0, (size, size), swapRB=True, crop=False)
        net.setInput(blob)
        rows = np.concatenate(net.forward(names))
        scores = rows[:, 5:]
        box, cls = np.nonzero(scores > THRESH)
        if not len(box):
            return []
        conf = scores[box, cls]
        xywh = rows[box, :4] * scale
        xywh[:, :2] -= xywh[:, 2:] / 2
        keep = cv2.dnn.NMSBoxesBatched(xywh.tolist(), conf.tolist(), cls.tolist(), THRESH, NMS)
        return [(int(cls[k]), float(conf[k]), tuple(xywh[k])) for k in np.asarray(keep).ravel()]

    return run


# ---------------------------------------------------------------- FLOP rates
def conv_gflop(model: Any) -> float:
    """GFLOP (2 x multiply-adds) in the convolutions of one image: Darknet's BFLOPs column."""
    layers = model.fused.layers
    return sum(layer.bflops() for layer in layers
               if getattr(layer, "darknet_name", "") == "convolutional")


BARE = "(bare conv)"


def bare_conv() -> tuple[Call, float, str]:
    """One big 3x3 convolution alone (256 -> 256 channels at 52x52, batch 1, bias, channels-last,
    oneDNN weights prepacked as darknetpy's load() runs them, else ``F.conv2d``): the machine's
    reference rate for the networks' convolutions. Returns the call, its FLOPs and a label; the
    bench times it interleaved with the networks, so both see the same load."""
    c, s = 256, 52
    x = torch.randn(1, c, s, s).contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, c, 3, 3) * 0.02
    b = torch.randn(c)
    flops = 2.0 * c * c * 9 * s * s
    from darknetpy.model.fastconv import packing_available

    if not packing_available():
        return (lambda: F.conv2d(x, w, b, 1, 1)), flops, f"F.conv2d 3x3 {c}->{c} @ {s}x{s}"
    ops = torch.ops.mkldnn
    packed = ops._reorder_convolution_weight(w, [1, 1], [1, 1], [1, 1], 1, [1, c, s, s])
    return (lambda: ops._convolution_pointwise(x, packed, b, [1, 1], [1, 1], [1, 1], 1, "none",
                                               [], "")), flops, f"prepacked 3x3 {c}->{c} @ {s}x{s}"


# ---------------------------------------------------------------- INT8
def find_int8(name: str, size: int, given: dict[str, str]) -> Path | None:
    """An INT8 model of ``name``: ``--int8 NAME=PATH``, else ``bench/.cache/<name>-<size>-int8``
    ``.xml`` or ``.onnx``."""
    if name in given:
        return Path(given[name])
    for suffix in (".xml", ".onnx"):
        path = CACHE / f"{name}-{size}-int8{suffix}"
        if path.exists():
            return path
    return None


def quantized(name: str, size: int, cfg: Path, weights: Path, given: dict[str, str]
              ) -> tuple[Path | None, str]:
    """The INT8 model of a bench network: given or cached (:func:`find_int8`), else written once by
    darknetpy's quantizer (``darknetpy.inference.quantize.quantize_int8``, NNCF on OpenVINO)
    calibrated on Darknet's sample photos, into ``bench/.cache/<name>-<size>-int8.xml``.
    Returns the path (None: no quantizer here) and a note."""
    found = find_int8(name, size, given)
    if found is not None:
        return found, f"INT8 model: {found}"
    try:
        import nncf
        import openvino  # noqa: F401

        from darknetpy.inference.quantize import quantize_int8
    except ImportError as error:
        return None, f"INT8: no quantizer ({error}); pip install -e \".[openvino]\""
    import logging

    nncf.set_log_level(logging.ERROR)  # its INFO lines would bury the table
    photos = [SHARED / "images" / n for n in IMAGES if (SHARED / "images" / n).exists()]
    if not photos:
        return None, "INT8: no calibration photos (../shared/images)"
    listing = CACHE / "calibration.txt"
    listing.write_text("".join(f"{p}\n" for p in photos))
    data = CACHE / "calibration.data"
    data.write_text(f"classes=80\ntrain={listing}\nvalid={listing}\n")
    from darknetpy.model.network import Network

    network = quietly(Network.from_cfg, cfg)
    network.load_weights(weights)
    network.eval()
    out = CACHE / f"{name}-{size}-int8.xml"
    import time

    start = time.perf_counter()
    quietly(quantize_int8, network, out, data, engine="openvino", images=len(photos))
    return out, (f"INT8 model: {out} (NNCF on {len(photos)} sample photos, "
                 f"{time.perf_counter() - start:.0f} s, once)")


def raccoon_map(threads: int) -> tuple[list[list[object]], str]:
    """mAP@0.5 of float32 and INT8 (OpenVINO) on the raccoon validation split, with the
    Darknet-trained golden yolov4-tiny 256 (``../shared/golden/trained-raccoon``), and their
    network-only ms: the accuracy side of INT8 (random bench weights have no mAP)."""
    golden = SHARED / "golden" / "trained-raccoon"
    data = SHARED / "datasets" / "raccoon" / "raccoon.data"
    if not (golden / "net.weights").exists() or not data.exists():
        return [], "INT8 mAP: no ../shared/golden/trained-raccoon or raccoon data set"
    try:
        from darknetpy.evaluation.commands import evaluate_network
        from darknetpy.inference.quantize import cached_int8_model
    except ImportError as error:
        return [], f"INT8 mAP: {error}"
    try:
        import logging

        import nncf

        nncf.set_log_level(logging.ERROR)
    except ImportError:
        pass
    cfg, weights = golden / "net.cfg", golden / "net.weights"
    fp32 = load_model(cfg, weights, "openvino")
    int8 = quietly(cached_int8_model, cfg, weights, data, backend="openvino")
    net = fp32.fused.net
    x = torch.rand(1, net.channels, net.height, net.width)
    times = interleaved({"fp32": lambda: fp32(x), "int8": lambda: int8(x)}, 30, warmup=3)
    rows = []
    for label, model in (("openvino fp32", fp32), ("openvino int8", int8)):
        m = quietly(evaluate_network, model, data, coco=False).map50
        rows.append([f"raccoon yolov4-tiny {net.width}", label,
                     f"{median(times[label.split()[1]]) * 1e3:.1f}", m])
    speed = median(times["fp32"]) / median(times["int8"])
    return rows, (f"raccoon (trained yolov4-tiny {net.width}, 40 validation images): INT8 "
                  f"{speed:.2f}x faster than float32 on OpenVINO, mAP@0.5 "
                  f"{rows[0][3]:.4f} -> {rows[1][3]:.4f}")
