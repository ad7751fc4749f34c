"""Writing output files safely: atomically, and never over an input (foundation, stdlib only)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from .errors import UsageError, WeightsError

__all__ = ["atomic_write", "refuse_overwrite", "require_folder"]


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through a temporary file in the same folder, fsync, then rename over it.

    A crash mid-write leaves the previous file intact and at most a stray ``.tmp`` file.

    Raises:
        WeightsError: the folder cannot be created or written.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise WeightsError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def require_folder(out: Path) -> None:
    """Refuse to write ``out`` into a folder that does not exist: a mistyped output path is an
    error naming the folder, not a tree of folders made without a word.

    Raises:
        UsageError: ``out``'s folder is missing or is a file.
    """
    folder = Path(out).parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise UsageError(f"{out}: the folder {folder} {what}; create it first")


def refuse_overwrite(out: Path, *inputs: Path | None) -> None:
    """Refuse to write ``out`` over one of the command's input files.

    Raises:
        UsageError: ``out`` is (resolves to) one of ``inputs``.
    """
    for path in inputs:
        if path is not None and Path(path).exists() and Path(out).resolve() == Path(path).resolve():
            raise UsageError(f"{out}: refusing to overwrite an input file; choose another output name")
