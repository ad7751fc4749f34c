"""``darknetpy detect``'s inputs: image files, folders, image lists (darknet's ``detector test ... <
list.txt``), videos, video streams (``rtsp://``, ``http://``) and webcams (``camera:N``, darknet's
``detector demo ... -c N``), expanded into :class:`Source` records in command-line order."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO

from ..errors import DataError, UsageError

__all__ = ["FRAME_KINDS", "IMAGE_SUFFIXES", "SOURCE_KINDS", "STREAM_SCHEMES", "VIDEO_SUFFIXES",
           "Source", "read_sources"]

#: File suffixes read as images (what OpenCV's imread decodes), compared lower-case.
IMAGE_SUFFIXES = frozenset({
    ".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pbm", ".pgm", ".ppm",
    ".pnm", ".sr", ".ras", ".exr", ".hdr", ".pic",
})
#: File suffixes read as videos with ``cv2.VideoCapture``.
VIDEO_SUFFIXES = frozenset({
    ".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp",
    ".ts", ".mts", ".m2ts", ".ogv",
})
SOURCE_KINDS = MappingProxyType({
    "image": "an image file", "video": "a video file",
    "stream": "a video stream (rtsp://, rtmp://, http://, https://)",
    "camera": "a webcam (camera:N; darknet's demo -c N)",
})
#: The kinds read frame by frame with ``cv2.VideoCapture``.
FRAME_KINDS = frozenset({"video", "stream", "camera"})
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
_CAMERA = re.compile(r"camera:(\d+)")


@dataclass(frozen=True)
class Source:
    """One input: ``kind`` is a key of :data:`SOURCE_KINDS`.

    ``path`` is the file (for a stream or camera a file-name-safe stand-in, which names its output
    video); ``address`` is the stream's URL exactly as given (``Path`` would cut ``rtsp://`` to
    ``rtsp:/``) or the camera's index.
    """

    kind: str
    path: Path
    address: str = ""

    @property
    def name(self) -> str:
        """What the console lines and JSON call it: the URL, ``camera:N`` or the file path."""
        return self.address if self.kind == "stream" else (
            f"camera:{self.address}" if self.kind == "camera" else str(self.path))  # fmt: skip

    @property
    def capture(self) -> str | int:
        """The argument of ``cv2.VideoCapture``."""
        return int(self.address) if self.kind == "camera" else (self.address or str(self.path))


def _frame_source(raw: str) -> Source | None:
    """A stream URL or ``camera:N`` (unless a file of that name exists), else None."""
    if raw.lower().startswith(STREAM_SCHEMES):
        stand_in = re.sub(r"[^A-Za-z0-9._-]+", "_", raw.split("://", 1)[1]).strip("_") or "stream"
        return Source("stream", Path(stand_in[:80]), raw)
    if (m := _CAMERA.fullmatch(raw)) and not Path(raw).exists():
        return Source("camera", Path(f"camera{m[1]}"), m[1])
    return None


def read_sources(sources: Sequence[str | Path], stdin: IO[str] | None = None) -> list[Source]:
    """Expand the command line's SOURCE arguments, in order.

    Each is an image file, a video file (by suffix, :data:`IMAGE_SUFFIXES` /
    :data:`VIDEO_SUFFIXES`), a folder (its images, sorted by name), or a text file listing one image
    per line (darknet's ``detector test ... < list.txt``; relative lines are read from the working
    directory, then from the list's folder). No SOURCE reads such a list from ``stdin``.

    Raises:
        DataError: a missing path, an empty folder, or a file that is none of these.
        UsageError: no SOURCE and nothing on stdin, or a cfg file given as a source.
    """
    if not sources:
        if stdin is None or stdin.isatty():
            raise UsageError(
                "no SOURCE given: name images, a folder, an image list or a video "
                "(or pipe a list of image paths on standard input, as darknet reads it)"
            )
        paths = _list_lines(stdin.read(), Path("."))
        if not paths:
            raise UsageError("no SOURCE given and no image path on standard input")
        return [Source("image", p) for p in paths]
    out: list[Source] = []
    for raw in sources:
        if isinstance(raw, str) and (frames := _frame_source(raw)) is not None:
            out.append(frames)
            continue
        path = Path(raw)
        suffix = path.suffix.lower()
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise DataError(
                    f"{path}: folder holds no image ({', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            out += [Source("image", p) for p in images]
        elif not path.exists():
            raise DataError(f"{path}: no such file or folder")
        elif suffix in IMAGE_SUFFIXES:
            out.append(Source("image", path))
        elif suffix in VIDEO_SUFFIXES:
            out.append(Source("video", path))
        else:
            out += [Source("image", p) for p in _read_list(path)]
    return out


def _read_list(path: Path) -> list[Path]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(
            f"{path}: not an image ({', '.join(sorted(IMAGE_SUFFIXES))}), a video "
            f"({', '.join(sorted(VIDEO_SUFFIXES))}) nor a text list of image paths"
        ) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    lines = (line.strip() for line in text.splitlines())
    first = next((line for line in lines if line[:1] not in ("", "#", ";")), "")
    if first.startswith("["):  # `detect img.jpg yolov4.cfg w` or darknet's DATA CFG order
        raise UsageError(
            f"{path}: looks like a cfg ({first}) given as the source; the order is "
            "darknetpy detect CFG WEIGHTS SOURCE... (or darknet's: darknetpy detector test "
            "DATA CFG WEIGHTS IMAGE)"
        )
    paths = _list_lines(text, path.parent)
    if not paths:
        raise DataError(f"{path}: the image list holds no path")
    return paths


def _list_lines(text: str, base: Path) -> list[Path]:
    out = []
    for line in text.splitlines():
        entry = line.strip()
        if not entry:
            continue
        p = Path(entry)
        if not p.is_absolute() and not p.exists() and (base / p).exists():
            p = base / p
        out.append(p)
    return out
