"""Darknet sections → PyTorch modules: the closed ``BUILDERS`` table and :func:`build_layer`.

One builder per section name, all with the signature ``(Options, BuildContext) -> DarknetLayer``
(darknet's ``parse_<type>(options, params)``, ``parser.c: string_to_layer_type``).
"""

from __future__ import annotations

import difflib
from types import MappingProxyType

from ..cfg import Options, Section
from ..errors import CfgError
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
from .detection import build_gaussian_yolo, build_region, build_yolo
from .graph import build_route, build_sam, build_scale_channels, build_shortcut
from .pool import build_avgpool, build_local_avgpool, build_maxpool
from .resample import build_reorg, build_reorg3d, build_upsample

__all__ = [
    "BUILDERS", "INPUT", "UNSUPPORTED", "BuildContext", "DarknetLayer", "LayerTraining", "Shape",
    "build_layer",
]

BUILDERS: MappingProxyType[str, Builder] = MappingProxyType({
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
    "yolo": build_yolo,
    "Gaussian_yolo": build_gaussian_yolo,
    "region": build_region,
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
})

# Sections darknet knows but darknetpy does not build, with the reason given to the user.
UNSUPPORTED: MappingProxyType[str, str] = MappingProxyType({
    **{name: "recurrent layers are not supported by darknetpy" for name in
       ("rnn", "gru", "lstm", "crnn", "conv_lstm", "history")},
    "local": "[local] (locally connected) is not supported by darknetpy",
    "normalization": "[normalization] (LRN) is not supported by darknetpy",
    "lrn": "[lrn] (LRN) is not supported by darknetpy",
    "detection": "[detection] (YOLOv1) is not supported by darknetpy",
    "net": "[net] may only be the first section",
    "network": "[network] may only be the first section",
})


def read_layer_training(opts: Options) -> LayerTraining:
    """Keys darknet reads for every layer after its own parser (``parse_network_cfg_custom``)."""
    return LayerTraining(
        learning_rate_scale=opts.get_float("learning_rate", 1.0),
        stopbackward=opts.get_int("stopbackward", 0),
        dontload=opts.get_bool("dontload", False),
        dontloadscales=opts.get_bool("dontloadscales", False),
        train_only_bn=opts.get_bool("train_only_bn", False),
        dont_update=opts.get_int("dont_update", 0),
        burnin_update=opts.get_int("burnin_update", 0),
        clip=opts.get_float("clip", 0.0),
    )


def build_layer(section: Section, ctx: BuildContext, *, strict: bool = False) -> DarknetLayer:
    """Build one section as layer ``ctx.index``.

    Raises:
        CfgError: unknown or unsupported section (listing the known ones), bad options, or an
            unused key under ``strict`` (otherwise a :class:`~darknetpy.cfg.CfgWarning`).
    """
    builder = BUILDERS.get(section.name)
    if builder is None:
        if section.name in UNSUPPORTED:
            raise CfgError(f"{section.where()}: {UNSUPPORTED[section.name]}")
        close = difflib.get_close_matches(section.name, list(BUILDERS), n=1)
        hint = f" (did you mean [{close[0]}]?)" if close else ""
        raise CfgError(
            f"{section.where()}: unknown section [{section.name}]{hint}; darknet section names are "
            f"case-sensitive: {', '.join(sorted(BUILDERS))}"
        )
    opts = Options(section)
    layer = builder(opts, ctx)
    layer.training_opts = read_layer_training(opts)
    opts.ignore("onlyforward")
    opts.check_unused(strict)
    return layer
