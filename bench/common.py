"""What the bench scripts share: machine facts, interleaved timing, tables, and test networks.

The machine has no official ``.weights`` files, so :func:`bench_files` writes one per cfg and size
with random convolution weights whose batch-norm statistics are *calibrated* (one training-mode
forward on real photos, so every layer's activations have mean 0 and variance 1 as in a trained
network) and whose head biases put a realistic number of boxes above the 0.25 threshold (about
0.2 % of the anchors, a few classes each). darknetpy and OpenCV then load the same file.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SHARED = Path(os.environ.get("DARKNETPY_SHARED", REPO.parent / "shared"))
CACHE = Path(os.environ.get("DARKNETPY_BENCH_CACHE", BENCH / ".cache"))  # gitignored (*.weights)
sys.path.insert(0, str(REPO))

from darknetpy.inference.backend_cache import cpu_model  # noqa: E402  (bench tables name the CPU)

IMAGES = ("dog.jpg", "horses.jpg", "person.jpg", "giraffe.jpg", "eagle.jpg", "scream.jpg")
OBJECT_FRACTION = 0.002  # anchors per head whose objectness exceeds 0.25 on the photos


# ---------------------------------------------------------------- machine
def machine_lines(threads: int | None = None) -> list[str]:
    """CPU model, cores, load, versions: the header every table starts with."""
    import cv2

    lines = [
        (f"machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} "
         f"{platform.release()}, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}"),
        (f"versions: python {platform.python_version()}, torch {torch.__version__}, "
         f"numpy {np.__version__}, opencv {cv2.__version__}"),
        (f"threads: torch {torch.get_num_threads() if threads is None else threads}, "
         f"opencv {cv2.getNumThreads()}; "
         f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}"),
    ]
    if torch.cuda.is_available():
        lines.append(f"gpu: {torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}")
    return lines


def passive_omp(argv: list[str]) -> None:
    """Re-run this script with ``OMP_WAIT_POLICY=PASSIVE`` (``--omp-passive``): OpenMP threads sleep
    instead of spinning at barriers. On a machine whose cores are busy with other work, spinning
    threads wait for descheduled partners and PyTorch's 2-thread times inflate 2-5x; on an idle
    machine the default (spinning) is as fast or faster. Must be set before torch loads OpenMP."""
    if "--omp-passive" in argv and os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.execv(sys.executable, [sys.executable, *argv])


def set_threads(n: int) -> None:
    import cv2

    torch.set_num_threads(n)
    cv2.setNumThreads(n)


# ---------------------------------------------------------------- timing
def interleaved(contenders: dict[str, Callable[[], object]], repeat: int, warmup: int = 1,
                sync: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Seconds per call of each contender, timed round-robin (a, b, c, a, b, c, ...) so that a
    change in machine load hits all of them alike. ``warmup`` untimed rounds first."""
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
    if sync:
        sync()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            if sync:
                sync()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table, columns right-aligned except the first."""
    text = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in text) for i in range(len(headers))]
    out = []
    for n, row in enumerate(text):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


# ---------------------------------------------------------------- test networks
def sized_cfg(name: str, size: int, batch: int = 1) -> Path:
    """``cfg/<name>.cfg`` with width = height = ``size`` and ``batch``/``subdivisions`` set, written
    to the bench cache (OpenCV and darknetpy read the same file)."""
    text = (REPO / "cfg" / f"{name}.cfg").read_text()
    text = re.sub(r"(?m)^width\s*=.*$", f"width={size}", text)
    text = re.sub(r"(?m)^height\s*=.*$", f"height={size}", text)
    text = re.sub(r"(?m)^batch\s*=.*$", f"batch={batch}", text)
    text = re.sub(r"(?m)^subdivisions\s*=.*$", "subdivisions=1", text)
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{name}-{size}.cfg"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def build(cfg: Path):
    from darknetpy.model.network import build_network

    return build_network(cfg, quiet=True)


def photos(size: int, count: int = 2, opencv: bool = False) -> torch.Tensor:
    """(count, 3, size, size) float RGB inputs: Darknet's sample photos stretched to ``size`` by
    Darknet's ``resize_image``, or (``opencv``) as ``cv2.dnn.blobFromImage`` does it."""
    import cv2

    from darknetpy.data.image import load_image, resize_image, to_chw_float

    out = []
    for name in IMAGES[:count]:
        path = SHARED / "images" / name
        if not path.exists():  # no ../shared: a smooth random image
            rng = np.random.default_rng(len(out))
            out.append(resize_image(rng.random((3, 8, 8), dtype=np.float32), size, size))
        elif opencv:
            rgb = cv2.resize(load_image(path), (size, size), interpolation=cv2.INTER_LINEAR)
            out.append(to_chw_float(rgb))
        else:
            out.append(resize_image(to_chw_float(load_image(path)), size, size))
    return torch.from_numpy(np.stack(out))


def test_image(name: str = "dog.jpg") -> np.ndarray:
    """A BGR uint8 photo as ``cv2.imread`` gives it (768x576 dog.jpg by default)."""
    import cv2

    path = SHARED / "images" / name
    image = cv2.imread(str(path)) if path.exists() else None
    if image is None:
        rng = np.random.default_rng(0)
        image = cv2.resize(rng.integers(0, 255, (9, 12, 3), dtype=np.uint8), (768, 576))
    return image


def calibrate(net, images: torch.Tensor, object_fraction: float = OBJECT_FRACTION) -> None:
    """Make random weights behave like trained ones on ``images``.

    1. batch norm: running mean/variance := the statistics of one training-mode forward
       (layer by layer, as every BN sees the already calibrated layers before it);
    2. the linear convolution before each ``[yolo]`` head: outputs scaled to unit variance, box
       channels centred, objectness shifted so ``object_fraction`` of the anchors exceed 0.25.
    """
    from darknetpy.model.layers.conv import Conv

    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    saved = [(bn.momentum, bn.track_running_stats) for bn in bns]
    for bn in bns:
        bn.momentum = 1.0  # running stats := this batch's statistics
    net.train()
    with torch.no_grad():
        outputs = net.forward_layers(images)  # (Network.head_inputs drops early heads' inputs)
    heads = {i: outputs[net.layers[i].sources[0]] for i in net.heads}
    del outputs
    net.eval()
    for bn, (momentum, _) in zip(bns, saved):
        bn.momentum = momentum
    with torch.no_grad():
        for index, x in heads.items():
            head = net.layers[index]
            conv = net.layers[head.sources[0]]
            if not isinstance(conv, Conv) or conv.bn is not None or conv.conv.bias is None:
                continue
            o = head.options
            entries = x.shape[1] // o.num
            y = x.transpose(0, 1).reshape(x.shape[1], -1)  # head input = conv output (linear)
            mean, std = y.mean(1), y.std(1).clamp_min(1e-6)
            conv.conv.weight.div_(std.view(-1, 1, 1, 1))
            bias = (conv.conv.bias - mean) / std
            z = ((y - mean[:, None]) / std[:, None]).view(o.num, entries, -1)
            obj = z[:, 4].flatten()
            shift = torch.quantile(obj, 1 - object_fraction) - float(np.log(1 / 3))  # z - shift > logit(.25)
            bias.view(o.num, entries)[:, 4] -= shift
            bias.view(o.num, entries)[:, 5:] -= 2.0  # class probabilities ~0.15: a few per box
            conv.conv.bias.copy_(bias)


def bench_files(name: str, size: int = 416, *, quiet: bool = False) -> tuple[Path, Path]:
    """(cfg, weights) for ``cfg/<name>.cfg`` at ``size``: calibrated random weights written by
    darknetpy's ``write_weights`` (kept in the bench cache; delete it to regenerate)."""
    cfg = sized_cfg(name, size)
    weights = CACHE / f"{name}-{size}.weights"
    if weights.exists() and weights.stat().st_mtime >= cfg.stat().st_mtime:
        return cfg, weights
    if not quiet:
        print(f"writing calibrated random weights {weights} ...", flush=True)
    torch.manual_seed(0)
    net = build(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # both runtimes' inputs: Darknet's resize (darknetpy) and OpenCV's (blobFromImage)
        calibrate(net, torch.cat([photos(size, 2), photos(size, 2, opencv=True)]))
    net.save_weights(weights)
    return cfg, weights


def rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux ``/proc/self/statm``)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (``ru_maxrss``, KiB on Linux) in MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
