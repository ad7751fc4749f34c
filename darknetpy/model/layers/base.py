"""What every layer module shares: :class:`Shape`, :class:`BuildContext`, :class:`DarknetLayer`.

Mirrors darknet's ``size_params`` (shape inference while parsing, ``parser.c``) and inverts its three
type switches (parse/load/save): each layer knows its own output shape, BFLOPs and ``.weights`` tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import nn

from ...errors import CfgError, WeightsError
from ..cfg import Options, Section

if TYPE_CHECKING:
    from ..netconfig import NetConfig

INPUT = -1
"""Pseudo layer index of the network input: layer 0 reads ``sources=(INPUT,)``."""


@dataclass(frozen=True)
class Shape:
    """A layer output (C, H, W) for one image, as darknet's ``out_c, out_h, out_w``."""

    channels: int
    height: int
    width: int

    @property
    def numel(self) -> int:
        return self.channels * self.height * self.width

    def __str__(self) -> str:
        return f"{self.width} x {self.height} x {self.channels}"


@dataclass(frozen=True)
class LayerTraining:
    """Keys darknet reads for every layer (``parse_network_cfg_custom``) that steer loading and training."""

    learning_rate_scale: float = 1.0  # `learning_rate=`: per-layer multiplier
    stopbackward: int = 0  # gradients stop at this layer (layers <= it are frozen)
    dontload: bool = False  # skipped by weight loading, consuming no bytes
    dontloadscales: bool = False  # conv BN scales/mean/var not read (no bytes consumed)
    train_only_bn: bool = False  # this and all earlier layers get no parameter update
    dont_update: int = 0  # no update before that iteration
    burnin_update: int = 0  # no update before burnin_update * burn_in iterations
    clip: float = 0.0  # clamp weights to +-clip after the update


@dataclass(frozen=True)
class BuildContext:
    """What a builder may know: its index, [net], and every earlier layer (darknet's ``size_params``)."""

    index: int
    net: NetConfig
    input_shape: Shape
    layers: tuple[DarknetLayer, ...]  # layers 0 .. index-1, already built

    @property
    def prev_shape(self) -> Shape:
        """Input of this layer: the previous layer's output (the network input for layer 0)."""
        return self.shape_of(self.index - 1)

    def shape_of(self, source: int) -> Shape:
        if source == INPUT:
            return self.input_shape
        return self.layers[source].out_shape

    def resolve(self, opts: Options, key: str, ref: int) -> int:
        """A darknet layer reference to an absolute index: negative is relative, else absolute.

        Raises CfgError naming the line when the reference points at this layer or later, or before 0.
        """
        absolute = self.index + ref if ref < 0 else ref
        if not 0 <= absolute < self.index:
            raise opts.error(
                f"{key}={ref} refers to layer {absolute}, but layer {self.index} can only read "
                f"layers 0..{self.index - 1} (negative values count back from this layer, "
                "non-negative ones are absolute, 0-based, not counting [net])",
                key,
            )
        return absolute


class DarknetLayer(nn.Module):
    """Base of every module built from one cfg section.

    Attributes:
        section: the cfg section it came from (for ``path:line [section]`` messages).
        index: darknet layer index.
        sources: absolute indices of the layers whose outputs ``forward`` receives, in order
            (``INPUT`` for the network input).
        in_shape / out_shape: shapes for one image.
        training_opts: the per-layer keys every section may carry (:class:`LayerTraining`).
    """

    darknet_name: ClassVar[str] = "none"  # darknet's get_layer_string(); "none" for the rest

    def __init__(self, section: Section, index: int, sources: Sequence[int], in_shape: Shape,
                 out_shape: Shape) -> None:
        super().__init__()
        self.section = section
        self.index = index
        self.sources = tuple(sources)
        self.in_shape = in_shape
        self.out_shape = out_shape
        self.training_opts = LayerTraining()

    def where(self) -> str:
        """``layer 12 (net.cfg:87 [convolutional])``: how messages name this layer."""
        return f"layer {self.index} ({self.section.where()})"

    def bflops(self) -> float:
        """Billions of floating-point operations per image, as darknet's layer table prints."""
        return 0.0

    def summary_extra(self) -> str:
        """Filters / size / stride text for the layer table (may be empty)."""
        return ""

    # ---- .weights contract (parser.c load_weights_upto / save_weights_upto) ----
    def darknet_tensors(self) -> list[torch.Tensor]:
        """Tensors this layer owns in a .weights file, in file order. Layers without weights: []."""
        return []

    def read_darknet(self, read: Callable[[int, str], np.ndarray], transpose: bool) -> None:
        """Fill :meth:`darknet_tensors` from ``read(count, name)``, which returns float32 values."""
        del transpose
        with torch.no_grad():
            for tensor in self.darknet_tensors():
                values = read(tensor.numel(), "values")
                tensor.copy_(torch.from_numpy(values).view(tensor.shape))

    def write_darknet(self, transpose: bool) -> list[np.ndarray]:
        """The float32 arrays :meth:`read_darknet` would read, in file order."""
        del transpose
        return [t.detach().cpu().float().numpy().ravel() for t in self.darknet_tensors()]

    def darknet_byte_count(self) -> int:
        """Bytes this layer occupies in a .weights file (what saving writes)."""
        return 4 * sum(t.numel() for t in self.darknet_tensors())

    def darknet_read_byte_count(self) -> int:
        """Bytes loading consumes (fewer than :meth:`darknet_byte_count` with ``dontloadscales``)."""
        return self.darknet_byte_count()

    def extra_repr(self) -> str:
        return f"index={self.index}, sources={self.sources}, out={self.out_shape}"


Builder = Callable[[Options, BuildContext], DarknetLayer]


def layer_error(layer: DarknetLayer, message: str) -> CfgError:
    return CfgError(f"{layer.where()}: {message}")


def weights_error(layer: DarknetLayer, message: str) -> WeightsError:
    return WeightsError(f"{layer.where()}: {message}")
