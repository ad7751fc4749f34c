"""``darknetpy.data``: lazy (PEP 562) public names, so that ``import darknetpy.data.image`` (what
data-loader worker processes do) does not pull in PyTorch through the loader."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest

import darknetpy.data

from ..conftest import REPO

# What a worker importing one pure data module must not load.
HEAVY = ("torch", "darknetpy.data.loader", "darknetpy.data.dataset", "darknetpy.model.network")


def _fresh_modules(code: str) -> list[str]:
    """sys.modules after running ``code`` in a fresh interpreter importing this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        check=True, capture_output=True, text=True, env=env, cwd=REPO,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["image", "augment", "datafile", "labels"])
def test_importing_a_pure_data_module_does_not_import_torch(module: str) -> None:
    modules = _fresh_modules(f"import darknetpy.data.{module}")
    assert f"darknetpy.data.{module}" in modules
    assert [m for m in HEAVY if m in modules] == []


def test_every_public_name_resolves_in_a_fresh_interpreter() -> None:
    modules = _fresh_modules(
        "import darknetpy.data as d\n"
        "for name in d.__all__:\n"
        "    value = getattr(d, name)\n"
        "    assert value.__name__ == name, (name, value)\n"
        "    assert value.__module__ == f'darknetpy.data.{d._LAZY[name]}', (name, value)\n"
    )
    assert "darknetpy.data.loader" in modules and "torch" in modules


def test_star_import_gives_every_public_name() -> None:
    _fresh_modules(
        "from darknetpy.data import *\n"
        "assert TrainLoader.__module__ == 'darknetpy.data.loader'\n"
        "assert prepare_test_input.__module__ == 'darknetpy.data.image'\n"
    )


@pytest.mark.parametrize("name", darknetpy.data.__all__)
def test_every_public_name_is_its_submodules_object(name: str) -> None:
    value = getattr(darknetpy.data, name)
    assert name in dir(darknetpy.data)
    module = importlib.import_module(f"darknetpy.data.{darknetpy.data._LAZY[name]}")
    assert value is getattr(module, name)


def test_all_and_the_lazy_table_agree() -> None:
    assert len(set(darknetpy.data.__all__)) == len(darknetpy.data.__all__)
    assert set(darknetpy.data._LAZY) == set(darknetpy.data.__all__)


def test_unknown_name_is_an_attribute_error() -> None:
    assert not hasattr(darknetpy.data, "no_such_name")
    with pytest.raises(AttributeError, match="module 'darknetpy.data' has no attribute 'Loader'"):
        _ = darknetpy.data.Loader
