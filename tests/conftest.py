"""Shared fixtures: where ../shared is, golden folders, a seeded rng."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DARKNETPY_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden"
SKIP_REASON = "../shared not found: golden data is only available beside a development checkout"


def golden_networks() -> list[str]:
    """Names of golden network folders (those holding net.cfg + forward.npz)."""
    if not GOLDEN.is_dir():
        return []
    return sorted(p.name for p in GOLDEN.iterdir() if (p / "forward.npz").is_file())


def detection_networks() -> list[str]:
    return [n for n in golden_networks() if (GOLDEN / n / "dets.txt").is_file()]


def require_shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(SKIP_REASON)
    return SHARED


@pytest.fixture
def shared() -> Path:
    return require_shared()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long cases, run outside CI (pytest -m slow)")
