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
    from .cfg import CfgWarning, Section, parse_cfg, read_cfg
    from .inference import InferenceModel, Prediction, load
    from .netconfig import NetConfig, Policy
    from .network import Network
    from .schedule import learning_rate
    from .weights import WeightsHeader, read_weights, write_weights

__version__ = "0.1.0"

#: Lazily imported public names: name -> the submodule that defines it.
_LAZY: MappingProxyType[str, str] = MappingProxyType(
    {
        "CfgWarning": "cfg",
        "Section": "cfg",
        "parse_cfg": "cfg",
        "read_cfg": "cfg",
        "InferenceModel": "inference",
        "Prediction": "inference",
        "load": "inference",
        "NetConfig": "netconfig",
        "Policy": "netconfig",
        "Network": "network",
        "learning_rate": "schedule",
        "WeightsHeader": "weights",
        "read_weights": "weights",
        "write_weights": "weights",
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
