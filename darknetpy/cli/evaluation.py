"""``map``, ``valid``, ``recall``, ``calc_anchors``, ``check``, ``convert-voc``, ``convert-coco``.

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
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..files import refuse_overwrite, require_folder
from .argtypes import add_backend_argument, positive_int, probability
from .darknet_forms import LENIENT_HELP

if TYPE_CHECKING:
    from ..data.convert_datasets import ConversionReport

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


# ---------------------------------------------------------------- datasets
def cmd_check(args: argparse.Namespace) -> int:
    from ..data.check import check_dataset

    data = Path(args.data)
    if not data.is_file():  # the argument itself: one error line, not a dataset report
        why = "is a folder; darknetpy check takes a .data file" if data.is_dir() else "no such file"
        raise UsageError(f"{data}: {why}")
    report = check_dataset(data, read_images=not args.no_images)
    print(report.format(limit=args.limit))
    return 0 if report.ok else 1


def _print_conversion(report: ConversionReport, limit: int = 20) -> None:
    names = ", ".join(report.names)
    print(
        f"wrote {report.data_file}: {report.train} train + {report.valid} valid images, "
        f"{report.boxes} boxes, {len(report.names)} classes ({names})"
    )
    if report.skipped:
        print(f"left out {len(report.skipped)}:")
        for line in report.skipped[:limit]:
            print(f"  {line}")
        if len(report.skipped) > limit:
            print(f"  ... and {len(report.skipped) - limit} more")


def cmd_convert_voc(args: argparse.Namespace) -> int:
    from ..data.convert_datasets import convert_voc
    from ..data.datafile import read_names

    names = read_names(args.names) if args.names else None
    report = convert_voc(
        Path(args.voc_dir), Path(args.out), names=names, difficult=args.difficult, name=args.name,
        valid_fraction=args.valid_fraction, seed=args.seed, images=args.images,
    )  # fmt: skip
    _print_conversion(report)
    return 0


def cmd_convert_coco(args: argparse.Namespace) -> int:
    from ..data.convert_datasets import convert_coco

    report = convert_coco(
        Path(args.annotations), Path(args.images_dir), Path(args.out),
        include_crowd=args.include_crowd, name=args.name, valid_fraction=args.valid_fraction,
        seed=args.seed, images=args.images,
    )  # fmt: skip
    _print_conversion(report)
    return 0


# ---------------------------------------------------------------- parsers
def _network_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("cfg", help="the network .cfg (classes from its last [yolo]/[region] layer)")
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


def _dataset_out_args(p: argparse.ArgumentParser) -> None:
    from ..data.convert_datasets import IMAGE_MODES

    p.add_argument("--name", default="obj", help="base name of the .data and .names (default obj)")
    p.add_argument(
        "--valid-fraction",
        type=probability,
        default=0.2,
        metavar="F",
        help="share of images listed in valid.txt (default 0.2)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the train/valid split (default 0)")
    p.add_argument(
        "--images",
        choices=tuple(IMAGE_MODES),
        default="copy",
        help="; ".join(f"{k}: {v}" for k, v in IMAGE_MODES.items()),
    )


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

    p = sub.add_parser(
        "check", help="find dataset problems before a long training run",
        description="Report missing, empty or out-of-range labels, unknown classes, unreadable or "
                    "missing images, and .data/.names problems. Exit status 1 when a problem "
                    "(not just a background image) is found.",
    )  # fmt: skip
    p.add_argument("data", help="the .data file")
    p.add_argument("--no-images", action="store_true", help="do not decode images (faster)")
    p.add_argument("--limit", type=positive_int, default=20, help="lines shown per problem kind")
    p.set_defaults(func=cmd_check)

    from ..data.convert_datasets import DIFFICULT_MODES

    p = sub.add_parser(
        "convert-voc", help="Pascal VOC XML to Darknet's layout",
        description="Annotations/*.xml + JPEGImages/ (or XML beside the images) to OUT/obj/ "
                    "images with labels beside them, <name>.names, train.txt, valid.txt, "
                    "<name>.data (scripts/voc_label.py's box conversion).",
    )  # fmt: skip
    p.add_argument("voc_dir", help="the VOC folder (e.g. VOCdevkit/VOC2007)")
    p.add_argument("out", help="output folder")
    p.add_argument(
        "--names",
        metavar="FILE",
        help=".names file fixing the class order "
        "(default: every name found, sorted); other classes are left out",
    )
    p.add_argument(
        "--difficult",
        choices=tuple(DIFFICULT_MODES),
        default="skip",
        help="; ".join(f"{k}: {v}" for k, v in DIFFICULT_MODES.items()),
    )
    _dataset_out_args(p)
    p.set_defaults(func=cmd_convert_voc)

    p = sub.add_parser(
        "convert-coco", help="COCO instances JSON to Darknet's layout",
        description="Categories sorted by id become classes 0..; bbox [x, y, w, h] in pixels "
                    "becomes a relative centre box; crowd boxes are left out.",
    )  # fmt: skip
    p.add_argument("annotations", help="instances_*.json")
    p.add_argument("images_dir", help="folder of the images (file_name is relative to it)")
    p.add_argument("out", help="output folder")
    p.add_argument("--include-crowd", action="store_true", help="keep iscrowd=1 boxes")
    _dataset_out_args(p)
    p.set_defaults(func=cmd_convert_coco)
