"""Darknet's own command lines (``darknet detector VERB DATA CFG [WEIGHTS] [FILE] -flag value``)
translated into darknetpy's verbs, as ``darknet.c: main`` / ``detector.c: run_detector`` read them.

Darknet's flags become darknetpy's options (:data:`DARKNET_FLAGS`); ``-i N`` (Darknet's GPU
index) becomes ``--gpus N`` for ``train`` and ``--device cuda:N`` for the others; flags of
Darknet's web servers (``-mjpeg_port``, ``-json_port``) are accepted and dropped with a note.
darknetpy's own options may be mixed in, with their values after ``=`` or as the next word.
"""

from __future__ import annotations

from types import MappingProxyType

from ..errors import UsageError

__all__ = ["DARKNET_FLAGS", "DETECTOR_FORMS", "DETECTOR_VERBS", "LENIENT_HELP", "detector_help",
           "translate_darknet_form"]  # fmt: skip

# darknet's detector verbs -> darknetpy's verbs
DETECTOR_VERBS = MappingProxyType({
    "train": "train", "test": "detect", "demo": "detect", "map": "map", "valid": "valid",
    "recall": "recall", "calc_anchors": "calc_anchors",
})
# what each darknet form takes, for `darknetpy detector --help`
DETECTOR_FORMS = MappingProxyType({
    "train": "DATA CFG [WEIGHTS] [-map] [-clear] [-gpus 0,1] [-i N] [-mAP_epochs N]",
    "test": "DATA CFG WEIGHTS [IMAGE] [-thresh T] [-ext_output] [-save_labels] [-out JSON] "
            "[-i N] (no IMAGE: a list on stdin)",
    "demo": "DATA CFG WEIGHTS [VIDEO | rtsp://... | http://...] [-c N] [-out_filename OUT] "
            "[-dont_show] [-thresh T] [-i N]",
    "map": "DATA CFG WEIGHTS [-points 0|11|101] [-iou_thresh T] [-thresh T] [-i N]",
    "valid": "DATA CFG WEIGHTS [-out PREFIX] [-i N]",
    "recall": "DATA CFG WEIGHTS [-i N]",
    "calc_anchors": "DATA -num_of_clusters K -width W -height H",
})
# darknet flag -> darknetpy option (flags taking a value are in _VALUE_FLAGS)
DARKNET_FLAGS = MappingProxyType({
    "-thresh": "--thresh", "-iou_thresh": "--iou-thresh", "-points": "--points", "-gpus": "--gpus",
    "-num_of_clusters": "--num", "-width": "--width", "-height": "--height", "-out": "--json",
    "-map": "--map", "-clear": "--clear", "-dont_show": "--dont-show",
    "-ext_output": "--ext-output", "-letter_box": "--letter-box", "-show": "--show",
    "-mAP_epochs": "--map-epochs", "-hier": "--hier",
    "-save_labels": "--save-labels", "-out_filename": "--out-filename",
})
_VALUE_FLAGS = frozenset({"-thresh", "-iou_thresh", "-points", "-gpus", "-num_of_clusters",
                          "-width", "-height", "-out", "-mAP_epochs", "-hier", "-out_filename",
                          "-i", "-c", "-mjpeg_port", "-json_port"})  # fmt: skip
# accepted and dropped (darknetpy serves no web stream), with a note
_IGNORED = MappingProxyType({
    "-mjpeg_port": "darknetpy serves no MJPEG stream (-out_filename saves the drawn video)",
    "-json_port": "darknetpy serves no JSON stream (-out writes the detections' JSON)",
})
_HELP = ("-h", "--help")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _takes_value(verb: str, option: str) -> bool:
    """Whether darknetpy's ``verb`` reads a value after ``option`` (``--max-batches 3``)."""
    from . import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and verb in a.choices)  # noqa: SLF001
    action = sub.choices[verb]._option_string_actions.get(option)  # noqa: SLF001
    return action is not None and action.nargs != 0


def _split(verb: str, rest: list[str]) -> tuple[list[str], list[tuple[str, str | None]]]:
    """Positionals and ``(flag, value or None)`` pairs, wherever the flags stand."""
    positional: list[str] = []
    flags: list[tuple[str, str | None]] = []
    i = 0
    while i < len(rest):
        word = rest[i]
        if word.startswith("-") and not _is_number(word):
            takes = word in _VALUE_FLAGS if not word.startswith("--") else (
                "=" not in word and _takes_value(verb, word))  # fmt: skip
            value = rest[i + 1] if takes and i + 1 < len(rest) else None
            flags.append((word, value))
            i += 1 if value is None else 2
        else:
            positional.append(word)
            i += 1
    return positional, flags


def translate_darknet_form(argv: list[str], notes: list[str] | None = None) -> list[str]:
    """``detector VERB DATA CFG [WEIGHTS] [FILE] -flag value`` to darknetpy's own argument order.

    Args:
        argv: the command line after the program name; anything but a ``detector`` form is
            returned as it is.
        notes: receives one line per flag accepted and ignored (``-mjpeg_port``).

    Raises:
        UsageError: an unknown detector verb, or a missing .data/.cfg file.
    """
    if not argv or argv[0] != "detector":
        return argv
    if len(argv) < 2 or argv[1] not in DETECTOR_VERBS:
        raise UsageError(
            f"'darknetpy detector' needs one of {', '.join(DETECTOR_VERBS)}, e.g. "
            "darknetpy detector test cfg/coco.data cfg/yolov4.cfg yolov4.weights dog.jpg "
            "(darknetpy detector --help lists them)"
        )
    verb, target = argv[1], DETECTOR_VERBS[argv[1]]
    positional, flags = _split(target, argv[2:])
    translated: list[str] = []
    given = {flag for flag, _ in flags}
    camera = None
    for flag, value in flags:
        if flag in _IGNORED:
            if notes is not None:
                notes.append(f"{flag} {value or ''} ignored: {_IGNORED[flag]}".replace("  ", " "))
        elif flag == "-i":  # darknet.c: gpu_index
            if verb == "train":
                translated += [] if "-gpus" in given else ["--gpus", str(value)]
            elif verb != "calc_anchors":
                translated += ["--device", f"cuda:{value}"]
        elif flag == "-gpus" and verb != "train":  # only train splits over GPUs; the rest: one
            first = str(value).split(",")[0]
            translated += [] if verb == "calc_anchors" else ["--device", f"cuda:{first}"]
            if notes is not None and "," in str(value):
                notes.append(f"-gpus {value}: detector {verb} runs on one GPU, cuda:{first}")
        elif flag == "-c" and verb == "demo":
            camera = value
        else:
            translated += [DARKNET_FLAGS.get(flag, flag), *([] if value is None else [value])]
    if verb == "calc_anchors":
        if len(positional) != 1:
            raise UsageError("darknetpy detector calc_anchors DATA -num_of_clusters K -width W "
                             "-height H")
        return ["calc_anchors", positional[0], *translated]
    if len(positional) < 2:
        raise UsageError(f"darknetpy detector {verb} DATA CFG [WEIGHTS] ...: missing the .data or "
                         ".cfg file")
    data, cfg, *more = positional
    if verb == "test":
        return ["detect", cfg, *more, "--names-from-data", data, *translated]
    if verb == "demo":  # demo.c: a video file or stream, else the webcam -c N (default 0)
        weights, *sources = more or [""]
        if not weights:
            raise UsageError("darknetpy detector demo DATA CFG WEIGHTS [VIDEO|URL] [-c N]: missing "
                             "the weights file")  # fmt: skip
        sources = sources or [f"camera:{camera or 0}"]
        shown = [] if "-dont_show" in given else ["--show"]  # demo opens a window unless told
        # and saves nothing but the -out_filename video
        return ["detect", cfg, weights, *sources, "--names-from-data", data, *shown, "--no-save",
                *translated]  # fmt: skip
    return [target, cfg, data, *more, *translated]


def detector_help(argv: list[str]) -> tuple[str, list[str]] | None:
    """``detector --help`` / ``detector VERB --help``: the text to print and what to run next
    (``[]``: nothing; else darknetpy's verb with ``--help``); None when no help is asked."""
    if len(argv) < 2 or argv[0] != "detector":
        return None
    if argv[1] in _HELP:
        lines = ["Darknet's command lines, run by darknetpy's verbs (darknetpy VERB --help):"]
        lines += [f"  darknetpy detector {verb} {form}\n      runs darknetpy {DETECTOR_VERBS[verb]}"
                  for verb, form in DETECTOR_FORMS.items()]  # fmt: skip
        lines += ["  -mjpeg_port/-json_port are accepted and ignored; -i N picks the GPU (cuda:N)."]
        return "\n".join(lines), []
    if argv[1] in DETECTOR_VERBS and any(word in _HELP for word in argv[2:]):
        verb = argv[1]
        text = (f"usage (Darknet's form): darknetpy detector {verb} {DETECTOR_FORMS[verb]}\n"
                f"It runs darknetpy {DETECTOR_VERBS[verb]}, whose options follow "
                f"(Darknet's -flag names map to them):\n")  # fmt: skip
        return text, [DETECTOR_VERBS[verb], "--help"]
    return None


#: ``--lenient``'s help, on every verb that reads a ``.weights`` file.
LENIENT_HELP = ("load a damaged .weights file as darknet does (extra bytes or an early end: a "
                "warning instead of an error)")
