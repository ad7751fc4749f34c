"""INT8 against float32 on one backend: mAP@0.5 on the .data file's valid list and network-only
speed (batch 1, median of timed forward passes), for each quantizer (issue 15, Done-when 4).

    python3 bench/bench_int8.py [--cfg CFG --weights W --data DATA] [--engines openvino,onnxruntime]
        [--images 100] [--keep-fp32 heads|none] [--runs 50]

Defaults: ../shared/golden/trained-raccoon (Darknet-trained yolov4-tiny 256) on
../shared/datasets/raccoon. Prints one row per (engine, precision).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from darknetpy.evaluation.commands import evaluate_network  # noqa: E402
from darknetpy.inference import backends  # noqa: E402
from darknetpy.inference.backend_cache import cpu_model  # noqa: E402
from darknetpy.inference.export import export_onnx  # noqa: E402
from darknetpy.inference.inference_model import load  # noqa: E402
from darknetpy.inference.quantize import int8_model, quantize_int8  # noqa: E402
from darknetpy.model.network import Network  # noqa: E402

SHARED = REPO.parent / "shared"


def _ms(runners: list[backends.Runner], x: torch.Tensor, runs: int) -> list[tuple[float, float]]:
    """(median, fastest) ms of each runner, timed round-robin (a busy machine slows both alike;
    the fastest run is the least disturbed one)."""
    for runner in runners:
        for _ in range(5):
            runner(x)
    times: list[list[float]] = [[] for _ in runners]
    for _ in range(runs):
        for runner, kept in zip(runners, times):
            t = time.perf_counter()
            runner(x)
            kept.append(time.perf_counter() - t)
    return [(1e3 * statistics.median(kept), 1e3 * min(kept)) for kept in times]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    golden = SHARED / "golden" / "trained-raccoon"
    p.add_argument("--cfg", default=str(golden / "net.cfg"))
    p.add_argument("--weights", default=str(golden / "net.weights"))
    p.add_argument("--data", default=str(SHARED / "datasets" / "raccoon" / "raccoon.data"))
    p.add_argument("--engines", default="openvino,onnxruntime")
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--keep-fp32", default="heads", choices=("heads", "none"))
    p.add_argument("--runs", type=int, default=50)
    a = p.parse_args()
    net = Network.from_cfg(a.cfg)
    net.load_weights(a.weights)
    net.eval()
    x = torch.rand(1, net.net.channels, net.net.height, net.net.width)
    print(f"# {cpu_model()}, "
          f"threads {backends.cpu_threads()}, {a.cfg}, calibration {a.images} train images, "
          f"keep_fp32={a.keep_fp32}")
    print("| engine | precision | mAP@0.5 | ms median (network, batch 1) | ms fastest "
          "| quantize s |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(net, Path(tmp) / "fp32.onnx", dynamic_batch=True)
        for engine in a.engines.split(","):
            runner_fp32 = (backends.OpenVinoBackend if engine == "openvino"
                           else backends.OnnxRuntimeBackend)(fp32)
            model = load(a.cfg, a.weights, half=False, keep_unfused=False, backend="torch")
            model.runner, model.runner_shape = runner_fp32, tuple(x.shape[1:])
            m32 = evaluate_network(model, a.data, coco=False).map50
            out = Path(tmp) / ("int8.xml" if engine == "openvino" else "int8.onnx")
            t = time.perf_counter()
            quantize_int8(net, out, a.data, engine=engine, images=a.images,
                          keep_fp32=None if a.keep_fp32 == "heads" else ())
            tq = time.perf_counter() - t
            model8 = int8_model(a.cfg, a.weights, out)
            m8 = evaluate_network(model8, a.data, coco=False).map50
            t32, t8 = _ms([runner_fp32, model8.runner], x, a.runs)
            print(f"| {engine} | fp32 | {m32:.4f} | {t32[0]:.2f} | {t32[1]:.2f} | - |", flush=True)
            print(f"| {engine} | int8 | {m8:.4f} ({m8 - m32:+.4f}) | {t8[0]:.2f} "
                  f"({t32[0] / t8[0]:.2f}x) | {t8[1]:.2f} ({t32[1] / t8[1]:.2f}x) | {tq:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
