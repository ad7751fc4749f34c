"""The ultralytics state dict in darknetpy's ``.weights`` order, checked against the cfg written.

``DetectionModel.state_dict()`` names each ``Conv`` module's tensors ``<prefix>.conv.weight`` and
``<prefix>.bn.{weight,bias,running_mean,running_var,num_batches_tracked}``, and each plain
``nn.Conv2d`` (the head's last 1x1 convolutions) ``<prefix>.{weight,bias}``; the DFL's fixed
``arange(reg_max)`` projection is ``model.<i>.dfl.conv.weight``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import WeightsError
from .ultralytics_layers import Section, WeightSource

__all__ = ["WRITE_STATE", "load_state_dict", "ordered_tensors"]

WRITE_STATE = "torch.save(YOLO('x.pt').model.float().state_dict(), 'state.pt')"


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
                f"{path}: not a plain state dict ({type(exc).__name__}); write one from the "
                f"checkpoint with {WRITE_STATE}") from None
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor)
                                                     for v in state.values()):
            raise WeightsError(f"{path}: expected {{name: tensor}}; write it with {WRITE_STATE}")
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
                raise WeightsError(f"state dict: no '{name}' (needed by layer {index} "
                                   "[convolutional]); does it belong to this model and scale?")
            used.add(key)
            arrays.append(state[key].detach().cpu().float().numpy().ravel())
        _check_shapes(state, source, section, index)
    _check_dfl(state, reg_max)
    extra = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked")
                   and not k.endswith("dfl.conv.weight"))
    if extra:
        names = ", ".join(extra[:4]) + (", ..." if len(extra) > 4 else "")
        raise WeightsError(f"state dict: {len(extra)} tensors the model does not use ({names}); "
                           "does it belong to another model or scale?")
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
    names = ("bn.bias", "bn.weight", "bn.running_mean", "bn.running_var") if source.batch_norm \
        else ("bias",)
    per_channel = [state[f"{p}.{n}"] for n in names]
    shape = tuple(weight.shape)
    if len(shape) != 4 or (shape[0], *shape[2:]) != (filters, size, size) \
            or any(tuple(t.shape) != (filters,) for t in per_channel):
        raise WeightsError(f"state dict: '{source.prefix}' has weights {shape} but layer {index} "
                           f"needs {filters} filters of {size}x{size}; another scale or class "
                           "count?")


def _check_dfl(state: Mapping[str, torch.Tensor], reg_max: int) -> None:
    """The DFL's fixed 1x1 conv must be ``arange(reg_max)`` (``DFL.__init__``): the head applies
    it as a constant."""
    for key, value in state.items():
        if key.endswith("dfl.conv.weight") and not torch.equal(
                value.detach().float().cpu().view(-1), torch.arange(reg_max, dtype=torch.float32)):
            raise WeightsError(f"state dict: '{key}' is not arange({reg_max}); the DFL projection "
                               "is fixed in ultralytics and in darknetpy's [yolov8] head")
