"""Data: .data files, image lists, labels, test-time preprocessing, training augmentation, loader.

Reproduces Darknet's data side (spec §5.5, §8, §10); never imports the model.

* :mod:`.image`: decoding (``load_image``), Darknet's ``letterbox_image``, :func:`prepare_test_input`;
  :mod:`.darknet_resize`: Darknet's ``resize_image``.
* :mod:`.datafile`: :class:`DataConfig`, :func:`read_names`, :func:`read_image_list`.
* :mod:`.labels`: :func:`label_path`, :func:`read_labels`.
* :mod:`.augment` (settings, draws, crop geometry), :mod:`.truth` (label boxes),
  :mod:`.pixels` (image operations), :mod:`.mosaic`: pure augmentation functions with an explicit
  ``np.random.Generator``.
* :mod:`.dataset`, :mod:`.loader`: one training iteration, and :class:`TrainLoader`.

The public names below are imported on first use (PEP 562 ``__getattr__``), so that
``import darknetpy.data.image`` (what data-loader worker processes do) loads that submodule only,
not PyTorch through :mod:`.loader`.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING

from ..lazy import lazy_attributes

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from .augment import AugmentConfig
    from .datafile import DataConfig, DataWarning, read_image_list, read_names
    from .darknet_resize import resize_image
    from .image import letterbox_image, load_image, prepare_test_input
    from .labels import LabelReport, label_path, read_labels
    from .loader import Batch, DataSummary, TrainLoader, build_train_loader

#: Lazily imported public names: name -> the submodule that defines it.
_LAZY: MappingProxyType[str, str] = MappingProxyType(
    {
        "AugmentConfig": "augment",
        "DataConfig": "datafile",
        "DataWarning": "datafile",
        "read_image_list": "datafile",
        "read_names": "datafile",
        "letterbox_image": "image",
        "load_image": "image",
        "prepare_test_input": "image",
        "resize_image": "darknet_resize",
        "LabelReport": "labels",
        "label_path": "labels",
        "read_labels": "labels",
        "Batch": "loader",
        "DataSummary": "loader",
        "TrainLoader": "loader",
        "build_train_loader": "loader",
    }
)

__all__ = [
    "AugmentConfig",
    "Batch",
    "DataConfig",
    "DataSummary",
    "DataWarning",
    "LabelReport",
    "TrainLoader",
    "build_train_loader",
    "label_path",
    "letterbox_image",
    "load_image",
    "prepare_test_input",
    "read_image_list",
    "read_labels",
    "read_names",
    "resize_image",
]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
