"""Issue 16's smaller points, each checked on the CPU: ``export_onnx`` leaves the caller's network
alone, a CUDA device that is not there is one line, ``--tf32`` reaches the commands, and the channel
softmax stays finite under ``--half``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from darknetpy.cli import main
from darknetpy.devices import set_tf32, tf32_enabled
from darknetpy.errors import UsageError
from darknetpy.inference.inference_model import load
from darknetpy.model.layers.activation import ACTIVATIONS
from darknetpy.model.network import Network

from .conftest import tiny_cfg


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    """A one-head cfg and random weights for it."""
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(tiny_cfg(backbone=(8, 16)))
    weights = tmp_path / "tiny.weights"
    Network.from_cfg(cfg).save_weights(weights)
    return cfg, weights


@pytest.fixture
def fake_gpus(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """``fake_gpus(n)``: torch.cuda reports ``n`` devices (0: CUDA absent); nothing is moved."""
    def patch(count: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    return patch


@pytest.mark.parametrize("fuse", [False, True])
def test_export_leaves_the_callers_network_as_it_was(tiny: tuple[Path, Path], tmp_path: Path,
                                                     fuse: bool) -> None:
    pytest.importorskip("onnx")
    from darknetpy.inference.export import export_onnx

    net = Network.from_cfg(tiny[0]).double().train()  # float64 stands in for "on the GPU"
    before = {k: v.clone() for k, v in net.state_dict().items()}
    export_onnx(net, tmp_path / "t.onnx", fuse=fuse)
    assert (tmp_path / "t.onnx").stat().st_size > 0
    assert net.training and all(m.training for m in net.modules())
    assert all(p.dtype == torch.float64 for p in net.parameters())
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing folded in place


def test_load_on_a_missing_gpu_is_one_line(tiny: tuple[Path, Path],
                                           fake_gpus: Callable[[int], None]) -> None:
    fake_gpus(2)
    with pytest.raises(UsageError) as info:
        load(*tiny, device="cuda:9")
    assert str(info.value) == ("device cuda:9: no such CUDA device; this machine has 2 "
                               "(cuda:0..cuda:1)")  # fmt: skip
    fake_gpus(0)
    with pytest.raises(UsageError, match="^device cuda:0: CUDA is not available on this machine"):
        load(*tiny, device="cuda:0")


@pytest.mark.parametrize("command", ["map", "detect"])
def test_cli_missing_gpu_is_one_line_and_exit_2(command: str, tiny: tuple[Path, Path],
                                                tmp_path: Path, fake_gpus: Callable[[int], None],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    cfg, weights = tiny
    fake_gpus(1)
    data = tmp_path / "t.data"
    data.write_text("classes=1\n")
    image = tmp_path / "black.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    args = ([command, str(cfg), str(data), str(weights)] if command == "map"
            else [command, str(cfg), str(weights), str(image), "--no-save"])  # fmt: skip
    status = main([*args, "--device", "cuda:9"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status != 0 and len(err) == 1, err
    assert "cuda:9: no such CUDA device; this machine has 1 (cuda:0..cuda:0)" in err[0]
    assert "Traceback" not in err[0] and "ordinal" not in err[0]


def test_tf32_flag_reaches_map(tiny: tuple[Path, Path], tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """``map --tf32`` turns TF32 on before evaluating; without it, off (whatever it was)."""
    seen: list[bool] = []
    monkeypatch.setattr("darknetpy.evaluation.evaluate",
                        lambda *a, **k: (seen.append(tf32_enabled()), (_ for _ in ()).throw(
                            UsageError("stop here")))[1])  # fmt: skip
    before = tf32_enabled()
    try:
        cfg, weights = tiny
        data = tmp_path / "t.data"
        data.write_text("classes=1\n")
        set_tf32(True)
        main(["map", str(cfg), str(data), str(weights)])
        main(["map", str(cfg), str(data), str(weights), "--tf32"])
    finally:
        set_tf32(before)
    assert seen == [False, True]


def test_channel_softmax_in_half_with_large_values() -> None:
    x = torch.tensor([12.0, 11.5, -3.0, 0.0]).reshape(1, 4, 1, 1)  # e^12 > fp16's 65504
    for name in ("normalize_channels_softmax", "normalize_channels_softmax_maxval"):
        fn = ACTIVATIONS[name].fn
        half = fn(x.half())
        assert half.dtype == torch.float16 and torch.isfinite(half).all(), (name, half)
        assert torch.equal(half, fn(x).half())  # float32's result, rounded once
        assert fn(x.double()).dtype == torch.float64  # float64 is not narrowed
