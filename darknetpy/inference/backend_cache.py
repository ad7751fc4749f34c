"""Where a backend's model comes from and which backend ``auto`` picks: the cache of exported
models, ``auto``'s measurement, and :class:`BackendPlan` (what :func:`~.inference_model.load` runs).

* :func:`exported_model`: darknetpy's raw-head ONNX export (:func:`~.export.export_onnx`, dynamic
  batch) of a network, and for OpenVINO its IR, written once to :func:`cache_dir` under a hash of
  the cfg, every tensor, the input size and the versions that shape the file (atomic writes);
* :func:`choose_auto`: each installed backend timed on the network (:func:`measure`: warm-up, then
  the median of a few passes, round-robin), the fastest recorded in ``auto.json`` beside the
  models, per (cfg, input size, CPU model, threads, versions); a changed cfg is a new key.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import UsageError
from .backends import (
    BACKENDS,
    EXTRAS,
    BackendNote,
    Runner,
    _version,
    cpu_threads,
    default_backend,
    installed_backends,
    open_backend,
    require,
)
from .export import export_onnx

__all__ = [
    "AutoChoice",
    "BackendPlan",
    "auto_key",
    "cache_dir",
    "choose_auto",
    "exported_model",
    "measure",
    "model_key",
    "read_auto",
]

ONNX_OPSET = 17
AUTO_WARMUP = 2  # untimed passes per backend before timing (first-call allocations)
AUTO_PASSES = 5  # timed passes per backend, interleaved; the median decides
#: ``auto`` keeps torch unless a runtime is faster by more than this share (no export, no extra
#: runtime, for what measurement noise could give)
AUTO_MARGIN = 0.03
#: exported networks kept in the cache (the most recently used; a new weights file is a new one)
KEEP_MODELS = 8


def cache_dir() -> Path:
    """Where exported models and ``auto.json`` live: ``$DARKNETPY_CACHE``, else
    ``$XDG_CACHE_HOME/darknetpy`` (``~/.cache/darknetpy``)."""
    given = os.environ.get("DARKNETPY_CACHE")
    if given:
        return Path(given).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "darknetpy"


# ---------------------------------------------------------------- the cache
def _sha(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def model_key(network: Any, fuse: bool = True) -> str:
    """A hash of what the exported ONNX file depends on: the cfg, every tensor (weights and batch
    norm statistics), the input size, whether batch norm is folded, torch and darknetpy versions."""
    digest = hashlib.sha256()
    net = network.net
    head = f"{__version__} {torch.__version__} {ONNX_OPSET} fuse={fuse} "
    digest.update(f"{head}{net.channels}x{net.height}x{net.width}\n{network.cfg_text}".encode())
    for name, tensor in network.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy())
    return digest.hexdigest()[:24]


def _prune(folder: Path, keep: int) -> None:
    """Remove the files of all but the ``keep`` most recently used exported networks."""
    groups: dict[str, list[Path]] = {}
    for path in folder.iterdir():
        if path.suffix in (".onnx", ".xml", ".bin") and not path.name.startswith("."):
            groups.setdefault(path.name[:24], []).append(path)
    order = sorted(groups, key=lambda k: max(p.stat().st_mtime for p in groups[k]), reverse=True)
    for key in order[keep:]:
        for path in groups[key]:
            path.unlink(missing_ok=True)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def exported_model(
    network: Any, backend: str, *, fuse: bool = True, folder: Path | None = None
) -> Path:
    """The cached model file ``backend`` runs for ``network``, written on first use: darknetpy's
    raw-head ONNX export (dynamic batch), and for OpenVINO that file converted to IR (``.xml`` and
    ``.bin``), in ``<cache>/models/`` (the :data:`KEEP_MODELS` most recently used are kept). Files
    are written under a temporary name and renamed (atomic).

    Raises:
        UsageError: an uninstalled backend or ``onnx`` package.
    """
    ov = require(backend) if backend == "openvino" else None
    folder = (folder or cache_dir()) / "models"  # only exports: what _prune may remove
    folder.mkdir(parents=True, exist_ok=True)
    key = model_key(network, fuse)
    onnx_path = folder / f"{key}.onnx"
    if not onnx_path.exists():
        _prune(folder, KEEP_MODELS - 1)
        tmp = folder / f".{key}.{os.getpid()}.onnx"
        try:
            export_onnx(network, tmp, opset=ONNX_OPSET, dynamic_batch=True, fuse=fuse)
            tmp.replace(onnx_path)
        finally:
            tmp.unlink(missing_ok=True)
    try:
        os.utime(onnx_path)  # used now: what _prune keeps
    except OSError:
        pass
    if ov is None:
        return onnx_path
    version = re.sub(r"[^0-9A-Za-z.]+", "_", _version("openvino"))
    xml = folder / f"{key}-openvino{version}.xml"
    if not xml.exists():
        stem = folder / f".{key}.{os.getpid()}"
        try:
            # compress_to_fp16=False: the IR keeps the float32 weights exactly
            ov.save_model(ov.Core().read_model(str(onnx_path)), f"{stem}.xml",
                          compress_to_fp16=False)
            Path(f"{stem}.bin").replace(xml.with_suffix(".bin"))
            Path(f"{stem}.xml").replace(xml)  # last: an .xml present means its .bin is whole
        finally:
            Path(f"{stem}.xml").unlink(missing_ok=True)
            Path(f"{stem}.bin").unlink(missing_ok=True)
    return xml


# ---------------------------------------------------------------- auto
def measure(
    runners: dict[str, Runner], x: torch.Tensor, *, warmup: int = AUTO_WARMUP,
    passes: int = AUTO_PASSES,
) -> dict[str, float]:
    """Median milliseconds of one forward pass of each runner on ``x`` (after ``warmup`` untimed
    passes; timed passes interleaved, so a noisy neighbour slows every runner alike)."""
    for run in runners.values():
        for _ in range(warmup):
            run(x)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(passes):
        for name, run in runners.items():
            start = time.perf_counter()
            run(x)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), what ``auto``'s choice and the benches are keyed by."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def auto_key(network: Any, backends: Sequence[str]) -> str:
    """What ``auto``'s choice depends on: the cfg (text), input size, CPU model, threads, and the
    versions of darknetpy and of every backend compared."""
    net = network.net
    versions = " ".join(f"{b}={_version(b)}" for b in sorted(backends))
    return _sha(network.cfg_text, f"{net.channels}x{net.height}x{net.width}", cpu_model(),
                f"threads={cpu_threads()}", f"darknetpy={__version__}", versions)  # fmt: skip


@dataclass(frozen=True)
class AutoChoice:
    """``auto``'s verdict for one network: the backend and the medians it was chosen on (ms)."""

    backend: str
    ms: dict[str, float]
    cached: bool


def read_auto(folder: Path | None = None) -> dict[str, Any]:
    path = (folder or cache_dir()) / "auto.json"
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return table if isinstance(table, dict) else {}


def choose_auto(
    network: Any, runners: Callable[[Sequence[str]], dict[str, Runner]], *,
    folder: Path | None = None, note: bool = True,
) -> AutoChoice:
    """``auto``: the cached choice for ``network`` on this machine, or the fastest installed
    backend measured now (:func:`measure`; torch unless another is faster by more than
    :data:`AUTO_MARGIN`) and recorded in ``auto.json``.

    Args:
        runners: builds the runner of each backend named (``torch`` included).
        note: warn (:class:`BackendNote`) when no runtime besides torch is installed.
    """
    folder = folder or cache_dir()
    backends = installed_backends()
    if backends == ["torch"]:
        if not note:
            return AutoChoice("torch", {}, cached=False)
        warnings.warn(
            "backend auto: neither onnxruntime nor openvino is installed, so torch runs "
            '(pip install -e ".[onnx,openvino]" to compare them)', BackendNote, stacklevel=3,
        )  # fmt: skip
        return AutoChoice("torch", {}, cached=False)
    key = auto_key(network, backends)
    entry = read_auto(folder).get(key)
    if isinstance(entry, dict) and entry.get("backend") in backends:
        return AutoChoice(str(entry["backend"]), dict(entry.get("ms", {})), cached=True)
    net = network.net
    seed = torch.Generator().manual_seed(0)
    x = torch.rand(1, net.channels, net.height, net.width, generator=seed)
    ms = measure(runners(backends), x)
    best = min(ms, key=ms.__getitem__)
    if "torch" in ms and ms[best] >= ms["torch"] * (1 - AUTO_MARGIN):
        best = "torch"
    folder.mkdir(parents=True, exist_ok=True)
    table = read_auto(folder)  # re-read: another process may have added entries meanwhile
    table[key] = {"backend": best, "ms": {k: round(v, 3) for k, v in ms.items()},
                  "cfg": network.where(), "size": [net.width, net.height], "cpu": cpu_model(),
                  "threads": cpu_threads(), "versions": {b: _version(b) for b in backends}}
    _atomic_write_text(folder / "auto.json", json.dumps(table, indent=1, sort_keys=True))
    timings = ", ".join(f"{k} {v:.1f} ms" for k, v in sorted(ms.items(), key=lambda kv: kv[1]))
    warnings.warn(f"backend auto for {network.where()} at {net.width}x{net.height}: {timings}; "
                  f"{best} runs (cached in {folder / 'auto.json'})", BackendNote, stacklevel=3)
    return AutoChoice(best, ms, cached=False)


# ---------------------------------------------------------------- what load() runs
class BackendPlan:
    """``backend=`` of :func:`~.inference_model.load`, in two steps: made while the network is
    intact (checks, and the exported models written or found in the cache), then :meth:`open`
    once the PyTorch runtime exists (``auto`` measures it beside the others).

    Raises:
        UsageError: an unknown backend; onnxruntime/openvino asked for on a GPU or in half
            precision, or not installed.
    """

    def __init__(self, backend: str | None, network: Any, *, device: torch.device, half: bool,
                 fuse: bool = True, folder: Path | None = None) -> None:
        self.explicit = backend is not None  # the default auto says nothing without runtimes
        backend = default_backend() if backend is None else backend
        if backend not in BACKENDS:
            raise UsageError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        if backend in EXTRAS and (device.type != "cpu" or half):
            where = f"device {device}" if device.type != "cpu" else "half precision"
            raise UsageError(f"backend {backend} runs float32 on the CPU, not in {where}; "
                             "use --backend torch there (or --device cpu)")
        if backend == "auto" and (device.type != "cpu" or half):
            backend = "torch"  # PyTorch is the runtime on a GPU
        if backend in EXTRAS:
            require(backend)
        self.backend = backend
        self.network = network
        self.fuse = fuse
        self.folder = folder or cache_dir()
        net = network.net
        self.input_shape = (int(net.channels), int(net.height), int(net.width))
        self.files: dict[str, Path] = {}
        self.choice: AutoChoice | None = None
        if backend == "auto":
            backends = installed_backends()
            entry = read_auto(self.folder).get(auto_key(network, backends)) or {}
            wanted = [entry["backend"]] if entry.get("backend") in backends else backends
        else:
            wanted = [backend]
        for name in wanted:
            if name in EXTRAS:
                self.files[name] = exported_model(network, name, fuse=fuse, folder=self.folder)

    def _runners(self, torch_forward: Runner, names: Sequence[str]) -> dict[str, Runner]:
        return {name: torch_forward if name == "torch" else open_backend(name, self.files[name])
                for name in names}

    def open(self, torch_forward: Runner) -> tuple[str, Runner | None]:
        """The backend that runs and its runner (None: ``torch_forward`` itself)."""
        backend = self.backend
        if backend == "auto":
            opened: dict[str, Runner] = {}

            def runners(names: Sequence[str]) -> dict[str, Runner]:
                opened.update(self._runners(torch_forward, names))
                return opened

            self.choice = choose_auto(self.network, runners, folder=self.folder,
                                      note=self.explicit)
            backend = self.choice.backend
            if backend in opened:
                return backend, None if backend == "torch" else opened[backend]
        if backend == "torch":
            return "torch", None
        return backend, open_backend(backend, self.files[backend])
