"""Reading an ultralytics model description (``yolov8.yaml``) and choosing its scale.

The description is YAML, or the same dict written as JSON. PyYAML is used where it is installed
(it is not a darknetpy dependency); otherwise :func:`read_yaml_subset` reads the subset ultralytics'
model files use: ``key: value`` lines, one level of nested ``key: value`` or ``- item`` lines, flow
lists ``[a, [b, c], "d"]``, plain scalars and ``#`` comments. Anything else is a one-line
:class:`ModelYamlError`.

Scaling reproduces ``ultralytics/nn/tasks.py: parse_model`` (``scales`` + ``scale`` -> depth, width,
max_channels) and ``guess_model_scale`` (the scale letter from a file name such as
``yolov8n.yaml``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DarknetpyError

try:  # optional: the subset reader below covers ultralytics' own model files
    import yaml as _pyyaml
except ImportError:  # pragma: no cover - depends on the environment
    _pyyaml = None

__all__ = ["ModelScale", "ModelYamlError", "load_model_dict", "make_divisible", "model_scale",
           "read_yaml_subset"]


class ModelYamlError(DarknetpyError, ValueError):
    """An ultralytics model description that cannot be read or imported."""


# ---- reading ----
def load_model_dict(source: dict[str, Any] | str | Path) -> tuple[dict[str, Any], str]:
    """The model dict and a name for messages (the path, or ``<dict>``).

    Raises:
        ModelYamlError: the file is missing or not a mapping with ``backbone`` and ``head``.
    """
    if isinstance(source, dict):
        model, where = dict(source), "<dict>"
    else:
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ModelYamlError(f"{path}: cannot read the model description "
                                 f"({exc.strerror})") from None
        where = str(path)
        model = parse_model_text(text, where)
        model.setdefault("yaml_file", path.name)
    for key in ("backbone", "head"):
        if not isinstance(model.get(key), list):
            raise ModelYamlError(f"{where}: no '{key}' list; is this an ultralytics model .yaml?")
    return model, where


def parse_model_text(text: str, where: str) -> dict[str, Any]:
    """JSON when the text starts with ``{``, else YAML (PyYAML, or :func:`read_yaml_subset`)."""
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelYamlError(f"{where}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    elif _pyyaml is not None:
        try:
            value = _pyyaml.safe_load(text)
        except _pyyaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", exc)
            raise ModelYamlError(f"{where}{line}: invalid YAML ({problem})") from None
    else:
        value = read_yaml_subset(text, where)
    if not isinstance(value, dict):
        raise ModelYamlError(f"{where}: the model description must be a mapping, not "
                             f"{type(value).__name__}")
    return value


def read_yaml_subset(text: str, where: str = "<yaml>") -> dict[str, Any]:
    """The YAML subset of ultralytics' model files, read as PyYAML reads it (``True``/``False``/
    ``None`` in YAML 1.1: ``None`` stays the string ``'None'``, as ultralytics expects).

    Example:
        >>> read_yaml_subset("nc: 80\\nscales:\\n  n: [0.33, 0.25, 1024]\\n"
        ...                  "backbone:\\n  - [-1, 1, Conv, [64, 3, 2]]")
        {'nc': 80, 'scales': {'n': [0.33, 0.25, 1024]}, 'backbone': [[-1, 1, 'Conv', [64, 3, 2]]]}
    """
    result: dict[str, Any] = {}
    block: dict[str, Any] | list[Any] | None = None  # the nested block being filled
    open_key: str | None = None  # the top-level key whose block is open
    for number, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw).rstrip()
        if not line.strip() or line.strip() == "---":
            continue
        indent = len(line) - len(line.lstrip(" "))
        body = line.strip()
        here = f"{where}:{number}"
        if indent == 0:
            key, value = _split_key(body, here)
            block = None
            if value:
                result[key] = _scalar_or_flow(value, here)
                open_key = None
            else:
                result[key] = None
                open_key = key
            continue
        key = open_key
        if key is None:
            raise ModelYamlError(f"{here}: indented line outside a block; the YAML reader "
                                 "accepts 'key: value', nested 'key: value' or '- item' lines "
                                 "(install PyYAML for more)")
        if body.startswith("- ") or body == "-":
            if block is None:
                block = result[key] = []
            if not isinstance(block, list):
                raise ModelYamlError(f"{here}: a '- item' line inside a mapping block")
            block.append(_scalar_or_flow(body[1:].strip(), here))
        else:
            if block is None:
                block = result[key] = {}
            if not isinstance(block, dict):
                raise ModelYamlError(f"{here}: a 'key: value' line inside a list block")
            sub, value = _split_key(body, here)
            if not value:
                raise ModelYamlError(f"{here}: nesting deeper than one level (install PyYAML)")
            block[sub] = _scalar_or_flow(value, here)
    return result


def _strip_comment(line: str) -> str:
    """``line`` without a ``#`` comment (a ``#`` inside quotes or not after a space is kept)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def _split_key(body: str, here: str) -> tuple[str, str]:
    key, sep, value = body.partition(":")
    if not sep or not key.strip() or (value and not value.startswith(" ")):
        raise ModelYamlError(f"{here}: expected 'key: value', found {body!r}")
    return _unquote(key.strip()), value.strip()


_TOKEN = re.compile(r"""\s*(?:(?P<open>\[)|(?P<close>\])|(?P<comma>,)"""
                    r"""|(?P<quoted>"[^"]*"|'[^']*')|(?P<plain>[^,\[\]]+))""")


def _scalar_or_flow(value: str, here: str) -> Any:
    if value.startswith(("{", "&", "*", "!", "|", ">")):
        raise ModelYamlError(f"{here}: {value[:20]!r}: YAML mappings, anchors, tags and block "
                             "scalars are beyond the reader's subset (install PyYAML)")
    if not value.startswith("["):
        return _scalar(value)
    tokens = [(m.lastgroup, m.group(m.lastgroup)) for m in _TOKEN.finditer(value) if m.lastgroup]
    consumed = sum(len(m.group(0)) for m in _TOKEN.finditer(value))
    if consumed != len(value):
        raise ModelYamlError(f"{here}: cannot read the flow list {value!r}")
    item, rest = _flow(tokens, 0, here)
    if rest != len(tokens):
        raise ModelYamlError(f"{here}: text after the closing ']' in {value!r}")
    return item


def _flow(tokens: list[tuple[str | None, str]], i: int, here: str) -> tuple[Any, int]:
    """One flow item starting at token ``i``; returns it and the index after it."""
    if i >= len(tokens):
        raise ModelYamlError(f"{here}: unclosed '['")
    kind, text = tokens[i]
    if kind == "quoted":
        return text[1:-1], i + 1
    if kind == "plain":
        return _scalar(text.strip()), i + 1
    if kind != "open":
        raise ModelYamlError(f"{here}: unexpected {text!r} in a flow list")
    items: list[Any] = []
    i += 1
    while i < len(tokens) and tokens[i][0] != "close":
        item, i = _flow(tokens, i, here)
        items.append(item)
        if i < len(tokens) and tokens[i][0] == "comma":
            i += 1
        elif i < len(tokens) and tokens[i][0] != "close":
            raise ModelYamlError(f"{here}: expected ',' or ']' in a flow list")
    if i >= len(tokens):
        raise ModelYamlError(f"{here}: unclosed '['")
    return items, i + 1


_BOOLS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False}


def _scalar(text: str) -> Any:
    """A plain scalar as YAML 1.1 (PyYAML) resolves it: null, bool, int, float, else the string."""
    if text[:1] in "'\"" and text[-1:] == text[:1] and len(text) >= 2:
        return text[1:-1]
    if text in ("~", "null", "Null", "NULL"):
        return None
    if text.lower() in _BOOLS and text in (text.lower(), text.capitalize(), text.upper()):
        return _BOOLS[text.lower()]
    if re.fullmatch(r"[-+]?(0|[1-9][0-9_]*)", text):
        return int(text.replace("_", ""))
    float_syntax = re.fullmatch(r"[-+]?([0-9][0-9_]*)?\.[0-9_]*([eE][-+][0-9]+)?", text)
    if float_syntax and text not in (".", "-.", "+."):
        return float(text.replace("_", ""))
    return text


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] in "'\"" and text[-1] == text[0] else text


# ---- scaling ----
@dataclass(frozen=True)
class ModelScale:
    """``parse_model``'s compound scaling: repeats x depth, channels x width capped at
    max_channels."""

    letter: str | None
    depth: float
    width: float
    max_channels: float

    def repeats(self, n: int) -> int:
        """``n = max(round(n * depth), 1) if n > 1 else n`` (``parse_model``, depth gain)."""
        return max(round(n * self.depth), 1) if n > 1 else n

    def channels(self, c2: int) -> int:
        """``make_divisible(min(c2, max_channels) * width, 8)`` (``parse_model``, base modules)."""
        return make_divisible(min(c2, self.max_channels) * self.width, 8)


def make_divisible(x: float, divisor: int) -> int:
    """The smallest multiple of ``divisor`` >= ``x`` (``ultralytics/utils/ops.py:
    make_divisible``)."""
    return math.ceil(x / divisor) * divisor


def model_scale(model: dict[str, Any], where: str, scale: str | None = None) -> ModelScale:
    """The scale to build: ``scale`` (argument), else the dict's ``scale``, else the letter in its
    ``yaml_file`` name (``yolov8n.yaml`` -> n, ``guess_model_scale``); ``depth_multiple`` /
    ``width_multiple`` where the dict has no ``scales``.

    Raises:
        ModelYamlError: ``scales`` without a usable letter, or a letter it does not list.
    """
    scales = model.get("scales")
    if not scales:
        return ModelScale(None, float(model.get("depth_multiple", 1.0)),
                          float(model.get("width_multiple", 1.0)), math.inf)
    letter = scale or model.get("scale") or _scale_from_name(str(model.get("yaml_file", "")))
    if not letter:
        raise ModelYamlError(f"{where}: the model lists scales {', '.join(scales)} but says none; "
                             "add 'scale: n' (or pass --scale)")
    if letter not in scales:
        raise ModelYamlError(f"{where}: scale '{letter}' is not one of the model's scales "
                             f"({', '.join(scales)})")
    depth, width, max_channels = scales[letter]
    return ModelScale(str(letter), float(depth), float(width), float(max_channels))


def _scale_from_name(name: str) -> str | None:
    """``guess_model_scale``: the letter after the version digits (``yolov8s.yaml`` -> s)."""
    match = re.search(r"yolo(?:e-)?[v]?\d+([nslmx])", Path(name).stem)
    return match.group(1) if match else None
