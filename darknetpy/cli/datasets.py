"""``check``, ``convert-voc``, ``convert-coco``: a dataset checked or converted to Darknet's layout.

Each command is one call of :mod:`darknetpy.data.check` or :mod:`darknetpy.data.convert_datasets`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from .argtypes import positive_int, probability

if TYPE_CHECKING:
    from ..data.convert_datasets import ConversionReport


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
