"""bench/gpu_check.py, the GPU check of issue 16, on a machine without CUDA: it stops with one line
and exit status 3; ``--cpu-dry-run`` runs the CPU side of the comparison and prints the table."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "gpu_check.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_without_cuda_one_line_and_exit_3() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 3, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and "CUDA is not available" in lines[0] and not done.stderr.strip()
    assert (REPO / "bench" / "gpu_check.sh").stat().st_mode & 0o111  # the wrapper is executable


def test_loss_lines_and_cfg_rewrite(tmp_path: Path) -> None:
    gc = _module()
    out = (" 1: 89.862475, 89.862473 avg loss, 0.0 rate\n"
           " 2: 89.609042, 89.837128 avg loss, 0.0 rate\n")
    assert gc._losses(out) == [89.862475, 89.609042]
    path = gc._net_cfg(gc.RACCOON_CFG, tmp_path, width=416, batch=64)
    text = path.read_text()
    assert "width=416" in text and "batch=64" in text and "height=224" in text
    with pytest.raises(SystemExit, match="no nosuchkey= line"):
        gc._net_cfg(gc.RACCOON_CFG, tmp_path, nosuchkey=1)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_cpu_dry_run_compares_two_cpu_runs(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _module().main(["--cpu-dry-run", "--iterations", "1"]) == 0
    out = capsys.readouterr().out
    assert "no CUDA (--cpu-dry-run)" in out
    row = next(line for line in out.splitlines() if line.startswith("compare cpu/cpu (dry run)"))
    assert " ok " in row and "max rel diff 0.00e+00 over 1 it" in row


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_cuda_checks_run_on_the_cpu_at_toy_sizes(tmp_path: Path) -> None:
    """The CUDA rows' code on the CPU (bf16, tiny sizes): what cannot be run without a GPU is only
    the device string."""
    gc = _module()
    row = gc.check_amp_training(2, tmp_path, device="cpu", amp="bf16")
    assert row.figure.startswith("mAP@0.5 ") and "img/s" in row.figure, row
    speed = gc.train_speed(REPO / "cfg/yolov4-tiny.cfg", 64, 4, 2, tmp_path, iterations=1,
                           warmup=1, device="cpu", amp="bf16")  # fmt: skip
    assert speed > 0
    assert gc.detect_speed(REPO / "cfg/yolov4-tiny.cfg", 64, batch=2, iterations=1,
                           device="cpu") > 0  # fmt: skip
    assert gc.check_ddp(1, 1, tmp_path, 10).status == "skip"
