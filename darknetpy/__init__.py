"""darknetpy: Darknet .cfg/.weights in PyTorch, reproducing AlexeyAB/darknet.

Example:
    >>> import darknetpy
    >>> net = darknetpy.Network.from_cfg("cfg/yolov4-tiny.cfg")   # doctest: +SKIP
    >>> net.load_weights("weights/yolov4-tiny.weights")            # doctest: +SKIP
"""

from __future__ import annotations

from .cfg import CfgWarning, Section, parse_cfg, read_cfg
from .errors import CfgError, DarknetpyError, DataError, UsageError, WeightsError
from .netconfig import NetConfig, Policy
from .inference import InferenceModel, Prediction, load
from .network import Network
from .schedule import learning_rate
from .weights import WeightsHeader, read_weights, write_weights

__version__ = "0.1.0"

__all__ = [
    "CfgError", "CfgWarning", "DarknetpyError", "DataError", "InferenceModel", "NetConfig", "Network",
    "Policy", "Prediction", "load",
    "Section", "UsageError", "WeightsError", "WeightsHeader", "__version__", "learning_rate",
    "parse_cfg", "read_cfg", "read_weights", "write_weights",
]
