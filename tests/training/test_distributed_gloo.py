"""Several training processes for real: gloo on the CPU with 2-4 processes started as torchrun
would (``slow``: each start costs seconds per process). The fast, simulated counterparts are in
test_distributed.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import darknetpy.data.image_cache as image_cache
import darknetpy.training.distributed as D
import darknetpy.training.train as train_module
from darknetpy.errors import DataError
from darknetpy.model.network import Network
from darknetpy.model.weights import read_weights
from darknetpy.training.checkpoint import state_path
from darknetpy.training.map_eval import network_map

from ..conftest import REPO
from .test_distributed import QUIET, _tiny

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:.*batch=4 is lower than 8")]


def _rank_worker(cfg: str, data: str, out: str, options: dict) -> None:
    torch.set_num_threads(1)
    decoded: list[str] = []
    real = image_cache.load_image
    image_cache.load_image = lambda p: (decoded.append(str(p)), real(p))[1]
    rank = int(os.environ["RANK"])
    if options.pop("fail_rank", None) == rank:
        import darknetpy.evaluation.commands as commands

        def broken(*_: object, **__: object):
            raise DataError(f"rank {rank}: valid image unreadable")

        commands.detect_images = broken
    seeds, real_prepare = [], train_module.prepare

    def spying(*args, **kwargs):
        r = real_prepare(*args, **kwargs)
        seeds.append(r.loop.seed)
        return r

    train_module.prepare = spying
    try:
        result = train_module.train(cfg, data, backup=Path(out) / "ddp", map=True,
                                    progress=False, chart=False, workers=0, cache=True,
                                    **{"seed": 5, **options})  # fmt: skip
    except DataError as exc:
        torch.save({"error": str(exc)}, Path(out) / f"rank{rank}.pt")
        return
    torch.save({"iteration": result.iteration, "maps": list(result.maps), "decoded": decoded,
                "seeds": seeds,
                "state": {k: v.detach().cpu() for k, v in result.network.state_dict().items()}},
               Path(out) / f"rank{rank}.pt")  # fmt: skip


@pytest.mark.parametrize("world", [2, 3, 4])
def test_gloo_ranks_share_cache_map_and_weights(tmp_path: Path, world: int) -> None:
    run = _tiny(tmp_path)
    D.launch(_rank_worker, world, str(run.cfg), str(run.data), str(tmp_path),
             {"max_batches": 2 * world, "seed": None})  # fmt: skip
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]
    assert len({seed for r in ranks for seed in r["seeds"]}) == 1  # a random seed: rank 0's
    assert {r["iteration"] for r in ranks} == {2 * world}
    assert sorted(ranks[0]["decoded"]) == sorted(map(str, run.images))  # one cache, rank 0's
    assert all(r["decoded"] == [] for r in ranks[1:])
    assert all(r["maps"] == ranks[0]["maps"] and len(r["maps"]) == 1 for r in ranks)
    for key, value in ranks[0]["state"].items():
        assert all(torch.equal(r["state"][key], value) for r in ranks[1:]), key
    final = Network.from_cfg(run.cfg)
    read_weights(tmp_path / "ddp" / "tiny_final.weights", final)
    assert ranks[0]["maps"][-1][1] == pytest.approx(network_map(final, run.data), abs=1e-6)


def test_gloo_failing_evaluation_stops_all_ranks(tmp_path: Path) -> None:
    """Rank 1 cannot evaluate: both ranks raise the same error and ``_last`` is saved; no hang
    (a hang would hit the subprocess timeout)."""
    run = _tiny(tmp_path)
    script = (f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
              "from tests.training.test_distributed_gloo import _rank_worker\n"
              "from darknetpy.training.distributed import launch\n"
              f"launch(_rank_worker, 2, {str(run.cfg)!r}, {str(run.data)!r}, {str(tmp_path)!r}, "
              "{'max_batches': 2, 'fail_rank': 1})\n")  # fmt: skip
    subprocess.run([sys.executable, "-c", script], check=True, timeout=600, cwd=REPO)
    errors = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True)["error"] for r in (0, 1)]
    assert errors == ["rank 1: valid image unreadable"] * 2
    assert (tmp_path / "ddp" / "tiny_last.weights").exists()


def _resume_worker(cfg: str, data: str, backup: str, max_batches: int, weights: str | None,
                   amp: str) -> None:
    torch.set_num_threads(1)
    train_module.train(cfg, data, weights, seed=6, backup=backup, max_batches=max_batches,
                       amp=amp, **QUIET)  # fmt: skip


@pytest.mark.parametrize("amp", ["off", "fp16"])
def test_gloo_resume_is_exact(tmp_path: Path, amp: str) -> None:
    """2 processes: 3 steps (iterations 2, 4, 6) in one run == 1 step, then a resume from ``_last``
    for 2 more (every rank loads rank 0's state): the same final bytes; under fp16 the same
    scaler state and skipped count too."""
    run = _tiny(tmp_path, savelast=2)
    args = (str(run.cfg), str(run.data))
    D.launch(_resume_worker, 2, *args, str(tmp_path / "one"), 6, None, amp)
    D.launch(_resume_worker, 2, *args, str(tmp_path / "two"), 2, None, amp)
    D.launch(_resume_worker, 2, *args, str(tmp_path / "two"), 6,
             str(tmp_path / "two" / "tiny_last.weights"), amp)  # fmt: skip
    one, two = (tmp_path / d / "tiny_final.weights" for d in ("one", "two"))
    assert one.read_bytes() == two.read_bytes()
    states = [torch.load(state_path(p), weights_only=True) for p in (one, two)]
    assert states[0]["scaler"] == states[1]["scaler"]
    assert states[0]["loop"]["skipped"] == states[1]["loop"]["skipped"]
    if amp == "fp16":
        assert states[0]["loop"]["skipped"] >= 1 and states[0]["scaler"]["scale"] < 65536


def test_cli_two_processes_one_message_for_a_broken_valid_image(tmp_path: Path) -> None:
    """``train --cpu-processes 2 --map`` with a broken image in rank 1's part of ``valid=``: one
    error line (not one per process), exit status 2, ``_last`` saved; no hang."""
    run = _tiny(tmp_path)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    broken.with_suffix(".txt").write_text("0 0.5 0.5 0.2 0.2\n")
    valid = tmp_path / "valid-broken.txt"
    valid.write_text("".join(f"{p}\n" for p in [*run.images[:3], broken]))
    run.data.write_text(run.data.read_text().replace(f"valid={run.valid}", f"valid={valid}"))
    assert f"valid={valid}" in run.data.read_text()
    cmd = [sys.executable, "-m", "darknetpy", "train", str(run.cfg), str(run.data),
           "--cpu-processes", "2", "--map", "--max-batches", "2", "--workers", "0", "--seed", "1",
           "--no-progress", "--no-chart", "--backup", str(tmp_path / "b")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    errors = [line for line in done.stderr.splitlines() if line.startswith("darknetpy: error:")]
    assert done.returncode == 2, done.stderr
    assert len(errors) == 1 and str(broken) in errors[0], done.stderr
    assert (tmp_path / "b" / "tiny_last.weights").exists()
