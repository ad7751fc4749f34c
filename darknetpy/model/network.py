"""A darknet ``.cfg`` as a ``torch.nn.Module`` that runs darknet's route/shortcut graph.

``Network.layers[i]`` is darknet layer *i* (``[net]`` not counted), so state-dict keys, messages,
the layer table and ``upto=137`` all use darknet's numbering (``parser.c: parse_network_cfg_custom``,
``network.c: forward_network``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CfgError
from .build import BUILDERS, build_layer, builders_with
from .cfg import CfgWarning, Options, Section, parse_cfg, read_cfg, sections_to_text
from .heads import DetectionHead, HeadTable
from .heads.base import HeadInput, compute_loss
from .heads.detections import DetectionRow, Detections, network_detections
from .heads.records import LossTerms
from .cpu_defects import NEVER_CLEARED, StaleDelta, overwritten_by_next, split_for_overwrite
from .layers import INPUT, BuildContext, DarknetLayer, Shape
from .layers.common import set_bn_build
from .netconfig import NetConfig, parse_net_options
from .weights import WeightsHeader, read_weights, write_weights


class Network(nn.Module):
    """A darknet network; ``layers[i]`` is darknet layer ``i``.

    Example:
        >>> net = Network.from_text("[net]\\nwidth=32\\nheight=32\\nchannels=3\\n"
        ...                         "[convolutional]\\nfilters=4\\nsize=3\\npad=1\\nactivation=leaky\\n")
        >>> net.layers[0].out_shape
        Shape(channels=4, height=32, width=32)
    """

    def __init__(self, net: NetConfig, layers: Sequence[DarknetLayer], sections: Sequence[Section],
                 path: Path | None = None) -> None:
        super().__init__()
        self.net = net
        self.layers = nn.ModuleList(layers)
        self.sections = tuple(sections)  # [net] first: the cfg as parsed, for checkpoints
        self.path = path
        # the detection heads: the layers whose inputs the loss scores and whose outputs are decoded
        self.heads = tuple(i for i, layer in enumerate(layers) if isinstance(layer, DetectionHead))
        self.header: WeightsHeader | None = None  # set by load_weights
        self.loaded_layers = 0  # layers read by the last load_weights
        self._last_use = _last_use(layers)
        # outputs kept to the end of a run: the heads' and the tensors entering them (for the loss)
        self._keep = set(self.heads) | {s for i in self.heads for s in layers[i].sources}
        self.darknet_cpu_defects = False  # set_darknet_build: reproduce the CPU build's backward
        self._stale: dict[int, dict[str, torch.Tensor]] = {}  # defect 3's running sums

    # ---- construction ----
    @classmethod
    def from_cfg(cls, path: str | Path, *, strict: bool = False,
                 heads: HeadTable | None = None) -> Network:
        """Build the network described by the cfg file at ``path``.

        Args:
            path: the cfg file.
            strict: unused keys are errors (otherwise warnings).
            heads: the head table to build heads from (default :data:`darknetpy.model.heads.HEADS`;
                see :func:`darknetpy.model.heads.register_head`).

        Raises:
            CfgError: with ``path:line [section]`` for any problem in the file.
        """
        path = Path(path)
        return cls.from_sections(read_cfg(path), path=path, strict=strict, heads=heads)

    @classmethod
    def from_text(cls, text: str, *, path: str | Path = "<string>", strict: bool = False,
                  heads: HeadTable | None = None) -> Network:
        """Build from cfg text (e.g. the cfg stored in a checkpoint)."""
        return cls.from_sections(parse_cfg(text, path), path=Path(path), strict=strict, heads=heads)

    @classmethod
    def from_sections(cls, sections: Sequence[Section], *, path: Path | None = None,
                      strict: bool = False, heads: HeadTable | None = None) -> Network:
        first, *rest = sections
        if first.name not in ("net", "network"):
            raise CfgError(
                f"{first.where()}: the first section must be [net] or [network], found [{first.name}]"
            )
        opts = Options(first)
        net = parse_net_options(opts)
        opts.check_unused(strict)
        if not rest:
            raise CfgError(f"{first.where()}: the cfg has no layers after [net]")
        input_shape = _input_shape(net)
        builders = BUILDERS if heads is None else builders_with(heads)
        layers: list[DarknetLayer] = []
        for index, section in enumerate(rest):
            ctx = BuildContext(index, net, input_shape, tuple(layers))
            layers.append(build_layer(section, ctx, strict=strict, builders=builders))
        return cls(net, layers, sections, path)

    @property
    def cfg_text(self) -> str:
        """The cfg as parsed (one key per line); :meth:`from_text` rebuilds the same network."""
        return sections_to_text(self.sections)

    @property
    def input_shape(self) -> Shape:
        return _input_shape(self.net)

    # ---- running the graph ----
    def _run(self, x: torch.Tensor, keep_all: bool, stop: int | None = None) -> dict[int, torch.Tensor]:
        outputs: dict[int, torch.Tensor] = {INPUT: x}
        last = len(self.layers) if stop is None else stop
        defects = self.darknet_cpu_defects and self.training and torch.is_grad_enabled()
        for_next: dict[int, torch.Tensor] = {}  # defect 2: the tensor the next convolution reads
        for index in range(last):
            layer = self.layers[index]
            out = layer(*(for_next.pop(i) if i == index - 1 and i in for_next else outputs[i]
                          for i in layer.sources))
            if layer.training_opts.stopbackward == 1 and self.training:
                out = out.detach()  # darknet's backward_network breaks at stopbackward
            if defects:
                out = self._cpu_defects(index, out, for_next)
            outputs[index] = out
            if not keep_all:
                for source in layer.sources:
                    if self._last_use.get(source, -1) <= index and source not in self._keep:
                        outputs.pop(source, None)
        return outputs

    def _cpu_defects(self, index: int, out: torch.Tensor,
                     for_next: dict[int, torch.Tensor]) -> torch.Tensor:
        """Darknet's CPU backward defects 2 and 3 (:mod:`darknetpy.model.cpu_defects`) for the
        output of layer ``index``; returns what the layers other than the next one read."""
        if overwritten_by_next(self.layers, index):
            for_next[index], out = split_for_overwrite(out)
        elif isinstance(self.layers[index], NEVER_CLEARED) and out.requires_grad:
            out = StaleDelta.apply(out, self._stale.setdefault(index, {}))
        return out

    def set_darknet_build(self, build: str, *, cpu_defects: bool = False) -> None:
        """Train as darknet's ``build`` (``"cpu"`` or ``"gpu"``) does: its batch-norm averages and
        arithmetic (:func:`~darknetpy.model.layers.common.set_bn_build`); ``cpu_defects`` (CPU
        build only) also reproduces the CPU build's three back-propagation defects
        (:mod:`darknetpy.model.cpu_defects`). Default: the exact gradient."""
        set_bn_build(self, build, cpu_defects=cpu_defects)
        self.darknet_cpu_defects = cpu_defects and build == "cpu"
        self._stale.clear()

    def forward_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's output: ``[i]`` equals darknet's output buffer of layer ``i``.

        Args:
            x: (N, C, H, W) float RGB in [0, 1].
        """
        outputs = self._run(x, keep_all=True)
        return [outputs[i] for i in range(len(self.layers))]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the detection heads (darknet's ``l.output``), or of the last layer if none."""
        outputs = self._run(x, keep_all=False)
        if not self.heads:
            return [outputs[len(self.layers) - 1]]
        return [outputs[i] for i in self.heads]

    def head_layers(self) -> list[DetectionHead]:
        """The detection heads, in layer order."""
        return [self.layers[i] for i in self.heads]  # type: ignore[misc]

    def head_inputs(self, x: torch.Tensor) -> dict[int, HeadInput]:
        """``{head layer index: what its loss scores}`` (:meth:`DetectionHead.head_input`: the
        tensor entering a Darknet head, the per-level tensors of a ``layers=`` head)."""
        if not self.heads:
            raise CfgError(
                f"{self.where()}: the network has no [yolo], [region], [Gaussian_yolo] or other "
                "detection layer"
            )
        outputs = self._run(x, keep_all=False, stop=max(self.heads))
        return {i: self.layers[i].head_input(outputs) for i in self.heads}

    def where(self) -> str:
        return str(self.path) if self.path else "<network>"

    # ---- weights ----
    def load_weights(self, path: str | Path, *, upto: int | None = None, lenient: bool = False) -> WeightsHeader:
        """Read a darknet ``.weights`` file into this network; returns the header read."""
        self.header = read_weights(path, self, upto=upto, lenient=lenient)
        return self.header

    def save_weights(self, path: str | Path, *, upto: int | None = None,
                     header: WeightsHeader | None = None) -> None:
        """Write a darknet ``.weights`` file (atomically); the header read is written back unchanged."""
        write_weights(path, self, header or self.header or WeightsHeader(), upto=upto)

    # ---- inference and training: each head decodes, suppresses and scores itself ----
    def detections(self, x: torch.Tensor, image_size: tuple[int, int] | Sequence[tuple[int, int]],
                   thresh: float = 0.25, nms: float = 0.45, letter_box: bool | None = None,
                   hier_thresh: float = 0.5) -> list[Detections]:
        """Run in inference mode and return each image's detection arrays after NMS (full per-class
        prob vectors, as darknet's ``map`` command uses them): ``get_network_boxes`` + the last
        head's NMS (:func:`darknetpy.model.heads.detections.network_detections`).

        Args:
            x: (N, C, H, W) or (C, H, W) input in [0, 1]; its H, W are the current network size.
            image_size: the original images' (width, height): one for all, or one per image.
            thresh: detection threshold (objectness and class probability).
            nms: NMS IoU threshold; 0 skips NMS as darknet does.
            letter_box: whether the inputs were letterboxed; None takes ``[net] letter_box``.
            hier_thresh: unused by darknet's current code path (kept for its signature).

        Raises:
            CfgError: the network has no detection head.
        """
        if not self.heads:
            raise CfgError(
                f"{self.where()}: the network has no [yolo], [Gaussian_yolo], [region] or other "
                "detection layer to detect with"
            )
        if x.dim() == 3:
            x = x.unsqueeze(0)
        net_size = (int(x.shape[-1]), int(x.shape[-2]))
        was_training = self.training
        try:
            self.eval()
            with torch.no_grad():
                outputs = self(x)
        finally:
            self.train(was_training)
        letter = self.net.letter_box if letter_box is None else letter_box
        return network_detections(self.head_layers(), outputs, image_size, net_size, thresh, nms,
                                  letter, hier_thresh)

    def detect(self, x: torch.Tensor, image_size: tuple[int, int] | Sequence[tuple[int, int]],
               thresh: float = 0.25, nms: float = 0.45, letter_box: bool | None = None,
               hier_thresh: float = 0.5) -> list[list[DetectionRow]]:
        """Darknet's ``detector test``: per image, one ``(class, prob, x, y, w, h, objectness)`` row
        per (box, class) with prob > thresh, relative to the image, in darknet's final array order.
        See :meth:`detections` for the arguments."""
        dets = self.detections(x, image_size, thresh=thresh, nms=nms, letter_box=letter_box,
                               hier_thresh=hier_thresh)
        kept = self.head_layers()[-1].score_kept  # the last head's threshold rule, as its NMS
        return [d.rows(thresh, kept) for d in dets]

    def compute_loss(self, head_inputs: Mapping[int, HeadInput], truth: torch.Tensor, *,
                     input_size: tuple[int, int] | None = None, seen: int = 0) -> LossTerms:
        """Every head's training loss, summed (:func:`darknetpy.model.heads.base.compute_loss`).

        Args:
            head_inputs: ``{head layer index: what it scores}`` (see :meth:`head_inputs`): one
                tensor for a Darknet head, a list of per-level tensors for a ``layers=`` head.
            truth: (N, T, 5) rows (x, y, w, h, class) relative to the network input; zero rows
                ignored.
            input_size: the current network input (w, h) when random resizing changed it.
            seen: images seen so far ([region]'s early-training prior term).
        """
        return compute_loss(self, head_inputs, truth, input_size=input_size, seen=seen)

    # ---- the layer table ----
    def summary_rows(self) -> list[dict[str, Any]]:
        """One dict per layer: type, filters/size text, in/out shapes (C, H, W) and BFLOPs."""
        rows = []
        for layer in self.layers:
            shape = layer.out_shape
            rows.append({
                "index": layer.index,
                "type": layer.darknet_name,
                "section": layer.section.name,
                "detail": layer.summary_extra(),
                "in_shape": (layer.in_shape.channels, layer.in_shape.height, layer.in_shape.width),
                "out_shape": (shape.channels, shape.height, shape.width),
                "bflops": layer.bflops(),
            })
        return rows

    def summary(self) -> str:
        """Darknet's layer table: index, type, detail, input -> output, BFLOPs, and the total."""
        lines = [f"{'':>4} {'layer':<16} {'detail':<26} {'input':>16} -> {'output':<16} {'BFLOPs':>8}"]
        total = 0.0
        for row in self.summary_rows():
            c, h, w = row["in_shape"]
            oc, oh, ow = row["out_shape"]
            total += row["bflops"]
            flops = f"{row['bflops']:8.3f}" if row["bflops"] else ""
            lines.append(
                f"{row['index']:4d} {row['section']:<16} {row['detail']:<26} "
                f"{w:4d} x{h:4d} x{c:5d} -> {ow:4d} x{oh:4d} x{oc:5d} {flops}".rstrip()
            )
        lines.append(f"Total BFLOPS {total:.3f}")
        return "\n".join(lines)


def _input_shape(net: NetConfig) -> Shape:
    """The network input for one image: width x height x channels, or 1 x 1 x ``inputs`` when those
    are absent (``inputs=`` alone: Darknet's ``params.inputs`` with ``h = w = c = 0``)."""
    if net.width * net.height * net.channels == 0 and net.inputs > 0:
        return Shape(net.inputs, 1, 1)
    return Shape(net.channels, net.height, net.width)


def _last_use(layers: Sequence[DarknetLayer]) -> dict[int, int]:
    last: dict[int, int] = {}
    for layer in layers:
        for source in layer.sources:
            last[source] = layer.index
    return last


def build_network(path: str | Path, *, strict: bool = False, quiet: bool = False) -> Network:
    """:meth:`Network.from_cfg`, optionally silencing unused-key warnings."""
    if not quiet:
        return Network.from_cfg(path, strict=strict)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CfgWarning)
        return Network.from_cfg(path, strict=strict)
