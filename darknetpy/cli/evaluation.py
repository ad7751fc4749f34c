"""``map``, ``valid``, ``recall``, ``calc_anchors`` (``check`` and the converters: :mod:`.datasets`).

Each command turns its arguments into one call of :mod:`darknetpy.evaluation`,
:mod:`darknetpy.tools.anchors`, :mod:`darknetpy.data.check` or :mod:`darknetpy.data.convert_datasets`
and prints the result. Darknet's own forms (``darknetpy detector map DATA CFG WEIGHTS -points 11``)
reach here translated by :mod:`darknetpy.cli` (``map CFG DATA WEIGHTS --points 11``).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

from ..errors import UsageError
from ..files import refuse_overwrite, require_folder
from .argtypes import add_backend_argument, positive_int
from .darknet_forms import LENIENT_HELP

_DEVICE = re.compile(r"cpu|cuda(:\d+)?|mps")


def _device(text: str) -> str:
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"--device {text}: expected cpu, cuda, cuda:N or mps")
    return text


def _check_device(device: str, tf32: bool = False) -> None:
    """One line for a device that is not here (``cuda:9``, no CUDA); TF32 as ``--tf32`` says."""
    from ..devices import parse_device, set_tf32

    parse_device(device)
    set_tf32(tf32)


def _points(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0 or value == 1:
        raise argparse.ArgumentTypeError(
            f"--points {text}: use 0 (area under the curve, Darknet's default), 11 (VOC2007) or "
            "101 (COCO)"
        )
    return value


def _progress() -> bool:
    return sys.stderr.isatty()


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4f}"


# ---------------------------------------------------------------- map / valid / recall
def cmd_map(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate, plot_pr_curves, write_metrics_json

    if args.json:
        refuse_overwrite(Path(args.json), Path(args.cfg), Path(args.data), Path(args.weights))
        require_folder(Path(args.json))
    _check_device(args.device, args.tf32)
    settings = dict(
        thresh=args.thresh, iou_thresh=args.iou_thresh, points=args.points,
        letter_box=True if args.letter_box else None, coco=not args.no_coco, batch=args.batch,
        progress=_progress(),
    )  # fmt: skip
    if args.int8:  # the network quantized on DATA's train images (cached), in an INT8 runtime
        from ..evaluation import evaluate_network
        from ..inference.quantize import cached_int8_model

        runtime = "openvino" if args.backend in (None, "auto") else args.backend
        model = cached_int8_model(args.cfg, args.weights, args.data, lenient=args.lenient,
                                  backend=runtime)
        metrics = evaluate_network(model, Path(args.data), device="cpu", **settings)
    else:
        metrics = evaluate(Path(args.cfg), Path(args.data), Path(args.weights), device=args.device,
                           lenient=args.lenient, backend=args.backend, **settings)
    print(metrics.map.report(metrics.names))
    if metrics.coco is not None:
        coco = metrics.coco.as_dict()
        print("\n pycocotools COCOeval on the same detections (101-point interpolation):")
        print(" " + "  ".join(f"{key} = {_number(value)}" for key, value in coco.items()))
    if args.json:
        print(f"\n wrote {write_metrics_json(metrics, args.json)}")
    if args.plots:
        paths = plot_pr_curves(metrics.map, args.plots, metrics.names)
        print(f" wrote {len(paths)} PR curve(s) to {args.plots}")
    return 0


def cmd_valid(args: argparse.Namespace) -> int:
    from ..evaluation import read_coco_category_ids, read_coco_image_ids, validate

    _check_device(args.device, args.tf32)
    image_ids = category_ids = None
    if args.coco_annotations:
        image_ids = read_coco_image_ids(args.coco_annotations)
        category_ids = read_coco_category_ids(args.coco_annotations)
    paths = validate(
        Path(args.cfg), Path(args.data), Path(args.weights), out=args.prefix,
        destination=args.out, fmt=args.format, image_ids=image_ids, category_ids=category_ids,
        device=args.device, batch=args.batch, progress=_progress(), lenient=args.lenient,
        backend=args.backend,
    )  # fmt: skip
    for path in paths:
        print(f"wrote {path}")
    return 0


def cmd_recall(args: argparse.Namespace) -> int:
    from ..evaluation import iter_recall

    _check_device(args.device, args.tf32)
    rows = iter_recall(
        Path(args.cfg), Path(args.data), Path(args.weights), device=args.device, batch=args.batch,
        lenient=args.lenient, backend=args.backend,
    )
    for row in rows:
        print(row.format(), flush=True)
    return 0


# ---------------------------------------------------------------- calc_anchors
def cmd_calc_anchors(args: argparse.Namespace) -> int:
    import numpy as np

    from ..tools.anchors import (
        calc_anchors,
        format_anchors,
        format_counters_per_class,
        plot_anchors,
        read_anchor_boxes,
    )

    if args.width is None or args.height is None:
        raise UsageError(
            "calc_anchors needs the network size: --width 416 --height 416 "
            "(darknet: -width 416 -height 416)"
        )
    print(f"\n num_of_clusters = {args.num}, width = {args.width}, height = {args.height} ")
    boxes = read_anchor_boxes(Path(args.data), args.width, args.height)
    print(f" read labels from {boxes.images} images ")
    print(f" loaded \t image: {boxes.images} \t box: {len(boxes.wh)}")
    for warning in boxes.warnings:
        print(f" {warning}")
    print(" all loaded. ")
    seed = args.seed
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
        print(f" seed = {seed} (pass --seed {seed} to repeat this run)")
    anchors, avg_iou = calc_anchors(boxes.wh, args.num, seed=seed)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counters = format_counters_per_class(boxes.counts_per_class)
    (out / "counters_per_class.txt").write_text(counters)
    print(f"\n{counters}")
    print(f"\n avg IoU = {avg_iou * 100:2.2f} % ")
    text = format_anchors(anchors, args.width)
    (out / "anchors.txt").write_text(text)
    print(f"\nSaving anchors to the file: {out / 'anchors.txt'} ")
    print(f"anchors = {text}")
    png = plot_anchors(boxes.wh, anchors, out / "anchors.png", args.width, args.height)
    print(f" scatter plot: {png}")
    return 0


# ---------------------------------------------------------------- parsers
def _network_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("cfg", help="the network .cfg (classes from its detection head)")
    p.add_argument("data", help="the .data file (valid=, names=, ...)")
    p.add_argument("weights", help="a .weights file or a darknetpy .pt checkpoint")
    p.add_argument("--device", type=_device, default="cpu", help="cpu (default), cuda, cuda:N")
    p.add_argument("--tf32", action="store_true", help="TensorFloat-32 for CUDA's fp32 "
                   "convolutions (off by default: the CPU's numbers within float32 noise)")
    p.add_argument("--lenient", action="store_true", help=LENIENT_HELP)
    add_backend_argument(p)
    p.add_argument(
        "--batch",
        type=positive_int,
        default=8,
        metavar="N",
        help="images per forward pass (darknet uses 1; same numbers, faster)",
    )
    p.add_argument("--dont-show", action="store_true", help=argparse.SUPPRESS)  # darknet habit


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "map", help="Darknet's mAP (detector map) and COCO AP of a detector",
        description="Like `darknet detector map DATA CFG WEIGHTS`: detections at threshold 0.005, "
                    "NMS 0.45, on the valid= images; prints darknet's report (per-class AP with "
                    "TP/FP, precision, recall, F1, average IoU at --thresh, mAP), then "
                    "pycocotools' AP, AP50, AP75, APs/m/l on the same detections.",
    )  # fmt: skip
    _network_args(p)
    p.add_argument(
        "--thresh",
        type=float,
        default=0.25,
        help="confidence threshold of TP/FP/precision/recall/F1/IoU (default 0.25)",
    )
    p.add_argument(
        "--iou-thresh", type=float, default=0.5, help="a match needs IoU above this (default 0.5)"
    )
    p.add_argument(
        "--points",
        type=_points,
        default=0,
        help="0: area under the curve (default), 11: VOC2007, 101: COCO-style",
    )
    p.add_argument(
        "--letter-box",
        action="store_true",
        help="letterbox the images (keep aspect ratio, grey borders) whatever the cfg "
        "says. Darknet's map ignores -letter_box and uses [net] letter_box; "
        "without this flag darknetpy does the same",
    )
    p.add_argument("--json", metavar="OUT", help="write the figures as JSON (map50, per_class, "
                   "precision, recall, f1, average_iou, coco)")  # fmt: skip
    p.add_argument("--plots", metavar="DIR", help="write a precision-recall plot per class")
    p.add_argument("--no-coco", action="store_true", help="skip the pycocotools figures")
    p.add_argument("--int8", action="store_true",
                   help="quantize to INT8 on DATA's train images (cached) and measure that model, "
                        "in --backend openvino (default) or onnxruntime")  # fmt: skip
    p.set_defaults(func=cmd_map)

    p = sub.add_parser(
        "valid", help="detections for an external evaluator (detector valid)",
        description="Like `darknet detector valid DATA CFG WEIGHTS`: threshold 0.001, NMS 0.6, "
                    "pixel boxes. COCO json (image_id = atoi(file name), or mapped with "
                    "--coco-annotations) or VOC comp4_det_test_<name>.txt files.",
    )  # fmt: skip
    _network_args(p)
    p.add_argument(
        "--out",
        metavar="PATH",
        help="output .json file (coco) or folder (voc); "
        "default <results>/coco_results.json or <results>/comp4_det_test_*.txt",
    )
    p.add_argument(
        "--format",
        choices=("coco", "voc"),
        help="default: coco when --out ends in .json, else the .data key eval= (voc)",
    )
    p.add_argument(
        "--coco-annotations",
        metavar="JSON",
        help="COCO instances file whose image "
        "ids (by file name) and category ids (sorted, one per class) to use",
    )
    p.add_argument("--json", dest="prefix", help=argparse.SUPPRESS)  # darknet's -out prefix
    p.set_defaults(func=cmd_valid)

    p = sub.add_parser(
        "recall", help="proposal recall (detector recall)",
        description="Like `darknet detector recall DATA CFG WEIGHTS`: resize without letterbox, "
                    "threshold 0.001, class-agnostic NMS 0.4; prints, per image, cumulative "
                    "`index correct total RPs/Img IOU Recall` (a truth is found at IoU > 0.5).",
    )  # fmt: skip
    _network_args(p)
    p.set_defaults(func=cmd_recall)

    p = sub.add_parser(
        "calc_anchors", help="anchors by IoU k-means (detector calc_anchors)",
        description="Like `darknet detector calc_anchors DATA -num_of_clusters 9 -width 416 "
                    "-height 416`: k-means with 1 - IoU distance on every train= label; writes "
                    "anchors.txt, counters_per_class.txt and a scatter plot anchors.png.",
    )  # fmt: skip
    p.add_argument("data", help="the .data file (train=, classes=)")
    p.add_argument(
        "--num", type=positive_int, default=5, help="number of anchors (darknet's default 5)"
    )
    p.add_argument("--width", type=positive_int, help="network width (required)")
    p.add_argument("--height", type=positive_int, help="network height (required)")
    p.add_argument(
        "--seed", type=int, help="seed of the initial centres (default: random, printed)"
    )
    p.add_argument("--out-dir", default=".", metavar="DIR", help="where the files go (default .)")
    p.add_argument("--show", action="store_true",
                   help="accepted for darknet compatibility: darknetpy never opens a window, the "
                        "plot is always written to anchors.png")  # fmt: skip
    p.add_argument("--dont-show", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_calc_anchors)
