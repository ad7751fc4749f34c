"""The recipe loop end to end on a tiny network (tiny_cfg's [yolo] head scored by its own loss: the
loop's mechanics -- schedule, accumulation, EMA, close_mosaic, checkpoints, --map -- not the heads')."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from darknetpy.model.network import Network
from darknetpy.model.weights import read_weights
from darknetpy.training.train import train
from tests.conftest import tiny_cfg

NET = {"batch": 4, "recipe": "yolov8", "epochs": 3, "close_mosaic": 1, "warmup_epochs": 1,
       "nominal_batch": 8}  # fmt: skip


def test_recipe_run(tiny_run, capsys: pytest.CaptureFixture[str]) -> None:
    run = tiny_run(tiny_cfg(backbone=(8, 16), net=NET), images=8, valid=True)
    result = train(run.cfg, run.data, map=True, seed=3, map_epochs=1, chart=False)
    out = capsys.readouterr().out
    # 8 images / batch 4 = 2 iterations an epoch, 3 epochs; accumulate round(8 / 4) = 2, ramped
    # from 1 over the 2 warm-up iterations; optimizer=auto -> AdamW lr round(0.002*5/5, 6)
    assert result.iteration == 6 and not result.interrupted
    assert "3 epochs x 2 iterations, max_batches 6; adamw lr 0.002" in out
    assert "accumulate 2; mosaic off from iteration 5" in out
    assert " iteration 5: mosaic off" in out
    steps = [line.split(":")[0].strip() for line in out.splitlines() if ") step, " in line]
    # ni - last_opt_step >= accumulate: ni 0 (accumulate 1), ni 1 (round(1.5) = 2: no), then every 2;
    # the gradients of the last iteration are never stepped, as in ultralytics
    assert steps == ["1", "3", "5"]
    assert [i for i, _ in result.maps] == [2, 4, 6]  # every epoch (map_epochs=1), no 100 floor
    final = run.backup / "tiny_final.weights"
    last = run.backup / "tiny_last.weights"
    assert final.is_file() and last.is_file() and (run.backup / "tiny_best.weights").is_file()
    a, b = Network.from_cfg(run.cfg), Network.from_cfg(run.cfg)
    read_weights(final, a)
    read_weights(last, b)
    assert not torch.equal(a.layers[0].conv.weight, b.layers[0].conv.weight)  # EMA != raw


def test_recipe_resume_is_exact(tiny_run) -> None:
    run = tiny_run(tiny_cfg(backbone=(8,), net=NET), images=8)
    full = train(run.cfg, run.data, seed=5, chart=False, backup=run.root / "a")
    train(run.cfg, run.data, seed=5, chart=False, backup=run.root / "b", max_batches=3)
    resumed = train(run.cfg, run.data, run.root / "b" / "tiny_last.weights", seed=5, chart=False,
                    backup=run.root / "b")  # fmt: skip
    assert resumed.iteration == full.iteration == 6
    x = Path(run.root / "a" / "tiny_final.weights").read_bytes()
    y = Path(run.root / "b" / "tiny_final.weights").read_bytes()
    assert x == y
