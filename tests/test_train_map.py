"""Training's mAP evaluates the network in memory (no temporary weights, no cfg parsed again) and
gives what ``darknetpy map`` gives on the weights the loop saves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from darknetpy.evaluation import evaluate, evaluate_network
from darknetpy.model.network import Network
from darknetpy.training.map_eval import network_map
from darknetpy.training.train import train

from .conftest import SHARED_RACCOON, make_tiny_run, trained_raccoon

QUIET = {"progress": False, "chart": False, "workers": 0, "cache": False}
pytestmark = pytest.mark.filterwarnings("ignore:.*batch=2 is lower than 8")


def _raccoon_run(root: Path, **net: object):
    """golden/trained-raccoon's cfg (batch 2, one mini-batch, ``net`` keys replaced) over the first
    8 full-size validation photos it was measured on, listed as both train= and valid=."""
    folder = trained_raccoon("net.cfg", "net.weights")
    text = (folder / "net.cfg").read_text()
    for key, value in {"batch": 2, "subdivisions": 1, **net}.items():
        text, n = re.subn(rf"(?m)^{key}\s*=.*$", f"{key}={value}", text, count=1)
        assert n == 1, key
    listed = (SHARED_RACCOON / "valid.txt").read_text().split()[:8]
    photos = [p if p.is_absolute() else SHARED_RACCOON / p for p in map(Path, listed)]
    run = make_tiny_run(root, text, name="raccoon", images=photos, valid=True)
    return run, folder / "net.weights"


def test_network_map_equals_map_of_the_weights_file(tmp_path: Path) -> None:
    run, weights = _raccoon_run(tmp_path)
    from_file = evaluate(run.cfg, run.data, weights, coco=False, keep_detections=True)
    net = Network.from_cfg(run.cfg)
    net.load_weights(weights)
    net.train()
    in_memory = evaluate_network(net, run.data, coco=False, keep_detections=True)
    assert net.training  # evaluated in eval mode, given back in the mode it was in
    assert in_memory.detections == from_file.detections  # the same boxes and probabilities
    assert repr(in_memory.map) == repr(from_file.map) and from_file.map50 > 0.5  # NaN-safe
    assert network_map(net, run.data) == from_file.map50


def test_darknet_loop_map_equals_map_of_saved_weights(tmp_path: Path) -> None:
    """One training iteration from the trained weights (burn-in keeps the rate near 0): the mAP the
    loop prints at its map point is ``darknetpy map`` on ``_best.weights`` (and ``_final``)."""
    run, weights = _raccoon_run(tmp_path, max_batches=1, burn_in=1000)
    result = train(run.cfg, run.data, weights, map=True, clear=True, seed=0, **QUIET)
    assert [i for i, _ in result.maps] == [1]
    loop_map = result.maps[0][1]
    best = result.backup / "raccoon_best.weights"
    assert not list(result.backup.glob(".*_map.weights"))  # nothing written to evaluate
    assert loop_map == evaluate(run.cfg, run.data, best, coco=False).map50
    assert loop_map == evaluate(run.cfg, run.data, result.weights, coco=False).map50
    assert loop_map > 0.5
    assert torch.is_grad_enabled()


def test_recipe_loop_map_equals_map_of_saved_ema_weights(tmp_path: Path) -> None:
    """The recipe loop evaluates its EMA weights in memory: its mAP is ``darknetpy map`` on the
    ``_best`` weights it writes (the EMA ones)."""
    run, weights = _raccoon_run(tmp_path, max_batches=4, learning_rate=1e-9)
    keys = "recipe=yolov8\nepochs=1\noptimizer=sgd\n"  # SGD at 1e-9: the trained weights stay
    text = run.cfg.read_text().replace("[net]\n", "[net]\n" + keys, 1)
    run.cfg.write_text(text)
    result = train(run.cfg, run.data, weights, map=True, clear=True, seed=0, map_epochs=1,
                   chart=False)
    assert [i for i, _ in result.maps] == [4]
    loop_map = result.maps[0][1]
    best = result.backup / "raccoon_best.weights"
    assert not list(result.backup.glob(".*_map.weights"))
    assert loop_map == evaluate(run.cfg, run.data, best, coco=False).map50
    assert loop_map > 0.2
