"""``darknetpy import-ultralytics MODEL.yaml STATE.pt OUT.cfg OUT.weights``: an ultralytics YOLOv8
detection model as a Darknet cfg and ``.weights`` file.

The model description is read as ``ultralytics/nn/tasks.py: parse_model`` reads it (rows
``[from, repeats, module, args]``, compound scaling, ``nc`` substituted), and each module is written
in Darknet's own sections (:mod:`.ultralytics_layers`); the head is one ``[yolov8]`` section. The
state dict (``{name: tensor}``, as ``DetectionModel.state_dict()`` returns it) is reordered into
darknetpy's layer order and written by darknetpy's own ``.weights`` writer. Supported modules: those
of the v8 detection models (Conv, C2f, SPPF, Concat, nn.Upsample, Detect); any other is a one-line
error naming its row.

A plain state dict is written from an ultralytics checkpoint with::

    python -c "import torch; from ultralytics import YOLO; \\
        torch.save(YOLO('yolov8n.pt').model.float().state_dict(), 'yolov8n_state.pt')"
"""

from __future__ import annotations

import ast
from collections import deque
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
    emit_c2f,
    emit_concat,
    emit_conv,
    emit_detect,
    emit_sppf,
    emit_upsample,
)
from .ultralytics_state import load_state_dict, ordered_tensors
from .ultralytics_yaml import ModelScale, ModelYamlError, load_model_dict, model_scale

__all__ = ["SUPPORTED_MODULES", "UltralyticsImport", "import_ultralytics", "imported_network",
           "load_state_dict", "net_section", "ordered_tensors", "write_import"]

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
    ``epochs`` 100 and ``batch`` 16 as ultralytics' ``default.yaml``), ``letter_box=1`` (detect and
    map letterbox as ultralytics' validation does), then ``extra`` keys."""
    keys: list[tuple[str, object]] = [
        ("batch", batch), ("subdivisions", 1), ("width", width), ("height", height),
        ("channels", channels), ("letter_box", 1), ("recipe", "yolov8"), ("epochs", epochs),
        *extra,
    ]
    return Section("net", keys, NET_COMMENT)


# ---- the model rows ----
def import_ultralytics(model_yaml: Mapping[str, Any] | str | Path,
                       state: Mapping[str, torch.Tensor] | str | Path | None = None, *,
                       scale: str | None = None, width: int = 640, height: int = 640,
                       net: Section | None = None) -> UltralyticsImport:
    """Translate an ultralytics model description (and its state dict) into darknetpy's terms.

    Args:
        model_yaml: the model dict, or a ``.yaml`` / ``.json`` file holding it (with ``nc`` and
            ``scale``).
        state: ``{name: tensor}`` (or a file ``torch.load`` reads) matching the model; None: the
            cfg only.
        scale: the scale letter, overriding the description's.
        width, height: the network input written to ``[net]`` (ignored when ``net`` is given).
        net: the ``[net]`` section to write (default :func:`net_section`).

    Raises:
        ModelYamlError: an unsupported module or malformed row, naming it.
        WeightsError: the state dict lacks a tensor, has one of the wrong shape, or has extra ones.
    """
    source = dict(model_yaml) if isinstance(model_yaml, Mapping) else model_yaml
    model, where = load_model_dict(source)
    scaling = model_scale(model, where, scale)
    if model.get("end2end"):
        raise ModelYamlError(f"{where}: end2end (one-to-one NMS-free) heads are not supported; "
                             "darknetpy imports the v8 Detect head")
    activation = model.get("activation")
    if activation not in (None, "nn.SiLU()", "torch.nn.SiLU()"):
        raise ModelYamlError(f"{where}: activation {activation!r}: darknetpy imports SiLU models "
                             "only")
    out = Emitter()
    module_layers, head, levels = _emit_rows(out, model, where, scaling)
    sections = [net or net_section(width, height), *out.sections]
    nc = _nc(model, where)
    title = (f"# darknetpy import-ultralytics: {model.get('yaml_file', where)}, scale "
             f"{scaling.letter}, {nc} class{'es' if nc != 1 else ''}")
    cfg_text = title + "\n\n" + "\n\n".join(s.text() for s in sections) + "\n"
    tensors: tuple[np.ndarray, ...] = ()
    if state is not None:
        reg_max = int(model.get("reg_max", 16))
        tensors = tuple(ordered_tensors(load_state_dict(state), out.sections, reg_max))
    return UltralyticsImport(cfg_text, tensors, module_layers, head, levels, scaling.letter)


def _nc(model: Mapping[str, Any], where: str) -> int:
    nc = model.get("nc")
    if not isinstance(nc, int) or nc < 1:
        raise ModelYamlError(f"{where}: 'nc' (the class count) must be a positive integer, "
                             f"not {nc!r}")
    return nc


@dataclass(frozen=True)
class _Row:
    """One model row as ``parse_model`` sees it: the module, its resolved args and inputs."""

    index: int
    name: str
    args: list[object]
    repeats: int
    label: str  # "<where>: row i (backbone) [...]", for messages
    comment: str  # the cfg comment above the module's first section
    layers_in: list[int]  # darknet layers of its inputs (INPUT for the network input)
    channels_in: list[int]

    @property
    def prefix(self) -> str:
        return f"model.{self.index}"


def _emit_rows(out: Emitter, model: Mapping[str, Any], where: str,
               scaling: ModelScale) -> tuple[dict[int, int], int, tuple[int, ...]]:
    """``parse_model``'s loop: each row's inputs, channels and Darknet sections.

    Returns:
        {module index: darknet layer of its output}, the head's layer, the head's level layers.
    """
    nc = _nc(model, where)
    rows = list(model["backbone"]) + list(model["head"])
    outputs: list[int] = []  # darknet layer of each module's output
    channels: list[int] = []
    for i, raw in enumerate(rows):
        part = "backbone" if i < len(model["backbone"]) else "head"
        label = f"{where}: row {i} ({part}) {raw!r}"
        if not (isinstance(raw, (list, tuple)) and len(raw) == 4 and isinstance(raw[3], list)):
            raise ModelYamlError(f"{label}: expected [from, repeats, module, args]")
        f, n, name, args = raw
        sources = _sources(f, i, label)
        repeats = scaling.repeats(int(n))
        row = _Row(i, str(name), [_resolve_arg(a, nc) for a in args], repeats, label,
                   f"{i}: {name} {args}" + (f" x{repeats}" if repeats > 1 else ""),
                   [outputs[s] if s != INPUT else INPUT for s in sources],
                   [channels[s] if s != INPUT else 3 for s in sources])
        _check_row(row, last=i == len(rows) - 1, nc=nc)
        layer, c2 = _emit_module(out, row, scaling, nc, int(model.get("reg_max", 16)))
        outputs.append(layer)
        channels.append(c2)
    head = outputs[-1] if rows else -1
    if not rows or out.sections[head].name != "yolov8":
        raise ModelYamlError(f"{where}: the model has no Detect row")
    levels = tuple(out.sections[head].keys[0][1])  # type: ignore[arg-type]
    return dict(enumerate(outputs)), head, levels


def _check_row(row: _Row, *, last: bool, nc: int) -> None:
    """What every supported module needs of its row, as one-line errors naming the row."""
    if row.name not in SUPPORTED_MODULES:
        raise ModelYamlError(f"{row.label}: module {row.name} is not supported; darknetpy imports "
                             f"{', '.join(SUPPORTED_MODULES)} (the YOLOv8 detection models)")
    if row.name != "C2f" and row.repeats != 1:
        raise ModelYamlError(f"{row.label}: {row.name} repeated {row.repeats} times; only C2f "
                             "takes repeats")
    if row.name not in ("Concat", "Detect") and len(row.layers_in) != 1:
        raise ModelYamlError(f"{row.label}: {row.name} reads one input, not {len(row.layers_in)}")
    if row.name == "Detect" and (not last or not row.args or row.args[0] != nc):
        raise ModelYamlError(f"{row.label}: Detect must be the last row, with args [nc]")
    if (row.name == "SPPF" and len(row.args) > 1 and isinstance(row.args[1], int)
            and row.args[1] % 2 == 0):
        raise ModelYamlError(f"{row.label}: SPPF with an even kernel ({row.args[1]}) has no "
                             "Darknet equivalent")
    if row.name == "Concat" and row.args not in ([1], [], [-3]):
        raise ModelYamlError(f"{row.label}: Concat along dimension {row.args[0]}; only channels "
                             "(1)")


def _emit_module(out: Emitter, row: _Row, scaling: ModelScale, nc: int,
                 reg_max: int) -> tuple[int, int]:
    """The sections of one module (``parse_model``'s argument rules); returns its output layer
    and channels."""
    src, args, comment = row.layers_in[0], row.args, row.comment
    if row.name == "Conv":
        c2, k, s, groups = _conv_args(args, scaling, row.label)
        return emit_conv(out, src, c2, k, s, row.prefix, groups, comment), c2
    if row.name == "C2f":
        c2 = scaling.channels(args[0])  # type: ignore[arg-type]
        shortcut, groups, e = (list(args[1:]) + [False, 1, 0.5][len(args) - 1:])[:3]
        return emit_c2f(out, src, c2, row.repeats, bool(shortcut), int(groups), float(e),
                        row.prefix, comment), c2
    if row.name == "SPPF":
        c2 = scaling.channels(args[0])  # type: ignore[arg-type]
        k, n_pool, shortcut = (list(args[1:]) + [5, 3, False][len(args) - 1:])[:3]
        legacy = len(args) <= 2  # parse_model: rows without n keep cv1's SiLU
        return emit_sppf(out, src, row.channels_in[0], c2, int(k), int(n_pool), bool(shortcut),
                         legacy, row.prefix, comment), c2
    if row.name == "nn.Upsample":
        factor = _upsample_scale(args, row.label)
        return emit_upsample(out, src, factor, comment), row.channels_in[0]
    if row.name == "Concat":
        return emit_concat(out, row.layers_in, comment), sum(row.channels_in)
    return emit_detect(out, row.layers_in, row.channels_in, nc, reg_max, row.prefix, comment), 0


def _resolve_arg(arg: object, nc: int) -> object:
    """``parse_model``: a string argument is ``nc`` or a Python literal (``'None'`` -> None), else
    kept as it is."""
    if not isinstance(arg, str):
        return arg
    if arg == "nc":
        return nc
    try:
        return ast.literal_eval(arg)
    except (ValueError, SyntaxError):
        return arg


def _sources(f: object, i: int, label: str) -> list[int]:
    """Module indices read by row ``i`` (negative ``from`` counts back; -1 at row 0 is the
    input)."""
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
            raise ModelYamlError(f"{label}: 'from' {ref} points at row {absolute}, not an earlier "
                                 "row")
    return result


def _conv_args(args: list[object], scaling: ModelScale, label: str) -> tuple[int, int, int, int]:
    """``Conv(c1, c2, k=1, s=1, p=None, g=1, d=1, act=True)`` from the row's args."""
    c2, k, s, p, g, d, act = (list(args) + [None, 1, 1, None, 1, 1, True][len(args):])[:7]
    if not isinstance(c2, int) or not isinstance(k, int) or not isinstance(s, int):
        raise ModelYamlError(f"{label}: Conv needs integer channels, kernel and stride")
    if k % 2 == 0 or (p is not None and p != k // 2) or d != 1 or act is not True:
        raise ModelYamlError(f"{label}: Conv with an even kernel, explicit padding, dilation or "
                             "its own activation is not imported (v8 uses odd kernels, autopad, "
                             "SiLU)")
    return scaling.channels(c2), k, s, int(g)  # type: ignore[arg-type]


def _upsample_scale(args: list[object], label: str) -> int:
    size, factor, mode = (list(args) + [None, None, "nearest"][len(args):])[:3]
    whole = isinstance(factor, (int, float)) and factor == int(factor) and factor >= 1
    if size is not None or not whole or mode != "nearest":
        raise ModelYamlError(f"{label}: nn.Upsample must be [None, <integer factor>, 'nearest']")
    return int(factor)


# ---- the network and the files ----
def imported_network(imported: UltralyticsImport, *,
                     path: str | Path = "<import-ultralytics>") -> Network:
    """The darknetpy network of ``imported`` with its tensors loaded (through each layer's own
    ``.weights`` reader, so the order is checked as a file would be)."""
    network = Network.from_text(imported.cfg_text, path=path)
    if not imported.tensors:
        return network
    pending = deque(imported.tensors)
    for layer in network.layers:
        if not layer.darknet_tensors():
            continue

        def read(count: int, name: str, _layer=layer) -> np.ndarray:  # noqa: ANN001
            if not pending or pending[0].size != count:
                got = pending[0].size if pending else 0
                raise WeightsError(f"{_layer.where()}: {name} needs {count} values, the import "
                                   f"has {got}")
            return pending.popleft()

        layer.read_darknet(read, False)
    if pending:
        raise WeightsError(f"{len(pending)} imported tensors left after the last layer")
    return network


def write_import(imported: UltralyticsImport, cfg_out: str | Path,
                 weights_out: str | Path | None = None) -> Network:
    """Write the cfg and (with tensors) the ``.weights`` file (darknetpy's writer, header 0.2.5)."""
    if weights_out is not None and not imported.tensors:
        raise WeightsError(f"{weights_out}: no state dict was given, nothing to write")
    cfg_out = Path(cfg_out)
    network = imported_network(imported, path=cfg_out)
    cfg_out.write_text(imported.cfg_text, encoding="utf-8")
    if weights_out is not None:
        network.save_weights(weights_out, header=WeightsHeader())
    return network
