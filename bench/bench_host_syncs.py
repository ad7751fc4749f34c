"""How often one Darknet training iteration waits for the device, and how long it takes (issue 16).

Usage::

    python3 bench/bench_host_syncs.py                       # yolov4-tiny raccoon on the CPU
    python3 bench/bench_host_syncs.py --device cuda --cfg cfg/yolov4.cfg --size 608 \\
        --batch 64 --subdivisions 8 --iterations 5

For each timed iteration (after one warm-up) it prints: the Python-level reads of tensor values
(``item``, ``bool``, ``float``, ``int``, ``__index__``, ``tolist``, ``cpu``, ``numpy``, as
``tests/training/test_host_syncs.py`` counts them), on CUDA the synchronising CUDA calls
(``torch.cuda.set_sync_debug_mode("warn")``: implicit waits too, e.g. ``nonzero`` or a copy to the
host), and the seconds of ``_train_step`` + ``_update``. The batches are the loader's (``data``),
built before the clock starts.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from common import passive_omp  # noqa: E402

passive_omp([__file__, *sys.argv[1:]])

import torch  # noqa: E402

from darknetpy.training import distributed as D  # noqa: E402
from darknetpy.training.setup import prepare  # noqa: E402
from darknetpy.training.train import _train_step, _update  # noqa: E402

READS = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "cpu", "numpy")


def _counting(counts: Counter) -> dict:
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name, original):  # noqa: ANN001, ANN202
        def counting(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            counts[name] += 1
            return original(self, *args, **kwargs)

        return counting

    for name, original in originals.items():
        setattr(torch.Tensor, name, wrap(name, original))
    return originals


def _cfg(src: Path, tmp: Path, **keys: int) -> Path:
    text = src.read_text()
    for key, value in keys.items():
        text, n = re.subn(rf"(?m)^{key}\s*=\s*\d+", f"{key}={value}", text, count=1)
        if n != 1:
            raise SystemExit(f"bench_host_syncs: {src} has no {key}= line")
    path = tmp / src.name
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cfg", type=Path, default=REPO / "cfg" / "yolov4-tiny-raccoon.cfg")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "raccoon" / "raccoon.data")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, help="network width and height (default: the cfg's)")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--subdivisions", type=int)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--omp-passive", action="store_true",
                        help="OMP_WAIT_POLICY=PASSIVE (bench/common.passive_omp)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    tmp = Path(tempfile.mkdtemp(prefix="bench_host_syncs_"))
    keys = {k: v for k, v in (("width", args.size), ("height", args.size), ("batch", args.batch),
                              ("subdivisions", args.subdivisions)) if v}  # fmt: skip
    cfg = _cfg(args.cfg, tmp, **keys) if keys else args.cfg
    ctx = D.setup(args.device, None)
    run = prepare(ctx, cfg, args.data, None, clear=False, amp="off", workers=0, seed=0,
                  max_batches=1000, backup=tmp / "backup", map_epochs=4, strict=False,
                  progress=False, cache=False)  # fmt: skip
    w, h = run.plan(1)  # the first iteration's network size
    batches = [run.loader.get(i, w, h) for i in range(1, args.iterations + 2)]
    cuda = run.ctx.device.type == "cuda"
    print(f"{cfg.name} {w}x{h}, batch {run.c.batch} in {run.c.subdivisions} subdivisions, "
          f"{len(run.net.heads)} heads, on {run.ctx.device}")
    for k, batch in enumerate(batches):
        counts: Counter = Counter()
        originals = _counting(counts)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("warn")
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _update(run, _train_step(run, batch.images, batch.truth))
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
                torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
        syncs = sum("synchronizing" in str(w.message) for w in caught)
        label = "warm-up" if k == 0 else f"iteration {k}"
        print(f"  {label}: {sum(counts.values())} reads {dict(counts)}"
              + (f", {syncs} synchronising CUDA calls" if cuda else "")
              + f", {seconds:.3f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
