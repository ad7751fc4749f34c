"""Reliability: bad input never crashes deep inside, nothing is ever lost (issue 6).

Helpers shared by the reliability tests live here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import resource
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def load_bench(name: str) -> ModuleType:
    """Import ``bench/<name>.py`` (the bench folder is not a package)."""
    path = REPO / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being created
    spec.loader.exec_module(module)
    return module


def _vm_size() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


@contextlib.contextmanager
def address_space_limit(extra_gb: float = 3.0) -> Iterator[None]:
    """Cap this process's address space at its current size plus ``extra_gb`` GiB, then restore.

    A fuzzed cfg asking for a 500 GB layer then fails fast inside the test (an allocation error)
    instead of swapping or being killed by the kernel.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _vm_size() + int(extra_gb * (1 << 30))
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
