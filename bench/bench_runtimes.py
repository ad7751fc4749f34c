"""Every CPU runtime side by side in one run: darknetpy (PyTorch and its default backend),
onnxruntime, OpenVINO and OpenCV DNN, network only and end to end, plus INT8.

Usage (OpenCV 4.x for ``cv2.dnn.readNetFromDarknet``: ``bash bench/setup_env.sh`` makes
``bench/.venv``)::

    bench/.venv/bin/python bench/bench_runtimes.py            # yolov4-tiny 416 and yolov4 608

    [--models yolov4-tiny:416 yolov4:608] [--threads N] [--rounds R] [--omp-passive]
    [--int8 NAME=PATH] [--no-int8]

One table (Markdown, ready for the README) on the machine it runs on, its CPU model from
/proc/cpuinfo and the load average in the header. For each network, batch 1, float32, ``--threads``
threads (default: every core this process may use) in every runtime, the same calibrated random
Darknet weights (``bench/.cache``, written once; :mod:`common`):

* ``net ms``: the network alone, a prepared (1, 3, H, W) input -> the head outputs;
* ``e2e ms``: a 1920x1080 BGR uint8 photo in memory -> boxes after NMS 0.45 (darknetpy: Darknet's
  resize, decode and NMS around each backend, ``model.predict``; OpenCV: ``blobFromImage``, its
  decode and ``NMSBoxesBatched``);
* medians over interleaved rounds (each round calls every runtime once, network only and end to
  end, so load drift hits all alike; 50 ms pause before each call, so no runtime's spinning
  threads slow the next), after two untimed rounds; ``conv GFLOP/s``: the network's
  convolution FLOPs over the median, against a bare 3x3 convolution timed alone, interleaved
  with the runtimes.

Targets (issue 15): end to end, darknetpy's default backend <= 0.8x OpenCV DNN's time; network
only, the default backend within 5 % of the fastest runtime (INT8 rows aside).
Runtimes are described in :mod:`runtimes`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import bench_files, machine_lines, median, passive_omp, test_image
from runtimes import (
    THRESH,
    Call,
    backend_of,
    BARE,
    bare_conv,
    conv_gflop,
    count,
    cpu_threads,
    forget_auto,
    int8_forward,
    interleaved_settled,
    load_model,
    model_e2e,
    onnx_file,
    opencv_e2e,
    opencv_forward,
    opencv_net,
    ort_forward,
    ov_forward,
    quantized,
    quietly,
    raccoon_map,
)

E2E_TARGET = 0.8  # Done-when 1: default backend end to end <= 0.8x OpenCV DNN
NET_SLACK = 1.05  # Done-when 2: default backend network-only within 5 % of the fastest
HEADERS = ["network", "runtime", "net ms", "x fastest", "x opencv", "conv GFLOP/s", "of bare",
           "e2e ms", "e2e x opencv", "boxes", "mAP@0.5"]


def _key_values(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{what} {item!r}: expected NAME=VALUE")
        out[key] = value
    return out


def _photo() -> np.ndarray:
    import cv2

    return cv2.resize(test_image(), (1920, 1080), interpolation=cv2.INTER_LINEAR)


class Contenders:
    """The runtimes of one network: name -> (network-only call, end-to-end call or None)."""

    def __init__(self) -> None:
        self.net: dict[str, Call] = {}
        self.e2e: dict[str, Call] = {}
        self.notes: list[str] = []

    def add(self, name: str, net: Call | None, e2e: Call | None) -> None:
        if net is not None:
            self.net[name] = net
        if e2e is not None:
            self.e2e[name] = e2e


def _darknetpy(c: Contenders, cfg: Path, weights: Path, photo: np.ndarray, keep_auto: bool
               ) -> tuple[object, torch.Tensor]:
    """darknetpy's rows: torch, the default backend, and onnxruntime / OpenVINO under load()."""
    start = time.perf_counter()
    torch_model = load_model(cfg, weights, "torch") or load_model(cfg, weights, None)
    x = torch.from_numpy(torch_model.prepare(photo).input)[None]  # Darknet's resize of the photo
    c.add("darknetpy torch", lambda: torch_model(x), model_e2e(torch_model, photo))
    forgot = not keep_auto and forget_auto(cfg)
    default = load_model(cfg, weights, None)
    label = f"darknetpy default ({backend_of(default)})"
    c.add(label, lambda: default(x), model_e2e(default, photo))
    c.notes.append(f"load(): torch and the default {time.perf_counter() - start:.1f} s (default "
                   f"backend {backend_of(default)}"
                   f"{', auto measured again' if forgot else ''})")
    return torch_model, x


def _runtimes(c: Contenders, cfg: Path, weights: Path, photo: np.ndarray, x: torch.Tensor,
              threads: int) -> None:
    """onnxruntime and OpenVINO: under darknetpy's load(backend=...) where this darknetpy has it
    (network only: ``model(x)``, which hands the numpy input to the runtime; end to end:
    ``predict``), else the runtimes on darknetpy's ONNX export, network only."""
    xn = np.ascontiguousarray(x.numpy())
    for backend, raw in (("onnxruntime", ort_forward), ("openvino", ov_forward)):
        start = time.perf_counter()
        try:
            __import__(backend)
        except ImportError:
            c.notes.append(f"{backend}: not installed (pip install -e \".[{backend}]\")")
            continue
        model = load_model(cfg, weights, backend)
        if model is not None:
            c.add(backend, lambda m=model: m(x), model_e2e(model, photo))
        else:
            c.add(backend, raw(onnx_file(cfg, weights), threads, xn), None)
        c.notes.append(f"{backend}: ready in {time.perf_counter() - start:.1f} s (export, compile)")


def _opencv(c: Contenders, cfg: Path, weights: Path, size: int, photo: np.ndarray,
            x: torch.Tensor) -> None:
    net = opencv_net(cfg, weights)
    if net is None:
        import cv2

        c.notes.append(f"opencv {cv2.__version__} has no Darknet importer: run bash "
                       "bench/setup_env.sh and use bench/.venv/bin/python")
        return
    c.add("opencv dnn", opencv_forward(net, np.ascontiguousarray(x.numpy())),
          opencv_e2e(net, size, photo))


def _int8(c: Contenders, name: str, size: int, args: argparse.Namespace, cfg: Path,
          weights: Path, x: torch.Tensor, photo: np.ndarray) -> str | None:
    """The INT8 row: the runtime on the INT8 model for the network alone, and darknetpy's
    pre/post around it (``quantize.int8_model``) end to end where darknetpy has that."""
    if args.no_int8:
        return None
    path, note = quantized(name, size, cfg, weights, args.int8)
    c.notes.append(note)
    if path is None:
        return None
    label = f"{'openvino' if path.suffix == '.xml' else 'onnxruntime'} int8"
    net = int8_forward(path, args.threads, np.ascontiguousarray(x.numpy()))
    e2e = None
    try:
        from darknetpy.inference.quantize import int8_model
    except ImportError:
        pass
    else:
        model = quietly(int8_model, cfg, weights, path, threads=args.threads)
        e2e = model_e2e(model, photo)
    c.add(label, net, e2e)
    return label


def bench_network(name: str, size: int, args: argparse.Namespace
                  ) -> tuple[list[list[object]], list[str]]:
    """Rows of the table for one network, and the lines under it."""
    began = time.perf_counter()
    load0 = os.getloadavg()[0]
    cfg, weights = bench_files(name, size)
    photo = _photo()
    c = Contenders()
    torch_model, x = _darknetpy(c, cfg, weights, photo, args.keep_auto)
    _runtimes(c, cfg, weights, photo, x, args.threads)
    _opencv(c, cfg, weights, size, photo, x)
    int8_label = _int8(c, name, size, args, cfg, weights, x, photo)
    bare_call, bare_flops, bare_label = bare_conv()
    c.net[BARE] = bare_call  # timed among the runtimes: the same load
    rounds = args.rounds or (25 if conv_gflop(torch_model) < 20 else 7)
    # every call of both kinds in each round: a change of load between them hits all alike
    calls = {**{f"net|{k}": f for k, f in c.net.items()},
             **{f"e2e|{k}": f for k, f in c.e2e.items()}}
    with torch.inference_mode():
        times = interleaved_settled(calls, rounds, warmup=2)
    net_t = {k[4:]: v for k, v in times.items() if k.startswith("net|")}
    e2e_t = {k[4:]: v for k, v in times.items() if k.startswith("e2e|")}
    boxes = {k: count(f()) for k, f in c.e2e.items()}
    gflop = conv_gflop(torch_model)
    bare = bare_flops / median(net_t.pop(BARE)) / 1e9
    fp32 = {k: median(v) for k, v in net_t.items() if "int8" not in k}
    fastest = min(fp32.values())
    ocv_net = fp32.get("opencv dnn")
    ocv_e2e = median(e2e_t["opencv dnn"]) if "opencv dnn" in e2e_t else None
    rows: list[list[object]] = []
    for key, times in net_t.items():
        t = median(times)
        e = median(e2e_t[key]) if key in e2e_t else None
        rows.append([f"{name} {size}", key, f"{t * 1e3:.1f}", f"{t / fastest:.2f}",
                     f"{t / ocv_net:.2f}" if ocv_net else "-", f"{gflop / t:.0f}",
                     f"{100 * gflop / t / bare:.0f} %", f"{e * 1e3:.1f}" if e else "-",
                     f"{e / ocv_e2e:.2f}" if e and ocv_e2e else "-",
                     str(boxes.get(key, "-")), "-"])
    lines = [f"{name} {size}: {gflop:.2f} GFLOP in convolutions, bare conv ({bare_label}) "
             f"{bare:.0f} GFLOP/s, {rounds} interleaved rounds, "
             f"load average {load0:.2f} -> {os.getloadavg()[0]:.2f}, "
             f"{time.perf_counter() - began:.0f} s"]
    lines += [f"  {n}" for n in c.notes]
    default = next(k for k in net_t if k.startswith("darknetpy default"))
    if ocv_e2e and default in e2e_t:
        r = median(e2e_t[default]) / ocv_e2e
        lines.append(f"  target end to end <= {E2E_TARGET}x opencv: {default} {r:.2f}x "
                     f"{'HOLDS' if r <= E2E_TARGET else 'MISSES'}")
    r = fp32[default] / fastest
    best = min(fp32, key=fp32.get)
    lines.append(f"  target network within {NET_SLACK - 1:.0%} of the fastest ({best}): {default} "
                 f"{r:.2f}x {'HOLDS' if r <= NET_SLACK else 'MISSES'}")
    return rows, lines


def markdown(headers: list[str], rows: list[list[object]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["yolov4-tiny:416", "yolov4:608"],
                        help="NAME:SIZE, cfg/NAME.cfg at SIZE x SIZE")
    parser.add_argument("--threads", type=int, default=cpu_threads())
    parser.add_argument("--rounds", type=int, default=0,
                        help="interleaved rounds (default 25 for small networks, 7 for large)")
    parser.add_argument("--int8", nargs="*", default=[], metavar="NAME=PATH",
                        help="an INT8 model (.xml: OpenVINO, .onnx: onnxruntime) of NAME")
    parser.add_argument("--keep-auto", action="store_true",
                        help="keep backend auto's cached choice (default: measured again)")
    parser.add_argument("--no-int8", action="store_true",
                        help="leave out INT8 (quantizing takes a minute or two the first time)")
    parser.add_argument("--omp-passive", action="store_true",
                        help="re-run with OMP_WAIT_POLICY=PASSIVE (a machine busy with other work)")
    args = parser.parse_args()
    passive_omp(sys.argv)
    args.int8 = _key_values(args.int8, "--int8")
    import cv2

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    cv2.setNumThreads(args.threads)
    began = time.perf_counter()
    print("\n".join(machine_lines(args.threads)), flush=True)
    rows: list[list[object]] = []
    notes: list[str] = []
    for spec in args.models:
        name, _, size = spec.partition(":")
        r, n = bench_network(name, int(size or 416), args)
        rows += r
        notes += n
        print("\n".join(n), flush=True)
    if not args.no_int8:
        r, line = raccoon_map(args.threads)
        rows += [[net, label, ms, "-", "-", "-", "-", "-", "-", "-", f"{m:.4f}"]
                 for net, label, ms, m in r]
        print(line, flush=True)
        notes.append(line)
    print()
    print(markdown(HEADERS, rows))
    print(f"\nbatch 1, float32, {args.threads} threads; medians; x fastest: over the float32 "
          "runtimes of the network; e2e: 1920x1080 BGR photo -> boxes after NMS 0.45; "
          f"load average at the end {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"{time.perf_counter() - began:.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
