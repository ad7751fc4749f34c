"""Checkpoint names, Darknet's save cadence, the resume state, and atomic writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from darknetpy import Network
from darknetpy.training.checkpoint import (
    LoopState,
    SaveSchedule,
    basecfg,
    checkpoint_path,
    default_saveweights,
    load_state,
    save_checkpoint,
    state_path,
)
from darknetpy.training.optim import DarknetOptimizer
from darknetpy.model.weights import WeightsHeader, read_header, read_weights

from .conftest import REPO, tiny_cfg

CFG = tiny_cfg(backbone=(4,), width=8, height=8, batch=4, subdivisions=1)


def test_names():
    assert basecfg("cfg/yolov4-tiny.cfg") == "yolov4-tiny"
    assert basecfg("/a/b.c/yolov4.tiny.cfg") == "yolov4"  # cut at the FIRST dot of the name
    assert basecfg("x/a\\b.cfg") == "b" and basecfg("c:\\x\\y.cfg") == "y"
    assert checkpoint_path(Path("backup"), "yolov4", "last") == Path("backup/yolov4_last.weights")
    assert checkpoint_path(Path("b"), "x", 2000).name == "x_2000.weights"
    assert state_path(Path("b/x_last.weights")) == Path("b/x_last.state.pt")
    assert default_saveweights(9999) == 1000 and default_saveweights(10000) == 10000


def _simulate(schedule: SaveSchedule, start: int, stop: int, step: int = 1) -> tuple[list, list]:
    numbered, last = [], []
    for it in range(start + step, stop + 1, step):
        if schedule.numbered_due(it):
            schedule.iter_save = it
            numbered.append(it)
        if schedule.last_due(it):
            schedule.iter_save_last = it
            last.append(it)
    return numbered, last


def test_cadence_from_zero():
    numbered, last = _simulate(SaveSchedule(1000, 100), 0, 2500)
    assert numbered == [1000, 2000]
    assert last == list(range(100, 2501, 100))


def test_cadence_resumed_and_multi_gpu():
    # resumed at 150: _last at 200 (a multiple of 100), then every 100
    numbered, last = _simulate(SaveSchedule(1000, 100, 150, 150), 150, 560)
    assert numbered == [] and last == [200, 300, 400, 500]
    # 3 GPUs: the iteration jumps by 3; `iter >= last + 100` catches the non-multiples
    numbered, last = _simulate(SaveSchedule(1000, 100), 0, 1200, step=3)
    assert last[:3] == [102, 204, 300] and numbered == [1002]


def test_savelast_off_when_not_below_saveweights():
    numbered, last = _simulate(SaveSchedule(100, 100), 0, 300)
    assert numbered == [100, 200, 300] and last == []


def _net() -> Network:
    return Network.from_text(CFG)


def test_state_roundtrip_and_mismatch(tmp_path: Path):
    net = _net()
    opt = DarknetOptimizer(net, net.net)
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    opt.step(rate=0.01, iteration=1)
    loop = LoopState(iteration=7, seed=3, avg_loss=1.5, loop_count=7, losses=[(7, 1.5)])
    path = tmp_path / "x_last.weights"
    save_checkpoint(path, net, WeightsHeader(0, 2, 5, 28), loop=loop, optimizer=opt)
    header = read_header(path)
    assert header.seen == 28
    state = load_state(path, header)
    assert state is not None and state["loop"] == loop
    other = _net()
    read_weights(path, other)
    opt2 = DarknetOptimizer(other, other.net)
    opt2.load_state_dict(state["optimizer"])
    for a, b in zip(opt.param_groups, opt2.param_groups):
        torch.testing.assert_close(opt.state[a["params"][0]]["u"], opt2.state[b["params"][0]]["u"])
    # the weights were replaced by another save (other seen): the state no longer applies
    save_checkpoint(path, net, WeightsHeader(0, 2, 5, 32))
    with pytest.warns(UserWarning, match="another save"):
        assert load_state(path, read_header(path)) is None


def test_state_keeps_the_fp16_scaler_and_skipped_count(tmp_path: Path):
    """The GradScaler's scale and growth count go into the state file; a new scaler loaded from it
    goes on from there (a fresh one would start again at 65536)."""
    net = _net()
    scaler = torch.amp.GradScaler("cpu", growth_interval=3)
    scaler.load_state_dict({**scaler.state_dict(), "scale": 1024.0, "_growth_tracker": 2})
    path = tmp_path / "x_last.weights"
    save_checkpoint(path, net, WeightsHeader(0, 2, 5, 8), loop=LoopState(iteration=2, skipped=5),
                    optimizer=DarknetOptimizer(net, net.net), scaler=scaler)  # fmt: skip
    state = load_state(path, read_header(path))
    assert state is not None and state["loop"].skipped == 5
    resumed = torch.amp.GradScaler("cpu", growth_interval=3)
    resumed.load_state_dict(state["scaler"])
    assert resumed.get_scale() == 1024.0 and resumed.state_dict()["_growth_tracker"] == 2
    save_checkpoint(path, net, WeightsHeader(0, 2, 5, 8), loop=LoopState(iteration=2))
    assert load_state(path, read_header(path))["scaler"] is None  # fp32 run: no scaler


def test_failed_save_keeps_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    net = _net()
    path = tmp_path / "x_last.weights"
    save_checkpoint(path, net, WeightsHeader(0, 2, 5, 4))
    before = path.read_bytes()
    layer = net.layers[1]

    def boom(transpose: bool):
        raise OSError("disk full")

    monkeypatch.setattr(layer, "write_darknet", boom)
    with torch.no_grad():
        net.layers[0].conv.weight.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, net, WeightsHeader(0, 2, 5, 8), loop=LoopState(iteration=2))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_last.weights"]  # no stray temp file


def test_killed_mid_write_keeps_previous(tmp_path: Path):
    """SIGKILL a process in the middle of writing a checkpoint: the old file is intact."""
    target = tmp_path / "big_last.weights"
    target.write_bytes(b"previous checkpoint")
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from darknetpy.model.weights import atomic_write
        def slow(f):
            for _ in range(1000):
                f.write(b"x" * 65536)
                f.flush()
                print("writing", flush=True)
                time.sleep(0.01)
        atomic_write(Path({str(target)!r}), slow)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert proc.stdout is not None
    for _ in range(5):
        assert proc.stdout.readline().strip() == b"writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    time.sleep(0.05)
    assert target.read_bytes() == b"previous checkpoint"
    leftovers = [p for p in tmp_path.iterdir() if p != target]
    assert all(p.name.startswith(".big_last.weights.") for p in leftovers)  # only a hidden temp
