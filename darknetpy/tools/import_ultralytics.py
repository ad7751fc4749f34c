"""``darknetpy import-ultralytics MODEL.yaml STATE.pt OUT.cfg OUT.weights``: an ultralytics YOLOv8
detection model as a Darknet cfg and ``.weights`` file.

The model description is read as ``ultralytics/nn/tasks.py: parse_model`` reads it (rows ``[from, repeats,
module, args]``, compound scaling, ``nc`` substituted), and each module is written in Darknet's own
sections (:mod:`.ultralytics_layers`); the head is one ``[yolov8]`` section. The state dict
(``{name: tensor}``, as ``DetectionModel.state_dict()`` returns it) is reordered into darknetpy's layer
order and written by darknetpy's own ``.weights`` writer. Supported modules: those of the v8 detection
models (Conv, C2f, SPPF, Concat, nn.Upsample, Detect); any other is a one-line error naming its row.

A plain state dict is written from an ultralytics checkpoint with::

    python -c "import torch; from ultralytics import YOLO; torch.save(YOLO('yolov8n.pt').model.float().state_dict(), 'yolov8n_state.pt')"
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import WeightsError
from ..model.network import Network
from ..model.weights import WeightsHeader
from .ultralytics_layers import (
    Emitter,
    Section,
    WeightSource,
    emit_c2f,
    emit_concat,
    emit_conv,
    emit_detect,
    emit_sppf,
    emit_upsample,
)
from .ultralytics_yaml import ModelScale, ModelYamlError, load_model_dict, model_scale

__all__ = ["SUPPORTED_MODULES", "UltralyticsImport", "import_ultralytics", "imported_network",
           "load_state_dict", "net_section", "write_import"]

SUPPORTED_MODULES = ("Conv", "C2f", "SPPF", "Concat", "nn.Upsample", "Detect")
INPUT = -1  # the network input, as ultralytics' first row reads it with from=-1


@dataclass(frozen=True)
class UltralyticsImport:
    """The imported model: cfg text, tensors in ``.weights`` order, and where each module went.

    Attributes:
        cfg_text: the cfg, ``[net]`` first.
        tensors: float32 arrays in darknetpy's file order (empty without a state dict).
        module_layers: ultralytics module index -> the darknetpy layer that outputs it.
        head: the ``[yolov8]`` layer index; ``levels`` the layers it reads (box then class logits).
        scale: the scale letter built (None when the model has no ``scales``).
    """

    cfg_text: str
    tensors: tuple[np.ndarray, ...]
    module_layers: Mapping[int, int]
    head: int
    levels: tuple[int, ...]
    scale: str | None


# ---- the [net] section ----
NET_COMMENT = """\
recipe=yolov8 trains the ultralytics way (ultralytics 8.4.190 cfg/default.yaml): optimizer 'auto'
(AdamW or SGD by the run's length), warm-up 3 epochs, linear lr decay to lrf 0.01, EMA 0.9999/2000,
batch-norm momentum 0.03, mosaic closed for the last 10 epochs; every part is a [net] key (README,
"Training recipes"). An epoch is ceil(train images / batch) iterations. letter_box=1: detect and map
letterbox the image (grey padding) as ultralytics' validation does."""


def net_section(width: int = 640, height: int = 640, channels: int = 3, *, batch: int = 16,
                epochs: int = 100, extra: Sequence[tuple[str, object]] = ()) -> Section:
    """``[net]`` with the YOLOv8 training recipe (``recipe=yolov8``, ``darknetpy.training.recipes``;
    ``epochs`` 100 and ``batch`` 16 as ultralytics' ``default.yaml``), ``letter_box=1`` (detect and map
    letterbox as ultralytics' validation does), then ``extra`` keys."""
    keys: list[tuple[str, object]] = [
        ("batch", batch), ("subdivisions", 1), ("width", width), ("height", height),
        ("channels", channels), ("letter_box", 1), ("recipe", "yolov8"), ("epochs", epochs), *extra,
    ]
    return Section("net", keys, NET_COMMENT)


# ---- the model rows ----
def import_ultralytics(model_yaml: Mapping[str, Any] | str | Path,
                       state: Mapping[str, torch.Tensor] | str | Path | None = None, *,
                       scale: str | None = None, width: int = 640, height: int = 640,
                       net: Section | None = None) -> UltralyticsImport:
    """Translate an ultralytics model description (and its state dict) into darknetpy's terms.

    Args:
        model_yaml: the model dict, or a ``.yaml`` / ``.json`` file holding it (with ``nc`` and ``scale``).
        state: ``{name: tensor}`` (or a file ``torch.load`` reads) matching the model; None: cfg only.
        scale: the scale letter, overriding the description's.
        width, height: the network input written to ``[net]`` (ignored when ``net`` is given).
        net: the ``[net]`` section to write (default :func:`net_section`).

    Raises:
        ModelYamlError: an unsupported module or malformed row, naming it.
        WeightsError: the state dict lacks a tensor, has one of the wrong shape, or has extra ones.
    """
    model, where = load_model_dict(dict(model_yaml) if isinstance(model_yaml, Mapping) else model_yaml)
    scaling = model_scale(model, where, scale)
    if model.get("end2end"):
        raise ModelYamlError(f"{where}: end2end (one-to-one NMS-free) heads are not supported; "
                             "darknetpy imports the v8 Detect head")
    activation = model.get("activation")
    if activation not in (None, "nn.SiLU()", "torch.nn.SiLU()"):
        raise ModelYamlError(f"{where}: activation {activation!r}: darknetpy imports SiLU models only")
    out = Emitter()
    module_layers, head, levels = _emit_rows(out, model, where, scaling)
    sections = [net or net_section(width, height), *out.sections]
    title = f"# darknetpy import-ultralytics: {model.get('yaml_file', where)}, scale {scaling.letter}, " \
            f"{_nc(model, where)} class{'es' if _nc(model, where) != 1 else ''}"
    cfg_text = title + "\n\n" + "\n\n".join(s.text() for s in sections) + "\n"
    tensors: tuple[np.ndarray, ...] = ()
    if state is not None:
        tensors = tuple(ordered_tensors(load_state_dict(state), out.sections, int(model.get("reg_max", 16))))
    return UltralyticsImport(cfg_text, tensors, module_layers, head, levels, scaling.letter)


def _nc(model: Mapping[str, Any], where: str) -> int:
    nc = model.get("nc")
    if not isinstance(nc, int) or nc < 1:
        raise ModelYamlError(f"{where}: 'nc' (the class count) must be a positive integer, not {nc!r}")
    return nc


def _emit_rows(out: Emitter, model: Mapping[str, Any], where: str,
               scaling: ModelScale) -> tuple[dict[int, int], int, tuple[int, ...]]:
    """``parse_model``'s loop: each row's channels and its Darknet sections."""
    nc = _nc(model, where)
    reg_max = int(model.get("reg_max", 16))
    rows = list(model["backbone"]) + list(model["head"])
    outputs: list[int] = []  # darknet layer of each module's output
    channels: list[int] = []
    head = -1
    levels: tuple[int, ...] = ()
    for i, row in enumerate(rows):
        part = "backbone" if i < len(model["backbone"]) else "head"
        label = f"{where}: row {i} ({part}) {row!r}"
        if not (isinstance(row, (list, tuple)) and len(row) == 4 and isinstance(row[3], list)):
            raise ModelYamlError(f"{label}: expected [from, repeats, module, args]")
        f, n, name, args = row
        args = [_resolve_arg(a, nc) for a in args]
        sources = _sources(f, i, label)
        c_in = [channels[s] if s != INPUT else 3 for s in sources]
        layer_in = [outputs[s] if s != INPUT else INPUT for s in sources]
        repeats = scaling.repeats(int(n))
        comment = f"{i}: {name} {row[3]}" + (f" x{repeats}" if repeats > 1 else "")
        prefix = f"model.{i}"
        if name not in SUPPORTED_MODULES:
            raise ModelYamlError(f"{label}: module {name} is not supported; darknetpy imports "
                                 f"{', '.join(SUPPORTED_MODULES)} (the YOLOv8 detection models)")
        if name not in ("C2f",) and repeats != 1:
            raise ModelYamlError(f"{label}: {name} repeated {repeats} times; only C2f takes repeats")
        if name != "Concat" and name != "Detect" and len(sources) != 1:
            raise ModelYamlError(f"{label}: {name} reads one input, not {len(sources)}")
        if name == "Conv":
            c2, k, s, groups = _conv_args(args, scaling, label)
            layer = emit_conv(out, layer_in[0], c2, k, s, prefix, groups, comment)
        elif name == "C2f":
            c2 = scaling.channels(args[0])
            shortcut, groups, e = (list(args[1:]) + [False, 1, 0.5][len(args) - 1:])[:3]
            layer = emit_c2f(out, layer_in[0], c2, repeats, bool(shortcut), int(groups), float(e),
                             prefix, comment)
        elif name == "SPPF":
            c2 = scaling.channels(args[0])
            k, n_pool, shortcut = (list(args[1:]) + [5, 3, False][len(args) - 1:])[:3]
            if int(k) % 2 == 0:
                raise ModelYamlError(f"{label}: SPPF with an even kernel ({k}) has no Darknet equivalent")
            layer = emit_sppf(out, layer_in[0], c_in[0], c2, int(k), int(n_pool), bool(shortcut),
                              len(args) <= 2, prefix, comment)
        elif name == "nn.Upsample":
            c2 = c_in[0]
            layer = emit_upsample(out, layer_in[0], _upsample_scale(args, label), comment)
        elif name == "Concat":
            if args not in ([1], [], [-3]):
                raise ModelYamlError(f"{label}: Concat along dimension {args[0]}; only channels (1)")
            c2 = sum(c_in)
            layer = emit_concat(out, layer_in, comment)
        else:  # Detect
            if i != len(rows) - 1 or not args or args[0] != nc:
                raise ModelYamlError(f"{label}: Detect must be the last row, with args [nc]")
            layer = emit_detect(out, layer_in, c_in, nc, reg_max, prefix, comment)
            head = layer
            levels = tuple(out.sections[layer].keys[0][1])  # type: ignore[arg-type]
            c2 = 0
        outputs.append(layer)
        channels.append(c2)
    if head < 0:
        raise ModelYamlError(f"{where}: the model has no Detect row")
    return dict(enumerate(outputs)), head, levels


def _resolve_arg(arg: object, nc: int) -> object:
    """``parse_model``: a string argument is ``nc`` or a Python literal (``'None'`` -> None), else kept."""
    if not isinstance(arg, str):
        return arg
    if arg == "nc":
        return nc
    try:
        return ast.literal_eval(arg)
    except (ValueError, SyntaxError):
        return arg


def _sources(f: object, i: int, label: str) -> list[int]:
    """Module indices read by row ``i`` (negative ``from`` counts back; -1 at row 0 is the input)."""
    refs = f if isinstance(f, list) else [f]
    result = []
    for ref in refs:
        if not isinstance(ref, int):
            raise ModelYamlError(f"{label}: 'from' must be an integer or a list of them")
        absolute = i + ref if ref < 0 else ref
        if absolute == -1 and i == 0:
            result.append(INPUT)
        elif 0 <= absolute < i:
            result.append(absolute)
        else:
            raise ModelYamlError(f"{label}: 'from' {ref} points at row {absolute}, not an earlier row")
    return result


def _conv_args(args: list[object], scaling: ModelScale, label: str) -> tuple[int, int, int, int]:
    """``Conv(c1, c2, k=1, s=1, p=None, g=1, d=1, act=True)`` from the row's args."""
    c2, k, s, p, g, d, act = (list(args) + [None, 1, 1, None, 1, 1, True][len(args):])[:7]
    if not isinstance(c2, int) or not isinstance(k, int) or not isinstance(s, int):
        raise ModelYamlError(f"{label}: Conv needs integer channels, kernel and stride")
    if k % 2 == 0 or (p is not None and p != k // 2) or d != 1 or act is not True:
        raise ModelYamlError(f"{label}: Conv with an even kernel, explicit padding, dilation or its own "
                             "activation is not imported (v8 uses odd kernels, autopad, SiLU)")
    return scaling.channels(c2), k, s, int(g)  # type: ignore[arg-type]


def _upsample_scale(args: list[object], label: str) -> int:
    size, factor, mode = (list(args) + [None, None, "nearest"][len(args):])[:3]
    if size is not None or not isinstance(factor, (int, float)) or factor != int(factor) or mode != "nearest":
        raise ModelYamlError(f"{label}: nn.Upsample must be [None, <integer factor>, 'nearest']")
    return int(factor)


# ---- the state dict ----
def load_state_dict(state: Mapping[str, torch.Tensor] | str | Path) -> dict[str, torch.Tensor]:
    """``{name: tensor}`` with a leading ``model.`` dropped (``DetectionModel`` or its ``.model``).

    Raises:
        WeightsError: the file is not a plain state dict of tensors.
    """
    if not isinstance(state, Mapping):
        path = Path(state)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise WeightsError(f"{path}: no such state dict file") from None
        except Exception as exc:  # noqa: BLE001 - unpickling refuses a full checkpoint in many ways
            raise WeightsError(
                f"{path}: not a plain state dict ({type(exc).__name__}); write one from the checkpoint "
                "with torch.save(YOLO('x.pt').model.float().state_dict(), 'state.pt')") from None
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise WeightsError(f"{path}: expected {{name: tensor}}; write it with "
                               "torch.save(YOLO('x.pt').model.float().state_dict(), 'state.pt')")
    return {k.removeprefix("model."): v for k, v in state.items()}


def ordered_tensors(state: Mapping[str, torch.Tensor], sections: Sequence[Section],
                    reg_max: int) -> list[np.ndarray]:
    """The tensors of every weighted section in darknetpy's ``.weights`` order: with batch norm
    ``bn.bias (beta), bn.weight (gamma), running_mean, running_var, conv.weight``; without it
    ``bias, weight`` (``parser.c: save_convolutional_weights``).

    Raises:
        WeightsError: a tensor missing or of another shape than the cfg needs, or unused tensors.
    """
    used = set()
    arrays: list[np.ndarray] = []
    for index, section in enumerate(sections):
        source = section.weights
        if source is None:
            continue
        for name in _tensor_names(source):
            key = name.removeprefix("model.")
            if key not in state:
                raise WeightsError(f"state dict: no '{name}' (needed by layer {index} [convolutional]); "
                                   "does the state dict belong to this model and scale?")
            used.add(key)
            arrays.append(state[key].detach().cpu().float().numpy().ravel())
        _check_shapes(state, source, section, index)
    _check_dfl(state, reg_max)
    extra = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked")
                   and not k.endswith("dfl.conv.weight"))
    if extra:
        raise WeightsError(f"state dict: {len(extra)} tensors the model does not use ({', '.join(extra[:4])}"
                           f"{', ...' if len(extra) > 4 else ''}); does it belong to another model or scale?")
    return arrays


def _tensor_names(source: WeightSource) -> list[str]:
    p = source.prefix
    if source.batch_norm:
        return [f"{p}.bn.bias", f"{p}.bn.weight", f"{p}.bn.running_mean", f"{p}.bn.running_var",
                f"{p}.conv.weight"]
    return [f"{p}.bias", f"{p}.weight"]


def _check_shapes(state: Mapping[str, torch.Tensor], source: WeightSource, section: Section,
                  index: int) -> None:
    keys = dict(section.keys)
    filters, size = int(keys["filters"]), int(keys["size"])  # type: ignore[call-overload]
    p = source.prefix.removeprefix("model.")
    weight = state[f"{p}.conv.weight" if source.batch_norm else f"{p}.weight"]
    per_channel = [state[f"{p}.{n}"] for n in
                   (("bn.bias", "bn.weight", "bn.running_mean", "bn.running_var") if source.batch_norm
                    else ("bias",))]
    if weight.ndim != 4 or tuple(weight.shape[0:1]) + tuple(weight.shape[2:]) != (filters, size, size) \
            or any(tuple(t.shape) != (filters,) for t in per_channel):
        raise WeightsError(f"state dict: '{source.prefix}' has weights {tuple(weight.shape)} but layer "
                           f"{index} needs {filters} filters of {size}x{size}; another scale or class count?")


def _check_dfl(state: Mapping[str, torch.Tensor], reg_max: int) -> None:
    """The DFL's fixed 1x1 conv must be ``arange(reg_max)`` (``DFL.__init__``): the head applies it."""
    for key, value in state.items():
        if key.endswith("dfl.conv.weight") and not torch.equal(
                value.detach().float().cpu().view(-1), torch.arange(reg_max, dtype=torch.float32)):
            raise WeightsError(f"state dict: '{key}' is not arange({reg_max}); the DFL projection "
                               "is fixed in ultralytics and in darknetpy's [yolov8] head")


# ---- the network and the files ----
def imported_network(imported: UltralyticsImport, *, path: str | Path = "<import-ultralytics>") -> Network:
    """The darknetpy network of ``imported`` with its tensors loaded (through each layer's own
    ``.weights`` reader, so the order is checked as a file would be)."""
    network = Network.from_text(imported.cfg_text, path=path)
    if not imported.tensors:
        return network
    pending = list(imported.tensors)
    for layer in network.layers:
        if not layer.darknet_tensors():
            continue

        def read(count: int, name: str, _layer=layer) -> np.ndarray:  # noqa: ANN001
            if not pending or pending[0].size != count:
                got = pending[0].size if pending else 0
                raise WeightsError(f"{_layer.where()}: {name} needs {count} values, the import has {got}")
            return pending.pop(0)

        layer.read_darknet(read, False)
    if pending:
        raise WeightsError(f"{len(pending)} imported tensors left after the last layer")
    return network


def write_import(imported: UltralyticsImport, cfg_out: str | Path,
                 weights_out: str | Path | None = None) -> Network:
    """Write the cfg and (with tensors) the ``.weights`` file (darknetpy's writer, header 0.2.5)."""
    cfg_out = Path(cfg_out)
    network = imported_network(imported, path=cfg_out)
    cfg_out.write_text(imported.cfg_text, encoding="utf-8")
    if weights_out is not None:
        if not imported.tensors:
            raise WeightsError(f"{weights_out}: no state dict was given, nothing to write")
        network.save_weights(weights_out, header=WeightsHeader())
    return network
