"""Detection heads: the layers whose inputs the loss scores and whose outputs are decoded into boxes."""

from __future__ import annotations

from types import MappingProxyType

from ..layers.base import Builder
from .darknet import build_gaussian_yolo, build_region, build_yolo

__all__ = ["HEAD_BUILDERS"]

#: Section name -> builder of the head layer.
HEAD_BUILDERS: MappingProxyType[str, Builder] = MappingProxyType({
    "yolo": build_yolo,
    "Gaussian_yolo": build_gaussian_yolo,
    "region": build_region,
})
