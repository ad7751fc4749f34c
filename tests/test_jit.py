"""darknetpy.jit: numba kernels compile with or without a writable cache."""

from __future__ import annotations

import numba
import pytest

from darknetpy.jit import jit


def test_jit_falls_back_to_no_cache_where_numba_cannot_cache() -> None:
    """A function numba cannot locate a cache for (here: source text with no file) still compiles;
    numba.njit(cache=True) alone raises RuntimeError at decoration time."""
    namespace: dict = {}
    exec("def twice(x):\n    return 2 * x\n", namespace)  # noqa: S102 - no file behind it
    with pytest.raises(RuntimeError, match="cannot cache"):
        numba.njit(cache=True)(namespace["twice"])
    assert jit(namespace["twice"])(21) == 42


def test_jit_caches_where_it_can() -> None:
    def thrice(x):
        return 3 * x

    compiled = jit(thrice)
    assert compiled(5) == 15
    assert compiled._cache.__class__.__name__ != "NullCache"
