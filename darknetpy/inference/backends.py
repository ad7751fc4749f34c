"""Runtimes under one model: the network's forward pass in PyTorch, onnxruntime or OpenVINO.

``darknetpy.load(cfg, weights, backend=...)`` keeps darknetpy's image preparation (Darknet's
``resize_image`` / ``letterbox_image``), decoding and NMS whatever the backend, so every backend
gives Darknet's detections; only ``model(x)`` (image tensor -> every head's ``l.output``) runs in
the chosen runtime:

* ``torch``: the fused PyTorch network (:class:`~.inference_model.InferenceModel`'s own);
* ``onnxruntime`` / ``openvino``: darknetpy's own ONNX export of the network (raw head outputs,
  :func:`~.export.export_onnx`), written once to a cache folder
  (:func:`.backend_cache.cache_dir`) under a hash of the cfg, the weights and the versions that
  shape the file, then run by :class:`OnnxRuntimeBackend` / :class:`OpenVinoBackend` (converted
  once to OpenVINO IR);
* ``auto``: each installed backend timed on the network once (:func:`.backend_cache.measure`:
  warm-up, then the median of a few forward passes, round-robin), the fastest kept in
  ``auto.json`` beside the exported models, per (cfg, input size, CPU model, thread count,
  versions); PyTorch on CUDA. The default (:func:`default_backend`).

Both runtimes are optional extras (``pip install -e ".[onnx]"``, ``".[openvino]"``); asking for
one that is not installed is one line naming the extra (:func:`require`). Every runtime setting
(threads, graph optimisation, performance hint) lives in this module:
:meth:`OnnxRuntimeBackend.session_options`, :meth:`OpenVinoBackend.config`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any

import numpy as np
import torch

from ..errors import UsageError

__all__ = [
    "BACKENDS",
    "EXTRAS",
    "BackendNote",
    "OnnxRuntimeBackend",
    "OpenVinoBackend",
    "Runner",
    "cpu_threads",
    "default_backend",
    "installed_backends",
    "open_backend",
    "require",
]

#: What ``backend=`` / ``--backend`` accept.
BACKENDS = ("torch", "onnxruntime", "openvino", "auto")
#: The runtimes outside PyTorch, and the setup.py extra that installs each.
EXTRAS = MappingProxyType({"onnxruntime": "onnx", "openvino": "openvino"})
#: A forward pass: (N, C, H, W) float32 -> the head outputs, float32, in layer order.
Runner = Callable[[torch.Tensor], list[torch.Tensor]]


#: The environment variable that sets the default backend (``load()`` and the commands).
DEFAULT_ENV = "DARKNETPY_BACKEND"


def default_backend() -> str:
    """The backend when none is given: ``$DARKNETPY_BACKEND``, else ``auto`` (the fastest installed
    runtime on the CPU, measured once per network and machine; PyTorch on CUDA).

    Raises:
        UsageError: ``$DARKNETPY_BACKEND`` names no backend.
    """
    value = os.environ.get(DEFAULT_ENV) or "auto"
    if value not in BACKENDS:
        raise UsageError(f"{DEFAULT_ENV}={value}: choose one of {', '.join(BACKENDS)}")
    return value


class BackendNote(UserWarning):
    """A one-line note about the backend chosen (``auto`` without a runtime, a measurement)."""


def cpu_threads() -> int:
    """The CPU cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def require(backend: str) -> ModuleType:
    """The runtime module of ``backend`` (``onnxruntime`` or ``openvino``).

    Raises:
        UsageError: an unknown backend, or one that is not installed (naming the extra).
    """
    if backend not in EXTRAS:
        raise UsageError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    try:
        return importlib.import_module(backend)
    except ImportError:
        raise UsageError(
            f"backend {backend!r} is not installed: pip install -e \".[{EXTRAS[backend]}]\" "
            f"(or pip install {backend}), or use --backend torch"
        ) from None


def installed_backends() -> list[str]:
    """``torch`` and every runtime of :data:`EXTRAS` that is installed (found, not imported: a
    cached ``auto`` choice of torch costs no runtime import)."""
    found = ["torch"]
    for name in EXTRAS:
        try:
            if importlib.util.find_spec(name) is not None:
                found.append(name)
        except (ImportError, ValueError):
            continue
    return found


def _version(name: str) -> str:
    """A backend's version (its package metadata, or its ``__version__`` once imported)."""
    if name == "torch":
        return torch.__version__
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:  # e.g. onnxruntime-gpu: ask the module
        return str(getattr(require(name), "__version__", "?"))


# ---------------------------------------------------------------- the runtimes
def _numpy_input(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())


class OnnxRuntimeBackend:
    """An ONNX model in onnxruntime on the CPU: ``backend(x)`` -> every graph output, float32.

    Settings: ``threads`` intra-op threads (default: the cores available), one inter-op thread,
    sequential execution, every graph optimisation.
    """

    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, *, threads: int | None = None) -> None:
        ort = require("onnxruntime")
        self.path = Path(onnx_path)
        self.threads = threads
        self.session = ort.InferenceSession(
            str(self.path), sess_options=self.session_options(threads),
            providers=["CPUExecutionProvider"],
        )  # fmt: skip
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    @staticmethod
    def session_options(threads: int | None = None) -> Any:
        """The one place onnxruntime's settings are made."""
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or cpu_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads would spin after each run and slow the PyTorch work that
        # follows (the pipeline's decode/NMS; bench: torch 104 vs 75 ms after a spinning run).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        return options

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = self.session.run(self.output_names, {self.input_name: _numpy_input(x)})
        return [torch.from_numpy(np.asarray(o, dtype=np.float32)) for o in outputs]

    def __getstate__(self) -> dict[str, Any]:  # a session does not pickle: reopen the file
        return {"path": self.path, "threads": self.threads}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], threads=state["threads"])  # type: ignore[misc]


class OpenVinoBackend:
    """An ONNX or OpenVINO IR (``.xml``) model in OpenVINO on the CPU: ``backend(x)`` -> every
    output, float32.

    Settings: performance hint LATENCY, ``threads`` inference threads (default: the cores
    available), no CPU pinning (pinned threads stall on cores other processes share: 541 vs 713 ms
    on yolov4-tiny 416 on the shared 2-core machine; equal within noise on an idle one). The model is compiled for each input shape it meets (static shapes: OpenVINO's
    fastest kernels), and the compiled models are kept.
    """

    name = "openvino"

    def __init__(self, model_path: str | Path, *, threads: int | None = None) -> None:
        ov = require("openvino")
        self.path = Path(model_path)
        self.threads = threads
        self.core = ov.Core()
        self.model = self.core.read_model(str(self.path))
        self._compiled: dict[tuple[int, ...], Any] = {}
        dims = list(self.model.inputs[0].get_partial_shape())
        if all(d.is_static for d in dims[1:]):  # batch 1 compiled now, not in the first predict
            self._compiled_for((1, *(d.get_length() for d in dims[1:])))

    @staticmethod
    def config(threads: int | None = None) -> dict[str, Any]:
        """The one place OpenVINO's settings are made."""
        import openvino.properties as props
        import openvino.properties.hint as hints

        return {
            hints.performance_mode: hints.PerformanceMode.LATENCY,
            props.inference_num_threads: threads or cpu_threads(),
            hints.enable_cpu_pinning: False,
        }

    def _compiled_for(self, shape: tuple[int, ...]) -> Any:
        compiled = self._compiled.get(shape)
        if compiled is None:
            model = self.model.clone()
            model.reshape({model.inputs[0].any_name: list(shape)})
            compiled = self.core.compile_model(model, "CPU", self.config(self.threads))
            self._compiled[shape] = compiled
        return compiled

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        data = _numpy_input(x)
        compiled = self._compiled_for(tuple(data.shape))
        result = compiled(data)
        return [torch.from_numpy(np.array(result[o], dtype=np.float32)) for o in compiled.outputs]

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "threads": self.threads}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], threads=state["threads"])  # type: ignore[misc]


_CLASSES: MappingProxyType[str, type] = MappingProxyType(
    {"onnxruntime": OnnxRuntimeBackend, "openvino": OpenVinoBackend}
)


def open_backend(
    backend: str, model_path: str | Path, *, threads: int | None = None
) -> OnnxRuntimeBackend | OpenVinoBackend:
    """:class:`OnnxRuntimeBackend` or :class:`OpenVinoBackend` of a model file.

    Raises:
        UsageError: an unknown or uninstalled backend.
    """
    require(backend)
    return _CLASSES[backend](model_path, threads=threads)


