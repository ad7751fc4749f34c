"""The ``darknetpy`` command line: translates arguments into library calls, nothing more.

One module per command group (``core``: summary, partial; ``infer``: detect, convert, export;
``training``: train; ``evaluation``: map, valid, recall, calc_anchors; ``datasets``: check, convert-voc, convert-coco),
each with an ``add_parsers(sub)``, listed in :func:`_groups`.

Every :class:`~darknetpy.errors.DarknetpyError` is printed as one line, ``darknetpy: error: ...``,
with exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import NoReturn

from ..errors import DarknetpyError
from .darknet_forms import DETECTOR_VERBS, detector_help, translate_darknet_form  # noqa: F401

Command = Callable[[argparse.Namespace], int]


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"darknetpy: warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------- parser
def _groups() -> tuple:  # noqa: ANN202
    from . import core, datasets, evaluation, import_ultralytics, import_yolox, infer, training

    return (core, infer, training, evaluation, datasets, import_yolox, import_ultralytics)


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors on one line, as darknetpy's own errors (the subcommands'
    parsers are of this class too: ``add_subparsers`` makes them of the parent's type)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="darknetpy",
        description="Darknet .cfg/.weights in PyTorch: summary, detect, train, map, convert, export.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"darknetpy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    for group in _groups():
        group.add_parsers(sub)
    return parser


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's flush at exit does not hit the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (a captured stdout in tests)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    notes: list[str] = []
    try:
        asked = detector_help(argv)  # `detector --help`, `detector test --help`
        if asked is not None:
            print(asked[0])
            argv = asked[1]
            if not argv:
                return 0
        argv = translate_darknet_form(argv, notes)
    except DarknetpyError as exc:
        print(f"darknetpy: error: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"darknetpy: note: {note}", file=sys.stderr)
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
    except BrokenPipeError:  # `darknetpy summary x.cfg | head`: the reader left; stop quietly
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for `yes | head`
    finally:
        warnings.showwarning = previous
