"""Several training processes: EMA, mAP, the image cache, the fp16 scaler's state, per-rank seeds
and ``--gpus`` under torchrun, for world sizes 1-4.

These tests simulate a world size (ranks as threads, or a run whose process count is changed after
setup); test_distributed_gloo.py starts real gloo processes on the CPU (``slow``).
"""

from __future__ import annotations

import copy
import gc
import os
import pickle
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
from darknetpy.model.weights import read_header, read_weights
from darknetpy.training.checkpoint import load_state, state_path
from darknetpy.training.map_eval import network_map, shard_bounds
from darknetpy.training.milestones import save
from darknetpy.training.optim import DarknetEMA, _ema_tensors
from darknetpy.training.setup import prepare

from ..conftest import TinyRun, make_tiny_run, raccoon_photos, tiny_train_cfg

QUIET = {"progress": False, "chart": False, "workers": 0, "cache": False}
pytestmark = pytest.mark.filterwarnings("ignore:.*batch=4 is lower than 8")


def _tiny(root: Path, net: str = "", **data: object) -> TinyRun:
    return make_tiny_run(root, tiny_train_cfg(max_batches=4).replace("[net]\n", f"[net]\n{net}"),
                         images=4, valid=True, data=data or None)  # fmt: skip


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
            torch._foreach_add_(list(_ema_tensors(net)), 1.0)  # an update
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
    shadow = load_state(path, read_header(path))["ema"]["shadow"]
    for ema, tensor in zip(shadow, _ema_tensors(saved)):
        torch.testing.assert_close(tensor, ema, rtol=0, atol=0)


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
        worker = pickle.loads(pickle.dumps(cache))  # what a loader worker receives
        for i, photo in enumerate(photos):
            assert np.array_equal(worker.get(i), load_image(photo))
    del caches
    gc.collect()
    assert not file.exists()  # the builder removes it when it goes


@pytest.mark.filterwarnings("ignore:.*MiB free but the image cache needs")
def test_a_failed_machine_cache_means_no_cache_anywhere(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """/dev/shm too small where local rank 0 builds: the others, waiting for its file, see its
    failure mark, all agree on no cache, and nothing is left in the folder."""
    monkeypatch.setattr(image_cache, "shm_free_bytes", lambda *_: 1024)
    gate = threading.Barrier(3, timeout=60)
    votes: list[bool] = []

    def agree(ok: bool) -> bool:
        votes.append(ok)
        gate.wait()
        return all(votes)

    file = tmp_path / "darknetpy-images-2.u8"
    results: list[object] = ["unset"] * 3

    def body(rank: int) -> None:
        node = NodeShare(file, rank == 0, agree)
        results[rank] = build_image_cache(raccoon_photos(2), 1, node=node)

    threads = [threading.Thread(target=body, args=(r,)) for r in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == [None, None, None] and sorted(votes) == [False, True, True]
    assert list(tmp_path.iterdir()) == []


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
    assert skipped == len(said) == first.skipped_updates and f"{skipped} of the updates" in out
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
def test_dropout_masks_differ_by_rank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same iteration on rank 0 and rank 1 draws different dropout masks (simulated ranks:
    RANK set with one process); the initial weights, from the seed, are the same."""
    seeds = [D.rank_seed(7, r) for r in range(4)]  # rank 0 draws as a one-process run
    assert seeds[0] == 7 and len(set(seeds)) == 4 and all(0 <= s < 2**63 for s in seeds)
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
