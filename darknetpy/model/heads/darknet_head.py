"""What Darknet's own heads (``[yolo]``, ``[Gaussian_yolo]``, ``[region]``) share: one input (the
layer just above, with ``num * entries`` channels), an options record, Darknet's NMS, a loss given
as Darknet's ``delta``, and the ``map=`` file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ...errors import CfgError
from ..cfg import Options, Section
from ..layers.base import BuildContext, Shape
from .base import DetectionHead, HeadInput
from .darknet_nms import apply_nms
from .detections import Detections
from .options import NmsKind
from .records import HeadLoss

__all__ = ["DarknetHead", "nms_settings", "read_class_map"]


def read_class_map(path: Path) -> tuple[int, ...]:
    """A ``map=`` file: one class id per line, read with ``atoi`` (``utils.c: read_map``).

    Raises:
        CfgError: the file cannot be read.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise CfgError(
            f"map={path}: cannot read the class map file ({exc.strerror or exc})"
        ) from None
    out = []
    for line in lines:
        digits = line.strip()
        sign = -1 if digits.startswith("-") else 1
        digits = digits.lstrip("+-")
        count = len(digits) - len(digits.lstrip("0123456789"))
        out.append(sign * int(digits[:count]) if count else 0)
    return tuple(out)


def by_cell(output: torch.Tensor, num: int, entries: int) -> torch.Tensor:
    """A ``[yolo]``-style output (N, num*entries, H, W) as (N, H*W*num, entries): darknet's
    ``entry_index`` layout seen cell by cell (cells row-major, anchor slots innermost)."""
    n, _, h, w = output.shape
    v = output.reshape(n, num, entries, h, w).permute(0, 3, 4, 1, 2)
    return v.reshape(n, h * w * num, entries)


def grid_cells(h: int, w: int, a: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Column and row of every (cell, slot) in darknet's order: row-major cells, slots innermost."""
    col = torch.arange(w, dtype=like.dtype, device=like.device).view(1, w, 1).expand(h, w, a)
    row = torch.arange(h, dtype=like.dtype, device=like.device).view(h, 1, 1).expand(h, w, a)
    return col.reshape(-1), row.reshape(-1)


def precise(output: torch.Tensor, traceable: bool) -> torch.Tensor:
    """The output to decode: as is for a traced export; else detached float32 on the CPU, where
    detection computes as Darknet's C does."""
    return output.float() if traceable else output.detach().float().cpu()


class DarknetHead(DetectionHead):
    """A Darknet head on the layer just above; subclasses give ``darknet_name``, :meth:`parse`,
    :meth:`formula`, ``forward``, :meth:`decode` and :meth:`darknet_loss`."""

    darknet_name: ClassVar[str] = "darknet"
    reads: ClassVar[str] = "classes= or mask="  # the keys that set the channels it needs
    takes_truth_rows: ClassVar[bool] = True  # darknet_loss sizes its work from the host copy

    def __init__(self, section: Section, index: int, sources: Sequence[int], in_shape: Shape,
                 out_shape: Shape, options: Any) -> None:
        super().__init__(section, index, sources, in_shape, out_shape)
        self.options = options

    @classmethod
    def parse(cls, opts: Options) -> Any:
        """The options record of the section."""
        raise NotImplementedError

    @classmethod
    def formula(cls, o: Any) -> str:
        """How the channels it needs follow from its keys (for the error message)."""
        raise NotImplementedError

    @classmethod
    def build(cls, opts: Options, ctx: BuildContext) -> DarknetHead:
        """The head on the layer just above, once its channels fit ``num * entries``."""
        options = cls.parse(opts)
        channels = options.num * options.entries
        prev = _check_channels(opts, ctx, channels, cls.formula(options), cls.reads)
        return cls(opts.section, ctx.index, (ctx.index - 1,), prev, prev, options)

    def nms_settings(self) -> tuple[NmsKind, float]:
        """``(nms_kind, beta_nms)`` of this head."""
        return self.options.nms_kind, self.options.beta_nms

    def nms(self, dets: Detections, thresh: float) -> Detections:
        """``do_nms_sort`` for ``nms_kind=default``, else ``diounms_sort`` (``test_detector``)."""
        return apply_nms(dets, thresh, *self.nms_settings())

    def darknet_loss(self, z: torch.Tensor, truth: torch.Tensor | np.ndarray, *,
                     input_size: tuple[int, int], seen: int) -> HeadLoss:
        """Darknet's training forward of this head: its ``delta`` and statistics."""
        raise NotImplementedError

    def loss(self, inputs: HeadInput, truth: torch.Tensor | np.ndarray, *,
             input_size: tuple[int, int], seen: int = 0) -> HeadLoss:
        """Darknet's delta, with ``total = -(delta * z).sum()``: backward gives ``-delta``."""
        assert isinstance(inputs, torch.Tensor)
        result = self.darknet_loss(inputs, truth, input_size=input_size, seen=seen)
        return result.with_surrogate(inputs)

    def extra_repr(self) -> str:
        o = self.options
        return f"{super().extra_repr()}, classes={o.classes}, mask={o.mask}"


def nms_settings(heads: Sequence[DarknetHead]) -> tuple[NmsKind, float]:
    """``(nms_kind, beta_nms)`` of the last detection layer, which darknet's commands use."""
    return heads[-1].nms_settings()


def _check_channels(opts: Options, ctx: BuildContext, expected: int, why: str, keys: str) -> Shape:
    prev = ctx.prev_shape
    if ctx.index == 0:
        raise opts.error(
            f"[{opts.section.name}] cannot be the first layer: it decodes the "
            f"output of a [convolutional] with filters={expected}"
        )
    if prev.channels != expected:
        above = ctx.layers[ctx.index - 1]
        raise opts.error(
            f"{why} needs filters={expected} in the layer just above ({above.where()}), "
            "which gives "
            f"{prev.channels} channels; darknet: \"filters= in the [convolutional]-layer doesn't "
            f'correspond to {keys} in [{opts.section.name}]-layer"'
        )
    return prev
