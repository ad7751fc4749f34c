"""``darknetpy detect``'s work (``detector.c: test_detector``, ``demo.c`` for videos): every source
through the model, darknet's console lines, drawn images and videos, the ``-out`` JSON. The sources
are :mod:`.sources`; what is printed, drawn and written per image is :mod:`.darknet_output`. The CLI
(:mod:`darknetpy.cli.infer`) only parses arguments and calls :func:`run_detect`.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from ..data.datafile import DataWarning
from ..errors import DataError, UsageError
from ..files import atomic_write, refuse_overwrite
from .darknet_output import darknet_json, draw_detections, ext_output_lines, write_yolo_labels
from .sources import FRAME_KINDS, Source

if TYPE_CHECKING:
    from .inference_model import InferenceModel, Prediction

__all__ = ["DetectSummary", "run_detect"]


# ---------------------------------------------------------------- the command
@dataclass
class DetectSummary:
    """What :func:`run_detect` did."""

    images: int = 0
    frames: int = 0
    detections: int = 0
    seconds: float = 0.0
    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # why each unreadable image was skipped


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
    save_labels: bool = False,
    out_filename: Path | None = None,
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
        save_labels: write each image's detections as a YOLO label file where Darknet's
            ``-save_labels`` does (:func:`~darknetpy.data.labels.label_path`), replacing any there.
        out_filename: the drawn video of the one video, stream or camera (darknet's demo
            ``-out_filename``), instead of ``save_dir/<stem>.mp4``.

    An unreadable image is skipped (a :class:`~darknetpy.data.datafile.DataWarning` naming it;
    ``summary.skipped`` holds why) and the others are detected, drawn and written, as training
    skips an unusable image; when no image nor video is left, that is an error.

    Raises:
        UsageError: an output file would overwrite an input file; ``save_dir`` is not a folder.
        DataError: an unreadable video, or no readable image at all.
    """
    inputs = [s.path for s in sources]
    summary = DetectSummary()
    used: set[Path] = set()
    entries: list[dict[str, Any]] = []
    if json_path is not None:
        refuse_overwrite(json_path, *inputs)
    if save_dir is not None:
        _make_folder(save_dir)
    start = time.perf_counter()
    frame_id = 0
    images = [s for s in sources if s.kind == "image"]
    skipped = summary.skipped if len(sources) > 1 else None  # one image alone: its error

    def report(prediction: Prediction, seconds: float) -> None:
        print_fn(f"{prediction.source}: Predicted in {seconds * 1000:f} milli-seconds.")
        for line in ext_output_lines(prediction, thresh, model.names, ext_output):
            print_fn(line)

    for chunk_start in range(0, len(images), max(1, batch_size)):
        chunk = images[chunk_start : chunk_start + max(1, batch_size)]
        t0 = time.perf_counter()
        found = _predict_readable(model, chunk, skipped, thresh=thresh, nms=nms,
                                  letter_box=letter_box, batch_size=batch_size)  # fmt: skip
        per_image = (time.perf_counter() - t0) / len(chunk)
        for source, prediction in found:
            frame_id += 1
            summary.images += 1
            summary.detections += len(prediction)
            report(prediction, per_image)
            if save_labels:
                summary.written.append(write_yolo_labels(source.path, prediction, thresh, inputs))
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
    framed = [s for s in sources if s.kind in FRAME_KINDS]
    if out_filename is not None and (len(framed) != 1 or images):
        raise UsageError(f"--out-filename {out_filename}: needs exactly one video, stream or "
                         f"camera source (got {len(framed)}, and {len(images)} images)")
    for source in framed:
        out = out_filename if out_filename is not None else (
            _output_path(save_dir, source.path, ".mp4", used) if save_dir is not None else None)
        if out is not None:
            refuse_overwrite(out, *inputs)
        for prediction in _run_video(
            model,
            source,
            out,
            thresh=thresh,
            nms=nms,
            letter_box=letter_box,
            batch_size=batch_size if source.kind == "video" else 1,  # live: frame by frame
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
    if summary.skipped and not summary.images and not summary.frames:
        raise DataError(f"no readable image among the {len(summary.skipped)} given (first: "
                        f"{summary.skipped[0]})")  # fmt: skip
    if json_path is not None:
        text = json.dumps(entries, indent=1).encode()
        atomic_write(json_path, lambda f: f.write(text))
        summary.written.append(json_path)
    summary.seconds = time.perf_counter() - start
    return summary


def _make_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--save-dir {folder}: is a file, not a folder; name a folder (it is "
                         "created) or pass --no-save")  # fmt: skip
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--save-dir {folder}: cannot create it ({exc.strerror or exc})") from None


def _predict_readable(
    model: InferenceModel, chunk: Sequence[Source], skipped: list[str] | None, **options: Any
) -> list[tuple[Source, Prediction]]:
    """``model.predict`` over ``chunk``; when an image of it cannot be read, each image alone,
    skipping (warning about and appending to ``skipped``) the unreadable ones; with ``skipped``
    None, the error is raised."""
    try:
        return list(zip(chunk, model.predict([s.path for s in chunk], **options)))
    except DataError as exc:
        if skipped is None:
            raise
        if len(chunk) == 1:
            skipped.append(str(exc))
            warnings.warn(f"skipped {exc}", DataWarning, stacklevel=2)
            return []
    return [pair for source in chunk for pair in _predict_readable(model, [source], skipped,
                                                                     **options)]  # fmt: skip


def _show(image: np.ndarray, wait: int = 0) -> None:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        # OpenCV's Qt build aborts the whole process there (SIGABRT) instead of raising cv2.error
        raise UsageError("cannot open a window: no display (DISPLAY is not set); run with "
                         "--dont-show (in Darknet's form: -dont_show)")
    try:
        cv2.imshow("predictions", image)
        cv2.waitKey(wait)  # 0: until a key (images), 1: the next frame (videos)
    except cv2.error as exc:
        raise UsageError(f"cannot open a window ({exc.err}); run with --dont-show (in Darknet's "
                         "form: -dont_show)") from None


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
    source: Source,
    out: Path | None,
    *,
    thresh: float,
    nms: float,
    letter_box: bool | None,
    batch_size: int,
    show: bool,
) -> Iterator[Prediction]:
    """Every frame of a video (BGR frames, as darknet's ``demo`` reads them), drawn into ``out``."""
    capture = cv2.VideoCapture(source.capture)
    if not capture.isOpened():
        raise DataError(f"{source.name}: OpenCV cannot open this {source.kind}")
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
                prediction = _renamed(prediction, source.name)
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
                        _show(drawn, wait=1)
                yield prediction
    finally:
        capture.release()
        if writer is not None:
            writer.release()


def _renamed(prediction: Prediction, source: str) -> Prediction:
    return replace(prediction, source=source)
