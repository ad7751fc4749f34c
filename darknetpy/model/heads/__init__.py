"""Detection heads: the ``HEADS`` table (section name -> head class) and the head base class.

A head is one :class:`~darknetpy.model.heads.base.DetectionHead` subclass that owns its
options, forward, decode, NMS, loss and export outputs (see :mod:`.base`). Adding a head kind is
one module and one row here. To try a head without editing the package, build a network with an
extended table::

    heads = register_head(HEADS, "my_head", MyHead)       # a new mapping; HEADS is unchanged
    net = Network.from_cfg("my.cfg", heads=heads)

An unknown section name is a :class:`~darknetpy.errors.CfgError` naming the known ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ..layers.base import Builder
from .base import Candidates, DetectionHead, compute_loss
from .detection import DetectionLayer
from .gaussian_yolo import GaussianYoloLayer
from .region import RegionLayer
from .v8.head import YoloV8Head
from .yolo import YoloLayer
from .yolox.head import YoloxHead

__all__ = [
    "HEADS",
    "HeadTable",
    "Candidates",
    "DetectionHead",
    "compute_loss",
    "head_builders",
    "register_head",
]

HeadTable = Mapping[str, type[DetectionHead]]

#: Section name -> head class (Darknet's section names are case-sensitive).
HEADS: HeadTable = MappingProxyType({
    "yolo": YoloLayer,
    "Gaussian_yolo": GaussianYoloLayer,
    "region": RegionLayer,
    "detection": DetectionLayer,
    "yolov8": YoloV8Head,
    "yolox": YoloxHead,
})


def register_head(table: HeadTable, name: str, head: type[DetectionHead]) -> HeadTable:
    """``table`` plus ``[name]`` built by ``head``, as a new read-only mapping (``table`` is
    unchanged).

    Raises:
        TypeError: ``head`` is not a :class:`DetectionHead` subclass.
        ValueError: ``name`` is already in ``table``.
    """
    if not (isinstance(head, type) and issubclass(head, DetectionHead)):
        raise TypeError(f"[{name}]: {head!r} is not a DetectionHead subclass")
    if name in table:
        raise ValueError(f"[{name}] is already built by {table[name].__name__}")
    return MappingProxyType({**table, name: head})


def head_builders(table: HeadTable = HEADS) -> Mapping[str, Builder]:
    """The layer builders of the heads in ``table`` (``section name -> head.build``)."""
    return MappingProxyType({name: head.build for name, head in table.items()})
