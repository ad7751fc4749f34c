"""How far onnxruntime's float32 heads are from PyTorch's, next to how far two float32
implementations of the same network can be: the float32 noise floor of each golden network.

For every golden detection network (``../shared/golden/NAME``, Darknet's weights and input), one
row, all maxima of absolute differences over every head output:

* ``ORT-PT``: the exported ONNX in onnxruntime against ``darknetpy.load()``'s model (fused,
  prepacked oneDNN convolutions): what ``darknetpy export`` promises;
* ``PT-PT``: PyTorch against PyTorch, the unfused network with oneDNN convolutions against the same
  network with PyTorch's native ones (``torch.backends.mkldnn`` off): the same float32 function,
  summed in another order;
* ``ORT-f64``, ``PT-f64``: each against the network evaluated in float64 (the exact result to
  float32's eyes);
* ``layer``: the worst single layer of the ONNX graph given PyTorch's inputs for that layer,
  relative to the layer's largest value (what the graph computes, without depth).

A row where ``ORT-PT`` is above 1e-4 while ``PT-PT`` and ``PT-f64`` are of the same size is a
network whose float32 rounding, amplified over its depth, exceeds 1e-4 for any two
implementations: there the agreement to expect is ``ORT-f64`` no larger than ``PT-f64``.

    python3 bench/bench_onnx_precision.py [--nets yolov4 yolov4-tiny] [--threads 2] [--omp-passive]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from common import SHARED, machine_lines, passive_omp, set_threads, table

import darknetpy
from darknetpy.inference.export import export_onnx
from darknetpy.inference.inference_model import fuse_conv_batchnorm
from darknetpy.model.layers import INPUT
from darknetpy.model.network import Network

GOLDEN = SHARED / "golden"


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(u.astype(np.float64) - v.astype(np.float64)).max()) for u, v in zip(a, b))


def _network(name: str, dtype: torch.dtype = torch.float32) -> Network:
    net = Network.from_cfg(GOLDEN / name / "net.cfg")
    net.load_weights(GOLDEN / name / "net.weights")
    return net.to(dtype).eval()


def _worst_layer(net: Network, x: np.ndarray, session_for, tmp: Path) -> float:
    """The worst layer of the ONNX graph, each given the inputs onnxruntime computed for it."""
    outs = session_for(export_onnx(net, tmp / "all.onnx", all_layers=True)).run(None, {"images": x})
    worst = 0.0
    fused = fuse_conv_batchnorm(net)
    with torch.inference_mode():
        for i, layer in enumerate(fused.layers):
            inputs = [torch.from_numpy(x if s == INPUT else outs[s]) for s in layer.sources]
            ref = layer(*inputs).numpy()
            worst = max(worst, float(np.abs(outs[i] - ref).max() / max(1.0, np.abs(ref).max())))
    return worst


def measure(name: str, threads: int) -> list[object]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads

    def session_for(path: Path) -> ort.InferenceSession:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    net = _network(name)
    x = np.load(GOLDEN / name / "input.npy")[None]
    with tempfile.TemporaryDirectory() as tmp:
        onnx_heads = session_for(export_onnx(net, Path(tmp) / "m.onnx")).run(None, {"images": x})
        worst_layer = _worst_layer(net, x, session_for, Path(tmp))
    model = darknetpy.load(GOLDEN / name / "net.cfg", GOLDEN / name / "net.weights", device="cpu")
    t = torch.from_numpy(x)
    with torch.inference_mode():
        loaded = [h.numpy() for h in model(t)]
        onednn = [h.numpy() for h in net(t)]
        with torch.backends.mkldnn.flags(enabled=False):
            native = [h.numpy() for h in net(t)]
    net64 = _network(name, torch.float64)
    with torch.no_grad():
        exact = [h.numpy() for h in net64(t.double())]
    ort_pt = _max_diff(onnx_heads, loaded)
    return [
        name,
        len(net.layers),
        f"{max(float(np.abs(h).max()) for h in exact):.3g}",
        f"{ort_pt:.2e}",
        f"{_max_diff(onednn, native):.2e}",
        f"{_max_diff(onnx_heads, exact):.2e}",
        f"{_max_diff(loaded, exact):.2e}",
        f"{worst_layer:.1e}",
        "yes" if ort_pt <= 1e-4 else "no",
    ]


def main() -> None:
    passive_omp(sys.argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", nargs="*", help="golden network names (default: every detection network)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--omp-passive", action="store_true", help="OpenMP threads sleep at barriers (busy machines)")
    args = parser.parse_args()
    if not GOLDEN.is_dir():
        raise SystemExit(f"{GOLDEN}: not found; this measurement needs ../shared/golden beside the repository")
    set_threads(args.threads)
    warnings.simplefilter("ignore")  # the TorchScript exporter's notes
    names = args.nets or sorted(
        p.name for p in GOLDEN.iterdir() if (p / "dets.txt").is_file() and (p / "net.cfg").is_file()
    )
    print("\n".join(machine_lines(args.threads)))
    print("input: golden input.npy, batch 1; figures: max |difference| over the head outputs\n")
    rows = []
    for name in names:
        rows.append(measure(name, args.threads))
        print(f"  {name} done", flush=True)
    headers = ["network", "layers", "max|head|", "ORT-PT", "PT-PT", "ORT-f64", "PT-f64", "layer", "<=1e-4"]
    print()
    print(table(headers, rows))


if __name__ == "__main__":
    main()
