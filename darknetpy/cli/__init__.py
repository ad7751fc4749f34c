"""The ``darknetpy`` command line: translates arguments into library calls, nothing more.

One module per command group (``core``: summary, partial; ``infer``: detect, convert, export;
``training``: train; ``evaluation``: map, valid, recall, calc_anchors, check, dataset converters),
each with an ``add_parsers(sub)``, listed in :func:`_groups`.

Every :class:`~darknetpy.errors.DarknetpyError` is printed as one line, ``darknetpy: error: ...``,
with exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence

from ..errors import DarknetpyError, UsageError

Command = Callable[[argparse.Namespace], int]

# darknet's own command lines: `darknet detector <verb> DATA CFG [WEIGHTS] [FILE] [-flags]`.
DETECTOR_VERBS = {"train": "train", "test": "detect", "map": "map", "valid": "valid",
                  "recall": "recall", "calc_anchors": "calc_anchors"}


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"darknetpy: warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------- parser
def _groups() -> tuple:  # noqa: ANN202
    from . import core, evaluation, import_ultralytics, import_yolox, infer, training

    return (core, infer, training, evaluation, import_yolox, import_ultralytics)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="darknetpy",
        description="Darknet .cfg/.weights in PyTorch: summary, detect, train, map, convert, export.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    for group in _groups():
        group.add_parsers(sub)
    return parser


def translate_darknet_form(argv: list[str]) -> list[str]:
    """``detector VERB DATA CFG [WEIGHTS] [FILE] -flag value`` to darknetpy's own argument order."""
    if not argv or argv[0] != "detector":
        return argv
    if len(argv) < 2 or argv[1] not in DETECTOR_VERBS:
        raise UsageError(
            f"'darknetpy detector' needs one of {', '.join(DETECTOR_VERBS)}, e.g. "
            "darknetpy detector test cfg/coco.data cfg/yolov4.cfg yolov4.weights dog.jpg"
        )
    verb, rest = argv[1], argv[2:]
    positional = [a for a in rest if not a.startswith("-")]
    flags = rest[len(positional):] if rest[: len(positional)] == positional else None
    if flags is None:  # flags mixed between positionals: keep darknet's `-flag value` pairs together
        positional, flags, i = [], [], 0
        while i < len(rest):
            if rest[i].startswith("-") and not _is_number(rest[i]):
                flags.append(rest[i])
                if i + 1 < len(rest) and rest[i] in _DARKNET_VALUE_FLAGS:
                    flags.append(rest[i + 1])
                    i += 1
            else:
                positional.append(rest[i])
            i += 1
    if verb == "calc_anchors":
        if len(positional) != 1:
            raise UsageError("darknetpy detector calc_anchors DATA -num_of_clusters K -width W -height H")
        return ["calc_anchors", positional[0], *[_DARKNET_FLAG_NAMES.get(f, f) for f in flags]]
    if len(positional) < 2:
        raise UsageError(f"darknetpy detector {verb} DATA CFG [WEIGHTS] ...: missing the .data or .cfg file")
    data, cfg, *more = positional
    out = [DETECTOR_VERBS[verb]]
    if verb == "test":
        out += [cfg, *more[:1], *more[1:], "--names-from-data", data]
    else:
        out += [cfg, data, *more]
    out += [_DARKNET_FLAG_NAMES.get(f, f) for f in flags]
    return out


_DARKNET_VALUE_FLAGS = {"-thresh", "-iou_thresh", "-points", "-gpus", "-num_of_clusters", "-width",
                        "-height", "-out", "-mAP_epochs", "-hier"}
_DARKNET_FLAG_NAMES = {
    "-thresh": "--thresh", "-iou_thresh": "--iou-thresh", "-points": "--points", "-gpus": "--gpus",
    "-num_of_clusters": "--num", "-width": "--width", "-height": "--height", "-out": "--json",
    "-map": "--map", "-clear": "--clear", "-dont_show": "--dont-show", "-ext_output": "--ext-output",
    "-letter_box": "--letter-box", "-show": "--show", "-mAP_epochs": "--map-epochs", "-hier": "--hier",
}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = translate_darknet_form(argv)
    except DarknetpyError as exc:
        print(f"darknetpy: error: {exc}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    previous = warnings.showwarning
    warnings.showwarning = _warning_line
    try:
        return int(args.func(args) or 0)
    except DarknetpyError as exc:
        print(f"darknetpy: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("darknetpy: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous
