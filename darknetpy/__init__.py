"""darknetpy: Darknet .cfg/.weights in PyTorch, reproducing AlexeyAB/darknet.

Example:
    >>> import darknetpy
    >>> net = darknetpy.Network.from_cfg("cfg/yolov4-tiny.cfg")   # doctest: +SKIP
    >>> net.load_weights("weights/yolov4-tiny.weights")            # doctest: +SKIP

The public names below are imported on first use (PEP 562 ``__getattr__``): ``import darknetpy``,
and ``import darknetpy.data.<module>`` in data-loader worker processes, load only the error
classes, not PyTorch and the model stack.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING

from .errors import CfgError, DarknetpyError, DataError, TrainingError, UsageError, WeightsError
from .lazy import lazy_attributes

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from .model.cfg import CfgWarning, Section, parse_cfg, read_cfg
    from .inference.inference_model import InferenceModel, Prediction, load
    from .model.netconfig import NetConfig, Policy
    from .model.network import Network
    from .training.schedule import learning_rate
    from .model.weights import WeightsHeader, read_weights, write_weights

__version__ = "0.1.0"

#: Lazily imported public names: name -> the submodule that defines it.
_LAZY: MappingProxyType[str, str] = MappingProxyType(
    {
        "CfgWarning": "model.cfg",
        "Section": "model.cfg",
        "parse_cfg": "model.cfg",
        "read_cfg": "model.cfg",
        "InferenceModel": "inference.inference_model",
        "Prediction": "inference.inference_model",
        "load": "inference.inference_model",
        "NetConfig": "model.netconfig",
        "Policy": "model.netconfig",
        "Network": "model.network",
        "learning_rate": "training.schedule",
        "WeightsHeader": "model.weights",
        "read_weights": "model.weights",
        "write_weights": "model.weights",
    }
)

__all__ = [
    "CfgError",
    "CfgWarning",
    "DarknetpyError",
    "DataError",
    "InferenceModel",
    "NetConfig",
    "Network",
    "Policy",
    "Prediction",
    "Section",
    "TrainingError",
    "UsageError",
    "WeightsError",
    "WeightsHeader",
    "__version__",
    "learning_rate",
    "load",
    "parse_cfg",
    "read_cfg",
    "read_weights",
    "write_weights",
]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
