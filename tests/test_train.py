"""The training loop: Darknet's resize/mAP formulas, short runs on the embedded dataset, checkpoints,
exact resume, Ctrl-C, NaN, two processes (gloo) and the CLI."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from darknetpy.training.checkpoint import state_path
from darknetpy.errors import UsageError
from darknetpy.training.schedule import learning_rate
from darknetpy.training.train import ResizePlan, TrainingError, map_interval, random_size, train
from darknetpy.model.weights import read_header

from .conftest import RACCOON, REPO, TinyRun, tiny_train_cfg

TINY = tiny_train_cfg(burn_in=3, max_batches=4, policy="steps",
                      schedule={"steps": 3, "scales": ".1"},
                      yolo={"iou_loss": "ciou", "iou_normalizer": 0.07, "scale_x_y": 1.05})


@pytest.fixture
def files(tiny_run: Callable[..., TinyRun]) -> tuple[Path, Path]:
    """A tiny cfg and a .data file over the embedded raccoon lists (save every 2 / 3 iterations)."""
    run = tiny_run(TINY, images=None, valid=True, data={"savelast": 2, "saveweights": 3})
    return run.cfg, run.data


QUIET = {"progress": False, "chart": False, "workers": 0, "cache": False}
pytestmark = pytest.mark.filterwarnings("ignore:.*batch=4 is lower than 8")


# ------------------------------------------------------------------ formulas
def test_random_size_formula():
    assert random_size(1.0, 1.4, (416, 416), 32, False) == (448, 448)  # the "+1"
    assert random_size(1.4, 1.4, (416, 416), 32, False) == (608, 608)
    assert random_size(1 / 1.4, 1.4, (416, 416), 32, False) == (320, 320)
    assert random_size(0.99, 1.4, (416, 416), 32, False) == (416, 416)  # r < 1 never grows
    assert random_size(0.8, 1.4, (416, 416), 32, True) == (608, 608)  # first / last 100
    assert random_size(1.2, 2.0, (256, 320), 32, True) == (544, 672)
    assert random_size(0.1, 1.4, (64, 64), 32, False) == (32, 32)  # at least resize_step


def test_map_interval():
    assert map_interval(4, 160, 16) == 100  # 40, raised to 100
    assert map_interval(4, 118287, 64) == 7392


def test_resize_plan_every_10_first_max_last_100_and_resume():
    plan = ResizePlan((416, 416), 1.4, 32, seed=3, max_batches=1000, world=1, start_index=1,
                      start_iteration=0, start_count=0, fresh=True)  # fmt: skip
    sizes = [plan(i) for i in range(1, 61)]
    assert sizes[0] == (608, 608)  # first resize of a run: the maximum
    for block in range(6):
        assert len(set(sizes[block * 10:(block + 1) * 10])) == 1  # one size per 10 iterations
    assert len(set(sizes)) > 2
    assert all(320 <= w <= 608 and w % 32 == 0 for w, _ in sizes)
    # points at iterations 910, 920, ... (> max_batches - 100) use the maximum; 900 does not
    assert all(plan(i) == (608, 608) for i in range(911, 1001))
    # an exact resume at iteration 15 (count kept) continues the same plan
    resumed = dataclasses.replace(plan, start_index=16, start_iteration=15, start_count=15,
                                  fresh=False)  # fmt: skip
    assert [resumed(i) for i in range(16, 61)] == sizes[15:]
    # resuming from a plain .weights (Darknet): count restarts, first size is the maximum
    darknet = dataclasses.replace(plan, start_index=16, start_iteration=15, start_count=0)
    assert {darknet(i) for i in range(16, 26)} == {(608, 608)}
    assert len({darknet(i) for i in range(26, 36)}) == 1  # resize points 16, 26, 36, ...
    # after an mAP evaluation at 25, the initial size until the next resize point
    reset = dataclasses.replace(plan, resets=(25,))
    assert [reset(i) for i in (25, 26, 30, 31)] == [sizes[24], (416, 416), (416, 416), sizes[30]]


# ------------------------------------------------------------------ short runs
def test_short_run_end_to_end(files: tuple[Path, Path], capsys: pytest.CaptureFixture):
    cfg, data = files
    result = train(cfg, data, seed=1, map=True, **{**QUIET, "chart": True})
    backup = result.backup
    names = sorted(p.name for p in backup.iterdir())
    assert names == ["chart.png", "chart_tiny.png", "tiny_3.state.pt", "tiny_3.weights",
                     "tiny_best.weights", "tiny_final.state.pt", "tiny_final.weights",
                     "tiny_last.state.pt", "tiny_last.weights"]  # fmt: skip
    assert result.iteration == 4 and not result.interrupted
    assert read_header(backup / "tiny_final.weights").seen == 16  # iteration * batch
    assert read_header(backup / "tiny_3.weights").seen == 12
    assert [i for i, _ in result.losses] == [1, 2, 3, 4]
    assert [i for i, _ in result.maps] == [4] and 0 <= result.maps[0][1] <= 1
    out = capsys.readouterr().out
    assert "batch norm of darknet's CPU build" in out  # the device's build by default
    assert {m.momentum for m in result.network.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.1}
    lines = [line for line in out.splitlines() if line.startswith(" 2: ")]
    loss, avg, rate = (float(part.split()[0]) for part in lines[0][4:].split(", ")[:3])
    l1 = result.losses[0][1]
    assert avg == pytest.approx(0.9 * l1 + 0.1 * loss, rel=1e-5)  # avg starts at the first loss
    assert rate == pytest.approx(learning_rate(cfg, 2), abs=1e-6)  # (2/3)^4 * 0.001


def test_resume_is_exact(files: tuple[Path, Path], tmp_path: Path):
    """4 iterations in one run == 2 iterations, then a resume for 2 more: same bytes."""
    cfg, data = files
    one = train(cfg, data, seed=7, backup=tmp_path / "one", **QUIET)
    first = train(cfg, data, seed=7, backup=tmp_path / "two", max_batches=2, **QUIET)
    assert first.iteration == 2
    second = train(cfg, data, first.weights, backup=tmp_path / "two", **QUIET)
    assert second.iteration == 4
    assert second.losses[-2:] == one.losses[-2:]  # same seed found in the state, same batches
    assert (tmp_path / "two" / "tiny_final.weights").read_bytes() == \
        (tmp_path / "one" / "tiny_final.weights").read_bytes()
    # --clear restarts the count at 0 (and ignores the state)
    cleared = train(cfg, data, first.weights, clear=True, backup=tmp_path / "c", max_batches=1,
                    **QUIET)  # fmt: skip
    assert [i for i, _ in cleared.losses] == [1]


def test_resume_from_plain_weights_uses_seen(files: tuple[Path, Path], tmp_path: Path):
    cfg, data = files
    first = train(cfg, data, seed=2, backup=tmp_path / "a", max_batches=3, **QUIET)
    assert first.weights is not None
    state_path(first.weights).unlink()  # a file Darknet wrote: no state beside it
    second = train(cfg, data, first.weights, seed=2, backup=tmp_path / "a", **QUIET)
    assert [i for i, _ in second.losses] == [4]  # iteration = seen / batch = 12 / 4


def test_bf16_autocast_and_ema_checkpoint(files: tuple[Path, Path]):
    cfg, data = files
    cfg.write_text(cfg.read_text().replace("[net]\n", "[net]\nema_alpha=0.9\n"))
    result = train(cfg, data, seed=1, amp="bf16", max_batches=2, **QUIET)
    assert result.iteration == 2 and all(math.isfinite(v) for _, v in result.losses)
    ema = result.backup / "tiny_ema.weights"  # EMA starts at max_batches/2, saved with _last
    assert ema.exists() and ema.stat().st_size == (result.backup / "tiny_last.weights").stat().st_size
    with pytest.raises(UsageError, match="--amp fp32: choose one of off, fp16, bf16"):
        train(cfg, data, amp="fp32", **QUIET)  # fp16 runs on the CPU too (GradScaler("cpu"))


def test_nan_loss_stops_and_keeps_last_checkpoint(files: tuple[Path, Path],
                                                  monkeypatch: pytest.MonkeyPatch):
    import darknetpy.training.train as train_module

    real = train_module.compute_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        terms = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] > 4:  # iteration 3 (2 mini-batches per iteration)
            terms = dataclasses.replace(terms, costs={k: math.nan for k in terms.costs},
                                        cost_tensor=terms.cost_tensor * math.nan)
        return terms

    monkeypatch.setattr(train_module, "compute_loss", poisoned)
    cfg, data = files
    with pytest.raises(TrainingError, match="iteration 3: the loss is nan") as info:
        train(cfg, data, seed=1, **QUIET)
    assert "tiny_last.weights" in str(info.value)
    backup = cfg.parent / "backup"
    assert read_header(backup / "tiny_last.weights").seen == 8  # the iteration-2 save is kept
    assert not (backup / "tiny_final.weights").exists()


def test_sigint_saves_last_and_resumes(files: tuple[Path, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture):
    cfg, data = files
    backup = tmp_path / "b"
    cmd = [sys.executable, "-m", "darknetpy", "train", str(cfg), str(data), "--seed", "3",
           "--max-batches", "1000", "--no-progress", "--no-chart", "--workers", "0",
           "--backup", str(backup)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env=env)  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(" 2: "):
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    printed = [int(line.split(":")[0]) for line in out.splitlines() if line[:1] == " " and
               line.split(":")[0].strip().isdigit()]  # fmt: skip
    stopped = max([2, *printed])
    last = backup / "tiny_last.weights"
    assert read_header(last).seen == stopped * 4
    assert "resume with" in out
    capsys.readouterr()
    resumed = train(cfg, data, last, backup=backup, max_batches=stopped + 1, **QUIET)
    assert resumed.iteration == stopped + 1
    assert [i for i, _ in resumed.losses] == list(range(1, stopped + 2))  # the chart's history
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(f" {stopped + 1}: "))
    rate = float(line.split(", ")[2].split()[0])
    assert rate == pytest.approx(learning_rate(cfg, stopped + 1), abs=1e-6)


def test_two_processes_gloo_identical_weights(files: tuple[Path, Path], tmp_path: Path):
    """torchrun-style run with 2 CPU processes: both ranks end with the same weights."""
    from darknetpy.training.distributed import launch

    cfg, data = files
    launch(_ddp_worker, 2, str(cfg), str(data), str(tmp_path))
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a["iteration"] == b["iteration"] == 4  # 2 steps, the iteration advances by 2 each
    for key in a["state"]:
        torch.testing.assert_close(a["state"][key], b["state"][key], rtol=0, atol=0, msg=key)
    assert read_header(tmp_path / "ddp" / "tiny_final.weights").seen == 16


def _ddp_worker(cfg: str, data: str, out: str) -> None:
    torch.set_num_threads(1)
    result = train(cfg, data, seed=5, backup=Path(out) / "ddp", **QUIET)
    rank = int(os.environ["RANK"])
    torch.save({"iteration": result.iteration, "losses": list(result.losses),
                "state": {k: v.detach().cpu() for k, v in result.network.state_dict().items()}},
               Path(out) / f"rank{rank}.pt")  # fmt: skip


# ------------------------------------------------------------------ CLI
def test_cli_translates_darknet_form(monkeypatch: pytest.MonkeyPatch):
    import darknetpy.training.train as train_module
    from darknetpy.cli import main

    seen = {}

    def fake(cfg, data, weights=None, **kwargs):
        seen.update(cfg=cfg, data=data, weights=weights, **kwargs)
        return dataclasses.make_dataclass("R", [("interrupted", bool)])(False)

    monkeypatch.setattr(train_module, "train", fake)
    code = main(["detector", "train", "x.data", "x.cfg", "w.conv.29", "-map", "-clear",
                 "-dont_show", "-mAP_epochs", "2"])  # fmt: skip
    assert code == 0
    assert (seen["cfg"], seen["data"], seen["weights"]) == (Path("x.cfg"), Path("x.data"),
                                                            Path("w.conv.29"))  # fmt: skip
    assert seen["map"] and seen["clear"] and seen["map_epochs"] == 2 and seen["device"] == "cpu"
    seen.clear()
    assert main(["train", "x.cfg", "x.data", "--max-batches", "5", "--amp", "bf16", "--seed", "4",
                 "--backup", "out"]) == 0  # fmt: skip
    assert seen["weights"] is None and seen["max_batches"] == 5 and seen["amp"] == "bf16"
    assert seen["seed"] == 4 and seen["backup"] == "out" and not seen["map"]
    assert seen["bn_momentum"] is None  # the device's darknet build
    assert seen["darknet_cpu_defects"] is False  # the exact gradient by default
    assert main(["train", "x.cfg", "x.data", "--bn-momentum", "gpu"]) == 0
    assert seen["bn_momentum"] == "gpu"
    assert main(["train", "x.cfg", "x.data", "--darknet-build", "cpu", "--darknet-cpu-defects"]) == 0
    assert seen["bn_momentum"] == "cpu" and seen["darknet_cpu_defects"] is True


def test_cpu_defects_need_the_cpu_build(files: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--darknet-cpu-defects reproduces darknet's CPU build"):
        train(*files, bn_momentum="gpu", darknet_cpu_defects=True, backup=tmp_path, **QUIET)


def test_cpu_defects_run_says_so(files: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    result = train(*files, seed=1, darknet_cpu_defects=True, max_batches=2, backup=tmp_path, **QUIET)
    assert result.network.darknet_cpu_defects and result.iteration == 2
    assert "batch norm of darknet's CPU build with its back-propagation defects" in capsys.readouterr().out


@pytest.mark.slow
def test_readme_command_reaches_map_half(tmp_path: Path):
    """The README's main command on the embedded dataset: mAP@0.5 > 0.5 (about an hour on 2 cores)."""
    result = train(REPO / "cfg" / "yolov4-tiny-raccoon.cfg", RACCOON / "raccoon.data", map=True,
                   seed=0, backup=tmp_path, progress=False)  # fmt: skip
    assert result.maps[-1][1] > 0.5, result.maps
