"""``.pt`` checkpoints that carry their own cfg: the format, reading and writing.

``darknetpy convert`` (``.weights`` <-> ``.pt``) is :mod:`darknetpy.tools.convert`.

A darknetpy checkpoint is a plain ``torch.save`` of a dict of strings, ints and tensors, so
``torch.load(path, weights_only=True)`` reads it (no pickled code) and it needs no cfg file:

=================  ==========================================================================
key                value
=================  ==========================================================================
``format``         ``"darknetpy.checkpoint"``: tells a checkpoint from any other ``.pt``
``layout``         :data:`LAYOUT_VERSION`; the meaning of ``state_dict`` keys (see below)
``darknetpy``      the darknetpy version that wrote it (information only)
``cfg``            the cfg text (:attr:`Network.cfg_text`): rebuilds the network
``header``         ``{"major", "minor", "revision", "seen"}`` of the ``.weights`` header
``upto``           how many layers the ``.weights`` file held: fewer than the cfg's for a
                   partial file (``yolov4.conv.137``, darknet's ``partial``)
``state_dict``     ``Network.state_dict()``, tensors on the CPU
=================  ==========================================================================

State-dict layout 1 (the contract that later versions keep or translate): key prefix
``layers.<i>.`` is darknet layer ``i`` (``[net]`` not counted); a convolution's tensors are
``layers.<i>.conv.weight`` (and ``.conv.bias`` without batch norm), its batch norm
``layers.<i>.bn.{weight,bias,running_mean,running_var,num_batches_tracked}`` (darknet's
scales, biases, rolling_mean, rolling_variance). A future layout bumps :data:`LAYOUT_VERSION` and
adds a translation to :data:`_UPGRADES`; :func:`read_checkpoint` applies it, so old files keep
loading.

Converting back writes the network through :func:`darknetpy.model.weights.write_weights` with the
stored header, so ``.weights -> .pt -> .weights`` is byte-identical (``parser.c: save_weights``).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
import warnings
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from .. import __version__
from ..errors import WeightsError
from ..files import atomic_write
from .cfg import CfgWarning
from .network import Network
from .weights import WeightsHeader

__all__ = [
    "CHECKPOINT_FORMAT",
    "LAYOUT_VERSION",
    "Checkpoint",
    "is_checkpoint",
    "network_from_checkpoint",
    "read_checkpoint",
    "save_pt_checkpoint",
]

CHECKPOINT_FORMAT = "darknetpy.checkpoint"
LAYOUT_VERSION = 1

# layout version -> function turning a state dict of that layout into the next one.
_UPGRADES: Mapping[int, Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]] = (
    MappingProxyType({})
)


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as read: everything needed to rebuild the network and its ``.weights``."""

    path: Path
    cfg_text: str
    header: WeightsHeader
    state_dict: Mapping[str, torch.Tensor]
    upto: int
    layout: int = LAYOUT_VERSION
    darknetpy_version: str = ""


def is_checkpoint(path: str | Path) -> bool:
    """True when ``path`` is a ``torch.save`` zip archive (a ``.weights`` file never is).

    Files are told apart by content, not by name: a ``.weights`` file starts with its int32
    version, a ``torch.save`` file with the zip signature ``PK\\x03\\x04``.
    """
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04" and zipfile.is_zipfile(path)
    except OSError:
        return False


def _header_dict(header: WeightsHeader) -> dict[str, int]:
    return {
        "major": header.major,
        "minor": header.minor,
        "revision": header.revision,
        "seen": header.seen,
    }


def checkpoint_dict(
    network: Network, header: WeightsHeader | None = None, upto: int | None = None
) -> dict[str, Any]:
    """The object :func:`save_pt_checkpoint` writes (only str, int and CPU tensors)."""
    header = header or network.header or WeightsHeader()
    upto = len(network.layers) if upto is None else upto
    state = {k: v.detach().to("cpu").clone() for k, v in network.state_dict().items()}
    return {
        "format": CHECKPOINT_FORMAT,
        "layout": LAYOUT_VERSION,
        "darknetpy": __version__,
        "cfg": network.cfg_text,
        "header": _header_dict(header),
        "upto": upto,
        "state_dict": state,
    }


def save_pt_checkpoint(
    network: Network, path: str | Path, header: WeightsHeader | None = None, upto: int | None = None
) -> Path:
    """Write ``network`` (cfg text, header, state dict) to ``path`` atomically.

    Args:
        network: the network, with its weights.
        path: the ``.pt`` file to write.
        header: the ``.weights`` header to keep (default: the one ``network`` read).
        upto: the number of layers a ``.weights`` file written back holds (default: all).

    Returns:
        ``path``.
    """
    path = Path(path)
    obj = checkpoint_dict(network, header, upto)
    atomic_write(path, lambda f: torch.save(obj, f))
    return path


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a darknetpy checkpoint with ``torch.load(weights_only=True)``.

    Raises:
        WeightsError: the file is missing, not a torch archive, not a darknetpy checkpoint, or of
            a layout newer than this darknetpy knows.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint file")
    if not is_checkpoint(path):
        raise WeightsError(
            f"{path}: not a torch checkpoint (expected a .pt written by "
            "`darknetpy convert CFG WEIGHTS out.pt`)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad archive
        raise WeightsError(f"{path}: cannot read checkpoint ({_first_line(exc)})") from None
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        keys = ", ".join(sorted(map(str, obj))) if isinstance(obj, dict) else type(obj).__name__
        raise WeightsError(
            f"{path}: a torch file but not a darknetpy checkpoint (format key missing; found "
            f"{keys}); make one with `darknetpy convert CFG WEIGHTS out.pt`"
        )
    layout = int(obj.get("layout", 0))
    if layout > LAYOUT_VERSION:
        raise WeightsError(
            f"{path}: checkpoint layout {layout} is newer than this darknetpy's {LAYOUT_VERSION} "
            f"(written by darknetpy {obj.get('darknetpy', '?')}); upgrade darknetpy"
        )
    state = dict(obj["state_dict"])
    for version in range(layout, LAYOUT_VERSION):
        state = _UPGRADES[version](state)
    h = obj["header"]
    header = WeightsHeader(int(h["major"]), int(h["minor"]), int(h["revision"]), int(h["seen"]))
    return Checkpoint(
        path,
        str(obj["cfg"]),
        header,
        MappingProxyType(state),
        int(obj["upto"]),
        LAYOUT_VERSION,
        str(obj.get("darknetpy", "")),
    )


def network_from_checkpoint(
    path: str | Path, cfg: str | Path | None = None, *, partial: bool = False
) -> Network:
    """Rebuild the network of a checkpoint, with its weights and header (``network.header``).

    Args:
        path: the ``.pt`` file.
        cfg: a cfg file to build from instead of the stored cfg text; its tensors must match the
            checkpoint's exactly (names and shapes).
        partial: accept a checkpoint made from a partial ``.weights`` file (its later layers hold
            initial values); ``network.loaded_layers`` tells how many layers it really holds.

    Raises:
        WeightsError: the checkpoint does not fit the cfg (names the first differing tensors),
            or is partial and ``partial`` is False.
    """
    ckpt = read_checkpoint(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CfgWarning)  # the user saw them when converting
        if cfg is None:
            network = Network.from_text(ckpt.cfg_text, path=f"{ckpt.path}[cfg]")
        else:
            network = Network.from_cfg(cfg)
    load_network_state(network, ckpt.state_dict, f"{ckpt.path}", network.where())
    if ckpt.upto < len(network.layers) and not partial:
        raise WeightsError(
            f"{ckpt.path}: made from a partial .weights file holding layers 0..{ckpt.upto - 1} of "
            f"{len(network.layers)}; layers from {ckpt.upto} on are untrained. A partial file is "
            "meant for training (`darknetpy train` accepts the .weights file)"
        )
    network.header = ckpt.header
    network.loaded_layers = ckpt.upto
    return network


def load_network_state(
    network: Network, state: Mapping[str, torch.Tensor], source: str, target: str
) -> None:
    """``network.load_state_dict(state)`` with a :class:`WeightsError` naming what differs."""
    own = network.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or extra or shapes:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if extra:
            parts.append(f"unexpected {', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''}")
        if shapes:
            parts.append(f"shape {', '.join(shapes[:3])}{' ...' if len(shapes) > 3 else ''}")
        raise WeightsError(f"{source}: does not fit the network of {target}: {'; '.join(parts)}")
    network.load_state_dict(dict(state))


def _first_line(exc: Exception) -> str:
    """torch's reason in one line, without its advice to load with ``weights_only=False``."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    unsafe = [line for line in lines if "GLOBAL" in line or "not an allowed global" in line]
    if unsafe or isinstance(exc, __import__("pickle").UnpicklingError):
        detail = unsafe[0] if unsafe else (lines[0] if lines else "")
        return (f"it holds pickled code, which darknetpy never runs ({detail[:160]}); "
                "only checkpoints written by `darknetpy convert` or `darknetpy train` load")
    return f"{type(exc).__name__}: {lines[0][:200] if lines else ''}"
