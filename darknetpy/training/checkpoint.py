"""Checkpoints of a training run: Darknet's names and cadence, atomic writes, exact-resume state.

Mirrors ``detector.c: train_detector`` (when ``_<N>``, ``_last``, ``_ema``, ``_best`` and ``_final``
are written, spec §7.5) and ``utils.c: basecfg``. Every file goes through
:func:`darknetpy.files.atomic_write` (temporary file, fsync, rename), so an interrupted save leaves
the previous checkpoint intact.

Beside ``<cfgbase>_last.weights`` (and ``_<N>``, ``_final``) darknetpy writes
``<cfgbase>_last.state.pt``: the optimizer's update buffers, the EMA, the fp16 gradient scaler (its
scale and growth count), the loop counters and the seed.
Resuming from a ``.weights`` whose state file matches it (same ``seen`` and file size) continues
exactly where the run stopped; without it (a file written by Darknet, or a mismatched pair), the
run resumes as Darknet does: iteration ``seen / batch``, empty momentum.
"""

from __future__ import annotations

import io
import signal
import sys
import threading
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError
from ..files import atomic_write
from ..model.weights import WeightsHeader, write_weights

__all__ = [
    "STATE_FORMAT",
    "LoopState",
    "SaveSchedule",
    "StopRequest",
    "basecfg",
    "check_writable",
    "checkpoint_path",
    "default_saveweights",
    "load_state",
    "save_checkpoint",
    "state_path",
]

STATE_FORMAT = "darknetpy-train-state/1"


def basecfg(path: str | Path) -> str:
    """``utils.c: basecfg``: the name after the last ``/``, then after the last ``\\``, cut at its
    FIRST dot."""
    return str(path).rsplit("/", 1)[-1].rsplit("\\", 1)[-1].split(".", 1)[0]


def checkpoint_path(backup: Path, base: str, tag: str | int) -> Path:
    """``<backup>/<cfgbase>_<tag>.weights`` (tag: an iteration, ``last``, ``best``, ``final``, ``ema``)."""
    return Path(backup) / f"{base}_{tag}.weights"


def state_path(weights: Path) -> Path:
    """The exact-resume state beside a checkpoint: ``x_last.weights`` -> ``x_last.state.pt``."""
    weights = Path(weights)
    return weights.with_name(weights.name.rsplit(".", 1)[0] + ".state.pt")


def default_saveweights(max_batches: int) -> int:
    """``train_detector``: ``saveweights`` defaults to 1000, or 10000 when max_batches >= 10000."""
    return 1000 if max_batches < 10000 else 10000


@dataclass
class SaveSchedule:
    """When ``train_detector`` writes ``_<N>`` and ``_last`` (``iter_save``/``iter_save_last`` start
    at the iteration the run starts from)."""

    saveweights: int
    savelast: int
    iter_save: int = 0
    iter_save_last: int = 0

    def numbered_due(self, iteration: int) -> bool:
        """``iteration >= iter_save + saveweights || iteration % saveweights == 0``."""
        return (iteration >= self.iter_save + self.saveweights
                or iteration % self.saveweights == 0)  # fmt: skip

    def last_due(self, iteration: int) -> bool:
        """Only when ``saveweights > savelast``: ``iteration >= iter_save_last + savelast``, or a
        multiple of ``savelast`` above 1."""
        if self.saveweights <= self.savelast:
            return False
        return (iteration >= self.iter_save_last + self.savelast
                or (iteration % self.savelast == 0 and iteration > 1))  # fmt: skip


@dataclass
class LoopState:
    """The training loop's counters, saved beside ``_last`` for an exact resume."""

    iteration: int = 0  # completed updates (Darknet's cur_iteration)
    seed: int = 0
    avg_loss: float = -1.0  # Darknet starts it at -1: "not yet"
    loop_count: int = 0  # Darknet's `count` for the every-10-iterations resize
    width: int = 0  # current training size (random resize)
    height: int = 0
    best_map: float = -1.0
    last_map: float = -1.0
    iter_map: int = 0
    iter_save: int = 0
    iter_save_last: int = 0
    avg_time: float = -1.0  # hours left, exponential average
    skipped: int = 0  # fp16 updates the gradient scaler skipped (inf/nan gradients)
    losses: list[tuple[int, float]] = field(default_factory=list)  # (iteration, avg loss)
    maps: list[tuple[int, float]] = field(default_factory=list)  # (iteration, mAP@0.5)

    def to_meta(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> LoopState:
        known = {k: v for k, v in meta.items() if k in cls.__dataclass_fields__}
        state = cls(**known)
        state.losses = [(int(i), float(v)) for i, v in state.losses]
        state.maps = [(int(i), float(v)) for i, v in state.maps]
        return state


def save_checkpoint(path: Path, network: Any, header: WeightsHeader, *,
                    loop: LoopState | None = None, optimizer: Any = None, ema: Any = None,
                    scaler: Any = None) -> None:
    """Write ``path`` (a Darknet ``.weights``) and, with ``loop``, its state file, both atomically.

    The weights are written first, then the state naming their ``seen`` and file size;
    :func:`load_state` accepts a state only when both match, so a crash between the two writes
    never pairs new weights with old momentum. ``scaler``: the fp16 ``GradScaler``, whose scale a
    resume continues with.
    """
    path = Path(path)
    write_weights(path, network, header)
    if loop is None:
        return
    payload = {
        "format": STATE_FORMAT,
        "seen": int(header.seen),
        "weights_bytes": path.stat().st_size,
        "loop": loop.to_meta(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "ema": ema.state_dict() if ema is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write(state_path(path), lambda f: f.write(buffer.getbuffer()))


def load_state(weights: Path, header: WeightsHeader) -> dict[str, Any] | None:
    """The state saved with ``weights``, or None when there is none or it does not match.

    Returns:
        ``{"loop": LoopState, "optimizer": state dict or None, "ema": state or None,
        "scaler": GradScaler state or None}``.
    """
    weights = Path(weights)
    path = state_path(weights)
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged state file only costs the exact resume
        warnings.warn(f"{path}: unreadable training state ({exc}); resuming from the weights "
                      "alone (momentum restarts at zero)", stacklevel=2)  # fmt: skip
        return None
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        warnings.warn(f"{path}: not a darknetpy training state; ignored", stacklevel=2)
        return None
    size = weights.stat().st_size
    if payload.get("seen") != header.seen or payload.get("weights_bytes") != size:
        warnings.warn(
            f"{path}: belongs to another save than {weights.name} (seen {payload.get('seen')} vs "
            f"{header.seen}); resuming from the weights alone (momentum restarts at zero)",
            stacklevel=2,
        )
        return None
    return {"loop": LoopState.from_meta(payload["loop"]), "optimizer": payload.get("optimizer"),
            "ema": payload.get("ema"), "scaler": payload.get("scaler")}  # fmt: skip


def check_writable(backup: Path) -> None:
    """Create the backup folder now, so a bad path fails before training rather than at the first save."""
    try:
        Path(backup).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"backup folder {backup}: cannot create it ({exc.strerror or exc}); set backup= in the "
            ".data file or pass --backup DIR"
        ) from None


class StopRequest:
    """While active, SIGINT/SIGTERM only set :attr:`signal`: the loop finishes the iteration, saves
    ``_last`` and stops. A second signal raises ``KeyboardInterrupt`` at once (the atomic writes
    still keep every file whole)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        print(f"\n{signal.Signals(signum).name}: finishing this iteration, then saving "
              "_last.weights (again to stop at once)", file=sys.stderr, flush=True)  # fmt: skip

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
