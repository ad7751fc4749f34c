"""darknetpy.training.device_settings and darknetpy.devices: the CUDA defaults, each checked as a
setting on the CPU (CUDA's presence patched where the code asks for it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from darknetpy.data import AugmentConfig, build_train_loader
from darknetpy.data.image import to_chw_float
from darknetpy.devices import parse_device, set_tf32, tf32_enabled
from darknetpy.errors import UsageError
from darknetpy.training import device_settings as S
from darknetpy.training import distributed as D
from darknetpy.training.setup import prepare
from tests.conftest import TinyRun, tiny_train_cfg

CUDA = torch.device("cuda", 0)  # a device object needs no CUDA; nothing is moved to it here


@pytest.fixture(autouse=True)
def _restore_switches() -> Iterator[None]:
    """Leave PyTorch's process-wide switches as this test found them."""
    tf32, benchmark = tf32_enabled(), torch.backends.cudnn.benchmark
    yield
    set_tf32(tf32)
    torch.backends.cudnn.benchmark = benchmark


@pytest.fixture
def fake_gpus(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """``fake_gpus(n)``: torch.cuda reports ``n`` devices (0: CUDA absent)."""
    def patch(count: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    return patch


# ---------------------------------------------------------------- workers
@pytest.mark.parametrize(("device", "cores", "local", "want"), [
    ("cuda", 16, 1, 8),   # capped at MAX_WORKERS
    ("cuda", 16, 4, 3),   # 4 cores per rank: 3 load, 1 drives the GPU
    ("cuda", 8, 8, 1),    # 1 core per rank: still one worker
    ("cuda", 2, 4, 1),    # fewer cores than ranks: at least 1
    ("cpu", 2, 1, 0),     # the CPU trains with every core: build in-process (as before)
    ("cpu", 8, 1, 4),
    ("cpu", 8, 2, 2),
])  # fmt: skip
def test_default_workers_scale_with_cores_per_rank(device: str, cores: int, local: int,
                                                   want: int) -> None:
    assert S.default_workers(device, cores, local) == want


def test_local_world_size_from_torchrun_else_world(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert S.local_world_size(3) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # 2 nodes x 2 GPUs: WORLD_SIZE 4
    assert S.local_world_size(4) == 2
    settings = S.training_settings(CUDA, world_size=4, cores=16)
    assert settings.workers == 7  # 16 cores / 2 local ranks - 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "two")
    with pytest.raises(UsageError, match="LOCAL_WORLD_SIZE='two' is not an integer"):
        S.local_world_size(4)


def test_available_cores_is_the_affinity() -> None:
    import os

    assert S.available_cores() == len(os.sched_getaffinity(0))


# ---------------------------------------------------------------- the record
def test_cuda_settings_under_amp_and_fp32() -> None:
    amp = S.training_settings(CUDA, amp="fp16", cores=8)
    assert (amp.cudnn_benchmark, amp.channels_last, amp.pin_memory, amp.tf32) == (
        True, True, True, False)
    assert S.training_settings(CUDA, amp="bf16", cores=8).channels_last
    fp32 = S.training_settings(CUDA, amp="off", cores=8, tf32=True)
    assert fp32.cudnn_benchmark and not fp32.channels_last and fp32.tf32
    assert "TF32 on" in fp32.describe() and "cudnn.benchmark" in fp32.describe()


def test_cpu_settings_change_nothing() -> None:
    cpu = S.training_settings(torch.device("cpu"), amp="bf16", cores=2)
    assert not (cpu.cudnn_benchmark or cpu.channels_last or cpu.pin_memory or cpu.tf32)
    assert cpu.workers == 0
    assert S.training_settings(torch.device("cpu"), workers=3).workers == 3  # --workers wins
    with pytest.raises(UsageError, match="--workers -1"):
        S.training_settings(torch.device("cpu"), workers=-1)


def test_apply_sets_benchmark_tf32_and_memory_format() -> None:
    set_tf32(True)
    torch.backends.cudnn.benchmark = False
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    S.apply_settings(S.training_settings(CUDA, amp="fp16", cores=4), net)
    assert torch.backends.cudnn.benchmark is True
    assert not tf32_enabled()
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    S.apply_settings(S.training_settings(CUDA, amp="off", tf32=True, cores=4))
    assert tf32_enabled()


def test_cpu_run_keeps_nchw_and_tf32_off() -> None:
    set_tf32(True)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    S.apply_settings(S.training_settings(torch.device("cpu"), amp="bf16"), net)
    assert not tf32_enabled()  # the switch is set even on a CPU run (map/detect later on CUDA)
    assert net[0].weight.is_contiguous()


def test_to_device_images_bytes_are_darknets_floats() -> None:
    every = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).repeat(2, 3, 1, 1)
    want = np.stack([to_chw_float(im.numpy().transpose(1, 2, 0)) for im in every])
    got = S.to_device_images(every, torch.device("cpu"))
    assert got.dtype == torch.float32 and np.array_equal(got.numpy(), want)
    last = S.to_device_images(every, torch.device("cpu"), channels_last=True)
    assert last.is_contiguous(memory_format=torch.channels_last) and torch.equal(last, got)
    floats = torch.rand(1, 3, 4, 4)
    assert S.to_device_images(floats, torch.device("cpu")) is floats


# ---------------------------------------------------------------- the trainer uses them
@pytest.mark.filterwarnings("ignore:.*batch=4 is lower than 8")
def test_prepare_applies_the_settings(tiny_run: Callable[..., TinyRun], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    run_files = tiny_run(tiny_train_cfg(max_batches=2), images=None)
    seen: list[S.DeviceSettings] = []
    real = S.apply_settings
    monkeypatch.setattr("darknetpy.training.setup.apply_settings",
                        lambda s, net=None: (seen.append(s), real(s, net))[1])
    set_tf32(True)
    run = prepare(D.setup("cpu"), run_files.cfg, run_files.data, None, clear=False, amp="off",
                  workers=None, seed=0, max_batches=None, backup=tmp_path / "b", map_epochs=4,
                  strict=False, progress=False, cache=False)  # fmt: skip
    assert seen == [run.device_settings] and not tf32_enabled()
    assert run.loader.workers == run.device_settings.workers
    assert run.loader.pin_memory is False


@pytest.mark.filterwarnings("ignore:.*batch=4 is lower than 8")
def test_channels_last_training_step_computes_the_same_loss(tiny_run: Callable[..., TinyRun],
                                                            tmp_path: Path) -> None:
    """The AMP-on-CUDA memory format, run on the CPU: the loss path takes NHWC head outputs."""
    import dataclasses

    from darknetpy.training.train import _train_step

    run_files = tiny_run(tiny_train_cfg(max_batches=2), images=None)
    run = prepare(D.setup("cpu"), run_files.cfg, run_files.data, None, clear=False, amp="off",
                  workers=0, seed=0, max_batches=None, backup=tmp_path / "b", map_epochs=4,
                  strict=False, progress=False, cache=False)  # fmt: skip
    batch = run.loader.get(1, 64, 64)
    run.net.train()
    nchw = _train_step(run, batch.images, batch.truth)
    run.device_settings = dataclasses.replace(run.device_settings, channels_last=True)
    S.apply_settings(run.device_settings, run.net)
    assert any(p.ndim == 4 and p.is_contiguous(memory_format=torch.channels_last)
               and not p.is_contiguous() for p in run.net.parameters())  # fmt: skip
    nhwc = _train_step(run, batch.images, batch.truth)
    assert nhwc == pytest.approx(nchw, rel=1e-4)


@pytest.mark.filterwarnings("ignore:.*batch=4 is lower than 8")
def test_persistent_workers_survive_a_new_iterate(tmp_path: Path) -> None:
    from tests.data.scenes import write_dataset

    scenes = write_dataset(tmp_path, np.random.default_rng(0), 4)
    aug = AugmentConfig(width=32, height=32, classes=12, max_boxes=10)
    loader = build_train_loader(scenes, aug, batch=2, workers=1, seed=1)
    try:
        first = loader.iterate(1, size=(32, 32))
        a = next(first)
        first.close()  # a resize: the rest of the plan is dropped
        dataloader = loader._loader
        assert dataloader is not None and dataloader.persistent_workers
        b = next(loader.iterate(5, size=(32, 32)))
        assert loader._loader is dataloader  # same workers
        serial = build_train_loader(scenes, aug, batch=2, workers=0, seed=1)
        assert torch.equal(a.images, serial.get(1, 32, 32).images)
        assert b.iteration == 5 and torch.equal(b.images, serial.get(5, 32, 32).images)
        assert a.images.dtype == torch.uint8
    finally:
        loader.close()
    assert loader._loader is None


# ---------------------------------------------------------------- device names
def test_parse_device(fake_gpus: Callable[[int], None]) -> None:
    assert parse_device("cpu") == torch.device("cpu")
    with pytest.raises(UsageError, match=r"^--device gpu: not a device; use cpu, cuda, cuda:N"):
        parse_device("gpu")
    fake_gpus(0)
    with pytest.raises(UsageError, match="CUDA is not available on this machine; use --device cpu"):
        parse_device("cuda:0")
    fake_gpus(2)
    assert parse_device("cuda:1") == torch.device("cuda", 1)
    assert parse_device("cuda") == torch.device("cuda")
    with pytest.raises(UsageError) as info:
        parse_device("cuda:9", what="device")
    assert str(info.value) == ("device cuda:9: no such CUDA device; this machine has 2 "
                               "(cuda:0..cuda:1)")  # fmt: skip
