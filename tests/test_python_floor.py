"""setup.py's ``python_requires=">=3.10"`` holds: no module of the package uses Python 3.11+ syntax
or a 3.11+ standard-library name (the suite itself runs on a newer Python, so nothing else would
notice). Checked by parsing with ``feature_version=(3, 10)`` and looking the imports up in a table of
what 3.11-3.13 added."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "darknetpy"
FLOOR = (3, 10)

# Names the standard library gained in 3.11, 3.12 or 3.13 (module -> names; "" = the module itself).
NEWER: dict[str, set[str]] = {
    "typing": {"Self", "LiteralString", "Never", "assert_never", "assert_type", "reveal_type",
               "Required", "NotRequired", "Unpack", "TypeVarTuple", "dataclass_transform",
               "get_overloads", "clear_overloads", "override", "TypeAliasType", "ReadOnly",
               "TypeIs", "get_protocol_members", "is_protocol", "NoDefault"},
    "enum": {"StrEnum", "ReprEnum", "EnumCheck", "FlagBoundary", "verify", "member", "nonmember",
             "global_enum", "property", "show_flag_values"},
    "datetime": {"UTC"},
    "contextlib": {"chdir"},
    "itertools": {"batched"},
    "hashlib": {"file_digest"},
    "operator": {"call"},
    "tomllib": {""},
    "wsgiref.types": {""},
}
NEWER_BUILTINS = {"ExceptionGroup", "BaseExceptionGroup"}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _problems(source: str, where: str) -> list[str]:
    """What in ``source`` (the text of the file ``where``) needs a Python newer than FLOOR."""
    try:
        tree = ast.parse(source, where, feature_version=FLOOR)
    except SyntaxError as exc:
        return [f"{where}:{exc.lineno}: {exc.msg}"]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in NEWER:
            names = NEWER[node.module]
            found += [f"{where}:{node.lineno}: {node.module}.{a.name} is 3.11+"
                      for a in node.names if a.name in names or "" in names]
        elif isinstance(node, ast.Import):
            found += [f"{where}:{node.lineno}: {a.name} is 3.11+"
                      for a in node.names if "" in NEWER.get(a.name, set())]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.attr in NEWER.get(node.value.id, set()):
                found.append(f"{where}:{node.lineno}: {node.value.id}.{node.attr} is 3.11+")
        elif isinstance(node, ast.Name) and node.id in NEWER_BUILTINS:
            found.append(f"{where}:{node.lineno}: {node.id} is 3.11+")
    return found


def test_setup_declares_the_floor_this_test_checks() -> None:
    text = (REPO / "setup.py").read_text(encoding="utf-8")
    match = re.search(r'python_requires="\s*>=\s*(\d+)\.(\d+)"', text)
    assert match, "setup.py: python_requires not found"
    assert tuple(map(int, match.groups())) == FLOOR


def test_no_module_needs_a_newer_python() -> None:
    modules = _modules()
    assert len(modules) > 50
    problems = [p for path in modules
                for p in _problems(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))]
    assert problems == []


@pytest.mark.parametrize("source, expected", [
    ("from typing import Any, Self\n", "typing.Self is 3.11+"),
    ("import tomllib\n", "tomllib is 3.11+"),
    ("import datetime\nx = datetime.UTC\n", "datetime.UTC is 3.11+"),
    ("try:\n    pass\nexcept* ValueError:\n    pass\n", "only supported in Python 3.11"),
    ("raise ExceptionGroup('x', [])\n", "ExceptionGroup is 3.11+"),
])
def test_the_check_sees_newer_features(source: str, expected: str) -> None:
    problems = _problems(source, "probe.py")
    assert len(problems) == 1 and expected in problems[0], problems
