"""INT8 post-training static quantization (``darknetpy export CFG WEIGHTS OUT --int8 --calibrate
DATA``; ``darknetpy map DATA CFG WEIGHTS --backend openvino --int8``).

1. the fused float32 network is exported with its raw head outputs (:func:`.export.export_onnx`),
   so the INT8 model's outputs are what :class:`~.inference_model.InferenceModel` returns and
   darknetpy's own decode and NMS run on them (:func:`int8_model`);
2. calibration images: the ``.data`` file's ``train=`` list (the first ``count`` images, in list
   order: a fixed set), each prepared exactly as darknetpy prepares an inference image
   (:func:`.pipeline.prepare_image`: OpenCV decode, Darknet's ``resize_image`` or
   ``letterbox_image`` as the cfg says);
3. the quantizer, one of :data:`ENGINES`:

   * ``openvino``: NNCF's ``quantize`` (``preset=PERFORMANCE``: symmetric activations, per-channel
     symmetric weights) on the OpenVINO model, written as OpenVINO IR (``.xml`` + ``.bin``);
   * ``onnxruntime``: ``onnxruntime.quantization.quantize_static`` (QDQ, per-channel int8
     weights with ``reduce_range`` (7 bits: without it onnxruntime's u8s8 kernels saturate and
     the raccoon model's mAP@0.5 fell from 0.72 to 0.60), uint8 activations, MinMax calibration),
     written as ``.onnx``.

``keep_fp32`` names darknet layer indices whose convolutions stay float32 (the heads' last
convolutions by default: their outputs are the boxes and logits, where INT8 rounding costs
accuracy most).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.datafile import DataConfig, read_image_list
from ..errors import UsageError
from ..model.network import Network
from . import backends
from .backend_cache import cache_dir, model_key
from .export import export_onnx
from .inference_model import load
from .pipeline import prepare_image

__all__ = [
    "ENGINES",
    "calibration_inputs",
    "cached_int8_model",
    "head_convolutions",
    "int8_model",
    "quantize_int8",
]

#: The quantizers, and the setup.py extra that installs each.
ENGINES = {"openvino": "openvino", "onnxruntime": "onnx"}
DEFAULT_IMAGES = 100


def calibration_inputs(network: Network, data: str | Path, count: int = DEFAULT_IMAGES
                       ) -> Iterator[np.ndarray]:
    """The first ``count`` images of ``data``'s ``train=`` list as network inputs ``(1, C, H, W)``
    float32, prepared as darknetpy prepares inference images.

    Raises:
        DataError: an unreadable .data file, list or image.
        UsageError: the .data file has no ``train=`` list.
    """
    config = DataConfig.from_file(data)
    if config.train is None:
        raise UsageError(f"{config.path}: --calibrate needs a train= list of images")
    images = read_image_list(config.train, base=config.path.parent, where=config.where("train"))
    net = network.net
    for path in images[:count]:
        x = prepare_image(str(path), (net.width, net.height), bool(net.letter_box)).input
        yield x[None].astype(np.float32, copy=False)


def head_convolutions(network: Network) -> list[int]:
    """The convolutions that feed a detection head directly (the layer just above each head and
    each layer a head reads): the default of ``keep_fp32``."""
    found: set[int] = set()
    for i in network.heads:
        for s in (*network.layers[i].sources, i - 1):
            if s >= 0 and network.layers[s].section.name in ("convolutional", "conv"):
                found.add(s)
    return sorted(found)


def _require(engine: str) -> Any:
    if engine not in ENGINES:
        raise UsageError(f"--int8-engine {engine}: one of {', '.join(ENGINES)}")
    try:
        if engine == "openvino":
            import nncf  # noqa: F401
            import openvino

            return openvino
        import onnxruntime.quantization

        return onnxruntime.quantization
    except ImportError:
        raise UsageError(
            f"--int8 with --int8-engine {engine} needs "
            f"{'nncf and openvino' if engine == 'openvino' else 'onnxruntime'}: "
            f'pip install -e ".[{ENGINES[engine]}]"'
        ) from None


def _excluded_nodes(onnx_path: Path, convs: Sequence[int], heads: Sequence[int]) -> list[str]:
    """The ONNX nodes left in float32: the Conv nodes of the darknet layers ``convs`` and every
    node of the detection layers ``heads`` (their sigmoid/scale arithmetic and the Concat that
    forms the output; the exporter names a layer's nodes ``/network/layers.<i>/``)."""
    import onnx

    model = onnx.load(str(onnx_path))
    conv_prefixes = tuple(f"/network/layers.{i}/" for i in convs)
    head_prefixes = tuple(f"/network/layers.{i}/" for i in heads)
    return [
        n.name for n in model.graph.node
        if (n.op_type == "Conv" and n.name.startswith(conv_prefixes))
        or (head_prefixes and n.name.startswith(head_prefixes))
    ]  # fmt: skip


def quantize_int8(network: Network, out: str | Path, data: str | Path, *,
                  engine: str = "openvino", images: int = DEFAULT_IMAGES,
                  keep_fp32: Sequence[int] | None = None, symmetric: bool = False,
                  options: dict[str, Any] | None = None) -> Path:
    """Write the INT8 model of ``network`` calibrated on ``data``'s train images.

    Args:
        out: ``.xml`` (OpenVINO IR, ``engine="openvino"``) or ``.onnx`` (``onnxruntime``).
        images: how many calibration images.
        keep_fp32: darknet layer indices whose convolutions stay float32 (default: the heads'
            convolutions, :func:`head_convolutions`; ``()``: none).
        symmetric: symmetric activation ranges (NNCF's PERFORMANCE preset; ORT's int8
            activations) instead of asymmetric ones (MIXED; uint8).
        options: more keyword arguments for ``nncf.quantize`` / ``quantize_static``.

    Returns:
        The file written.

    Raises:
        UsageError: a missing package (naming the extra) or a suffix that does not fit ``engine``.
    """
    module = _require(engine)
    out = Path(out)
    want = ".xml" if engine == "openvino" else ".onnx"
    if out.suffix != want:
        raise UsageError(f"{out}: --int8-engine {engine} writes a {want} file; name it so")
    keep = head_convolutions(network) if keep_fp32 is None else list(keep_fp32)
    inputs = list(calibration_inputs(network, data, images))
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(network, Path(tmp) / "fp32.onnx", dynamic_batch=True)
        skip = _excluded_nodes(fp32, keep, network.heads)
        if engine == "openvino":
            _quantize_nncf(module, fp32, out, inputs, skip, symmetric, options or {})
        else:
            _quantize_ort(module, fp32, out, inputs, skip, symmetric, options or {})
    return out


def _quantize_nncf(ov: Any, fp32: Path, out: Path, inputs: list[np.ndarray],
                   skip: list[str], symmetric: bool, options: dict[str, Any]) -> None:
    import nncf

    model = ov.Core().read_model(str(fp32))
    ignored = nncf.IgnoredScope(names=skip, validate=False) if skip else None
    preset = nncf.QuantizationPreset.PERFORMANCE if symmetric else nncf.QuantizationPreset.MIXED
    quantized = nncf.quantize(
        model, nncf.Dataset(inputs), preset=preset, subset_size=len(inputs),
        ignored_scope=ignored, **options,
    )  # fmt: skip
    ov.save_model(quantized, str(out))


def _quantize_ort(q: Any, fp32: Path, out: Path, inputs: list[np.ndarray],
                  skip: list[str], symmetric: bool, options: dict[str, Any]) -> None:
    class Reader(q.CalibrationDataReader):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            self.items = iter(inputs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.items, None)
            return None if x is None else {"images": x}

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        q.quant_pre_process(str(fp32), str(prepared))
        q.quantize_static(
            str(prepared), str(out), Reader(), quant_format=q.QuantFormat.QDQ, per_channel=True,
            activation_type=q.QuantType.QInt8 if symmetric else q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8, nodes_to_exclude=skip,
            **{"calibrate_method": q.CalibrationMethod.MinMax, "reduce_range": True,
               "op_types_to_quantize": ["Conv", "MaxPool", "Concat", "Resize"], **options},
        )  # fmt: skip


def int8_model(cfg: str | Path, weights: str | Path, int8_path: str | Path, *,
               threads: int | None = None, lenient: bool = False) -> Any:
    """``darknetpy.load(cfg, weights)`` whose forward pass runs the INT8 model (OpenVINO for an
    ``.xml``, onnxruntime for an ``.onnx``): darknetpy's preparation, decode and NMS around it,
    so ``predict``, ``detect`` and :func:`~darknetpy.evaluation.commands.evaluate_network` run
    it as they run the float32 model."""
    path = Path(int8_path)
    runner = (backends.OpenVinoBackend if path.suffix == ".xml" else backends.OnnxRuntimeBackend)(
        path, threads=threads)
    model = load(cfg, weights, half=False, keep_unfused=False, lenient=lenient, backend="torch")
    net = model.fused.net
    model.runner = runner
    model.runner_shape = (int(net.channels), int(net.height), int(net.width))
    model.backend = f"{runner.name} int8"
    return model


def cached_int8_model(cfg: str | Path, weights: str | Path, data: str | Path, *,
                      backend: str = "openvino", images: int = DEFAULT_IMAGES,
                      lenient: bool = False) -> Any:
    """:func:`int8_model` of the network quantized by ``backend`` on ``data``'s train images
    (``map --backend openvino --int8``), the INT8 file kept in darknetpy's cache folder under a
    hash of the network, the calibration list and the settings (quantized once).

    Raises:
        UsageError: ``backend`` is not ``openvino`` or ``onnxruntime``; a missing package.
    """
    if backend not in ENGINES:
        raise UsageError(
            f"--int8 runs in an INT8 runtime: add --backend openvino (or --backend onnxruntime), "
            f"not {backend}"
        )
    _require(backend)
    network = Network.from_cfg(Path(cfg))
    network.load_weights(weights, lenient=lenient)
    network.eval()
    config = DataConfig.from_file(data)
    listed = config.train.read_bytes() if config.train and config.train.is_file() else b""
    digest = hashlib.sha256(f"{model_key(network)} {backend} {images}".encode() + listed)
    folder = cache_dir() / "int8"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{digest.hexdigest()[:24]}{'.xml' if backend == 'openvino' else '.onnx'}"
    if not out.is_file():
        tmp = folder / f".{os.getpid()}{out.suffix}"
        quantize_int8(network, tmp, data, engine=backend, images=images)
        if backend == "openvino":
            tmp.with_suffix(".bin").replace(out.with_suffix(".bin"))
        tmp.replace(out)
    return int8_model(cfg, weights, out, lenient=lenient)
