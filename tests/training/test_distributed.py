"""Several training processes: EMA, mAP, the image cache, the fp16 scaler's state, per-rank seeds
and ``--gpus`` under torchrun, for world sizes 1-4.

The fast tests simulate a world size (ranks as threads, or a run whose process count is changed
after setup); the ``slow`` ones start real gloo processes on the CPU.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import darknetpy.data.image_cache as image_cache
import darknetpy.training.distributed as D
import darknetpy.training.train as train_module
from darknetpy.data.image_cache import ImageCache, NodeShare, ShmTooSmall, build_image_cache
from darknetpy.data.image import load_image
from darknetpy.errors import DataError, TrainingError
from darknetpy.evaluation import evaluate_network
from darknetpy.model.network import Network
from darknetpy.model.weights import read_weights
from darknetpy.training.checkpoint import load_state, state_path
from darknetpy.training.map_eval import network_map, shard_bounds
from darknetpy.training.milestones import save
from darknetpy.training.optim import DarknetEMA, _ema_tensors
from darknetpy.training.setup import prepare

from ..conftest import REPO, TinyRun, make_tiny_run, raccoon_photos, tiny_train_cfg

QUIET = {"progress": False, "chart": False, "workers": 0, "cache": False}
pytestmark = pytest.mark.filterwarnings("ignore:.*batch=4 is lower than 8")


def _tiny(root: Path, net: str = "", **data: object) -> TinyRun:
    text = tiny_train_cfg(max_batches=4).replace("[net]\n", f"[net]\n{net}")
    return make_tiny_run(root, text, images=4, valid=True, data=data or None)


# ------------------------------------------------------------------ EMA
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_ema_apply_point_crossed_once(tmp_path: Path, world: int) -> None:
    """max_batches 2010: EMA from 1005, applied at 1010, which 3 or 4 processes step over."""
    (tmp_path / "t.cfg").write_text(tiny_train_cfg())
    net = Network.from_cfg(tmp_path / "t.cfg")
    ema = DarknetEMA(net, 0.9, 2010)
    done, iteration = [], 1000
    while iteration < 1030:
        with torch.no_grad():
            for tensor in _ema_tensors(net):
                tensor.add_(1.0)  # an update
        iteration += world
        done.append(ema.after_update(iteration, step=world))
        if done[-1] == "ema_apply()":
            assert all(torch.equal(s, t) for s, t in zip(ema.shadow, _ema_tensors(net)))
    assert done.count("ema_apply()") == 1, done
    assert done.index("ema_apply()") == (1010 - 1000 + world - 1) // world - 1  # the crossing


@pytest.mark.parametrize("world", [1, 3, 4])
def test_ema_applied_and_saved_by_the_loop(tmp_path: Path, world: int,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop's updates with ``world`` processes (simulated: the count changed after setup):
    the update crossing max_batches - 1000 puts the EMA into the weights that ``_final`` saves."""
    run = _tiny(tmp_path, "ema_alpha=0.9\n")
    r = prepare(D.setup("cpu"), run.cfg, run.data, None, clear=False, amp="off", workers=0,
                seed=3, max_batches=2012, backup=tmp_path / "b", map_epochs=4, strict=False,
                progress=False, cache=False)  # fmt: skip
    one, many = r.ctx, replace(r.ctx, world_size=world)
    monkeypatch.setattr(D, "average_buffers", lambda *_: None)  # one process plays them all
    r.loop.iteration = 1004
    said: list[str] = []
    r.say = said.append
    batch = r.loader.get(1, 64, 64)
    while r.loop.iteration < 1012:  # apply point 2012 - 1000
        r.ctx = one  # the mini-batches of this process
        loss = train_module._train_step(r, batch.images, batch.truth)
        r.ctx = many  # the update of all of them
        train_module._update(r, loss)
    assert said.count(" ema_apply()") == 1, said
    path = save(r, "final")
    saved = Network.from_cfg(run.cfg)
    read_weights(path, saved)
    shadow = load_state(path, _header(path))["ema"]["shadow"]
    for ema, tensor in zip(shadow, _ema_tensors(saved)):
        torch.testing.assert_close(tensor, ema, rtol=0, atol=0)


def _header(path: Path):
    from darknetpy.model.weights import read_header

    return read_header(path)


# ------------------------------------------------------------------ mAP by every rank
def test_shard_bounds_cover_the_list_in_order() -> None:
    for count in (0, 1, 7, 8, 101):
        for world in (1, 2, 3, 4):
            bounds = [shard_bounds(count, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == count
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1


def _threads_as_ranks(world: int, fn: Callable[[D.DistContext], object],
                      monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """``fn(ctx)`` for ranks 0..world-1, each in a thread; D.all_gather_object meets them."""
    slots: list[object] = [None] * world
    gate = threading.Barrier(world, timeout=120)
    calls = []

    def gather(value: object, ctx: D.DistContext) -> list[object]:
        calls.append(ctx.rank)
        slots[ctx.rank] = value
        gate.wait()
        out = list(slots)
        gate.wait()
        return out

    monkeypatch.setattr(D, "all_gather_object", gather)
    results: list[object] = [None] * world

    def body(rank: int) -> None:
        try:
            results[rank] = fn(D.DistContext(rank, world))
        except Exception as exc:  # noqa: BLE001 - compared by the test
            results[rank] = exc

    threads = [threading.Thread(target=body, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "a rank hangs"
    assert sorted(calls) == list(range(world))  # every rank met the gather
    return results


@pytest.mark.parametrize("world", [2, 3, 4])
def test_every_rank_computes_the_map_of_the_whole_list(tmp_path: Path, world: int,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_tiny_run(tmp_path, tiny_train_cfg(), images=raccoon_photos(7), valid=True)
    torch.manual_seed(0)
    net = Network.from_cfg(run.cfg)
    with torch.no_grad():  # boxes everywhere, with many scores: a list order matters
        net.layers[-2].conv.bias.normal_(0, 2)
    alone = evaluate_network(net, run.data, coco=False, points=0, keep_detections=True)
    assert sum(len(d) for d in alone.detections) > 0
    maps = _threads_as_ranks(world, lambda ctx: network_map(copy.deepcopy(net), run.data, ctx=ctx),
                             monkeypatch)  # fmt: skip
    assert maps == [alone.map50] * world


@pytest.mark.parametrize("kind", ["DataError", "RuntimeError"])
def test_a_failing_rank_stops_every_rank_with_one_error(tmp_path: Path, kind: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_tiny_run(tmp_path, tiny_train_cfg(), images=raccoon_photos(6), valid=True)
    net = Network.from_cfg(run.cfg)

    def fn(ctx: D.DistContext) -> float:
        mine = copy.deepcopy(net)
        if ctx.rank == 2:
            def fail(*_: object) -> None:
                raise DataError("rank 2's image is broken") if kind == "DataError" else \
                    RuntimeError("CUDA out of memory")
            mine.register_forward_pre_hook(fail)
        return network_map(mine, run.data, ctx=ctx)

    errors = _threads_as_ranks(3, fn, monkeypatch)
    assert len({(type(e), str(e)) for e in errors}) == 1, errors  # the same error everywhere
    if kind == "DataError":
        assert isinstance(errors[0], DataError) and str(errors[0]) == "rank 2's image is broken"
    else:
        assert isinstance(errors[0], TrainingError)
        assert str(errors[0]) == ("the mAP evaluation failed on rank 2: RuntimeError: CUDA out of "
                                  "memory")  # fmt: skip


# ------------------------------------------------------------------ one image cache per machine
def _counting_decoder(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    decoded: list[Path] = []

    def counting(path: Path) -> np.ndarray:
        decoded.append(path)
        return load_image(path)

    monkeypatch.setattr(image_cache, "load_image", counting)
    return decoded


@pytest.mark.parametrize("world", [2, 4])
def test_one_cache_per_machine(tmp_path: Path, world: int,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Local rank 0 decodes every image once into one file; the other ranks map that file."""
    photos = raccoon_photos(3)
    decoded = _counting_decoder(monkeypatch)
    gate = threading.Barrier(world, timeout=60)
    votes: list[bool] = []

    def agree(ok: bool) -> bool:
        votes.append(ok)
        gate.wait()
        return all(votes)

    file = tmp_path / "darknetpy-images-1.u8"
    caches: list[ImageCache | None] = [None] * world

    def body(rank: int) -> None:
        caches[rank] = build_image_cache(photos, 2, node=NodeShare(file, rank == 0, agree))

    threads = [threading.Thread(target=body, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(decoded) == sorted(photos)  # once, by rank 0 alone
    assert file.stat().st_size == caches[0].nbytes == sum(load_image(p).nbytes for p in photos)
    for cache in caches[1:]:
        assert cache is not None and cache.file == file
        worker = pickle_round_trip(cache)  # what a loader worker receives
        for i, photo in enumerate(photos):
            assert np.array_equal(worker.get(i), load_image(photo))
    owner = caches[0]
    del caches, owner
    import gc

    gc.collect()
    assert not file.exists()  # the builder removes it when it goes


def pickle_round_trip(obj: object) -> object:
    import pickle

    return pickle.loads(pickle.dumps(obj))


def test_small_shm_falls_back_with_a_message(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A container's 64 MB /dev/shm: a warning and no cache, not a SIGBUS; same batches."""
    from darknetpy.data.augment import AugmentConfig
    from darknetpy.data.loader import build_train_loader

    photos = raccoon_photos(4)
    need = sum(load_image(p).nbytes for p in photos)
    monkeypatch.setattr(image_cache, "shm_free_bytes", lambda *_: need - 1)
    with pytest.warns(UserWarning, match=r"MiB free but the image cache needs .*decoded on every"):
        assert build_image_cache(photos, 1) is None
    with pytest.raises(ShmTooSmall, match="shm-size"):
        ImageCache(photos, 1, file=tmp_path / "c.u8")
    assert not (tmp_path / "c.u8").exists()  # checked before anything is written

    def nospace(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(image_cache, "shm_free_bytes", lambda *_: None)  # unknown free space
    monkeypatch.setattr(os, "posix_fallocate", nospace)
    with pytest.raises(ShmTooSmall, match="No space left on device"):
        ImageCache(photos, 1, file=tmp_path / "d.u8")
    assert not (tmp_path / "d.u8").exists()
    monkeypatch.setattr(image_cache, "shm_free_bytes", lambda *_: 64 * 2**20)  # room for 4 photos
    aug = AugmentConfig(width=64, height=64, classes=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # room: no warning
        cached = build_train_loader(photos, aug, batch=2, workers=0, seed=1, cache=True)
    assert cached.source.cache is not None
    monkeypatch.setattr(image_cache, "shm_free_bytes", lambda *_: 1024)
    with pytest.warns(UserWarning, match="decoded on every use"):
        plain = build_train_loader(photos, aug, batch=2, workers=0, seed=1, cache=True)
    assert plain.source.cache is None
    a, b = cached.get(1, 64, 64), plain.get(1, 64, 64)
    assert torch.equal(a.images, b.images) and torch.equal(a.truth, b.truth)


# ------------------------------------------------------------------ fp16 gradient scaler
def test_fp16_resume_keeps_the_scale_and_reports_skipped_updates(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """GradScaler on the CPU: iteration 2's gradients are made inf (the tiny network's first loss
    overflows fp16 at scale 65536 too), the scaler skips those updates and halves its scale each
    time; every skip is said, counted and saved with the scale, and a resume starts from the saved
    scale (a fresh scaler would be back at 65536)."""
    import re

    run = _tiny(tmp_path)
    real, calls = train_module.compute_loss, {"n": 0}

    def poisoned(net, heads, truth, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # iteration 2, first mini-batch
            for head in heads.values():
                head.register_hook(lambda g: torch.full_like(g, float("inf")))
        return real(net, heads, truth, **kwargs)

    monkeypatch.setattr(train_module, "compute_loss", poisoned)
    first = train_module.train(run.cfg, run.data, seed=4, amp="fp16", max_batches=2,
                               backup=tmp_path / "b", **QUIET)  # fmt: skip
    out = capsys.readouterr().out
    said = re.findall(r"iteration (\d+): update skipped \(inf/nan gradients at fp16 loss scale "
                      r"(\d+), now (\d+)\)", out)  # fmt: skip
    assert "2" in [it for it, _, _ in said]  # the poisoned one
    state = torch.load(state_path(first.weights), weights_only=True)
    skipped = state["loop"]["skipped"]
    assert skipped == len(said) and f"{skipped} of the updates were skipped by the fp16" in out
    assert state["scaler"]["scale"] == 65536.0 / 2**skipped == float(said[-1][2])

    scales = []
    real_prepare = train_module.prepare

    def spying(*args, **kwargs):
        r = real_prepare(*args, **kwargs)
        scales.append(r.scaler.get_scale())
        return r

    monkeypatch.setattr(train_module, "prepare", spying)
    second = train_module.train(run.cfg, run.data, first.weights, amp="fp16", max_batches=3,
                                backup=tmp_path / "b", **QUIET)  # fmt: skip
    assert second.iteration == 3 and "resuming exactly" in capsys.readouterr().out
    assert scales == [state["scaler"]["scale"]]  # continued, not restarted at 65536
    assert torch.load(state_path(second.weights), weights_only=True)["loop"]["skipped"] >= skipped


# ------------------------------------------------------------------ per-rank seeds
def test_rank_seeds_differ_and_rank_0_keeps_the_seed() -> None:
    seeds = [D.rank_seed(7, r) for r in range(4)]
    assert seeds[0] == 7 and len(set(seeds)) == 4 and all(0 <= s < 2**63 for s in seeds)


def test_dropout_masks_differ_by_rank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same iteration on rank 0 and rank 1 draws different dropout masks (simulated ranks:
    RANK set with one process); the initial weights, from the seed, are the same."""
    text = tiny_train_cfg(max_batches=1).replace(
        "[convolutional]\nsize=1", "[dropout]\nprobability=.5\n\n[convolutional]\nsize=1")
    run = make_tiny_run(tmp_path, text, images=4)
    masks, starts = {}, {}
    real_prepare = train_module.prepare
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "1")

        def spying(*args, rank=rank, **kwargs):
            r = real_prepare(*args, **kwargs)
            starts[rank] = {k: v.clone() for k, v in r.net.state_dict().items()}
            layer = next(m for m in r.net.layers if m.darknet_name == "dropout")
            def record(_m: object, _i: object, out: torch.Tensor, rank: int = rank) -> None:
                masks.setdefault(rank, (out == 0).clone())  # the first mini-batch's mask

            layer.register_forward_hook(record)
            return r

        monkeypatch.setattr(train_module, "prepare", spying)
        train_module.train(run.cfg, run.data, seed=9, backup=tmp_path / f"b{rank}", **QUIET)
    assert masks[0].shape == masks[1].shape and not torch.equal(masks[0], masks[1])
    assert 0.3 < masks[0].float().mean() < 0.7
    assert all(torch.equal(starts[0][k], starts[1][k]) for k in starts[0])


# ------------------------------------------------------------------ --gpus under torchrun
def test_gpus_compared_with_the_processes_of_this_machine(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    """Two machines of 2 GPUs: WORLD_SIZE 4, LOCAL_WORLD_SIZE 2, ``--gpus 0,1`` on each."""
    from darknetpy.cli import main

    seen = {}

    def fake(cfg, data, weights=None, **kwargs):
        seen.update(kwargs)
        return type("R", (), {"interrupted": False})()

    monkeypatch.setattr(train_module, "train", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["train", "x.cfg", "x.data", "--gpus", "0,1"]) == 0 and seen["gpus"] == [0, 1]
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    capsys.readouterr()
    assert main(["train", "x.cfg", "x.data", "--gpus", "0,1"]) == 2
    assert "torchrun started 3 processes on this machine" in capsys.readouterr().err


# ------------------------------------------------------------------ real processes (gloo)
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_gloo_failing_evaluation_stops_all_ranks(tmp_path: Path) -> None:
    """Rank 1 cannot evaluate: both ranks raise the same error and ``_last`` is saved; no hang
    (a hang would hit the subprocess timeout)."""
    run = _tiny(tmp_path)
    script = (f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
              "from tests.training.test_distributed import _rank_worker\n"
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


@pytest.mark.slow
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


@pytest.mark.slow
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
