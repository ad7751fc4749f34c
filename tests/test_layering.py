"""The package's imports go one way (CLI -> applications -> model -> foundation), never in a circle.

Every ``import`` in ``darknetpy/`` is read with :mod:`ast`, function-level ones included, and each
module gets the rank of its stage (the README's "Layout"):

====  ===========================================================================================
rank  modules
====  ===========================================================================================
0     foundation: ``darknetpy`` (the package, whose lazy table is exempt), ``errors``, ``lazy``,
      ``jit``, ``files``; and the cfg syntax ``model.cfg`` (text only: the data stage reads
      ``.data`` files with it)
1     ``model`` (network, layers, heads, weights I/O) and ``data``; ``data`` never imports ``model``
2     ``inference``
3     ``evaluation``
4     ``training``, ``tools``
5     ``cli``, ``__main__``
====  ===========================================================================================

A module may import its own rank or lower. Function-level imports of darknetpy modules are allowed
only in the CLI (which keeps ``darknetpy --help`` from loading PyTorch); anywhere else they would
be a cycle hidden from the reader.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "darknetpy"

RANKS: tuple[tuple[str, int], ...] = (  # longest matching prefix wins
    ("darknetpy", 0),
    ("darknetpy.errors", 0),
    ("darknetpy.lazy", 0),
    ("darknetpy.jit", 0),
    ("darknetpy.files", 0),
    ("darknetpy.model", 1),
    ("darknetpy.model.cfg", 0),
    ("darknetpy.data", 1),
    ("darknetpy.inference", 2),
    ("darknetpy.evaluation", 3),
    ("darknetpy.training", 4),
    ("darknetpy.tools", 4),
    ("darknetpy.cli", 5),
    ("darknetpy.__main__", 5),
)
# importer prefix -> prefixes it must not import although their rank would allow it
FORBIDDEN: tuple[tuple[str, str, str], ...] = (
    ("darknetpy.data", "darknetpy.model",
     "the data stage never imports the model (only model.cfg, the syntax)"),
)
FORBIDDEN_EXCEPT = ("darknetpy.model.cfg",)
LAZY_OK = ("darknetpy.cli",)  # function-level imports allowed here (startup time), nowhere else
# the package __init__: its TYPE_CHECKING block names the lazy table's modules
EXEMPT = ("darknetpy",)


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    line: int
    in_function: bool
    type_checking: bool


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _modules() -> dict[str, tuple[Path, bool]]:
    return {name: (path, is_pkg) for path in sorted(PACKAGE.rglob("*.py"))
            for name, is_pkg in [_module_name(path)]}


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, in_function: bool,
          type_checking: bool) -> Iterator[tuple[ast.AST, bool, bool]]:
    for child in ast.iter_child_nodes(node):
        yield child, in_function, type_checking
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for sub in child.body:
                yield sub, in_function, True
                yield from _walk(sub, in_function, True)
            for sub in child.orelse:
                yield sub, in_function, type_checking
                yield from _walk(sub, in_function, type_checking)
            continue
        scopes = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
        nested = in_function or isinstance(child, scopes)
        yield from _walk(child, nested, type_checking)


def imports_of(name: str) -> list[Import]:
    """Every darknetpy module that ``name`` imports (``from pkg import submodule`` names the
    submodule)."""
    path, is_pkg = MODULES[name]
    package = name if is_pkg else name.rpartition(".")[0]
    found: list[Import] = []
    tree = ast.parse(path.read_text(), str(path))
    for node, in_function, type_checking in _walk(tree, False, False):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            subs = [f"{module}.{alias.name}" for alias in node.names]
            targets = [sub if sub in MODULES else module for sub in subs]
        for target in dict.fromkeys(targets):
            if target == "darknetpy" or target.startswith("darknetpy."):
                found.append(Import(name, target, node.lineno, in_function, type_checking))
    return found


def rank(module: str) -> int:
    best = max((p for p, _ in RANKS if module == p or module.startswith(p + ".")), key=len)
    return dict(RANKS)[best]


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


ALL_IMPORTS = [imp for name in MODULES for imp in imports_of(name)]


def _where(i: Import) -> str:
    return f"{MODULES[i.importer][0].relative_to(PACKAGE.parent)}:{i.line}"


def test_every_module_has_a_rank() -> None:
    assert len(MODULES) > 50
    for name in MODULES:
        rank(name)


def test_every_import_names_a_module_of_the_package() -> None:
    stale = [f"{_where(i)}: {i.target}" for i in ALL_IMPORTS if i.target not in MODULES]
    assert not stale, "imports of modules that do not exist:\n" + "\n".join(stale)


def test_no_upward_import() -> None:
    bad = [
        f"{_where(i)}: {i.importer} (rank {rank(i.importer)}) imports {i.target} "
        f"(rank {rank(i.target)})"
        for i in ALL_IMPORTS
        if i.importer not in EXEMPT and rank(i.target) > rank(i.importer)
    ]
    for importer_prefix, target_prefix, why in FORBIDDEN:
        bad += [
            f"{_where(i)}: {i.importer} imports {i.target}: {why}"
            for i in ALL_IMPORTS
            if _under(i.importer, importer_prefix) and _under(i.target, target_prefix)
            and not any(_under(i.target, ok) for ok in FORBIDDEN_EXCEPT)
        ]
    assert not bad, "\n".join(bad)


def test_no_function_level_import_outside_the_cli() -> None:
    bad = [
        f"{_where(i)}: {i.importer} imports {i.target} inside a function;"
        " import it at the top (a cycle it would hide is a layering error)"
        for i in ALL_IMPORTS
        if i.in_function and not any(_under(i.importer, ok) for ok in LAZY_OK)
    ]
    assert not bad, "\n".join(bad)


def _graph() -> dict[str, set[str]]:
    """Runtime import edges: explicit imports (not TYPE_CHECKING ones) plus, for each, the packages
    Python initialises on the way (``a.b.c`` runs ``a/b/__init__``) unless they contain the
    importer."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for imp in ALL_IMPORTS:
        if imp.type_checking or imp.importer in EXEMPT:
            continue
        parts = imp.target.split(".")
        for k in range(2, len(parts) + 1):
            target = ".".join(parts[:k])
            if target in MODULES and not _under(imp.importer, target):
                graph[imp.importer].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle() -> None:
    cycle = find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checker_sees_cycles_and_upward_imports() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert rank("darknetpy.cli.infer") > rank("darknetpy.inference.postprocess")
    assert rank("darknetpy.inference.postprocess") > rank("darknetpy.model.network")
    assert rank("darknetpy.model.cfg") == 0 and rank("darknetpy.model.heads.yolo") == 1
    # a function-level import is seen, and `from package import submodule` names the submodule
    assert any(i.in_function and i.importer.startswith("darknetpy.cli") for i in ALL_IMPORTS)
    train = imports_of("darknetpy.training.train")
    assert any(i.target == "darknetpy.training.distributed" for i in train)


@pytest.mark.parametrize("module", ["darknetpy.data.image", "darknetpy.model.cfg"])
def test_light_modules_stay_light(module: str) -> None:
    """What data-loader workers import reaches neither the model nor the applications."""
    graph = _graph()
    seen, todo = set(), [module]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph[node])
    heavy = sorted(m for m in seen if rank(m) > 0 and not _under(m, "darknetpy.data"))
    assert not heavy, heavy
