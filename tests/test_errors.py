"""darknetpy.errors: every error class a user can meet lives there and is exported."""

from __future__ import annotations

import inspect

import pytest

import darknetpy
from darknetpy import errors

ERROR_CLASSES = [
    cls for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, Exception) and cls.__module__ == errors.__name__
]


def test_the_error_table_is_complete() -> None:
    names = {cls.__name__ for cls in ERROR_CLASSES}
    assert names == {"DarknetpyError", "CfgError", "WeightsError", "DataError", "UsageError",
                     "TrainingError"}


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_is_a_darknetpy_error_exported_from_the_package(cls: type) -> None:
    assert issubclass(cls, errors.DarknetpyError)
    assert cls.__name__ in darknetpy.__all__
    assert getattr(darknetpy, cls.__name__) is cls
    assert cls.__doc__


def test_training_error_lives_in_errors_and_is_still_importable_from_train() -> None:
    from darknetpy.training.train import TrainingError

    assert TrainingError is errors.TrainingError
    assert TrainingError.__module__ == "darknetpy.errors"
    assert issubclass(TrainingError, RuntimeError)  # what callers caught before the move
    with pytest.raises(errors.DarknetpyError, match="loss is nan"):
        raise TrainingError("iteration 3: the loss is nan")
