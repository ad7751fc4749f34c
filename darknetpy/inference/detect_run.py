"""``darknetpy detect``'s work: sources, darknet's console lines, drawn images, JSON, video.

Mirrors ``detector.c: test_detector`` and what it calls: ``image.c: draw_detections_v3,
get_actual_detections, get_color`` (console lines and drawing), ``network.c: detection_to_json``
(the ``-out`` JSON, here with pixel boxes added), and ``demo.c`` for videos. The CLI
(:mod:`darknetpy.cli.infer`) only parses arguments and calls :func:`run_detect`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import IO, TYPE_CHECKING, Any

import cv2
import numpy as np

from ..errors import DataError, UsageError
from ..files import atomic_write, refuse_overwrite

if TYPE_CHECKING:
    from .inference_model import InferenceModel, Prediction

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "DetectSummary",
    "Source",
    "class_color",
    "darknet_json",
    "draw_detections",
    "ext_output_lines",
    "read_sources",
    "run_detect",
]

#: File suffixes read as images (what OpenCV's imread decodes), compared lower-case.
IMAGE_SUFFIXES = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".png",
        ".bmp",
        ".tif",
        ".tiff",
        ".webp",
        ".jp2",
        ".pbm",
        ".pgm",
        ".ppm",
        ".pnm",
        ".sr",
        ".ras",
        ".exr",
        ".hdr",
        ".pic",
    }
)
#: File suffixes read as videos with ``cv2.VideoCapture``.
VIDEO_SUFFIXES = frozenset(
    {
        ".mp4",
        ".avi",
        ".mov",
        ".mkv",
        ".webm",
        ".m4v",
        ".mpg",
        ".mpeg",
        ".wmv",
        ".flv",
        ".3gp",
        ".ts",
        ".mts",
        ".m2ts",
        ".ogv",
    }
)
#: Darknet's palette for ``get_color`` (``image.c: colors``), RGB.
_PALETTE = ((1, 0, 1), (0, 0, 1), (0, 1, 1), (0, 1, 0), (1, 1, 0), (1, 0, 0))
#: Darknet skips classes whose name starts with this (``get_actual_detections``).
DONT_SHOW = "dont_show"
SOURCE_KINDS = MappingProxyType({"image": "an image file", "video": "a video file"})


@dataclass(frozen=True)
class Source:
    """One input: ``kind`` is a key of :data:`SOURCE_KINDS`."""

    kind: str
    path: Path


def read_sources(sources: Sequence[str | Path], stdin: IO[str] | None = None) -> list[Source]:
    """Expand the command line's SOURCE arguments, in order.

    Each is an image file, a video file (by suffix, :data:`IMAGE_SUFFIXES` /
    :data:`VIDEO_SUFFIXES`), a folder (its images, sorted by name), or a text file listing one image
    per line (darknet's ``detector test ... < list.txt``; relative lines are read from the working
    directory, then from the list's folder). No SOURCE reads such a list from ``stdin``.

    Raises:
        DataError: a missing path, an empty folder, or a file that is none of these.
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


# ---------------------------------------------------------------- console lines
def _c_round(value: float) -> float:
    """C's ``round``: halves away from zero."""
    return math.copysign(math.floor(abs(value) + 0.5), value)


def _boxes_in_order(
    prediction: Prediction, thresh: float, names: Sequence[str]
) -> list[tuple[Any, int, list[Any]]]:
    """``get_actual_detections`` then the sort by left edge: ``(detection of the best class,
    best class, every detection of that box)`` per box, as ``draw_detections_v3`` prints them."""
    t = np.float32(thresh)
    by_box: dict[int, list[Any]] = {}
    for d in prediction.detections:
        by_box.setdefault(d.box_index, []).append(d)
    selected = []
    for index in sorted(by_box):
        dets = sorted(by_box[index], key=lambda d: d.class_id)
        best, best_prob = None, t
        for d in dets:  # `prob > best_prob`: the first class wins a tie
            if np.float32(d.score) > best_prob and not _hidden(names, d.class_id):
                best, best_prob = d, np.float32(d.score)
        if best is not None:
            selected.append((best, best.class_id, dets))

    def left(item: tuple[Any, int, list[Any]]) -> np.float32:
        x, _, w, _ = item[0].relative
        return np.float32(x) - np.float32(w) / np.float32(2)

    selected.sort(key=left)  # qsort(compare_by_lefts); glibc's merge sort keeps ties in order
    return selected


def _hidden(names: Sequence[str], class_id: int) -> bool:
    return class_id < len(names) and names[class_id].startswith(DONT_SHOW)


def _line(d: Any, name: str, width: int, height: int, ext_output: bool) -> str:
    percent = float(np.float32(d.score) * np.float32(100))
    text = f"{name}: {percent:.0f}%"
    if not ext_output:
        return text
    x, y, w, h = (np.float32(v) for v in d.relative)
    half_w, half_h = w / np.float32(2), h / np.float32(2)
    left = _c_round(float((x - half_w) * np.float32(width)))
    top = _c_round(float((y - half_h) * np.float32(height)))
    bw = _c_round(float(w * np.float32(width)))
    bh = _c_round(float(h * np.float32(height)))
    return (
        f"{text}\t(left_x: {left:4.0f}   top_y: {top:4.0f}   width: {bw:4.0f}   height: {bh:4.0f})"
    )


def ext_output_lines(
    prediction: Prediction, thresh: float, names: Sequence[str], ext_output: bool = True
) -> list[str]:
    """Darknet's console lines for one image (``image.c: draw_detections_v3``).

    One ``name: NN%`` line per box whose best class is above ``thresh``, boxes sorted by their left
    edge, then a line for each other class of that box above ``thresh``. With ``ext_output`` the
    box follows in pixels, rounded as C's ``round``:
    ``name: NN%\\t(left_x: %4.0f   top_y: %4.0f   width: %4.0f   height: %4.0f)``.
    """
    lines = []
    for best, best_class, dets in _boxes_in_order(prediction, thresh, names):
        lines.append(_line(best, best.name, prediction.width, prediction.height, ext_output))
        for d in dets:
            if d.class_id != best_class and np.float32(d.score) > np.float32(thresh):
                lines.append(_line(d, d.name, prediction.width, prediction.height, ext_output))
    return lines


# ---------------------------------------------------------------- drawing
def _get_color(c: int, x: int, maximum: int) -> float:
    """``image.c: get_color``: channel ``c`` of colour ``x`` of ``maximum`` (palette blend)."""
    ratio = np.float32(x) / np.float32(maximum) * np.float32(5)
    i, j = math.floor(ratio), math.ceil(ratio)
    ratio -= np.float32(i)
    return float((np.float32(1) - ratio) * _PALETTE[i][c] + ratio * _PALETTE[j][c])


def class_color(class_id: int, classes: int) -> tuple[int, int, int]:
    """The BGR colour darknet draws class ``class_id`` with (``draw_detections_v3``)."""
    offset = class_id * 123457 % max(1, classes)
    red, green, blue = (_get_color(c, offset, max(1, classes)) for c in (2, 1, 0))
    return int(blue * 255), int(green * 255), int(red * 255)


def draw_detections(
    image_bgr: np.ndarray, prediction: Prediction, thresh: float, names: Sequence[str], classes: int
) -> np.ndarray:
    """A copy of ``image_bgr`` with each box darknet would draw and its label
    (``name: 0.93[, other names]``), lowest score drawn first as in ``draw_detections_v3``."""
    out = image_bgr.copy()
    h, w = out.shape[:2]
    width = max(1, int(h * 0.002))
    boxes = _boxes_in_order(prediction, thresh, names)
    boxes.sort(key=lambda item: np.float32(item[0].score))  # compare_by_probs, ascending
    font_scale = max(0.35, h * 0.02 / 22)
    thickness = max(1, round(font_scale * 1.5))
    for best, best_class, dets in boxes:
        x, y, bw, bh = best.relative
        # clamp in float first: an untrained network's boxes can be inf or nan
        left = _pixel((x - bw / 2.0) * w, w - 1)
        right = _pixel((x + bw / 2.0) * w, w - 1)
        top = _pixel((y - bh / 2.0) * h, h - 1)
        bottom = _pixel((y + bh / 2.0) * h, h - 1)
        color = class_color(best_class, classes)
        cv2.rectangle(out, (left, top), (right, bottom), color, width)
        label = f"{best.name}: {best.score:.2f}" + "".join(
            f", {d.name}" for d in dets if d.class_id != best_class and d.score > thresh
        )
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        y0 = max(0, top - th - base - width)
        cv2.rectangle(out, (left, y0), (left + tw + 2, y0 + th + base + 2), color, -1)
        text_color = (0, 0, 0) if sum(color) > 382 else (255, 255, 255)
        cv2.putText(
            out,
            label,
            (left + 1, y0 + th + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            text_color,
            thickness,
            cv2.LINE_AA,
        )
    return out


# ---------------------------------------------------------------- JSON
def darknet_json(prediction: Prediction, frame_id: int) -> dict[str, Any]:
    """One entry of darknet's ``-out`` JSON (``network.c: detection_to_json``) plus the image size
    and each object's ``box`` in pixels (left, top, width, height; not rounded, not clipped)."""
    return {
        "frame_id": frame_id,
        "filename": prediction.source,
        "width": prediction.width,
        "height": prediction.height,
        "objects": [d.to_dict() for d in prediction.detections],
    }


# ---------------------------------------------------------------- the command
@dataclass
class DetectSummary:
    """What :func:`run_detect` did."""

    images: int = 0
    frames: int = 0
    detections: int = 0
    seconds: float = 0.0
    written: list[Path] = field(default_factory=list)


def _output_path(save_dir: Path, source: Path, suffix: str, used: set[Path]) -> Path:
    stem = source.stem or "image"
    candidate = save_dir / f"{stem}{suffix}"
    k = 1
    while candidate in used:
        candidate = save_dir / f"{stem}_{k}{suffix}"
        k += 1
    used.add(candidate)
    return candidate


def run_detect(
    model: InferenceModel,
    sources: Sequence[Source],
    *,
    thresh: float = 0.25,
    nms: float = 0.45,
    letter_box: bool | None = None,
    save_dir: Path | None = None,
    json_path: Path | None = None,
    ext_output: bool = False,
    show: bool = False,
    batch_size: int = 8,
    print_fn: Callable[[str], None] = print,
) -> DetectSummary:
    """Detect on every source; print darknet's lines, save drawn images/videos and JSON.

    Args:
        model: the inference model (its ``names`` label the output).
        sources: from :func:`read_sources`.
        save_dir: folder for drawn images (``<stem>.jpg``) and videos (``<stem>.mp4``); None
            draws nothing.
        json_path: write darknet's JSON array there (one entry per image or video frame).
        ext_output: add the pixel box to each console line (darknet's ``-ext_output``).
        show: also display each drawn image in a window (needs a display).

    Raises:
        UsageError: an output file would overwrite an input file.
        DataError: an unreadable image or video.
    """
    inputs = [s.path for s in sources]
    summary = DetectSummary()
    used: set[Path] = set()
    entries: list[dict[str, Any]] = []
    if json_path is not None:
        refuse_overwrite(json_path, *inputs)
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    frame_id = 0
    images = [s for s in sources if s.kind == "image"]

    def report(prediction: Prediction, seconds: float) -> None:
        print_fn(f"{prediction.source}: Predicted in {seconds * 1000:f} milli-seconds.")
        for line in ext_output_lines(prediction, thresh, model.names, ext_output):
            print_fn(line)

    for chunk_start in range(0, len(images), max(1, batch_size)):
        chunk = images[chunk_start : chunk_start + max(1, batch_size)]
        t0 = time.perf_counter()
        predictions = model.predict(
            [s.path for s in chunk],
            thresh=thresh,
            nms=nms,
            letter_box=letter_box,
            batch_size=batch_size,
        )
        per_image = (time.perf_counter() - t0) / len(chunk)
        for source, prediction in zip(chunk, predictions):
            frame_id += 1
            summary.images += 1
            summary.detections += len(prediction)
            report(prediction, per_image)
            entries.append(darknet_json(prediction, frame_id))
            if save_dir is not None or show:
                drawn = draw_detections(
                    cv2.imread(str(source.path), cv2.IMREAD_COLOR),
                    prediction,
                    thresh,
                    model.names,
                    model.classes or 1,
                )
                if save_dir is not None:
                    out = _output_path(save_dir, source.path, ".jpg", used)
                    refuse_overwrite(out, *inputs)
                    if not cv2.imwrite(str(out), drawn):
                        raise DataError(f"{out}: OpenCV could not write the image")
                    summary.written.append(out)
                if show:
                    _show(drawn)
    for source in (s for s in sources if s.kind == "video"):
        out = _output_path(save_dir, source.path, ".mp4", used) if save_dir is not None else None
        if out is not None:
            refuse_overwrite(out, *inputs)
        for prediction in _run_video(
            model,
            source.path,
            out,
            thresh=thresh,
            nms=nms,
            letter_box=letter_box,
            batch_size=batch_size,
            show=show,
        ):
            frame_id += 1
            summary.frames += 1
            summary.detections += len(prediction)
            for line in ext_output_lines(prediction, thresh, model.names, ext_output):
                print_fn(line)
            entries.append(darknet_json(prediction, frame_id))
        if out is not None:
            summary.written.append(out)
    if json_path is not None:
        text = json.dumps(entries, indent=1).encode()
        atomic_write(json_path, lambda f: f.write(text))
        summary.written.append(json_path)
    summary.seconds = time.perf_counter() - start
    return summary


def _show(image: np.ndarray) -> None:
    try:
        cv2.imshow("predictions", image)
        cv2.waitKey(0)
    except cv2.error as exc:
        raise UsageError(f"cannot open a window ({exc.err}); run with --dont-show") from None


def _frames(capture: cv2.VideoCapture, batch: int) -> Iterator[list[np.ndarray]]:
    frames: list[np.ndarray] = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
        if len(frames) == batch:
            yield frames
            frames = []
    if frames:
        yield frames


def _run_video(
    model: InferenceModel,
    path: Path,
    out: Path | None,
    *,
    thresh: float,
    nms: float,
    letter_box: bool | None,
    batch_size: int,
    show: bool,
) -> Iterator[Prediction]:
    """Every frame of a video (BGR frames, as darknet's ``demo`` reads them), drawn into ``out``."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DataError(f"{path}: OpenCV cannot open this video")
    writer = None
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        for frames in _frames(capture, max(1, batch_size)):
            predictions = model.predict(
                frames,
                thresh=thresh,
                nms=nms,
                letter_box=letter_box,
                color="bgr",
                batch_size=batch_size,
            )
            for frame, prediction in zip(frames, predictions):
                prediction = _renamed(prediction, str(path))
                if out is not None or show:
                    drawn = draw_detections(
                        frame, prediction, thresh, model.names, model.classes or 1
                    )
                    if out is not None:
                        if writer is None:
                            h, w = drawn.shape[:2]
                            writer = cv2.VideoWriter(
                                str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h)
                            )
                            if not writer.isOpened():
                                raise DataError(f"{out}: OpenCV cannot write an mp4v video here")
                        writer.write(drawn)
                    if show:
                        _show(drawn)
                yield prediction
    finally:
        capture.release()
        if writer is not None:
            writer.release()


def _renamed(prediction: Prediction, source: str) -> Prediction:
    return replace(prediction, source=source)


def _pixel(value: float, limit: int) -> int:
    """``value`` clamped to [0, limit] as an int; NaN gives 0."""
    return int(min(max(value, 0.0), float(limit))) if value == value else 0
