"""Issue 12, "bad input that still ends in a traceback or a silent wrong result": one test (or a
few) per point. The CLI-wide table of bad arguments and files is tests/test_cli_bad_input.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from darknetpy.cli import main
from darknetpy.data.datafile import DataWarning
from darknetpy.errors import CfgError
from darknetpy.model.cfg import CfgWarning
from darknetpy.model.network import Network

from .conftest import REPO, make_tiny_run, tiny_cfg, write_flat_images


@dataclass(frozen=True)
class TinyFiles:
    """A tiny cfg, random weights for it, a folder of three flat images and a list of them."""

    root: Path
    cfg: Path
    weights: Path
    images: Path  # the folder
    image_list: Path


def tiny_files(root: Path) -> TinyFiles:
    """Write :class:`TinyFiles` into ``root`` (a 32x32 one-head cfg: detect runs in milliseconds)."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = root / "tiny.cfg"
    cfg.write_text(tiny_cfg(width=32, height=32))
    weights = root / "tiny.weights"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Network.from_cfg(cfg).save_weights(weights)
    paths = write_flat_images(root / "images", {f"im{i}.jpg": None for i in range(3)}, value=90)
    image_list = root / "list.txt"
    image_list.write_text("".join(f"{p}\n" for p in paths))
    return TinyFiles(root, cfg, weights, root / "images", image_list)


@pytest.fixture
def files(tmp_path: Path) -> TinyFiles:
    return tiny_files(tmp_path / "in")


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``main(argv)`` in this process: (exit status, stdout, stderr); SystemExit is a status."""
    try:
        status = main([str(a) for a in argv])
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return status, out.out, out.err


def one_error_line(status: int, err: str) -> str:
    """Assert a failed command printed exactly one non-empty line and no traceback; return it."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert status != 0, err
    assert "Traceback" not in err, err
    assert len(lines) == 1, lines
    return lines[0]


# ---------------------------------------------------------------- tracebacks that ended
def test_export_without_onnx_says_which_extra_to_install(
    files: TinyFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    out = tmp_path / "x.onnx"
    line = one_error_line(*run_cli(["export", files.cfg, files.weights, out], capsys)[::2])
    assert 'pip install -e ".[onnx]"' in line, line
    assert not out.exists()


@pytest.mark.parametrize("verb", ["export", "convert", "partial", "detect --json"])
def test_an_output_into_a_missing_folder_names_it_and_creates_nothing(
    files: TinyFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str], verb: str
) -> None:
    out = tmp_path / "nonexistent" / "dir" / "out.x"
    argv = {"export": ["export", files.cfg, files.weights, out],
            "convert": ["convert", files.cfg, files.weights, out],
            "partial": ["partial", files.cfg, files.weights, out, 1],
            "detect --json": ["detect", files.cfg, files.weights, files.images, "--json", out,
                              "--no-save"]}[verb]  # fmt: skip
    line = one_error_line(*run_cli(argv, capsys)[::2])
    assert f"{out}: the folder {out.parent} does not exist; create it first" in line, line
    assert not (tmp_path / "nonexistent").exists()


def test_detect_save_dir_that_is_a_file(
    files: TinyFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "afile"
    taken.write_text("keep me\n")
    argv = ["detect", files.cfg, files.weights, files.images, "--save-dir", taken]
    line = one_error_line(*run_cli(argv, capsys)[::2])
    assert re.search(r"--save-dir .*afile: is a file, not a folder", line), line
    assert taken.read_text() == "keep me\n"


def test_summary_into_a_closed_pipe_exits_quietly(files: TinyFiles) -> None:
    """``darknetpy summary x.cfg | head``: the reader is gone before the table is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # no reader at all: the first write fails with EPIPE, deterministically
    try:
        proc = subprocess.run([sys.executable, "-m", "darknetpy", "summary", str(files.cfg)],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=300,
                              cwd=REPO)  # fmt: skip
    finally:
        os.close(write_end)
    assert proc.stderr == ""
    assert proc.returncode == 141  # 128 + SIGPIPE, as a shell reports `yes | head`


# ---------------------------------------------------------------- detect skips unreadable images
@pytest.mark.parametrize("given", ["folder", "list"])
def test_detect_skips_and_counts_unreadable_images_and_writes_the_rest(
    files: TinyFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str], given: str
) -> None:
    bad = files.images / "im1.jpg"
    bad.write_bytes(b"not a jpeg")
    source = files.images if given == "folder" else files.image_list
    save = tmp_path / "out"
    json_out = tmp_path / "out.json"
    status, out, err = run_cli(["detect", files.cfg, files.weights, source, "--save-dir", save,
                                "--json", json_out, "--thresh", "0.9"], capsys)  # fmt: skip
    assert status == 0, err
    assert sorted(p.name for p in save.iterdir()) == ["im0.jpg", "im2.jpg"]
    warned = [line for line in err.splitlines() if line.startswith("darknetpy: warning:")]
    assert len(warned) == 1 and f"skipped {bad}: unusable image" in warned[0], err
    assert "2 images, 1 unreadable images skipped" in err
    assert "im0.jpg: Predicted" in out and "im2.jpg: Predicted" in out and "im1" not in out
    assert json_out.is_file()


def test_detect_with_no_readable_image_is_an_error(
    files: TinyFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for image in files.images.iterdir():
        image.write_bytes(b"")
    argv = ["detect", files.cfg, files.weights, files.images, "--save-dir", tmp_path / "out"]
    status, _, err = run_cli(argv, capsys)
    assert status == 2 and "Traceback" not in err
    assert err.splitlines()[-1].startswith("darknetpy: error: no readable image among the 3 given")
    assert not list((tmp_path / "out").iterdir())


def test_a_cfg_given_as_the_detect_source_says_so(
    files: TinyFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_error_line(*run_cli(["detect", files.cfg, files.weights, files.cfg], capsys)[::2])
    assert "looks like a cfg ([net]) given as the source" in line, line
    assert "darknetpy detect CFG WEIGHTS SOURCE" in line


# ---------------------------------------------------------------- map reports malformed labels
@pytest.mark.parametrize("verb", ["map", "recall"])
def test_map_counts_and_reports_malformed_label_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], verb: str
) -> None:
    run = make_tiny_run(tmp_path / "run", tiny_cfg(width=32, height=32), images=2, copy=True,
                        image_size=48, valid=True)  # fmt: skip
    weights = tmp_path / "w.weights"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Network.from_cfg(run.cfg).save_weights(weights)
    label = run.images[0].with_suffix(".txt")
    label.write_text(label.read_text() + "0 0.5 0.5 0.2\n0 0.3 0.3 0.1 0.1\n")  # a 4-value line
    argv = [verb, run.cfg, run.data, weights, *(["--no-coco"] if verb == "map" else [])]
    status, _, err = run_cli(argv, capsys)
    assert status == 0, err
    warned = [line for line in err.splitlines() if "warning" in line]
    assert len(warned) == 1, err
    assert f"1 label lines in 1 files are not 'class x y w h' (first: {label})" in warned[0]
    assert f"Darknet's {verb} reads such files as a stream of values: 2 truths counted in " \
           "them, where their well-formed lines hold 2" in warned[0]


def test_map_library_warns_too(tmp_path: Path) -> None:
    from darknetpy.evaluation.run import read_truths

    images = write_flat_images(tmp_path, {"a.jpg": "0 .5 .5 .2 .2\nx .5 .5 .2 .2\n0 .4 .4 .1 .1\n",
                                          "b.jpg": "0 .5 .5 .2 .2\n"})  # fmt: skip
    with pytest.warns(DataWarning, match=r"1 label lines in 1 files .* 1 truths counted in "
                                         r"them, where their well-formed lines hold 2"):  # fmt: skip
        truths = read_truths(images)
    assert [len(t) for t in truths] == [1, 1]  # Darknet's read_boxes stops at 'x'


# ---------------------------------------------------------------- misspelt cfg keys
def test_a_misspelt_key_suggests_the_key_the_section_reads() -> None:
    text = tiny_cfg().replace("activation=linear", "activaton=linear")
    with pytest.warns(CfgWarning, match=r"unused field 'activaton=linear' \(not used by this "
                                        r"layer, did you mean 'activation'\?"):  # fmt: skip
        Network.from_text(text)


def test_an_unrelated_unused_key_gets_no_suggestion() -> None:
    text = tiny_cfg().replace("activation=linear", "activation=linear\nzzz=1")
    with pytest.warns(CfgWarning) as record:
        Network.from_text(text)
    message = next(str(w.message) for w in record if "zzz" in str(w.message))
    assert "did you mean" not in message


def test_an_error_after_a_misspelt_key_names_it() -> None:
    text = tiny_cfg().replace("classes=1", "clases=1")  # the [yolo] falls back to classes=20
    with pytest.raises(CfgError, match=r"\[yolo\]: classes=20 .* needs filters=75 .*; "
                                       r"'clases=1' \(line \d+\) is not read: did you mean "
                                       r"'classes'\?"):  # fmt: skip
        Network.from_text(text)


# ---------------------------------------------------------------- the Python API
def test_predict_refuses_a_float_tensor_in_0_255(files: TinyFiles) -> None:
    from darknetpy import load

    model = load(files.cfg, files.weights)
    image = torch.rand(3, 40, 50, generator=torch.Generator().manual_seed(0))
    assert len(model.predict(image)) == 1  # [0, 1]: fine
    with pytest.raises(ValueError, match=r"<tensor 0>: float tensors must hold RGB in \[0, 1\], "
                                         r"this one reaches 2\d\d(\.\d+)?; divide by 255"):  # fmt: skip
        model.predict(image * 255)


def test_load_without_weights_warns_once_and_weights_none_is_silent(files: TinyFiles) -> None:
    from darknetpy import load

    with pytest.warns(UserWarning, match=r"tiny.cfg: no weights given, so they are random") as rec:
        load(files.cfg)
    assert sum("no weights given" in str(w.message) for w in rec) == 1
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        load(files.cfg, weights=None)
        load(files.cfg, files.weights)
    assert not [w for w in rec if "no weights" in str(w.message)]


# ---------------------------------------------------------------- the Network example
def test_the_network_example_switches_to_eval_and_says_what_training_mode_does() -> None:
    text = (REPO / "docs" / "usage-core.md").read_text()
    example = text.split("```python", 1)[1].split("```", 1)[0]
    assert example.index("net.eval()") < example.index("net.forward_layers(x)")
    assert example.index("net.eval()") < example.index("heads = net(x)")
    assert "training mode" in example and "updates the averages" in example


def test_training_mode_changes_the_running_averages_and_eval_does_not() -> None:
    """Why the example needs ``net.eval()``: the "same bytes back" of ``save_weights``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = Network.from_text(tiny_cfg(width=32, height=32))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert net.training  # a new nn.Module, as PyTorch makes it
    net.eval()
    with torch.no_grad():
        net(x)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    net.train()
    with torch.no_grad():
        net(x)
    changed = [k for k, v in net.state_dict().items() if not torch.equal(before[k], v)]
    assert any(k.endswith("running_mean") for k in changed), changed
    assert np.isfinite(sum(float(v.float().sum()) for v in net.state_dict().values()))
