"""The training images decoded once into shared memory, one copy per machine.

Darknet decodes every image again each time it draws it; a small list (the default: up to 2000
images) is decoded once here instead (:class:`ImageCache`) and read by every DataLoader worker
without a copy. With several training processes on one machine the first of them (local rank 0)
builds the cache in a file of ``/dev/shm`` and the others map the same file
(:func:`build_image_cache` with a :class:`NodeShare`): one copy per machine, not one per process.

Free space is checked before anything is written: a container's ``/dev/shm`` (64 MB by default)
that is too small gives a warning and a run without the cache (images decoded on every use, same
batches), never a SIGBUS when a page of the shared memory cannot be backed.
"""

from __future__ import annotations

import json
import os
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .image import load_image

__all__ = ["SHM_DIR", "ImageCache", "NodeShare", "ShmTooSmall", "build_image_cache",
           "node_cache_file", "shm_free_bytes"]  # fmt: skip

SHM_DIR = Path("/dev/shm")  # where torch's and this module's shared memory lives on Linux


class ShmTooSmall(DataError):
    """The shared-memory file system cannot hold the image cache."""


def shm_free_bytes(directory: Path = SHM_DIR) -> int | None:
    """Bytes free for an unprivileged writer in ``directory``'s file system; None if unknown."""
    try:
        stat = os.statvfs(directory)
    except OSError:
        return None
    return int(stat.f_bavail) * int(stat.f_frsize)


def _check_space(needed: int, directory: Path) -> None:
    free = shm_free_bytes(directory)
    if free is not None and needed > free:
        mib = 2**20
        raise ShmTooSmall(
            f"{directory} has {free / mib:.0f} MiB free but the image cache needs "
            f"{needed / mib:.0f} MiB: the images are decoded on every use instead (slower, same "
            "batches); give the container more shared memory (docker run --shm-size=...) or "
            "train without the cache"
        )


def _decode_all(paths: Sequence[Path], threads: int) -> list[np.ndarray | str]:
    def decode(path: Path) -> np.ndarray | str:
        try:
            return load_image(path)
        except DataError as exc:
            return str(exc)

    with ThreadPoolExecutor(max(threads, 1)) as pool:  # cv2.imdecode releases the GIL
        return list(pool.map(decode, paths))


def _meta_path(file: Path) -> Path:
    return file.with_name(file.name + ".json")


def _unlink(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


class ImageCache:
    """Every image of a list decoded once into one shared-memory uint8 buffer.

    ``ImageCache(paths)`` keeps the buffer in a ``torch`` shared-memory tensor, so DataLoader
    workers read it without a copy (with ``fork`` and with ``spawn``).
    ``ImageCache(paths, file=...)`` writes it to ``file`` (in ``/dev/shm``) with its index beside it
    (``file`` + ``.json``), for :meth:`attach` by the other processes of the machine; the files are
    removed when the building process ends. Needs about ``sum(H*W*3)`` bytes, plus the same again
    briefly while building.

    Args:
        reserve: shared memory to leave free besides the cache (batches on their way from the
            loader's workers).

    Raises:
        ShmTooSmall: the shared-memory file system has less than the cache + ``reserve`` free.
    """

    def __init__(self, paths: Sequence[Path], threads: int = 4, *, file: Path | None = None,
                 reserve: int = 0) -> None:
        decoded = _decode_all(paths, threads)
        self.errors: dict[int, str] = {i: d for i, d in enumerate(decoded) if isinstance(d, str)}
        shapes = np.array(
            [(0, 0) if isinstance(d, str) else d.shape[:2] for d in decoded], np.int64
        ).reshape(-1, 2)
        self.shapes = shapes
        sizes = shapes[:, 0] * shapes[:, 1] * 3
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.file = None if file is None else Path(file)
        _check_space(self.nbytes + reserve, SHM_DIR if self.file is None else self.file.parent)
        self.buffer: torch.Tensor | None = None
        if self.file is None:
            self.buffer = torch.empty(self.nbytes, dtype=torch.uint8).share_memory_()
            flat = self.buffer.numpy()
        else:
            flat = self._create_file(self.file)
        for i, d in enumerate(decoded):
            if not isinstance(d, str):
                flat[self.offsets[i] : self.offsets[i + 1]] = d.reshape(-1)
        if self.file is not None:
            flat.flush()
            meta = {"offsets": self.offsets.tolist(), "shapes": shapes.tolist(),
                    "errors": {str(k): v for k, v in self.errors.items()}}  # fmt: skip
            partial = _meta_path(self.file).with_suffix(".partial")
            partial.write_text(json.dumps(meta))
            partial.replace(_meta_path(self.file))  # attach() sees a whole index or none
        self._flat = flat

    def _create_file(self, file: Path) -> np.ndarray:
        self._finalizer = weakref.finalize(self, _unlink, file, _meta_path(file))
        with open(file, "wb") as f:
            if self.nbytes and hasattr(os, "posix_fallocate"):
                try:  # blocks backed now: ENOSPC here rather than SIGBUS on a later write
                    os.posix_fallocate(f.fileno(), 0, self.nbytes)
                except OSError as exc:
                    _unlink(file)
                    raise ShmTooSmall(f"{file}: cannot reserve {self.nbytes} bytes for the image "
                                      f"cache ({exc.strerror}); give the container more shared "
                                      "memory (docker run --shm-size=...)") from None  # fmt: skip
        if not self.nbytes:
            return np.zeros(0, np.uint8)
        return np.memmap(file, np.uint8, "r+", shape=(self.nbytes,))

    @classmethod
    def attach(cls, file: Path) -> ImageCache:
        """The cache another process of this machine built in ``file``.

        Raises:
            DataError: no such cache (not built, or its index not yet written).
        """
        file = Path(file)
        try:
            meta = json.loads(_meta_path(file).read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{file}: no image cache to attach ({exc})") from None
        cache = cls.__new__(cls)
        cache.errors = {int(k): v for k, v in meta["errors"].items()}
        cache.shapes = np.array(meta["shapes"], np.int64).reshape(-1, 2)
        cache.offsets = np.array(meta["offsets"], np.int64)
        cache.file, cache.buffer = file, None
        cache._flat = cache._map()
        return cache

    def _map(self) -> np.ndarray:
        if self.file is None:
            assert self.buffer is not None
            return self.buffer.numpy()
        if not self.nbytes:
            return np.zeros(0, np.uint8)
        return np.memmap(self.file, np.uint8, "r", shape=(self.nbytes,))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_flat")
        state.pop("_finalizer", None)  # the building process alone removes the files
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._flat = self._map()

    @property
    def nbytes(self) -> int:
        return int(self.offsets[-1])

    def get(self, index: int) -> np.ndarray:
        """The decoded image (read-only view), or :class:`DataError` if it could not be decoded."""
        if index in self.errors:
            raise DataError(self.errors[index])
        h, w = self.shapes[index]
        view = self._flat[self.offsets[index] : self.offsets[index + 1]].reshape(h, w, 3)
        view.flags.writeable = False
        return view


@dataclass(frozen=True)
class NodeShare:
    """How the training processes of one machine share one :class:`ImageCache`.

    Attributes:
        file: the cache file, the same path in every process of the machine (``/dev/shm/...``).
        builder: this process builds it (local rank 0); the others attach to it.
        agree: a barrier of all processes: called with whether this process's part went well,
            returns True when it went well on every one of them.
    """

    file: Path
    builder: bool
    agree: Callable[[bool], bool]


def node_cache_file(token: int) -> Path:
    """The cache file of a multi-process run: in ``/dev/shm`` (else the temporary folder), named by
    a ``token`` all the run's processes share."""
    import tempfile

    folder = SHM_DIR if SHM_DIR.is_dir() else Path(tempfile.gettempdir())
    return folder / f"darknetpy-images-{token}.u8"


def build_image_cache(paths: Sequence[Path], threads: int, *, node: NodeShare | None = None,
                      reserve: int = 0) -> ImageCache | None:
    """An :class:`ImageCache` of ``paths`` (with ``node``: one per machine), or None with a warning
    when shared memory is too small (the images are then decoded on every use).

    With ``node`` every process must call it: the builder decodes and writes the file while the
    others wait for its index (or its failure mark) to appear, not in a collective a slow decode
    could time out; everyone then meets at ``node.agree``, and the others attach. If the builder of
    any machine failed, no process uses a cache.
    """
    if node is None:
        try:
            return ImageCache(paths, threads, reserve=reserve)
        except ShmTooSmall as exc:
            warnings.warn(str(exc), stacklevel=2)
            return None
    cache, ok, failed = None, True, node.file.with_name(node.file.name + ".failed")
    if node.builder:
        try:
            cache = ImageCache(paths, threads, file=node.file, reserve=reserve)
        except ShmTooSmall as exc:
            warnings.warn(str(exc), stacklevel=2)
            ok = False
        finally:
            if cache is None:
                failed.touch()  # the waiting processes go on to agree
    else:
        while not (_meta_path(node.file).exists() or failed.exists()):
            time.sleep(0.05)
    agreed = node.agree(ok)
    if node.builder:
        _unlink(failed)  # everyone saw it before agreeing
    if not agreed:
        if cache is not None:
            _unlink(node.file, _meta_path(node.file))
        return None
    return cache if node.builder else ImageCache.attach(node.file)
