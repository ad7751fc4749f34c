"""Byte-exact darknet ``.weights`` reading and writing (``parser.c: load_weights_upto, save_weights_upto``).

File layout: ``int32 major, minor, revision``, then ``seen`` as uint64 when ``major*10 + minor >= 2``
(uint32 before), then every weight-carrying layer's float32 arrays in layer order (each layer knows
its own arrays: :meth:`DarknetLayer.darknet_tensors`). Layers with ``dontload=1`` consume no bytes.

Where darknet is silent, darknetpy is explicit:

* a file that ends inside a layer, or has bytes left after the last layer, is a :class:`WeightsError`
  naming the layer and the byte counts (``lenient=True`` gives darknet's behaviour: warn and go on);
* a file that ends exactly between two layers (``yolov4.conv.137``) is a *partial* file: accepted with
  ``partial=True`` (what ``train`` uses, like darknet), an error otherwise, so a detector never runs
  with half its weights silently at their initial values.

Reading goes straight into the tensors' memory with ``readinto`` (no intermediate copy of the file),
so peak memory stays at the size of the network plus one tensor.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from ..errors import WeightsError
from ..files import atomic_write

if TYPE_CHECKING:
    from .network import Network

FLOAT = np.dtype("<f4")


class WeightsWarning(UserWarning):
    """Darknet's lenient loading went on despite a problem (``lenient=True``)."""


@dataclass(frozen=True)
class WeightsHeader:
    """The header of a ``.weights`` file, kept as read so that saving reproduces it."""

    major: int = 0
    minor: int = 2
    revision: int = 5
    seen: int = 0  # images seen during training

    @property
    def seen_dtype(self) -> np.dtype:
        """``parser.c``: 64-bit ``seen`` when ``major*10 + minor >= 2``, else 32-bit."""
        return np.dtype("<u8") if self.major * 10 + self.minor >= 2 else np.dtype("<u4")

    @property
    def transpose(self) -> bool:
        """``major > 1000 || minor > 1000``: connected weights stored [inputs][outputs]."""
        return self.major > 1000 or self.minor > 1000

    @property
    def size(self) -> int:
        return 12 + self.seen_dtype.itemsize

    def to_bytes(self) -> bytes:
        version = np.array([self.major, self.minor, self.revision], dtype="<i4").tobytes()
        return version + np.array([self.seen], dtype=self.seen_dtype).tobytes()

    @classmethod
    def read(cls, f: IO[bytes], path: Path) -> WeightsHeader:
        head = f.read(12)
        if len(head) < 12:
            raise WeightsError(
                f"{path}: {len(head)} bytes is too short for a darknet .weights header (needs 12 + seen)"
            )
        major, minor, revision = (int(v) for v in np.frombuffer(head, dtype="<i4"))
        header = cls(major, minor, revision, 0)
        if not (0 <= major < 10_000 and 0 <= minor < 10_000 and 0 <= revision < 1_000_000):
            raise WeightsError(
                f"{path}: header version {major}.{minor}.{revision} is not a darknet .weights header "
                "(is this a .cfg, .pt or image file?)"
            )
        raw = f.read(header.seen_dtype.itemsize)
        if len(raw) < header.seen_dtype.itemsize:
            raise WeightsError(f"{path}: file ends inside the header's 'seen' counter")
        return replace(header, seen=int(np.frombuffer(raw, dtype=header.seen_dtype)[0]))


def read_header(path: str | Path) -> WeightsHeader:
    """Only the header of a ``.weights`` file."""
    path = Path(path)
    with _open(path) as f:
        return WeightsHeader.read(f, path)


@contextmanager
def _open(path: Path) -> Iterator[IO[bytes]]:
    try:
        f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such weights file") from None
    except IsADirectoryError:
        raise WeightsError(f"{path}: is a directory, expected a .weights file") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise WeightsError(f"{path}: cannot read weights file ({getattr(exc, 'strerror', None) or exc})") from None
    with f:
        yield f


class _Truncated(Exception):
    def __init__(self, got: int) -> None:
        self.got = got


def read_weights(path: str | Path, network: Network, *, upto: int | None = None,
                 partial: bool = False, lenient: bool = False) -> WeightsHeader:
    """Copy a darknet ``.weights`` file into ``network``, layer by layer.

    Args:
        path: the file.
        network: the network built from the matching cfg.
        upto: read only layers ``0 .. upto-1`` (darknet's ``load_weights_upto`` cutoff).
        partial: accept a file that ends exactly between two layers (``yolov4.conv.137``);
            the remaining layers keep their initial values.
        lenient: darknet's behaviour for damaged files: a file ending inside a layer or with extra
            bytes only warns.

    Returns:
        The header as read. ``network.loaded_layers`` is set to the number of layers read.

    Raises:
        WeightsError: naming the layer where the file went wrong and the byte counts.
    """
    path = Path(path)
    layers = list(network.layers)[: len(network.layers) if upto is None else upto]
    expected = sum(layer.darknet_read_byte_count() for layer in layers if not layer.training_opts.dontload)
    with _open(path) as f:
        file_size = os.fstat(f.fileno()).st_size
        header = WeightsHeader.read(f, path)
        offset = header.size
        loaded = 0
        for layer in layers:
            if layer.training_opts.dontload:
                loaded += 1
                continue
            if offset == file_size and layer.darknet_read_byte_count() > 0:
                done = sum(1 for lay in layers[:loaded] if lay.darknet_byte_count() > 0)
                message = (
                    f"{path}: the file ends after layer {loaded - 1} ({offset} bytes), before "
                    f"{layer.where()}; {len(layers) - loaded} layers left unread "
                    f"(the cfg needs {expected + header.size} bytes)"
                )
                if partial or lenient:
                    if not partial:
                        warnings.warn(message, WeightsWarning, stacklevel=2)
                    break
                raise WeightsError(
                    message + f"; {done} weight layers were read. A partial file such as "
                    "yolov4.conv.137 is meant for training (`darknetpy train` accepts it); "
                    "otherwise the cfg does not match this weights file"
                )

            def read(count: int, name: str, _layer=layer) -> np.ndarray:  # noqa: ANN001
                nonlocal offset
                out = np.empty(count, dtype=FLOAT)
                got = f.readinto(memoryview(out).cast("B")) or 0
                if got < out.nbytes:
                    if lenient:
                        warnings.warn(
                            f"{path}: unexpected end of weights file in {_layer.where()} {name} "
                            f"(darknet: 'Unexpected end of wights-file'); the rest keeps its values",
                            WeightsWarning, stacklevel=3,
                        )
                        raise _Truncated(got)
                    raise WeightsError(
                        f"{path}: truncated in {_layer.where()}: {name} needs {out.nbytes} bytes at "
                        f"offset {offset}, only {file_size - offset} left (file {file_size} bytes, the "
                        f"cfg needs {expected + header.size}); the file is damaged or belongs to "
                        "another cfg"
                    )
                offset += got
                return out

            try:
                layer.read_darknet(read, header.transpose)
            except _Truncated:
                loaded += 1
                offset = file_size
                break
            loaded += 1
        if offset < file_size and loaded == len(layers) and upto is None:
            extra = file_size - offset
            message = (
                f"{path}: {extra} bytes left after the last layer (file {file_size} bytes, the cfg "
                f"{network.where()} needs {offset}); the weights belong to a different cfg"
            )
            if extra == 4 and header.seen_dtype.itemsize == 4:
                message += "; exactly 4 bytes: was the header written with a 64-bit 'seen' by another version?"
            if not lenient:
                raise WeightsError(message + "; to load it anyway as darknet does, pass --lenient "
                                   "(lenient=True in Python)")
            warnings.warn(message, WeightsWarning, stacklevel=2)
    network.loaded_layers = loaded
    return header


def iter_weight_arrays(network: Network, header: WeightsHeader,
                       upto: int | None = None) -> Iterator[np.ndarray]:
    """The float32 arrays a ``.weights`` file holds after its header, in file order."""
    for layer in list(network.layers)[: len(network.layers) if upto is None else upto]:
        yield from layer.write_darknet(header.transpose)


def write_weights(path: str | Path, network: Network, header: WeightsHeader | None = None, *,
                  upto: int | None = None) -> None:
    """Write ``network`` as a darknet ``.weights`` file, atomically (temporary file + rename).

    The header is written as given (the one read, by default), so an unchanged network
    saves back byte for byte. Like darknet's ``save_weights_upto``, every layer is written,
    ``dontload`` ones included.
    """
    header = header or WeightsHeader()
    atomic_write(Path(path), lambda f: _write_body(f, network, header, upto))


def _write_body(f: IO[bytes], network: Network, header: WeightsHeader, upto: int | None) -> None:
    f.write(header.to_bytes())
    for array in iter_weight_arrays(network, header, upto):
        f.write(np.ascontiguousarray(array, dtype=FLOAT).data)


def weights_bytes(network: Network, header: WeightsHeader | None = None) -> bytes:
    """The ``.weights`` file content as bytes (for checkpoints and tests)."""
    buffer = io.BytesIO()
    _write_body(buffer, network, header or WeightsHeader(), None)
    return buffer.getvalue()
