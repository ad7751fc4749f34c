"""``summary`` and ``partial``: the network and its weights file."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..files import require_folder


def cmd_summary(args: argparse.Namespace) -> int:
    from ..model.network import Network

    net = Network.from_cfg(Path(args.cfg), strict=args.strict)
    print(net.summary())
    return 0


def cmd_partial(args: argparse.Namespace) -> int:
    from ..tools.convert import partial

    require_folder(Path(args.out))
    partial(Path(args.cfg), Path(args.weights), Path(args.out), args.n)
    print(f"saved layers 0..{args.n - 1} of {args.weights} to {args.out} (seen reset to 0)")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("summary", help="print darknet's layer table for a cfg")
    p.add_argument("cfg")
    p.add_argument("--strict", action="store_true", help="unused cfg keys are errors")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("partial", help="keep the first N layers of a weights file (darknet partial)")
    p.add_argument("cfg")
    p.add_argument("weights")
    p.add_argument("out")
    p.add_argument("n", type=int)
    p.set_defaults(func=cmd_partial)
