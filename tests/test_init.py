"""The top-level package: lazy (PEP 562) public names, ``__all__`` and ``dir()``."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest

import darknetpy

from .conftest import REPO

# The model stack that `import darknetpy` must not pull in (data-loader workers import
# darknetpy.data.* and pay for everything the package __init__ imports).
HEAVY = (
    "torch", "darknetpy.model.network", "darknetpy.inference.inference_model", "darknetpy.model.layers",
    "darknetpy.model.heads.darknet_loss",
)


def _fresh_modules(code: str) -> list[str]:
    """sys.modules after running ``code`` in a fresh interpreter importing this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        check=True, capture_output=True, text=True, env=env, cwd=REPO,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_import_darknetpy_imports_only_the_errors() -> None:
    modules = _fresh_modules("import darknetpy")
    ours = [m for m in modules if m.startswith("darknetpy")]
    assert ours == ["darknetpy", "darknetpy.errors", "darknetpy.lazy"]  # lazy: stdlib only
    assert not [m for m in HEAVY if m in modules]


def test_first_use_of_a_lazy_name_imports_its_module() -> None:
    modules = _fresh_modules("import darknetpy\nassert darknetpy.load.__name__ == 'load'")
    assert "darknetpy.inference.inference_model" in modules and "darknetpy.model.network" in modules


def test_star_import_gives_every_public_name() -> None:
    modules = _fresh_modules(
        "from darknetpy import *\n"
        "assert Network.__module__ == 'darknetpy.model.network' and load.__module__ == "
        "'darknetpy.inference.inference_model'\nassert TrainingError.__module__ == 'darknetpy.errors'"
    )
    assert "darknetpy.model.weights" in modules


@pytest.mark.parametrize("name", darknetpy.__all__)
def test_every_public_name_resolves_to_its_definition(name: str) -> None:
    value = getattr(darknetpy, name)
    assert name in dir(darknetpy)
    if name == "__version__":
        assert isinstance(value, str)
        return
    module = darknetpy._LAZY.get(name)
    if module is not None:  # the very object its submodule defines
        assert value is getattr(importlib.import_module(f"darknetpy.{module}"), name)
    assert value.__name__ == name


def test_all_lists_every_lazy_name_and_nothing_twice() -> None:
    assert len(set(darknetpy.__all__)) == len(darknetpy.__all__)
    assert set(darknetpy._LAZY) <= set(darknetpy.__all__)


def test_unknown_name_is_an_attribute_error() -> None:
    assert not hasattr(darknetpy, "no_such_name")
    with pytest.raises(AttributeError, match="module 'darknetpy' has no attribute 'Netwrok'"):
        _ = darknetpy.Netwrok
