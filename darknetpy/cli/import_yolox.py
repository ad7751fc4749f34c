"""``import-yolox``: a YOLOX checkpoint as a Darknet cfg + ``.weights``
(:mod:`darknetpy.tools.import_yolox`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .argtypes import positive_int


def positive_float(text: str) -> float:
    """A number above 0 (a YOLOX depth or width multiplier)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: expected a number above 0")
    return value


def cmd_import_yolox(args: argparse.Namespace) -> int:
    from ..tools.import_yolox import write_yolox

    network = write_yolox(Path(args.state), Path(args.cfg), Path(args.weights), args.depth,
                          args.width, args.classes, args.depthwise, args.act, size=args.size,
                          input_order=args.input_order, bn_eps=args.bn_eps)
    params = sum(p.numel() for p in network.parameters())
    print(f"saved {args.cfg} ({len(network.layers)} layers, {params / 1e6:.2f}M parameters) and "
          f"{args.weights}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "import-yolox", help="a YOLOX checkpoint (Megvii's .pth) as a darknet cfg + .weights",
        description="Write YOLOX (depth, width, classes as in its exp file: nano 0.33/0.25 "
                    "--depthwise, tiny 0.33/0.375, s 0.33/0.5, m 0.67/0.75, l 1.0/1.0, "
                    "x 1.33/1.25) in Darknet sections and its weights as a .weights file. The "
                    "imported network takes RGB in [0, 1] like every darknetpy network.",
    )
    p.add_argument("state", help="YOLOX checkpoint ({'model': state_dict, ...}) or a state dict")
    p.add_argument("cfg", help="the .cfg to write")
    p.add_argument("weights", help="the .weights to write")
    p.add_argument("--depth", type=positive_float, required=True, help="YOLOX's depth multiplier")
    p.add_argument("--width", type=positive_float, required=True, help="YOLOX's width multiplier")
    p.add_argument("--classes", type=positive_int, required=True, help="YOLOX's num_classes")
    p.add_argument("--depthwise", action="store_true", help="depthwise convolutions (YOLOX-nano)")
    p.add_argument("--act", choices=("silu", "relu", "lrelu"), default="silu",
                   help="YOLOX's activation")
    p.add_argument("--size", type=positive_int, default=None,
                   help="network input size in the cfg (default: 416 for nano/tiny, else 640)")
    p.add_argument("--input-order", choices=("bgr", "rgb"), default="rgb",
                   help="rgb (default): the network, fed the array YOLOX was fed / 255, computes "
                        "what YOLOX computes; bgr: YOLOX's released checkpoints, trained on "
                        "OpenCV's BGR, reversed so darknetpy's RGB photos give YOLOX's result")
    p.add_argument("--bn-eps", type=positive_float, default=None,
                   help="batch-norm eps, not stored in a state dict (default: 1e-3 for YOLOX's "
                        "{'model': ...} training checkpoints, PyTorch's 1e-5 for a bare state dict)")
    p.set_defaults(func=cmd_import_yolox)
