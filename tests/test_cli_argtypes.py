"""darknetpy.cli.argtypes: the shared argparse converters."""

from __future__ import annotations

import argparse

import pytest

from darknetpy.cli.argtypes import positive_int, probability


def test_positive_int() -> None:
    assert positive_int("3") == 3
    for bad in ("0", "-2", "1.5", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match="positive integer"):
            positive_int(bad)


def test_probability() -> None:
    assert probability("0") == 0.0 and probability("1") == 1.0 and probability(".25") == 0.25
    for bad in ("-0.1", "1.01", "nan", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match="between 0 and 1"):
            probability(bad)
