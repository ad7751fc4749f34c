"""Darknet's plain layers (everything but the detection heads): the ``LAYER_BUILDERS`` table.

One builder per section name, all with the signature ``(Options, BuildContext) -> DarknetLayer``
(darknet's ``parse_<type>(options, params)``, ``parser.c: string_to_layer_type``). The heads' builders
are in :mod:`darknetpy.model.heads`; :mod:`darknetpy.model.build` joins both tables.
"""

from __future__ import annotations

from types import MappingProxyType

from .base import INPUT, Builder, BuildContext, DarknetLayer, LayerTraining, Shape
from .conv import build_conv
from .dense import (
    build_activation,
    build_batchnorm,
    build_connected,
    build_contrastive,
    build_cost,
    build_crop,
    build_dropout,
    build_empty,
    build_implicit,
    build_softmax,
)
from .graph import build_route, build_sam, build_scale_channels, build_shortcut
from .local import build_local, build_normalization
from .pool import build_avgpool, build_local_avgpool, build_maxpool
from .recurrent import build_gru, build_lstm, build_rnn
from .recurrent_conv import build_conv_lstm, build_crnn, build_history
from .resample import build_reorg, build_reorg3d, build_upsample

__all__ = ["INPUT", "LAYER_BUILDERS", "BuildContext", "Builder", "DarknetLayer", "LayerTraining", "Shape"]

LAYER_BUILDERS: MappingProxyType[str, Builder] = MappingProxyType({
    "convolutional": build_conv, "conv": build_conv,
    "maxpool": build_maxpool, "max": build_maxpool,
    "local_avgpool": build_local_avgpool, "local_avg": build_local_avgpool,
    "avgpool": build_avgpool, "avg": build_avgpool,
    "upsample": build_upsample,
    "route": build_route,
    "shortcut": build_shortcut,
    "sam": build_sam,
    "scale_channels": build_scale_channels,
    "reorg3d": build_reorg3d,
    "reorg": build_reorg,
    "dropout": build_dropout,
    "connected": build_connected, "conn": build_connected,
    "softmax": build_softmax, "soft": build_softmax,
    "batchnorm": build_batchnorm,
    "activation": build_activation,
    "crop": build_crop,
    "cost": build_cost,
    "empty": build_empty, "silence": build_empty,
    "implicit": build_implicit,
    "contrastive": build_contrastive,
    "rnn": build_rnn, "lstm": build_lstm, "gru": build_gru,
    "crnn": build_crnn, "conv_lstm": build_conv_lstm, "history": build_history,
    "local": build_local,
    "normalization": build_normalization, "lrn": build_normalization,
})
