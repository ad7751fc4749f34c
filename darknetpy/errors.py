"""Errors caused by user input (files, arguments).

Every error a user can cause is a :class:`DarknetpyError`; the CLI prints it as one line
(``darknetpy: error: <message>``) and exits with status 2. Anything else escaping is a bug.
"""

from __future__ import annotations


class DarknetpyError(Exception):
    """Base of every error caused by user input; the CLI prints these without a traceback."""


class CfgError(DarknetpyError, ValueError):
    """A .cfg file is malformed or describes an impossible network."""


class WeightsError(DarknetpyError, ValueError):
    """A .weights or checkpoint file does not fit the network."""


class DataError(DarknetpyError, ValueError):
    """A .data file, image list, image or label file is unusable."""


class UsageError(DarknetpyError, ValueError):
    """Command-line arguments that cannot work together."""


class TrainingError(DarknetpyError, RuntimeError):
    """Training cannot go on (the loss became NaN or infinite)."""
