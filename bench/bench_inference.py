"""Inference latency and throughput: darknetpy vs OpenCV's Darknet runtime (cv2.dnn), side by side.

Usage (OpenCV 4.x is needed for ``cv2.dnn.readNetFromDarknet``; ``bash bench/setup_env.sh`` makes
``bench/.venv`` with it)::

    bench/.venv/bin/python bench/bench_inference.py [--models yolov4-tiny yolov4] [--size 416]
        [--threads 2] [--repeat 15] [--compile] [--no-profile] [--gpu-only]

For each cfg (``cfg/<model>.cfg`` at ``--size``, batch 1, fp32, ``--threads`` threads in PyTorch
and OpenCV) the script writes calibrated random weights once (``bench/.cache``; see
:mod:`bench.common`), loads the same file into every runtime, and times them round-robin
(``interleaved``: one call of each per round, medians over ``--repeat`` rounds):

* ``opencv``: ``cv2.dnn.readNetFromDarknet``, DNN_BACKEND_OPENCV, DNN_TARGET_CPU;
* ``unfused``: :class:`darknetpy.Network` in eval mode under ``torch.inference_mode``;
* ``load() prepacked``: ``darknetpy.inference.inference_model.load(cfg, weights)`` as it ships on the CPU (batch
  norm folded, channels-last, convolutions prepacked by :mod:`darknetpy.model.fastconv`: oneDNN weights
  reordered once, bias and activation fused into the convolution);
* ``load(prepack=False)``: batch norm folded, channels-last, plain ``F.conv2d``;
* ``load(prepack=False, NCHW)``: the same with ``channels_last=False``;
* ``jit.freeze (prepack=False)``: ``torch.jit.freeze(torch.jit.trace(model.fused))`` of the NCHW
  ``prepack=False`` model (a prepacked model does not trace: its oneDNN weights are opaque);
* ``compiled (prepack=False)`` (``--compile``): ``torch.compile`` (inductor, freezing) of the
  same model; compiling takes minutes.

Tables: network only (a prepared (1, 3, H, W) input), end to end (a decoded BGR photo, 768x576
and 1920x1080 -> resize -> network -> boxes -> NMS; OpenCV: ``blobFromImage`` +
``NMSBoxesBatched``; ``former prepare`` is ``predict`` fed what ``prepare`` computed before it read
the uint8 pixels in one pass: the full-size float RGB image), the input preparation alone (BGR
photo -> network input, 768x576 and 1920x1080), batch 8 throughput, the convolution FLOP rate
achieved vs a bare 3x3 ``F.conv2d`` on this machine, the detections of each darknetpy variant vs
the unfused network, and the top operators of the fastest variant (``torch.profiler``). A CUDA
section runs where a GPU is present.

Targets (issue 5): darknetpy <= 0.8x OpenCV's time; conv FLOP rate >= 60% of the bare conv.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    bench_files,
    interleaved,
    machine_lines,
    median,
    passive_omp,
    photos,
    set_threads,
    table,
    test_image,
)

import darknetpy.inference.inference_model as dinf
from darknetpy.model.fastconv import packing_available

TARGET_RATIO = 0.8
#: The variant that is ``load()`` as it ships (prepacked on the CPU where oneDNN is).
SHIPPED = "load() prepacked" if packing_available() else "load()"
TARGET_CONV_SHARE = 0.6
THRESH, NMS = 0.25, 0.45

# ---------------------------------------------------------------- OpenCV


def opencv_net(cfg: Path, weights: Path):
    import cv2

    if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromDarknet"):
        return None
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return net


def opencv_forward(net, names):
    def run(blob: np.ndarray) -> list[np.ndarray]:
        net.setInput(blob)
        return net.forward(names)

    return run


def opencv_detect(net, names, size: int):
    """OpenCV's usual YOLO pipeline: blobFromImage (stretch, RGB, /255), forward, per-class boxes
    above THRESH, class-wise NMS (``NMSBoxesBatched``)."""
    import cv2

    def run(image: np.ndarray) -> list[tuple[int, float, tuple[int, int, int, int]]]:
        h, w = image.shape[:2]
        blob = cv2.dnn.blobFromImage(image, 1 / 255.0, (size, size), swapRB=True, crop=False)
        net.setInput(blob)
        rows = np.concatenate(net.forward(names))
        scores = rows[:, 5:]
        box, cls = np.nonzero(scores > THRESH)
        if not len(box):
            return []
        conf = scores[box, cls]
        xywh = rows[box, :4] * np.array([w, h, w, h], np.float32)
        xywh[:, :2] -= xywh[:, 2:] / 2
        keep = cv2.dnn.NMSBoxesBatched(xywh.tolist(), conf.tolist(), cls.tolist(), THRESH, NMS)
        return [(int(cls[k]), float(conf[k]), tuple(xywh[k])) for k in np.asarray(keep).ravel()]

    return run


def former_input(bgr: np.ndarray) -> np.ndarray:
    """What ``prepare`` built before reading uint8 pixels in one pass: the full-size float32 RGB
    image (BGR fancy index, then ``to_chw_float``)."""
    from darknetpy.data.image import to_chw_float

    return to_chw_float(np.ascontiguousarray(bgr[:, :, [2, 1, 0]]))


def former_predict(model: dinf.InferenceModel):
    """``predict`` as it ran before: a float tensor input takes the former path (resize of the
    full-size float image), so this times the float copy, the resize and the rest alike."""
    def run(image: np.ndarray):
        return model.predict(torch.from_numpy(former_input(image)), thresh=THRESH, nms=NMS)

    return run


def bench_prepare(model: dinf.InferenceModel, size: int, repeat: int) -> None:
    """The input preparation alone (part of the end-to-end time), a BGR uint8 photo -> the
    (3, size, size) float input: darknetpy's ``prepare`` (what ``predict`` runs: Darknet's
    ``resize_image`` reading the uint8 pixels in one pass), the former two steps (a full-size
    float copy, then the compiled ``resize_image``), the same with the numpy reference resize, and
    OpenCV's ``blobFromImage``."""
    import cv2

    from darknetpy.data import darknet_resize as dimg

    small = test_image()
    photos_ = {f"{small.shape[1]}x{small.shape[0]}": small,
               "1920x1080": cv2.resize(small, (1920, 1080), interpolation=cv2.INTER_LINEAR)}

    def former_steps(bgr: np.ndarray) -> np.ndarray:  # the former prepare: float copy, resize
        return dimg.resize_image(former_input(bgr), size, size)

    def numpy_steps(bgr: np.ndarray) -> np.ndarray:  # the same with the numpy resize_image
        return dimg.resize_image_numpy(former_input(bgr), size, size)

    rows = []
    for label, bgr in photos_.items():
        chw = former_input(bgr)
        calls: dict[str, Callable[[], object]] = {
            "darknetpy prepare() (uint8, one pass)": lambda b=bgr: model.prepare(
                b, letter_box=False),
            "former prepare (to_chw_float + resize_image)": lambda b=bgr: former_steps(b),
            "  of which resize_image": lambda c=chw: dimg.resize_image(c, size, size),
            "numpy reference (to_chw_float + numpy resize)": lambda b=bgr: numpy_steps(b),
        }
        if hasattr(cv2, "dnn"):
            calls["opencv blobFromImage"] = lambda b=bgr: cv2.dnn.blobFromImage(
                b, 1 / 255.0, (size, size), swapRB=True, crop=False)
        times = interleaved(calls, repeat, warmup=2)
        ref = median(times["opencv blobFromImage"]) if "opencv blobFromImage" in times else None
        rows += [[f"{label}: {k}", median(t) * 1e3, min(t) * 1e3,
                  f"{median(t) / ref:.2f}" if ref else "-"] for k, t in times.items()]
    print(f"\ninput preparation, BGR uint8 photo -> (3, {size}, {size}) float32 ({repeat} "
          "interleaved rounds):")
    print(table(["photo: step", "median ms", "best ms", "x opencv"], rows))


# ---------------------------------------------------------------- darknetpy variants


def darknetpy_variants(cfg: Path, weights: Path, x: torch.Tensor, compile_: bool
                       ) -> dict[str, object]:
    """name -> a callable model (input tensor -> head outputs) or an InferenceModel."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = dinf.load(cfg, weights)  # as it ships: prepacked on the CPU where oneDNN is
        plain = dinf.load(cfg, weights, prepack=False, keep_unfused=False)
        nchw = dinf.load(cfg, weights, prepack=False, channels_last=False, keep_unfused=False)
    unfused = base.network.eval()
    variants: dict[str, object] = {}

    def unfused_run(t: torch.Tensor) -> list[torch.Tensor]:
        with torch.inference_mode():
            return unfused(t)

    variants["unfused"] = unfused_run
    variants[SHIPPED] = base
    variants["load(prepack=False)"] = plain
    variants["load(prepack=False, NCHW)"] = nchw
    # Tracing needs plain modules: a prepacked convolution holds opaque oneDNN weights.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frozen = torch.jit.freeze(torch.jit.trace(nchw.fused, x, strict=False, check_trace=False))

    def frozen_run(t: torch.Tensor) -> list[torch.Tensor]:
        with torch.inference_mode():
            return frozen(t)

    variants["jit.freeze (prepack=False)"] = frozen_run
    if compile_:
        import torch._inductor.config as inductor

        inductor.freezing = True
        start = time.perf_counter()
        compiled = torch.compile(nchw.fused)

        def compiled_run(t: torch.Tensor) -> list[torch.Tensor]:
            with torch.inference_mode():
                return compiled(t)

        compiled_run(x)
        print(f"  torch.compile (inductor, freezing): {time.perf_counter() - start:.0f} s to compile",
              flush=True)
        variants["compiled (prepack=False)"] = compiled_run
    return variants


def model_detect(model, size: int):
    def run(image: np.ndarray):
        return model.predict(image, thresh=THRESH, nms=NMS)

    return run


def _count(result: object) -> int:
    """Detections in one image's result: OpenCV's list, or darknetpy's [Prediction]."""
    if result and hasattr(result[0], "detections"):
        return len(result[0].detections)
    return len(result)


def conv_bflops(model: dinf.InferenceModel) -> float:
    """Billions of multiply-adds x 2 in the convolutions of one image (Darknet's BFLOPs)."""
    return sum(r["bflops"] for r in model.network.summary_rows() if r["type"] == "convolutional")


def total_bflops(model: dinf.InferenceModel) -> float:
    return sum(r["bflops"] for r in model.network.summary_rows())


# ---------------------------------------------------------------- bare convolution


def bare_conv_rate(repeat: int) -> tuple[float, list[list[object]]]:
    """GFLOP/s of a lone 3x3 convolution (batch 1, bias) on a few YOLO-like shapes, as
    ``F.conv2d`` runs it (oneDNN, reordering the weights at every call) and with the weights
    prepacked once (the same oneDNN kernel without the reorder). The best median is the machine's
    reference rate."""
    shapes = [(64, 208), (128, 104), (256, 52), (512, 26)]
    rows = []
    best = 0.0
    ops = torch.ops.mkldnn
    with torch.inference_mode():
        for c, s in shapes:
            x = torch.randn(1, c, s, s)
            w = torch.randn(c, c, 3, 3) * 0.02
            b = torch.randn(c)
            flops = 2 * c * c * 9 * s * s
            calls = {"F.conv2d": lambda x=x, w=w, b=b: F.conv2d(x, w, b, 1, 1)}
            if packing_available():
                packed = ops._reorder_convolution_weight(w, [1, 1], [1, 1], [1, 1], 1, [1, c, s, s])
                calls["prepacked"] = lambda x=x, p=packed, b=b: ops._convolution_pointwise(
                    x, p, b, [1, 1], [1, 1], [1, 1], 1, "none", [], "")
            t = interleaved(calls, repeat, warmup=2)
            rates = {k: flops / median(v) / 1e9 for k, v in t.items()}
            best = max(best, *rates.values())
            rows.append([f"3x3 {c}->{c} @ {s}x{s}", flops / 1e9, median(t["F.conv2d"]) * 1e3,
                         rates["F.conv2d"], rates.get("prepacked", float("nan"))])
    return best, rows


# ---------------------------------------------------------------- checks


def compare_detections(reference: list, other: list, thresh: float = THRESH,
                       tol: float = 1e-4) -> str:
    """'same' when both list the same (class, box) rows with values within ``tol``, allowing only
    rows whose probability is within ``tol`` of the threshold to be on one side only (float
    rounding decides those)."""
    def key(rows: list) -> np.ndarray:
        a = np.array([tuple(r) for r in rows], np.float64).reshape(-1, 7)
        return a[np.lexsort((a[:, 3], a[:, 2], a[:, 0]))] if len(a) else a

    a, b = key(reference), key(other)
    matched = np.zeros(len(b), bool)
    err = 0.0
    lone = 0
    for row in a:
        close = (~matched) & (b[:, 0] == row[0]) & (np.abs(b[:, 1:] - row[1:]).max(axis=1) < tol)
        hit = np.flatnonzero(close)
        if len(hit):
            matched[hit[0]] = True
            err = max(err, float(np.abs(b[hit[0], 1:] - row[1:]).max()))
        elif abs(row[1] - thresh) < tol:
            lone += 1
        else:
            return f"DIFFERENT: row {row.round(4).tolist()} missing"
    for row in b[~matched]:
        if abs(row[1] - thresh) >= tol:
            return f"DIFFERENT: extra row {row.round(4).tolist()}"
        lone += 1
    note = f", {lone} borderline (prob within {tol:.0e} of {thresh})" if lone else ""
    return f"same ({len(a)} rows, max |diff| {err:.1e}{note})"


def _rel_diff(outputs: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    return max(float(((a.float() - b).abs() / (1 + b.abs())).max())
               for a, b in zip(outputs, reference))


def profile_top(fn: Callable[[], object], rounds: int = 3, top: int = 12) -> str:
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(rounds):
            fn()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    rows = [[e.key, e.self_cpu_time_total / rounds / 1e3, 100 * e.self_cpu_time_total / total,
             e.count // rounds] for e in events[:top]]
    return table(["operator", "self ms/forward", "% of total", "calls/forward"], rows)


# ---------------------------------------------------------------- CPU section


def bench_cpu(name: str, args: argparse.Namespace, conv_rate: float) -> None:
    cfg, weights = bench_files(name, args.size)
    repeat = args.repeat or (20 if "tiny" in name else 7)
    x = photos(args.size, 1)
    x8 = photos(args.size, 2).repeat(4, 1, 1, 1)
    image = test_image()
    variants = darknetpy_variants(cfg, weights, x, args.compile)
    base: dinf.InferenceModel = variants[SHIPPED]  # type: ignore[assignment]
    ocv = opencv_net(cfg, weights)
    names = ocv.getUnconnectedOutLayersNames() if ocv is not None else ()
    bflops = conv_bflops(base)
    print(f"\n=== {name} at {args.size}x{args.size}: {total_bflops(base):.2f} BFLOPs "
          f"({bflops:.2f} in convolutions), weights {weights.stat().st_size / 1e6:.1f} MB ===")

    # network only, batch 1
    calls: dict[str, Callable[[], object]] = {}
    if ocv is not None:
        blob = np.ascontiguousarray(x.numpy())
        run = opencv_forward(ocv, names)
        calls["opencv"] = lambda: run(blob)
    for key, model in variants.items():
        calls[key] = (lambda m=model: m(x))
    times = interleaved(calls, repeat, warmup=2)
    ref = median(times["opencv"]) if "opencv" in times else None
    rows = []
    for key, t in times.items():
        ms = median(t) * 1e3
        rate = bflops / median(t)
        rows.append([key, ms, min(t) * 1e3, f"{median(t) / ref:.2f}" if ref else "-", rate,
                     f"{100 * rate / conv_rate:.0f}%"])
    print(f"\nnetwork only, batch 1 ({repeat} interleaved rounds; conv rate vs bare 3x3 conv "
          f"{conv_rate:.0f} GFLOP/s):")
    print(table(["runtime", "median ms", "best ms", "x opencv", "conv GFLOP/s", "of bare conv"],
                rows))
    best_key = min((k for k in times if k != "opencv"), key=lambda k: median(times[k]))

    # end to end, batch 1, on the photo and on it enlarged to 1920x1080
    import cv2

    e2e_ratios: list[float] = []
    for photo in (image, cv2.resize(image, (1920, 1080), interpolation=cv2.INTER_LINEAR)):
        e2e: dict[str, Callable[[], object]] = {}
        if ocv is not None:
            run = opencv_detect(ocv, names, args.size)
            e2e["opencv"] = lambda run=run, p=photo: run(p)
        for key in (SHIPPED, "load(prepack=False)"):
            detect = model_detect(variants[key], args.size)
            e2e[f"{key} .predict"] = (lambda f=detect, p=photo: f(p))
        former = former_predict(base)
        e2e[f"{SHIPPED} .predict, former prepare"] = lambda f=former, p=photo: f(p)
        etimes = interleaved(e2e, repeat, warmup=1)
        eref = median(etimes["opencv"]) if "opencv" in etimes else None
        counts = {k: _count(f()) for k, f in e2e.items()}
        if eref:
            e2e_ratios.append(median(etimes[f"{SHIPPED} .predict"]) / eref)
        print(f"\nend to end, batch 1 ({photo.shape[1]}x{photo.shape[0]} BGR photo -> resize -> "
              "network -> boxes -> NMS 0.45):")
        print(table(["runtime", "median ms", "best ms", "x opencv", "detections"],
                    [[k, median(t) * 1e3, min(t) * 1e3,
                      f"{median(t) / eref:.2f}" if eref else "-", counts[k]]
                     for k, t in etimes.items()]))

    bench_prepare(base, args.size, max(repeat, 20))

    # batch 8 throughput
    b8: dict[str, Callable[[], object]] = {}
    if ocv is not None:
        blob8 = np.ascontiguousarray(x8.numpy())
        run8 = opencv_forward(ocv, names)
        b8["opencv"] = lambda: run8(blob8)
    for key in (SHIPPED, "load(prepack=False)", best_key):
        if key in variants and key not in b8:
            b8[key] = (lambda m=variants[key]: m(x8))
    btimes = interleaved(b8, max(3, repeat // 3), warmup=1)
    bref = median(btimes["opencv"]) if "opencv" in btimes else None
    print("\nnetwork only, batch 8 throughput:")
    print(table(["runtime", "median ms/batch", "images/s", "x opencv (time)", "conv GFLOP/s"],
                [[k, median(t) * 1e3, 8 / median(t), f"{median(t) / bref:.2f}" if bref else "-",
                  8 * bflops / median(t)] for k, t in btimes.items()]))

    # detections vs the unfused network. A deep network with random weights amplifies float
    # rounding: its noise floor is how far its own outputs move when the input moves by one ulp.
    size = (image.shape[1], image.shape[0])
    xin = torch.from_numpy(base.prepare(image)[0])[None]
    sign = torch.randint(0, 2, xin.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    xulp = xin * (1 + sign * 2.0**-24)
    with torch.inference_mode():
        ref_out = base.network(xin)
        floor = _rel_diff(base.network(xulp), ref_out)
    tol = max(1e-4, 4 * floor)
    rows = [["unfused, input moved 1 ulp", f"{floor:.1e}", "-", "-"]]
    for key, model in variants.items():
        if key == "unfused":
            continue
        diff = _rel_diff(model(xin), ref_out)
        if isinstance(model, dinf.InferenceModel):
            with torch.inference_mode():
                checks = [compare_detections(base.network.detect(xin, size, thresh=THRESH, nms=n)[0],
                                             model.detect(xin, size, thresh=THRESH, nms=n)[0],
                                             tol=tol) for n in (0, NMS)]
        else:
            checks = ["-", "-"]
        rows.append([key, f"{diff:.1e}", *checks])
    print(f"\nvs the unfused network on dog.jpg (head outputs: max |diff|/(1+|value|); detections: "
          f"values within {tol:.0e} = max(1e-4, 4 x the 1-ulp noise floor)):")
    print(table(["runtime", "head outputs", "candidates (no NMS)", "detections (NMS 0.45)"], rows))

    if args.profile:
        print(f"\nprofile of '{best_key}' (network only, batch 1):")
        print(profile_top(lambda: variants[best_key](x)))

    if ref:
        best = median(times[best_key]) / ref
        e2e_worst = max(e2e_ratios)
        print(f"\ntarget <= {TARGET_RATIO}x opencv: network {best:.2f}x ({best_key}) "
              f"{'HOLDS' if best <= TARGET_RATIO else 'MISSES'}; end to end ({SHIPPED}, worse "
              f"photo) {e2e_worst:.2f}x {'HOLDS' if e2e_worst <= TARGET_RATIO else 'MISSES'}")
    share = bflops / median(times[best_key]) / conv_rate
    print(f"target conv rate >= {TARGET_CONV_SHARE:.0%} of bare conv: {share:.0%} "
          f"{'HOLDS' if share >= TARGET_CONV_SHARE else 'MISSES'}")


# ---------------------------------------------------------------- GPU section


def bench_gpu(name: str, args: argparse.Namespace) -> None:
    """CUDA: fp32, fp16 + channels-last (the load() default), optionally torch.compile; batch 1
    latency and batch 8 throughput; detections of fp16 vs the fp32 model."""
    cfg, weights = bench_files(name, args.size)
    repeat = args.repeat or 30
    sync = torch.cuda.synchronize
    x = photos(args.size, 1).cuda()
    x8 = photos(args.size, 2).repeat(4, 1, 1, 1).cuda()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = {
            "cuda fp32": dinf.load(cfg, weights, device="cuda", half=False),
            "cuda fp32 channels_last": dinf.load(cfg, weights, device="cuda", half=False,
                                                 channels_last=True),
            "cuda fp16 channels_last": dinf.load(cfg, weights, device="cuda"),
        }
    calls: dict[str, Callable[[], object]] = {k: (lambda m=m: m(x)) for k, m in models.items()}
    calls8: dict[str, Callable[[], object]] = {k: (lambda m=m: m(x8)) for k, m in models.items()}

    def amp_run(t: torch.Tensor) -> object:
        with torch.autocast("cuda", dtype=torch.float16):
            return models["cuda fp32 channels_last"](t)

    calls["cuda fp32 + autocast"] = lambda: amp_run(x)
    calls8["cuda fp32 + autocast"] = lambda: amp_run(x8)
    if args.compile:
        fused = models["cuda fp16 channels_last"].fused
        compiled = torch.compile(fused, mode="max-autotune-no-cudagraphs")
        xh = x.half().contiguous(memory_format=torch.channels_last)
        xh8 = x8.half().contiguous(memory_format=torch.channels_last)

        def compiled_run(t: torch.Tensor) -> object:
            with torch.inference_mode():
                return compiled(t)

        start = time.perf_counter()
        compiled_run(xh)
        compiled_run(xh8)
        print(f"  torch.compile on CUDA: {time.perf_counter() - start:.0f} s to compile")
        calls["cuda fp16 compiled"] = lambda: compiled_run(xh)
        calls8["cuda fp16 compiled"] = lambda: compiled_run(xh8)
    t1 = interleaved(calls, repeat, warmup=3, sync=sync)
    t8 = interleaved(calls8, max(5, repeat // 2), warmup=2, sync=sync)
    print(f"\n=== {name} at {args.size}x{args.size} on {torch.cuda.get_device_name(0)} ===")
    print(table(["runtime", "batch 1 median ms", "batch 1 best ms", "batch 8 ms", "batch 8 images/s"],
                [[k, median(t1[k]) * 1e3, min(t1[k]) * 1e3, median(t8[k]) * 1e3,
                  8 / median(t8[k])] for k in calls]))
    image = test_image()
    size = (image.shape[1], image.shape[0])
    xin = torch.from_numpy(models["cuda fp32"].prepare(image)[0])[None]
    ref = models["cuda fp32"].detect(xin, size, thresh=THRESH, nms=NMS)[0]
    half = models["cuda fp16 channels_last"].detect(xin, size, thresh=THRESH, nms=NMS)[0]
    print(f"detections fp16 vs fp32 on dog.jpg: {len(half)} vs {len(ref)} rows "
          f"({compare_detections(ref, half, tol=0.02)}, values within 0.02)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["yolov4-tiny", "yolov4"])
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=0, help="rounds (default 20 tiny, 7 others)")
    parser.add_argument("--compile", action="store_true", help="add torch.compile (minutes)")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--gpu-only", action="store_true")
    parser.add_argument("--no-gpu", action="store_true")
    parser.add_argument("--omp-passive", action="store_true",
                        help="re-run with OMP_WAIT_POLICY=PASSIVE (for a busy machine)")
    args = parser.parse_args()
    passive_omp(sys.argv)
    set_threads(args.threads)
    print("\n".join(machine_lines()))
    import cv2

    if not hasattr(cv2.dnn, "readNetFromDarknet"):
        print(f"OpenCV {cv2.__version__} has no Darknet importer: the opencv columns are skipped "
              "(run bash bench/setup_env.sh and use bench/.venv/bin/python)")
    if not args.gpu_only:
        conv_rate, rows = bare_conv_rate(10)
        print(f"\nbare 3x3 convolution, batch 1, {args.threads} threads (reference rate: the best, "
              f"{conv_rate:.0f} GFLOP/s):")
        print(table(["shape", "GFLOP", "F.conv2d ms", "F.conv2d GFLOP/s", "prepacked GFLOP/s"],
                    rows))
        for name in args.models:
            bench_cpu(name, args, conv_rate)
    if torch.cuda.is_available() and not args.no_gpu:
        for name in args.models:
            bench_gpu(name, args)
    elif not args.no_gpu:
        print("\nno CUDA device: GPU section skipped")
    print(f"\nload average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
