"""README.md, docs/ and bench/README.md: each text is written once, and every ```python example runs.

The examples are run as a reader would run them, from a folder holding the repository's cfg/ and data/,
with the files they name made beforehand: random weights stand in for `weights/yolov4-tiny.weights` and
for the quick start's `backup/yolov4-tiny-raccoon_final.weights`, and `raccoon.onnx` is exported from
the latter as docs/usage-inference.md says. A ``print(...)  # value`` line must print that value."""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO, quiet_weights

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BENCH = REPO / "bench" / "README.md"  # the performance tables live there, and only there
RUN = 6  # non-blank lines: a longer run found in two files is a copy


def _runs(path: Path) -> dict[tuple[str, ...], int]:
    rows = [(n, line.rstrip()) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if line.strip()]
    return {tuple(text for _, text in rows[k:k + RUN]): rows[k][0] for k in range(len(rows) - RUN + 1)}


def test_no_text_is_in_two_files() -> None:
    assert len(DOCS) >= 5 and BENCH.is_file()
    seen: dict[tuple[str, ...], str] = {}
    copies = []
    for path in [*DOCS, BENCH]:
        for run, line in _runs(path).items():
            where = f"{path.relative_to(REPO)}:{line}"
            if run in seen and not seen[run].startswith(f"{path.relative_to(REPO)}:"):
                copies.append(f"{where} repeats {seen[run]}: {run[0][:60]!r}")
            seen.setdefault(run, where)
    assert copies == []


def test_the_readme_links_every_doc() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for path in DOCS[1:]:
        assert f"(docs/{path.name})" in readme, path.name


def _python_blocks(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M)]


def _expected_prints(code: str) -> list[str]:
    """The values promised by ``print(...)  # value`` lines, as Python would print them."""
    out = []
    for line in code.splitlines():
        match = re.match(r"\s*print\(.*\)\s*#\s*(.+)$", line)
        if match:
            with contextlib.suppress(ValueError, SyntaxError):
                out.append(repr(ast.literal_eval(match.group(1).strip())))
    return out


@pytest.fixture(scope="module")
def reader_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder like the repository root after the quick start, with the files the examples name."""
    import torch

    from darknetpy.cli import main
    from darknetpy.model.network import Network

    root = tmp_path_factory.mktemp("reader")
    for name in ("cfg", "data"):
        (root / name).symlink_to(REPO / name)
    (root / "weights").mkdir()
    (root / "backup").mkdir()
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Network.from_cfg(REPO / "cfg" / "yolov4-tiny.cfg").save_weights(root / "weights" / "yolov4-tiny.weights")
        raccoon = quiet_weights(Network.from_cfg(REPO / "cfg" / "yolov4-tiny-raccoon.cfg"))
    raccoon.save_weights(root / "backup" / "yolov4-tiny-raccoon_final.weights")
    with _chdir(root):
        assert main(["export", "cfg/yolov4-tiny-raccoon.cfg", "backup/yolov4-tiny-raccoon_final.weights",
                     "raccoon.onnx", "--opset", "17", "--dynamic-batch", "--with-decode"]) == 0
    return root


@contextlib.contextmanager
def _chdir(folder: Path) -> Iterator[None]:  # contextlib.chdir is Python 3.11+
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


@pytest.mark.parametrize("doc", [p.name for p in DOCS if _python_blocks(p)])
def test_python_examples_run(doc: str, reader_folder: Path) -> None:
    """Every ```python block of ``doc``, in order, in one namespace (a later block may use an earlier
    block's names, as the text does)."""
    if doc == "usage-inference.md":
        pytest.importorskip("onnxruntime")
    path = next(p for p in DOCS if p.name == doc)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    with _chdir(reader_folder):
        for line, code in _python_blocks(path):
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                exec(compile(code, f"{doc}:{line}", "exec"), namespace)  # noqa: S102 - our own docs
            for value in _expected_prints(code):
                assert value in printed.getvalue(), (f"{doc}:{line}", value, printed.getvalue()[-500:])
