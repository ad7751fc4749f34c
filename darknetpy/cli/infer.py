"""``detect``, ``convert`` and ``export``: using a trained model.

Each command turns its arguments into calls of :mod:`darknetpy.inference.inference_model`,
:mod:`darknetpy.inference.detect_run`, :mod:`darknetpy.tools.convert` or :mod:`darknetpy.inference.export`. Darknet's form
``darknetpy detector test DATA CFG WEIGHTS IMAGE -thresh T -ext_output -dont_show`` reaches here
translated by :mod:`darknetpy.cli` (``detect CFG WEIGHTS IMAGE --names-from-data DATA ...``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import DarknetpyError, UsageError
from ..files import refuse_overwrite, require_folder
from .argtypes import add_backend_argument, positive_int, probability
from .darknet_forms import LENIENT_HELP


# ---------------------------------------------------------------- detect
def cmd_detect(args: argparse.Namespace) -> int:
    from ..inference.detect_run import run_detect
    from ..inference.sources import read_sources
    from ..model.cfg import read_cfg
    from ..model.pt_checkpoint import is_checkpoint
    from ..devices import set_tf32
    from ..inference.inference_model import load

    if args.names and args.names_from_data:
        raise UsageError("give --names or --names-from-data, not both")
    names = args.names or args.names_from_data
    if args.json:
        refuse_overwrite(
            Path(args.json), Path(args.cfg), Path(args.weights), *(Path(n) for n in (names,) if n)
        )
        require_folder(Path(args.json))
    try:
        sources = read_sources(args.source, sys.stdin)
    except DarknetpyError:  # Darknet's order (DATA CFG WEIGHTS IMAGE)? the cfg's error says so
        if not is_checkpoint(args.cfg):
            read_cfg(Path(args.cfg))
        raise
    set_tf32(args.tf32)  # off unless asked: fp32 on CUDA computes what the CPU does
    # run_detect only predicts (model.fused): no unfused copy of the weights (half the memory)
    model = load(
        args.cfg, args.weights, device=args.device, half=args.half, names=names,
        keep_unfused=False, lenient=args.lenient, backend=args.backend,
    )
    save_dir = None if args.no_save else Path(args.save_dir)
    summary = run_detect(
        model,
        sources,
        thresh=args.thresh,
        nms=args.nms,
        letter_box=True if args.letter_box else None,
        save_dir=save_dir,
        json_path=Path(args.json) if args.json else None,
        ext_output=args.ext_output,
        show=args.show and not args.dont_show,
        batch_size=args.batch_size,
        save_labels=args.save_labels,
        out_filename=Path(args.out_filename) if args.out_filename else None,
    )
    what = f"{summary.images} images" + (
        f", {summary.frames} video frames" if summary.frames else ""
    ) + (f", {len(summary.skipped)} unreadable images skipped" if summary.skipped else "")
    print(f"{what}, {summary.detections} detections in {summary.seconds:.2f} s", file=sys.stderr)
    if summary.written:
        where = save_dir if save_dir is not None else summary.written[0].parent
        print(
            f"wrote {len(summary.written)} files to {where}"
            + (f" and {args.json}" if args.json and save_dir is not None else ""),
            file=sys.stderr,
        )
    return 0


# ---------------------------------------------------------------- convert
def cmd_convert(args: argparse.Namespace) -> int:
    from ..model.pt_checkpoint import is_checkpoint
    from ..tools.convert import checkpoint_to_weights, weights_to_checkpoint

    files = [Path(f) for f in args.files]
    if len(files) == 2:
        source, out = files
        if not is_checkpoint(source):
            raise UsageError(
                f"{source} is not a darknetpy .pt checkpoint; converting a .weights "
                "file needs its cfg: darknetpy convert CFG WEIGHTS out.pt"
            )
        cfg = None
    elif len(files) == 3:
        cfg, source, out = files
        if is_checkpoint(cfg):
            raise UsageError(
                f"{cfg} is a checkpoint, not a cfg: darknetpy convert CFG WEIGHTS out.pt "
                "or darknetpy convert [CFG] model.pt out.weights"
            )
    else:
        raise UsageError(
            "darknetpy convert CFG WEIGHTS out.pt, or darknetpy convert [CFG] model.pt out.weights"
        )
    refuse_overwrite(out, cfg, source)
    require_folder(out)
    if is_checkpoint(source):
        checkpoint_to_weights(source, out, cfg)
        print(f"wrote {out} (darknet .weights) from {source}")
    else:
        assert cfg is not None
        weights_to_checkpoint(cfg, source, out)
        print(f"wrote {out} (checkpoint: cfg, header and state dict; loads without the cfg)")
    return 0


# ---------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> int:
    from ..model.pt_checkpoint import is_checkpoint, network_from_checkpoint
    from ..inference.export import NmsOptions, export_onnx
    from ..model.network import build_network

    out = Path(args.out)
    refuse_overwrite(out, Path(args.cfg), Path(args.weights))
    if args.int8 and not args.calibrate:
        raise UsageError("--int8 needs --calibrate DATA (a .data file whose train= images "
                         "calibrate)")
    if is_checkpoint(args.weights):
        network = network_from_checkpoint(args.weights, args.cfg)
    else:
        network = build_network(args.cfg, quiet=True)
        network.load_weights(args.weights, lenient=args.lenient)
    if args.int8:
        from ..inference.quantize import quantize_int8

        quantize_int8(network, out, args.calibrate, engine=args.int8_engine,
                      images=args.calibrate_images)
        print(f"wrote {out} (INT8, {args.int8_engine}, calibrated on {args.calibrate_images} train "
              f"images of {args.calibrate}; raw head outputs as darknetpy's float32 export)")
        return 0
    export_onnx(
        network,
        out,
        opset=args.opset,
        dynamic_batch=args.dynamic_batch,
        with_decode=args.with_decode,
        all_layers=args.all_layers,
        layout=args.layout,
        nms=NmsOptions(args.iou_thresh, args.score_thresh, args.max_det, args.plain_iou_nms),
    )
    from ..inference.export import output_names

    outputs = ", ".join(output_names(network, args.with_decode, args.all_layers, args.layout)[:8])
    print(
        f"wrote {out} (opset {args.opset}, input images "
        f"{'N' if args.dynamic_batch else 1}x{network.net.channels}x{network.net.height}x"
        f"{network.net.width}; outputs {outputs}{' ...' if args.all_layers else ''})"
    )
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from ..inference.export import DEFAULT_OPSET

    p = sub.add_parser(
        "detect",
        help="detect objects in images, folders, image lists or videos (detector test)",
        description=(
            "Darknet's `detector test`: each image resized (or letterboxed) as darknet does, "
            "batch norm fused, NMS as the cfg says; prints darknet's lines, saves drawn "
            "images and optionally JSON. Without SOURCE, image paths are read from stdin."
        ),
    )
    p.add_argument("cfg", help="the .cfg file")
    p.add_argument("weights", help="a .weights file or a darknetpy .pt checkpoint")
    p.add_argument(
        "source",
        nargs="*",
        help="images, folders, text lists of images, videos, streams (rtsp://, http://) or "
        "webcams (camera:N) (default: a list of images on stdin)",
    )
    p.add_argument("--lenient", action="store_true", help=LENIENT_HELP)
    p.add_argument("--names", help="class names, one per line (default: class ids)")
    p.add_argument("--names-from-data", metavar="DATA", help="take names= from this .data file")
    p.add_argument("--thresh", type=probability, default=0.25, help="detection threshold")
    p.add_argument("--nms", type=probability, default=0.45, help="NMS threshold (0: no NMS)")
    p.add_argument(
        "--letter-box",
        action="store_true",
        help="letterbox the images (default: the cfg's [net] letter_box)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--tf32", action="store_true", help="TensorFloat-32 for CUDA's fp32 "
                   "convolutions (off by default: the CPU's numbers within float32 noise)")
    p.add_argument(
        "--half",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="float16 (default: on CUDA; --no-half keeps float32, darknet's numbers)",
    )
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per forward pass")
    add_backend_argument(p)
    p.add_argument(
        "--save-dir",
        default="predictions",
        help="folder for the drawn images (<name>.jpg) and videos (<name>.mp4)",
    )
    p.add_argument("--no-save", action="store_true", help="draw and save nothing")
    p.add_argument(
        "--save-labels",
        action="store_true",
        help="write each image's detections as a YOLO label file beside it (darknet's "
        "-save_labels: <image>.txt, or labels/ for an images/ folder), replacing any there",
    )
    p.add_argument(
        "--out-filename",
        metavar="VIDEO",
        help="the drawn video of the one video/stream/camera source (darknet's demo -out_filename)",
    )
    p.add_argument("--json", metavar="OUT", help="write darknet's JSON (with pixel boxes) here")
    p.add_argument(
        "--ext-output", action="store_true", help="print each box in pixels (darknet's -ext_output)"
    )
    p.add_argument("--show", action="store_true", help="display each drawn image in a window")
    p.add_argument(
        "--dont-show",
        action="store_true",
        help="never open a window (darknet's -dont_show; the default)",
    )
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser(
        "convert",
        help=".weights -> .pt checkpoint (with the cfg), or .pt -> .weights",
        description=(
            "darknetpy convert CFG WEIGHTS out.pt writes a checkpoint holding the state dict, "
            "the cfg text and the header (torch.load(weights_only=True) reads it; no cfg "
            "needed to load it). darknetpy convert [CFG] model.pt out.weights writes it back, "
            "byte-identical to the original .weights. Inputs are told apart by content."
        ),
    )
    p.add_argument(
        "files", nargs="+", metavar="FILE", help="CFG WEIGHTS OUT.pt | [CFG] MODEL.pt OUT.weights"
    )
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "export",
        help="ONNX export (the heads as darknet computes them, optionally decoded)",
        description=(
            "Writes the batch-norm-fused network as ONNX: input `images` (N, C, H, W) RGB in "
            "[0, 1]; outputs head_<i> per detection layer; --with-decode adds boxes "
            "(x, y, w, h relative to the network input), objectness and scores."
        ),
    )
    p.add_argument("cfg")
    p.add_argument("weights", help="a .weights file or a darknetpy .pt checkpoint")
    p.add_argument("out", help="the .onnx file to write")
    p.add_argument("--lenient", action="store_true", help=LENIENT_HELP)
    p.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET, help="ONNX opset (>= 11)")
    p.add_argument("--dynamic-batch", action="store_true", help="a symbolic batch dimension")
    p.add_argument(
        "--with-decode",
        action="store_true",
        help="add decoded boxes, objectness and scores outputs",
    )
    p.add_argument(
        "--all-layers",
        action="store_true",
        help="output every layer (layer_<i>), for layer-by-layer comparisons",
    )
    p.add_argument(
        "--layout",
        choices=("raw", "decoded", "decoded-t", "nms"),
        default="raw",
        help="raw: the heads; decoded: (1, N, 5+C) x y w h relative, objectness, class probs; "
        "decoded-t: (1, 4+C, N) ultralytics' (pixels, scores); nms: (K, 7) rows batch x1 y1 x2 "
        "y2 score class after ONNX NonMaxSuppression in the graph",
    )
    p.add_argument("--iou-thresh", type=probability, default=0.45, help="--layout nms: IoU")
    p.add_argument("--score-thresh", type=probability, default=0.25, help="--layout nms: score")
    p.add_argument("--max-det", type=positive_int, default=100,
                   help="--layout nms: boxes kept per class and image")
    p.add_argument("--plain-iou-nms", action="store_true",
                   help="--layout nms on a cfg with DIoU NMS (greedynms/diounms): use IoU NMS")
    p.add_argument("--int8", action="store_true",
                   help="post-training INT8 quantization (OUT: .xml for openvino, .onnx)")
    p.add_argument("--calibrate", metavar="DATA",
                   help="--int8: a .data file whose train= images calibrate")
    p.add_argument("--calibrate-images", type=positive_int, default=100,
                   help="--int8: how many train images (the list's first)")
    p.add_argument("--int8-engine", choices=("openvino", "onnxruntime"), default="openvino",
                   help="--int8: NNCF on OpenVINO (faster here) or onnxruntime's quantize_static")
    p.set_defaults(func=cmd_export)
