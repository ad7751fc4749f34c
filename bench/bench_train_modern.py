"""YOLOv8n training speed on the CPU: darknetpy against ultralytics 8.4.190, measured in one run.

Usage::

    python3 bench/bench_train_modern.py [--sizes 224 640] [--batch 16] [--threads 2] [--rounds 2]
        [--warmup 3] [--iterations 8] [--only trainer|step] [--omp-passive]

Two kinds of row per size, for each framework:

* ``trainer``: the framework's own training loop on the embedded raccoon set (160 images, 1 class),
  data loading included as each does it: darknetpy's ``darknetpy.training.train`` on
  ``cfg/yolov8n-raccoon.cfg`` (width/height set to the size, in a temporary copy); ultralytics'
  ``YOLO('yolov8n.yaml').train(...)`` (``workers=0``, which its trainer forces on the CPU anyway,
  ``amp=False``, ``val=False``, ``plots=False``, its other defaults: no image cache). An
  iteration's time is the interval between two consecutive iteration ends (darknetpy: its
  per-iteration log line; ultralytics: the ``on_train_batch_end`` callback); intervals that span
  an ultralytics epoch end (checkpoint saving, scheduler) are left out. Both run ``epochs=E`` with
  the same E and no ``close_mosaic`` so their warm-up (accumulation 1 -> 4) and mosaic are alike;
  AdamW for both (what ``optimizer=auto`` picks for this run length).
* ``model step``: the same random batch (uint8 noise, 3 boxes an image) through each framework's
  network: forward, loss, backward, gradient clipping (10), AdamW step, zero_grad, EMA update - an
  optimizer step every iteration, no data loading. The difference between the rows is data + loop.

Each framework runs in its own process (ultralytics with ``$ULTRALYTICS_PYTHON`` or
``~/venv-ultralytics/bin/python``; its column is skipped with a note when neither exists), both
with ``OMP_NUM_THREADS`` and ``torch.set_num_threads`` = ``--threads`` (ultralytics'
``select_device`` sets ``min(8, cores - 1)`` threads, 1 on a 2-core machine; the bench sets it
back in ``on_train_start``).
Rounds alternate the frameworks (A B A B ...) so a change in machine load hits both alike; the
table gives the median over every timed iteration of every round, after ``--warmup`` untimed ones
per process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import cpu_model, passive_omp, table  # bench/common.py (this script's folder)

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RACCOON = REPO / "data" / "raccoon"
CFG = REPO / "cfg" / "yolov8n-raccoon.cfg"
RESULT = "BENCH_RESULT "
EPOCH_ITERS = 10  # raccoon: 160 training images / batch 16


# ---------------------------------------------------------------- files both frameworks read
def ultralytics_python() -> Path | None:
    env = os.environ.get("ULTRALYTICS_PYTHON")
    path = Path(env) if env else Path.home() / "venv-ultralytics" / "bin" / "python"
    return path if path.exists() else None


def raccoon_yaml(tmp: Path) -> Path:
    """The raccoon set laid out as ultralytics wants it (images/ and labels/ side by side, links to
    the repository's files), so its label cache is written in ``tmp``, not in the repository."""
    root = tmp / "raccoon-ul"
    for split, listing in (("train", "train.txt"), ("val", "valid.txt")):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for line in (RACCOON / listing).read_text().split():
            image = RACCOON / line
            (root / "images" / split / image.name).symlink_to(image)
            (root / "labels" / split / f"{image.stem}.txt").symlink_to(image.with_suffix(".txt"))
    yaml = tmp / "raccoon.yaml"
    yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: raccoon\n")
    return yaml


def sized_cfg(tmp: Path, size: int, batch: int, epochs: int) -> Path:
    """``cfg/yolov8n-raccoon.cfg`` at ``size`` with ``batch``, ``epochs`` and no close_mosaic."""
    text = CFG.read_text()
    for key, value in (("width", size), ("height", size), ("batch", batch), ("subdivisions", 1),
                       ("epochs", epochs)):
        text, n = re.subn(rf"(?m)^{key}\s*=.*$", f"{key}={value}", text, count=1)
        if not n:
            text = text.replace("[net]\n", f"[net]\n{key}={value}\n", 1)
    text = text.replace("[net]\n", "[net]\nclose_mosaic=0\n", 1)
    path = tmp / f"yolov8n-raccoon-{size}.cfg"
    path.write_text(text)
    return path


def random_batch(tmp: Path, size: int, batch: int, seed: int = 0) -> Path:
    """The model-step batch: uint8 noise images and 3 boxes (x, y, w, h, class 0) per image."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch, 3, size, size), dtype=np.uint8)
    wh = rng.uniform(0.05, 0.4, (batch, 3, 2))
    xy = rng.uniform(wh / 2, 1 - wh / 2)
    truth = np.concatenate([xy, wh, np.zeros((batch, 3, 1))], -1).astype(np.float32)
    path = tmp / f"batch-{size}.npz"
    np.savez(path, images=images, truth=truth)
    return path


# ---------------------------------------------------------------- workers (one process each)
class _LineClock:
    """stdout stand-in: the time each darknetpy iteration line (`` N: loss, ...``) was printed."""

    def __init__(self) -> None:
        self.buffer, self.times = "", []

    def write(self, text: str) -> int:
        self.buffer += text
        *lines, self.buffer = self.buffer.split("\n")
        now = (time.perf_counter(), time.process_time())
        for line in lines:
            if re.match(r"^\s*\d+: [-\d.]+, ", line):
                self.times.append(now)
        return len(text)

    def flush(self) -> None:
        pass


def _intervals(ends: list[tuple[float, float]], warmup: int) -> dict[str, list[float]]:
    """Wall and CPU seconds between consecutive ``(perf_counter, process_time)`` marks, the first
    ``warmup`` intervals left out."""
    pairs = list(zip(ends, ends[1:]))[warmup:]
    return {"seconds": [b[0] - a[0] for a, b in pairs], "cpu": [b[1] - a[1] for a, b in pairs]}


def worker_darknetpy_trainer(a: argparse.Namespace) -> dict:
    import contextlib

    import torch

    from darknetpy.training.train import train

    torch.set_num_threads(a.threads)
    clock = _LineClock()
    with contextlib.redirect_stdout(clock):
        train(a.cfg, RACCOON / "raccoon.data", max_batches=a.warmup + a.iterations + 1, seed=0,
              backup=Path(a.tmp) / f"backup-{os.getpid()}", chart=False)
    return {**_intervals(clock.times, a.warmup), "threads": torch.get_num_threads()}


def worker_ultralytics_trainer(a: argparse.Namespace) -> dict:
    import torch
    from ultralytics import YOLO

    class Enough(Exception):
        pass

    ends: list[tuple[int, float, float]] = []
    seen = {"threads": 0}
    wanted = a.warmup + a.iterations

    def on_train_start(trainer) -> None:
        torch.set_num_threads(a.threads)  # select_device set min(8, cores - 1)

    def on_train_batch_end(trainer) -> None:
        ends.append((trainer.epoch, time.perf_counter(), time.process_time()))
        seen["threads"] = torch.get_num_threads()
        if sum(e0[0] == e1[0] for e0, e1 in zip(ends, ends[1:])) >= wanted:
            raise Enough

    model = YOLO("yolov8n.yaml")
    model.add_callback("on_train_start", on_train_start)
    model.add_callback("on_train_batch_end", on_train_batch_end)
    try:
        model.train(data=a.data, epochs=a.epochs, imgsz=a.size, batch=a.batch, device="cpu",
                    workers=0, amp=False, plots=False, val=False, pretrained=False, close_mosaic=0,
                    optimizer="auto", seed=0, project=a.tmp, name=f"ul-{os.getpid()}",
                    exist_ok=True, verbose=False)
    except Enough:
        pass
    pairs = [(e0, e1) for e0, e1 in zip(ends, ends[1:]) if e0[0] == e1[0]][a.warmup:]
    return {"seconds": [e1[1] - e0[1] for e0, e1 in pairs],
            "cpu": [e1[2] - e0[2] for e0, e1 in pairs], "threads": seen["threads"]}


def worker_darknetpy_step(a: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from darknetpy.model.network import Network
    from darknetpy.training.recipe_init import init_from_scratch, set_recipe_bn_momentum
    from darknetpy.training.recipe_loop import plan_recipe
    from darknetpy.training.recipes import RecipeEMA, build_optimizer, param_groups

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    data = np.load(a.batch_file)
    x = torch.from_numpy(data["images"]).float().div_(255)
    truth = torch.from_numpy(data["truth"])
    net = Network.from_cfg(a.cfg)
    r = net.net.recipe
    plan = plan_recipe(net.net, r, 160, 1)
    init_from_scratch(net, r)
    set_recipe_bn_momentum(net, r.bn_momentum)
    opt = build_optimizer(param_groups(net), plan.optimizer, plan.lr0, plan.momentum, plan.decay,
                          r.nesterov)
    ema = RecipeEMA(net, r.ema_decay, r.ema_tau)
    params = [p for p in net.parameters() if p.requires_grad]
    net.train()

    def step() -> None:
        loss = net.compute_loss(net.head_inputs(x), truth)
        loss.total.backward()
        torch.nn.utils.clip_grad_norm_(params, max_norm=r.clip_grad)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update()

    return {**_timed(step, a.warmup, a.iterations), "threads": torch.get_num_threads(),
            "optimizer": f"{plan.optimizer} lr {plan.lr0:g}"}


def worker_ultralytics_step(a: argparse.Namespace) -> dict:
    import types

    import numpy as np
    import torch
    from ultralytics.cfg import get_cfg
    from ultralytics.engine.trainer import BaseTrainer
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils.torch_utils import ModelEMA

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    data = np.load(a.batch_file)
    truth = torch.from_numpy(data["truth"])
    n, t = truth.shape[:2]
    rows = truth.reshape(-1, 5)
    keep = rows[:, 2:4].sum(1) > 0  # zero rows pad the darknetpy truth
    batch = {"img": torch.from_numpy(data["images"]).float().div_(255),
             "batch_idx": torch.arange(n).repeat_interleave(t).float()[keep],
             "cls": rows[keep, 4:5], "bboxes": rows[keep, :4]}
    model = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    model.args = get_cfg()
    stub = types.SimpleNamespace(args=types.SimpleNamespace(lr0=0.01, optimizer="auto",
                                                            warmup_bias_lr=0.1), data={"nc": 1})
    iterations = math.ceil(160 / 64) * a.epochs  # what the trainer passes: AdamW below 10000
    opt = BaseTrainer.build_optimizer(stub, model, "auto", 0.01, 0.937, 5e-4, iterations)
    ema = ModelEMA(model)
    model.train()

    def step() -> None:
        loss, _ = model.loss(batch)
        loss.sum().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
        opt.step()
        opt.zero_grad()
        ema.update(model)

    return {**_timed(step, a.warmup, a.iterations), "threads": torch.get_num_threads(),
            "optimizer": f"{type(opt).__name__} lr {opt.param_groups[0]['lr']:g}"}


def _timed(step, warmup: int, iterations: int) -> dict[str, list[float]]:
    for _ in range(warmup):
        step()
    ends = [(time.perf_counter(), time.process_time())]
    for _ in range(iterations):
        step()
        ends.append((time.perf_counter(), time.process_time()))
    return _intervals(ends, 0)


WORKERS = {("darknetpy", "trainer"): worker_darknetpy_trainer,
           ("ultralytics", "trainer"): worker_ultralytics_trainer,
           ("darknetpy", "step"): worker_darknetpy_step,
           ("ultralytics", "step"): worker_ultralytics_step}


def run_worker(a: argparse.Namespace) -> None:
    framework, kind = a.worker.split(":")
    real = sys.stdout
    result = WORKERS[framework, kind](a)
    result["load"] = os.getloadavg()[0]
    real.write(RESULT + json.dumps(result) + "\n")
    real.flush()


# ---------------------------------------------------------------- the parent
Samples = dict[tuple[int, str, str], dict[str, list[float]]]  # (size, kind, framework) -> times


def launch(python: str, framework: str, kind: str, opts: list[str], threads: int,
           cwd: Path) -> dict:
    """One worker process; its result line (wall and CPU seconds per timed iteration, ...)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=str(REPO), YOLO_VERBOSE="False")
    cmd = [python, str(Path(__file__).resolve()), "--worker", f"{framework}:{kind}", *opts]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode or not lines:
        tail = (done.stdout + done.stderr)[-3000:]
        raise SystemExit(f"{framework} {kind} failed (exit {done.returncode}):\n{tail}")
    result = json.loads(lines[-1][len(RESULT):])
    result["wall"] = time.perf_counter() - start
    return result


def measure(a: argparse.Namespace, frameworks: list[tuple[str, str]]) -> Samples:
    """Every (size, kind) row: ``--rounds`` rounds, each one process per framework in turn."""
    kinds = [k for k in ("trainer", "step") if a.only in (None, k)]
    needed = a.warmup + a.iterations + 1
    epochs = max(2, math.ceil((needed + math.ceil(needed / EPOCH_ITERS)) / EPOCH_ITERS))
    samples: Samples = {}
    with tempfile.TemporaryDirectory(prefix="bench-train-modern-") as tmp_name:
        tmp = Path(tmp_name)
        data = raccoon_yaml(tmp)
        for size in a.sizes:
            opts = ["--cfg", str(sized_cfg(tmp, size, a.batch, epochs)), "--data", str(data),
                    "--tmp", str(tmp), "--batch-file", str(random_batch(tmp, size, a.batch)),
                    "--size", str(size), "--batch", str(a.batch), "--epochs", str(epochs),
                    "--threads", str(a.threads), "--warmup", str(a.warmup),
                    "--iterations", str(a.iterations)]
            for kind in kinds:
                for rnd in range(a.rounds):
                    for framework, python in frameworks:
                        r = launch(python, framework, kind, opts, a.threads, tmp)
                        got = samples.setdefault((size, kind, framework),
                                                 {"seconds": [], "cpu": []})
                        got["seconds"] += r["seconds"]
                        got["cpu"] += r["cpu"]
                        extra = f", {r['optimizer']}" if "optimizer" in r else ""
                        print(f"  {size} {kind:7} {framework:11} round {rnd + 1}: median "
                              f"{_median(r['seconds']):.3f} s/it (cpu {_median(r['cpu']):.3f}) "
                              f"over {len(r['seconds'])}, {r['threads']} threads, load "
                              f"{r['load']:.2f}, process {r['wall']:.0f} s{extra}", flush=True)
    return samples


def report(samples: Samples, batch: int) -> str:
    rows = []
    for (size, kind, framework), got in samples.items():
        secs, med, cpu = got["seconds"], _median(got["seconds"]), _median(got["cpu"])
        ref = samples.get((size, kind, "ultralytics"))
        ratio = f"{_median(ref['seconds']) / med:.2f}x" if ref else "-"
        cpu_ratio = f"{_median(ref['cpu']) / cpu:.2f}x" if ref else "-"
        what = "trainer" if kind == "trainer" else "model step"
        rows.append(["yolov8n", size, batch, framework, what, f"{med:.3f}", f"{min(secs):.3f}",
                     f"{batch / med:.1f}", ratio, f"{cpu:.3f}", cpu_ratio, len(secs)])
    return "\n".join([
        table(["model", "size", "batch", "framework", "what", "s/iteration", "best s", "images/s",
               "ratio", "cpu s/it", "cpu ratio", "n"], rows),
        "ratio: ultralytics' median s/iteration / this row's (above 1: faster than ultralytics);",
        "cpu s/it: CPU seconds of the process per iteration, all threads (less sensitive to other",
        "jobs than the wall time when --omp-passive keeps idle OpenMP threads from spinning)"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 640])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="A B rounds (a process per framework)")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations per process")
    p.add_argument("--iterations", type=int, default=8, help="timed iterations per process")
    p.add_argument("--only", choices=["trainer", "step"], help="one kind of row")
    p.add_argument("--frameworks", nargs="+", choices=["darknetpy", "ultralytics"],
                   default=["darknetpy", "ultralytics"])
    p.add_argument("--omp-passive", action="store_true",
                   help="OMP_WAIT_POLICY=PASSIVE (a busy machine)")
    for name in ("--worker", "--cfg", "--data", "--tmp", "--batch-file"):  # the parent passes these
        p.add_argument(name, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return run_worker(a)

    passive_omp(sys.argv)
    import torch

    ul = ultralytics_python()
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    policy = os.environ.get("OMP_WAIT_POLICY", "(unset)")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; load average before {load}\n"
          f"torch {torch.__version__}; {a.threads} threads in both (OMP_NUM_THREADS and "
          f"torch.set_num_threads); OMP_WAIT_POLICY={policy}\n"
          f"yolov8n, batch {a.batch}; {a.rounds} rounds (A B per round), {a.warmup} warm-up + "
          f"{a.iterations} timed iterations per process", flush=True)
    if ul is None:
        print("ultralytics: skipped (neither $ULTRALYTICS_PYTHON nor ~/venv-ultralytics/bin/python "
              "exists)")
    else:
        code = "import ultralytics; print(ultralytics.__version__)"
        version = subprocess.run([str(ul), "-c", code], capture_output=True, text=True).stdout
        print(f"ultralytics {version.strip() or '?'} ({ul})", flush=True)
    frameworks = [(name, python) for name, python in
                  (("darknetpy", sys.executable), ("ultralytics", str(ul) if ul else None))
                  if python and name in a.frameworks]
    samples = measure(a, frameworks)
    print()
    print(report(samples, a.batch))
    print(f"load average after {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


def _median(values: list[float]) -> float:
    s = sorted(values)
    return (s[(len(s) - 1) // 2] + s[len(s) // 2]) / 2


if __name__ == "__main__":
    main()
