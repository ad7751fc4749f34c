"""``import-ultralytics``: an ultralytics YOLOv8 model as a Darknet cfg + ``.weights``
(:mod:`darknetpy.tools.import_ultralytics`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .argtypes import positive_int


def cmd_import_ultralytics(args: argparse.Namespace) -> int:
    from ..tools.import_ultralytics import import_ultralytics, write_import

    imported = import_ultralytics(Path(args.model), Path(args.state), scale=args.scale,
                                  width=args.size, height=args.size)
    network = write_import(imported, Path(args.cfg), Path(args.weights))
    params = sum(p.numel() for p in network.parameters())
    bflops = sum(row["bflops"] for row in network.summary_rows())
    print(f"saved {args.cfg} ({len(network.layers)} layers, {params / 1e6:.2f}M parameters, "
          f"{bflops:.2f} BFLOPs at {args.size}) and {args.weights}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "import-ultralytics",
        help="an ultralytics YOLOv8 model (.yaml + state dict) as a darknet cfg + .weights",
        description="Write an ultralytics YOLOv8 detection model (Conv, C2f, SPPF, Concat, "
                    "Upsample, Detect) in Darknet sections with a [yolov8] head, and its state "
                    "dict as a .weights file. The state dict is {name: tensor}: "
                    "torch.save(YOLO('yolov8n.pt').model.float().state_dict(), 'state.pt').",
    )
    p.add_argument("model", help="the model description: ultralytics' .yaml (or the same dict "
                                 "as JSON) with nc and scale")
    p.add_argument("state", help="the state dict (.pt holding {name: tensor})")
    p.add_argument("cfg", help="the .cfg to write")
    p.add_argument("weights", help="the .weights to write")
    p.add_argument("--scale", default=None,
                   help="the scale letter (n, s, m, l, x) when the description does not say it")
    p.add_argument("--size", type=positive_int, default=640,
                   help="network width and height in the cfg (multiple of 32; default 640)")
    p.set_defaults(func=cmd_import_ultralytics)
