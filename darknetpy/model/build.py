"""Cfg sections -> layers: the ``BUILDERS`` table (plain layers and heads) and :func:`build_layer`.

``parser.c: string_to_layer_type`` + ``parse_network_cfg_custom``: one builder per section name
(:data:`darknetpy.model.layers.LAYER_BUILDERS` and the ``build`` of each class in
:data:`darknetpy.model.heads.HEADS`), then the keys darknet reads for every layer.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from types import MappingProxyType

from ..errors import CfgError
from .cfg import Options, Section
from .heads import HEADS, HeadTable, head_builders
from .layers import LAYER_BUILDERS, BuildContext, Builder, DarknetLayer, LayerTraining

__all__ = ["BUILDERS", "UNSUPPORTED", "build_layer", "builders_with", "read_layer_training"]

BUILDERS: Mapping[str, Builder] = MappingProxyType({**LAYER_BUILDERS, **head_builders(HEADS)})


def builders_with(heads: HeadTable) -> Mapping[str, Builder]:
    """The builders table with ``heads`` as the head rows (see
    :func:`darknetpy.model.heads.register_head`)."""
    return MappingProxyType({**LAYER_BUILDERS, **head_builders(heads)})

# Sections darknet knows but darknetpy does not build, with the reason given to the user.
UNSUPPORTED: MappingProxyType[str, str] = MappingProxyType({
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


def build_layer(section: Section, ctx: BuildContext, *, strict: bool = False,
                builders: Mapping[str, Builder] = BUILDERS) -> DarknetLayer:
    """Build one section as layer ``ctx.index`` with the builder ``builders`` names for it.

    Raises:
        CfgError: unknown or unsupported section (listing the known ones), bad options, or an
            unused key under ``strict`` (otherwise a :class:`~darknetpy.model.cfg.CfgWarning`).
    """
    builder = builders.get(section.name)
    if builder is None:
        if section.name in UNSUPPORTED:
            raise CfgError(f"{section.where()}: {UNSUPPORTED[section.name]}")
        close = difflib.get_close_matches(section.name, list(builders), n=1)
        hint = f" (did you mean [{close[0]}]?)" if close else ""
        raise CfgError(
            f"{section.where()}: unknown section [{section.name}]{hint}; darknet section names are "
            f"case-sensitive: {', '.join(sorted(builders))}"
        )
    opts = Options(section)
    try:
        layer = builder(opts, ctx)
    except CfgError as exc:  # a misspelt key may be why (`clases=1` -> classes=20's filters)
        if not (hints := opts.misspelt()):
            raise
        raise CfgError(f"{exc}; {hints}") from exc
    layer.training_opts = read_layer_training(opts)
    opts.ignore("onlyforward")
    opts.check_unused(strict)
    return layer
