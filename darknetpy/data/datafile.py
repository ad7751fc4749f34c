"""The ``.data`` file, ``.names`` files and image lists (no torch, no model).

Mirrors ``option_list.c: read_data_cfg`` (lexing shared with the cfg: every whitespace character
is deleted, ``#``/``;`` lines skipped, the first occurrence of a key wins), the keys that
``detector.c`` reads (spec §10), ``data.c: get_paths`` and ``get_labels``.

Relative paths, in a ``.data`` file and in an image list, are resolved from the working directory
first (Darknet's only rule), then from the folder of the file that names them, so a dataset folder
with paths relative to itself (``../shared/datasets/raccoon/raccoon.data``) works from anywhere.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from ..errors import CfgError, DataError
from ..model.cfg import Entry, read_key_values

__all__ = [
    "DATA_KEYS",
    "EVAL_FORMATS",
    "DataConfig",
    "DataWarning",
    "read_image_list",
    "read_names",
    "resolve_path",
]


class DataWarning(UserWarning):
    """A ``.data`` key Darknet does not read (it would be silently ignored), or an image or label
    line a command skipped."""


#: Keys of a .data file, with the Darknet function(s) that read them.
DATA_KEYS: Mapping[str, str] = MappingProxyType(
    {
        "classes": "calc_anchors, demo, get_metadata (train/test/map use the cfg's classes)",
        "train": "train_detector, calc_anchors",
        "valid": "validate_detector_map, validate_detector, train_detector -map",
        "names": "test_detector, validate_detector_map, validate_detector",
        "labels": "get_metadata (alias of names)",
        "backup": "train_detector (checkpoint folder)",
        "eval": "validate_detector (output format)",
        "results": "validate_detector (output folder)",
        "map": "validate_detector (class remap file)",
        "difficult": "validate_detector_map (difficult-GT image list)",
        "saveweights": "train_detector (numbered checkpoint interval)",
        "savelast": "train_detector (_last checkpoint interval)",
    }
)

#: ``eval=`` values ``validate_detector`` knows (anything else silently means ``voc`` in Darknet).
EVAL_FORMATS: tuple[str, ...] = ("voc", "coco", "imagenet", "bdd", "kitti")


def resolve_path(value: str | Path, base: Path | None) -> Path:
    """A relative path from the working directory if it exists there, else from ``base``.

    Absolute paths are returned unchanged. When the path exists in neither place the
    working-directory reading (Darknet's) is returned.
    """
    path = Path(value)
    if path.is_absolute() or base is None or path.exists():
        return path
    candidate = base / path
    return candidate if candidate.exists() else path


@dataclass(frozen=True)
class DataConfig:
    """A parsed ``.data`` file (``read_data_cfg``; keys of spec §10).

    Paths are resolved with :func:`resolve_path`. ``None`` means the key is absent; Darknet's
    defaults for absent keys depend on the command (e.g. ``valid`` falls back to ``train`` under
    ``train -map``; ``saveweights`` is 1000, or 10000 when ``max_batches >= 10000``) and are applied
    by the caller. ``lines`` maps each key present to its 1-based line, for messages.
    """

    path: Path
    classes: int | None = None
    train: Path | None = None
    valid: Path | None = None
    names: Path | None = None
    backup: Path = Path("/backup/")  # Darknet's default, an absolute folder
    eval: str = "voc"
    results: Path = Path("results")
    map: Path | None = None
    difficult: Path | None = None
    saveweights: int | None = None
    savelast: int = 100
    lines: Mapping[str, int] = field(default_factory=dict, compare=False)

    def where(self, key: str) -> str:
        """``path:line`` of ``key`` (or just the path when the key is absent)."""
        line = self.lines.get(key)
        return f"{self.path}:{line}" if line else str(self.path)

    @classmethod
    def from_file(cls, path: str | Path, *, strict: bool = False) -> DataConfig:
        """Read and check a ``.data`` file.

        Args:
            path: the ``.data`` file.
            strict: turn the warning about unknown keys into a :class:`DataError`.

        Raises:
            DataError: unreadable file, a line that is not ``key=value``, a value of the wrong
                type, or an unknown ``eval=`` format; the message gives ``path:line``.
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such .data file")
        try:
            entries = read_key_values(path, ".data")
        except CfgError as exc:
            raise DataError(str(exc)) from None
        first: dict[str, Entry] = {}
        for entry in entries:
            if entry.key not in DATA_KEYS:
                close = difflib.get_close_matches(entry.key, list(DATA_KEYS), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                message = (
                    f"{path}:{entry.line}: unknown .data key '{entry.key}'{hint}; Darknet ignores "
                    f"it. Known keys: {', '.join(DATA_KEYS)}"
                )
                if strict:
                    raise DataError(message)
                warnings.warn(message, DataWarning, stacklevel=2)
                continue
            first.setdefault(entry.key, entry)
        if "names" not in first and "labels" in first:
            first["names"] = first["labels"]
        base = path.parent

        def get_path(key: str) -> Path | None:
            entry = first.get(key)
            return resolve_path(entry.value, base) if entry else None

        def get_int(key: str, minimum: int) -> int | None:
            entry = first.get(key)
            if entry is None:
                return None
            try:
                value = int(entry.value)
            except ValueError:
                raise DataError(
                    f"{path}:{entry.line}: {key}={entry.value} is not an integer"
                ) from None
            if value < minimum:
                raise DataError(f"{path}:{entry.line}: {key}={value} must be >= {minimum}")
            return value

        fmt = first["eval"].value if "eval" in first else "voc"
        if fmt not in EVAL_FORMATS:
            raise DataError(
                f"{path}:{first['eval'].line}: eval={fmt} is not one of {', '.join(EVAL_FORMATS)}"
            )
        savelast = get_int("savelast", 1)
        return cls(
            path=path,
            classes=get_int("classes", 1),
            train=get_path("train"),
            valid=get_path("valid"),
            names=get_path("names"),
            backup=get_path("backup") or Path("/backup/"),
            eval=fmt,
            results=get_path("results") or Path("results"),
            map=get_path("map"),
            difficult=get_path("difficult"),
            saveweights=get_int("saveweights", 1),
            savelast=100 if savelast is None else savelast,
            lines=MappingProxyType({k: e.line for k, e in first.items()}),
        )


def _read_lines(path: Path, what: str, where: str | None) -> list[str]:
    prefix = f"{where}: " if where else ""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise DataError(f"{prefix}{what} file {path} does not exist") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise DataError(f"{prefix}cannot read {what} file {path} ({getattr(exc, 'strerror', None) or exc})") from None
    # get_paths/fgetl: one entry per line, only the line end removed; a final newline adds nothing
    if not text:
        return []
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def read_names(path: str | Path, *, where: str | None = None) -> tuple[str, ...]:
    """Class names, one per line (``get_labels``). Every line counts, blank ones included.

    Args:
        path: the ``.names`` file.
        where: ``path:line`` of the key naming it, for the error message.

    Raises:
        DataError: the file is missing or unreadable.
    """
    return tuple(_read_lines(Path(path), "names", where))


def read_image_list(
    path: str | Path, *, base: Path | None = None, where: str | None = None
) -> list[Path]:
    """The image paths of a ``train=``/``valid=`` list (``get_paths``).

    Blank lines are skipped (Darknet re-draws them) and surrounding whitespace is removed (Darknet
    would fail to open such a path). A relative entry is resolved with :func:`resolve_path` from
    the working directory, then from the list's folder, then from ``base`` (the ``.data`` folder).
    Entries are not checked for existence; the loader counts unusable images.

    Raises:
        DataError: the list is missing, unreadable, or holds no path.
    """
    path = Path(path)
    entries = [line.strip() for line in _read_lines(path, "image list", where)]
    folders: Iterable[Path] = [path.parent] + ([base] if base is not None else [])
    out: list[Path] = []
    for entry in entries:
        if not entry:
            continue
        resolved = Path(entry)
        if not resolved.is_absolute() and not resolved.exists():
            for folder in folders:
                if (folder / resolved).exists():
                    resolved = folder / resolved
                    break
        out.append(resolved)
    if not out:
        raise DataError(f"{(where + ': ') if where else ''}image list {path} holds no image path")
    return out
