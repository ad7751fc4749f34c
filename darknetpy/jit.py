"""``jit``: numba's ``njit(cache=True)`` for every hand-written kernel in darknetpy.

The kernels are compiled on first call and cached beside their module (or under
``NUMBA_CACHE_DIR``). Where numba finds no writable cache location (a read-only install, a
locked-down container) ``njit(cache=True)`` raises at decoration time, which would make
``import darknetpy`` fail; :func:`jit` compiles without the cache there instead (1-2 s per kernel
on first use, same results).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numba

__all__ = ["jit"]

F = TypeVar("F", bound=Callable)


def jit(func: F) -> F:
    """``numba.njit(cache=True)(func)``, or ``numba.njit(cache=False)(func)`` where numba has no
    writable cache location (it raises RuntimeError "cannot cache function ... no locator")."""
    try:
        return numba.njit(cache=True)(func)
    except RuntimeError:
        return numba.njit(cache=False)(func)
