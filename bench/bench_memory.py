"""Memory: RSS over a long training run (flat after warm-up?) and the peak RSS of inference.

Usage::

    python3 bench/bench_memory.py [--iterations 200] [--size 128] [--batch 16] [--every 20]
                                  [--skip-train] [--skip-inference]

Training: the real loop pieces of :mod:`darknetpy.training.train` (as ``bench/bench_train.py`` uses them:
load the iteration's batch with augmentation and the image cache, forward, Darknet's loss,
backward, update) on ``cfg/yolov4-tiny-raccoon.cfg`` at ``--size`` with the embedded
``data/raccoon``, ``--iterations`` iterations; the RSS is printed every ``--every`` iterations and
the growth after warm-up (the first 20% of the run) is reported.

Inference: in a fresh process per row, the RSS after ``import darknetpy``, after loading the model
(``darknetpy.inference.inference_model.load``: unfused network + fused copy), and the peak during 3 forward passes
at batch 1 (``/proc/self/clear_refs`` resets the peak first), for yolov4-tiny and yolov4 at 416.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from common import REPO, bench_files, machine_lines, passive_omp, photos, rss_mib, table

FLAT_MIB = 25.0  # growth after warm-up below this (or 2%) counts as flat


# ---------------------------------------------------------------- training
def train_rss(size: int, batch: int, iterations: int, every: int) -> list[tuple[int, float, float]]:
    """(iteration, RSS MiB, seconds per iteration) every ``every`` iterations."""
    from darknetpy.training import distributed as D
    from darknetpy.training.setup import prepare
    from darknetpy.training.train import _train_step, _update

    text = (REPO / "cfg" / "yolov4-tiny-raccoon.cfg").read_text()
    for key, value in (("width", size), ("height", size), ("batch", batch), ("subdivisions", 1),
                       ("max_batches", max(iterations + 10, 100))):
        text = re.sub(rf"(?m)^{key}\s*=.*$", f"{key}={value}", text)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "yolov4-tiny-raccoon.cfg"
        cfg.write_text(text)
        ctx = D.setup("cpu")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = prepare(ctx, cfg, REPO / "data" / "raccoon" / "raccoon.data", None,
                          clear=False, amp="off", workers=0, seed=0, max_batches=None,
                          backup=Path(tmp) / "b", map_epochs=4, strict=False, progress=False,
                          cache=True)
        run.say = lambda line: None
        batches = run.loader.iterate(1, size=run.plan)
        start = time.perf_counter()
        rows.append((0, rss_mib(), 0.0))
        for i in range(1, iterations + 1):
            b = next(batches)
            run.net.train()
            _update(run, _train_step(run, b.images, b.truth))
            if i % every == 0 or i == iterations:
                now = time.perf_counter()
                rows.append((i, rss_mib(), (now - start) / (i - rows[-1][0])))
                start = now
                print(f"  iteration {i:5d}: RSS {rows[-1][1]:8.1f} MiB, "
                      f"{rows[-1][2]:.2f} s/iteration", flush=True)
        batches.close()
    return rows


# ---------------------------------------------------------------- inference (child process)
def _status(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def inference_child(name: str, variant: str) -> dict[str, float]:
    torch.set_num_threads(2)
    import darknetpy.inference.inference_model as dinf
    from darknetpy.model.fastconv import prepack_convolutions

    cfg, weights = bench_files(name, 416, quiet=True)
    x = photos(416, 1)
    gc.collect()
    base = _status("VmRSS")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = dinf.load(cfg, weights)
    if variant == "prepacked":
        prepack_convolutions(model.fused)
    run = model
    if variant == "unfused":
        net = model.network
        del model
        gc.collect()

        def run(t: torch.Tensor) -> object:
            with torch.inference_mode():
                return net(t)

    loaded = _status("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        exact = True
    except OSError:
        exact = False
    for _ in range(3):
        run(x)
    peak = _status("VmHWM") if exact else _status("VmRSS")
    return {"base": base, "loaded": loaded, "peak": peak, "exact": exact}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-inference", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "VARIANT"))
    parser.add_argument("--omp-passive", action="store_true",
                        help="re-run with OMP_WAIT_POLICY=PASSIVE (for a busy machine)")
    args = parser.parse_args()
    passive_omp(sys.argv)
    if args.child:
        print(json.dumps(inference_child(*args.child)))
        return 0
    print("\n".join(machine_lines()))

    if not args.skip_inference:
        rows = []
        for name in ("yolov4-tiny", "yolov4"):
            _, weights = bench_files(name, 416)
            for variant in ("unfused", "load()", "prepacked"):
                out = subprocess.run([sys.executable, __file__, "--child", name, variant],
                                     check=True, capture_output=True, text=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                rows.append([f"{name} {variant}", weights.stat().st_size / 2**20, r["base"],
                             r["loaded"] - r["base"], r["peak"] - r["loaded"], r["peak"]])
        print("\ninference at 416, batch 1, fresh process per row (MiB):")
        print(table(["model", "weights file", "RSS after import", "+ model", "+ forward peak",
                     "peak RSS"], rows))

    if not args.skip_train:
        print(f"\ntraining yolov4-tiny-raccoon at {args.size}x{args.size}, batch {args.batch}, "
              f"{args.iterations} iterations, RSS every {args.every}:")
        rows = train_rss(args.size, args.batch, args.iterations, args.every)
        warm = max(1, args.iterations // 5)
        after = [r for r in rows if r[0] >= warm]
        third = max(1, len(after) // 3)
        early = statistics.median(r[1] for r in after[:third])
        late = statistics.median(r[1] for r in after[-third:])
        growth = late - early
        span = after[-1][0] - after[0][0]
        flat = growth < max(FLAT_MIB, 0.02 * early)
        print(table(["iteration", "RSS MiB", "s/iteration"], [list(r) for r in rows]))
        print(f"after warm-up (iteration {after[0][0]} -> {after[-1][0]}): median RSS of the last "
              f"third {late:.1f} MiB vs the first third {early:.1f} MiB: {growth:+.1f} MiB "
              f"({growth / max(span, 1) * 100:+.1f} MiB per 100 iterations); range "
              f"{min(r[1] for r in after):.1f}-{max(r[1] for r in after):.1f} MiB: "
              f"{'FLAT' if flat else 'GROWS'}")
    print(f"\nload average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
