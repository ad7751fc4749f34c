""".weights <-> .pt checkpoints: byte-identical round trips, loading without the cfg, the layout."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from darknetpy.cli import main
from darknetpy.model.pt_checkpoint import (
    CHECKPOINT_FORMAT,
    LAYOUT_VERSION,
    is_checkpoint,
    network_from_checkpoint,
    read_checkpoint,
    save_pt_checkpoint,
)
from darknetpy.tools.convert import checkpoint_to_weights, weights_to_checkpoint
from darknetpy.errors import WeightsError
from darknetpy.model.network import Network

from .conftest import GOLDEN, REPO, golden_networks, require_shared, tiny_cfg

# a batch-normalised convolution of 4 filters, a 1x1 convolution of 18 and a [yolo] (no weights)
TINY_CFG = tiny_cfg(backbone=(4,), width=16, height=16)


def _weight_files() -> list[tuple[str, str]]:
    """(cfg, weights) relative to golden/: every golden network and every file in golden/weights."""
    pairs = [(f"{n}/net.cfg", f"{n}/net.weights") for n in golden_networks()]
    if (GOLDEN / "trained-raccoon" / "net.weights").is_file():
        pairs.append(("trained-raccoon/net.cfg", "trained-raccoon/net.weights"))
    pairs += [
        ("weights/old_header.cfg", "weights/old_header.weights"),
        ("weights/old_header.cfg", "weights/new_header.weights"),
        ("weights/partial29.cfg", "weights/partial29.weights"),
    ]
    return pairs


@pytest.mark.parametrize("cfg,weights", _weight_files(), ids=lambda p: p.replace("/", ":"))
def test_weights_to_pt_to_weights_is_byte_identical(cfg: str, weights: str, tmp_path: Path) -> None:
    require_shared()
    original = GOLDEN / weights
    pt = weights_to_checkpoint(GOLDEN / cfg, original, tmp_path / "model.pt")
    back = checkpoint_to_weights(pt, tmp_path / "back.weights")
    assert back.read_bytes() == original.read_bytes()


def _tiny(tmp_path: Path, seed: int = 0) -> tuple[Path, Path, Network]:
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(TINY_CFG)
    net = Network.from_cfg(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=gen) + 0.1)
    weights = tmp_path / "tiny.weights"
    net.save_weights(weights)
    return cfg, weights, net


def test_checkpoint_is_plain_data_with_a_pinned_layout(tmp_path: Path) -> None:
    cfg, weights, net = _tiny(tmp_path)
    pt = weights_to_checkpoint(cfg, weights, tmp_path / "tiny.pt")
    obj = torch.load(pt, weights_only=True)  # no pickled code: the safe loader accepts it
    assert obj["format"] == CHECKPOINT_FORMAT and obj["layout"] == LAYOUT_VERSION == 1
    assert obj["header"] == {"major": 0, "minor": 2, "revision": 5, "seen": 0}
    assert obj["upto"] == 3  # the [yolo] layer counts, with no weights
    # Layout 1, the contract later versions keep or translate: darknet layer i under layers.<i>.
    assert sorted(obj["state_dict"]) == sorted(
        [
            "layers.0.conv.weight",
            "layers.0.bn.weight",
            "layers.0.bn.bias",
            "layers.0.bn.running_mean",
            "layers.0.bn.running_var",
            "layers.0.bn.num_batches_tracked",
            "layers.1.conv.weight",
            "layers.1.conv.bias",
        ]
    )
    sd = obj["state_dict"]
    assert torch.equal(sd["layers.0.bn.running_var"], net.layers[0].bn.running_var)
    assert torch.equal(sd["layers.1.conv.weight"], net.layers[1].conv.weight)
    rebuilt = Network.from_text(obj["cfg"])
    rebuilt.load_state_dict(sd)
    x = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        assert torch.equal(rebuilt.eval()(x)[0], net.eval()(x)[0])


def test_header_with_32_bit_seen_survives(tmp_path: Path) -> None:
    require_shared()
    pt = weights_to_checkpoint(
        GOLDEN / "weights/old_header.cfg",
        GOLDEN / "weights/old_header.weights",
        tmp_path / "old.pt",
    )
    header = read_checkpoint(pt).header
    assert (header.major, header.minor, header.revision) == (0, 1, 0)
    assert header.seen_dtype == np.dtype("<u4")


def test_pt_loads_in_a_fresh_process_without_the_cfg(tmp_path: Path) -> None:
    require_shared()
    name = "yolov4-tiny"
    work = tmp_path / "copy"
    work.mkdir()
    # the cfg and weights exist only in a folder that is deleted before the child runs
    (work / "net.cfg").write_bytes((GOLDEN / name / "net.cfg").read_bytes())
    (work / "net.weights").write_bytes((GOLDEN / name / "net.weights").read_bytes())
    pt = weights_to_checkpoint(work / "net.cfg", work / "net.weights", tmp_path / "model.pt")
    for f in work.iterdir():
        f.unlink()
    work.rmdir()
    x = np.load(GOLDEN / name / "input.npy")[None]
    np.save(tmp_path / "x.npy", x)
    net = Network.from_cfg(GOLDEN / name / "net.cfg")
    net.load_weights(GOLDEN / name / "net.weights")
    with torch.inference_mode():
        expected = [h.numpy() for h in net.eval()(torch.from_numpy(x))]
    script = textwrap.dedent(f"""
        import numpy as np, torch
        import darknetpy.inference.inference_model as inference
        raw = torch.load({str(pt)!r}, weights_only=True)
        assert "cfg" in raw and "state_dict" in raw
        model = inference.load({str(pt)!r})
        model.network.save_weights({str(tmp_path / "child.weights")!r})
        heads = model(torch.from_numpy(np.load({str(tmp_path / "x.npy")!r})))
        np.savez({str(tmp_path / "heads.npz")!r}, *[h.numpy() for h in heads])
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, check=False, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # the child rebuilt exactly the network of the file: its weights, byte for byte
    original = (GOLDEN / name / "net.weights").read_bytes()
    assert (tmp_path / "child.weights").read_bytes() == original
    got = np.load(tmp_path / "heads.npz")
    assert len(got.files) == len(expected)
    for i, e in enumerate(expected):  # channels-last and thread counts round differently
        np.testing.assert_allclose(got[f"arr_{i}"], e, rtol=0, atol=1e-4)


def test_pt_to_weights_with_a_cfg_checks_it_fits(tmp_path: Path) -> None:
    cfg, weights, _ = _tiny(tmp_path)
    pt = weights_to_checkpoint(cfg, weights, tmp_path / "tiny.pt")
    out = checkpoint_to_weights(pt, tmp_path / "out.weights", cfg)
    assert out.read_bytes() == weights.read_bytes()
    other = tmp_path / "other.cfg"
    other.write_text(tiny_cfg(backbone=(4,), width=16, height=16, classes=2))  # 21 filters
    with pytest.raises(
        WeightsError, match=r"layers\.1\.conv\.weight \(18, 4, 1, 1\) vs \(21, 4, 1, 1\)"
    ):
        checkpoint_to_weights(pt, tmp_path / "bad.weights", other)


def test_partial_checkpoint_refused_for_inference_but_round_trips(tmp_path: Path) -> None:
    require_shared()
    pt = weights_to_checkpoint(
        GOLDEN / "weights/partial29.cfg", GOLDEN / "weights/partial29.weights", tmp_path / "p.pt"
    )
    assert read_checkpoint(pt).upto == 29
    with pytest.raises(WeightsError, match="partial .weights file holding layers 0..28"):
        network_from_checkpoint(pt)
    assert network_from_checkpoint(pt, partial=True).loaded_layers == 29


def test_files_are_told_apart_by_content(tmp_path: Path) -> None:
    cfg, weights, net = _tiny(tmp_path)
    renamed = tmp_path / "model.weights"  # a checkpoint under a .weights name
    save_pt_checkpoint(net, renamed)
    assert is_checkpoint(renamed) and not is_checkpoint(weights) and not is_checkpoint(cfg)
    other = tmp_path / "tensor.pt"
    torch.save({"a": torch.zeros(1)}, other)
    with pytest.raises(WeightsError, match="not a darknetpy checkpoint"):
        read_checkpoint(other)
    with pytest.raises(WeightsError, match="not a torch checkpoint"):
        read_checkpoint(weights)


def test_cli_convert_both_ways_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, weights, _ = _tiny(tmp_path)
    pt, back = tmp_path / "m.pt", tmp_path / "back.weights"
    assert main(["convert", str(cfg), str(weights), str(pt)]) == 0
    assert main(["convert", str(pt), str(back)]) == 0  # the cfg is in the checkpoint
    assert back.read_bytes() == weights.read_bytes()
    assert main(["convert", str(cfg), str(pt), str(tmp_path / "b2.weights")]) == 0
    assert (tmp_path / "b2.weights").read_bytes() == weights.read_bytes()
    before = weights.read_bytes()
    assert main(["convert", str(cfg), str(weights), str(weights)]) == 2
    assert "refusing to overwrite an input file" in capsys.readouterr().err
    assert weights.read_bytes() == before
    assert main(["convert", str(weights), str(tmp_path / "x.pt")]) == 2
    assert "needs its cfg" in capsys.readouterr().err
