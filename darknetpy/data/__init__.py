"""Data: .data files, image lists, labels, test-time preprocessing, training augmentation, loader.

Reproduces Darknet's data side (spec §5.5, §8, §10); never imports the model.

* :mod:`.image`: decoding (``load_image``), Darknet's ``resize_image`` / ``letterbox_image``,
  :func:`prepare_test_input`.
* :mod:`.datafile`: :class:`DataConfig`, :func:`read_names`, :func:`read_image_list`.
* :mod:`.labels`: :func:`label_path`, :func:`read_labels`.
* :mod:`.augment` (settings, draws, crop geometry), :mod:`.truth` (label boxes),
  :mod:`.pixels` (image operations), :mod:`.mosaic`: pure augmentation functions with an explicit
  ``np.random.Generator``.
* :mod:`.dataset`, :mod:`.loader`: one training iteration, and :class:`TrainLoader`.
"""

from __future__ import annotations

from .augment import AugmentConfig
from .datafile import DataConfig, DataWarning, read_image_list, read_names
from .image import letterbox_image, load_image, prepare_test_input, resize_image
from .labels import LabelReport, label_path, read_labels
from .loader import Batch, DataSummary, TrainLoader, build_train_loader

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
