"""``.weights`` loading: time and peak memory, side by side with ``torch.load`` of the same tensors.

Usage::

    python3 bench/bench_weights.py [--model yolov4] [--size 416] [--repeat 5]

The file is the yolov4-size (257.7 MB) calibrated random weights of :mod:`bench.common`, and a
``torch.save`` of the same network's ``state_dict`` (``bench/.cache/<model>-<size>.pt``). Both are
read once first, so every measurement reads from the page cache. Each measurement runs in a fresh
subprocess (interleaved rounds, medians), which:

1. builds the network from the cfg (``build s``: construction alone, darknet's random init
   included; ``build(meta) s``: the same on ``torch.device("meta")`` + ``to_empty``, i.e. what
   construction costs without initialising parameters that the file overwrites anyway);
2. resets the kernel's peak-RSS counter (``/proc/self/clear_refs``) and takes the current RSS as
   the baseline;
3. loads: ``load_weights`` (darknetpy, as it ships), ``readinto (proposed)`` (the same file read
   straight into each parameter's memory, no intermediate array), ``torch.load`` +
   ``load_state_dict``, ``torch.load(mmap)`` + ``load_state_dict``;
4. reports the load time and the peak RSS above the baseline.

Targets (issue 5): < 0.3 s from the page cache, peak RSS during loading < 1.5x the file size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from common import CACHE, bench_files, machine_lines, median, passive_omp, table

MODES = ("load_weights", "readinto (proposed)", "torch.load", "torch.load(mmap)")
TARGET_SECONDS = 0.3
TARGET_RSS = 1.5


# ---------------------------------------------------------------- the child process
def _status(key: str) -> float:
    """VmRSS / VmHWM of this process in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
        return True
    except OSError:
        return False


def read_weights_direct(path: Path, net) -> None:
    """The proposed loader: each tensor's bytes read straight into its storage (``readinto`` on
    the tensor's own memory), no temporary array and no second copy. Same file layout as
    :func:`darknetpy.model.weights.read_weights` for networks without ``flipped``/``dontloadscales``
    (checked against it by the parent process)."""
    from darknetpy.model.weights import WeightsHeader

    with open(path, "rb", buffering=0) as f:
        WeightsHeader.read(f, path)
        with torch.no_grad():
            for layer in net.layers:
                for tensor in layer.darknet_tensors():
                    view = memoryview(tensor.detach().numpy()).cast("B")
                    if f.readinto(view) != view.nbytes:
                        raise EOFError(f"{path}: truncated in {layer.where()}")


def child(mode: str, cfg: Path, weights: Path, state: Path, meta: bool) -> dict[str, float]:
    from darknetpy.model.network import build_network

    torch.set_num_threads(1)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if meta:
            with torch.device("meta"):
                net = build_network(cfg, quiet=True)
            net = net.to_empty(device="cpu")
        else:
            net = build_network(cfg, quiet=True)
    build = time.perf_counter() - start
    reset = _reset_peak()
    base = _status("VmRSS")
    start = time.perf_counter()
    if mode == "load_weights":
        net.load_weights(weights)
    elif mode == "readinto (proposed)":
        read_weights_direct(weights, net)
    elif mode == "torch.load":
        net.load_state_dict(torch.load(state, weights_only=True))
    elif mode == "torch.load(mmap)":
        net.load_state_dict(torch.load(state, weights_only=True, mmap=True))
    else:
        raise ValueError(mode)
    seconds = time.perf_counter() - start
    peak = _status("VmHWM") if reset else _status("VmRSS")
    return {"build": build, "load": seconds, "base_mib": base, "peak_mib": peak,
            "ru_maxrss_mib": __import__("resource").getrusage(0).ru_maxrss / 1024,
            "peak_exact": reset}


# ---------------------------------------------------------------- the parent
def run_child(mode: str, cfg: Path, weights: Path, state: Path, meta: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--cfg", str(cfg), "--weights", str(weights),
           "--state", str(state)] + (["--meta"] if meta else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def check_direct(cfg: Path, weights: Path) -> bool:
    """The proposed loader fills the same values as ``load_weights``."""
    from darknetpy.model.network import build_network

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = build_network(cfg, quiet=True)
        b = build_network(cfg, quiet=True)
    a.load_weights(weights)
    read_weights_direct(weights, b)
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov4")
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--child")
    parser.add_argument("--cfg", type=Path)
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--state", type=Path)
    parser.add_argument("--meta", action="store_true")
    parser.add_argument("--omp-passive", action="store_true",
                        help="re-run with OMP_WAIT_POLICY=PASSIVE (for a busy machine)")
    args = parser.parse_args()
    passive_omp(sys.argv)
    if args.child:
        print(json.dumps(child(args.child, args.cfg, args.weights, args.state, args.meta)))
        return 0

    print("\n".join(machine_lines(threads=1)))
    cfg, weights = bench_files(args.model, args.size)
    state = CACHE / f"{args.model}-{args.size}.pt"
    if not state.exists() or state.stat().st_mtime < weights.stat().st_mtime:
        from darknetpy.model.network import build_network

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = build_network(cfg, quiet=True)
        net.load_weights(weights)
        torch.save(net.state_dict(), state)
        del net
    for path in (weights, state):  # into the page cache
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    size_mb = weights.stat().st_size / 2**20
    print(f"\n{args.model} at {args.size}: {weights.name} {weights.stat().st_size / 1e6:.1f} MB "
          f"({size_mb:.1f} MiB), {state.name} {state.stat().st_size / 1e6:.1f} MB; "
          f"{args.repeat} fresh processes per row, interleaved")
    print(f"readinto (proposed) fills the same tensors as load_weights: "
          f"{check_direct(cfg, weights)}")

    results: dict[str, list[dict]] = {m: [] for m in MODES}
    meta_builds: list[float] = []
    for _ in range(args.repeat):
        for mode in MODES:
            results[mode].append(run_child(mode, cfg, weights, state))
        meta_builds.append(run_child("readinto (proposed)", cfg, weights, state, meta=True)["build"])
    rows = []
    ref = median([r["load"] for r in results["torch.load"]])
    for mode, runs in results.items():
        load = median([r["load"] for r in runs])
        delta = median([r["peak_mib"] - r["base_mib"] for r in runs])
        rows.append([mode, load, min(r["load"] for r in runs), f"{load / ref:.2f}",
                     delta, f"{delta / size_mb:.2f}"])
    print("\nloading into a built network (page cache):")
    print(table(["loader", "median s", "best s", "x torch.load", "peak RSS - base MiB",
                 "x file size"], rows))
    build = median([r["build"] for runs in results.values() for r in runs])
    print(f"\nnetwork construction: {build:.3f} s (darknet init), "
          f"{median(meta_builds):.3f} s on the meta device + to_empty (no init)")
    exact = all(r["peak_exact"] for runs in results.values() for r in runs)
    if not exact:
        print("(peak RSS: /proc/self/clear_refs unavailable, the peak is the RSS after loading)")
    shipped = median([r["load"] for r in results["load_weights"]])
    shipped_rss = median([r["peak_mib"] - r["base_mib"] for r in results["load_weights"]])
    print(f"\ntarget load < {TARGET_SECONDS} s: {shipped:.3f} s "
          f"{'HOLDS' if shipped < TARGET_SECONDS else 'MISSES'}; peak RSS < {TARGET_RSS}x file: "
          f"{shipped_rss / size_mb:.2f}x {'HOLDS' if shipped_rss / size_mb < TARGET_RSS else 'MISSES'}")
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
