"""cfg/yolox-*.cfg: written by darknetpy.tools.yolox_cfg, they build, count YOLOX's parameters and
FLOPs, and save/re-load their weights byte for byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from darknetpy.model.layers.base import Shape
from darknetpy.model.network import Network
from darknetpy.model.weights import WeightsHeader, read_weights, weights_bytes
from darknetpy.tools.convert import checkpoint_to_weights, weights_to_checkpoint
from darknetpy.tools.yolox_cfg import CFG_FILES, YOLOX_SIZES, standard_cfg, yolox_layout

REPO = Path(__file__).resolve().parents[2]
CFG = REPO / "cfg"
# YOLOX's README: parameters (M) and FLOPs (G, at the exp's input size: 416 nano/tiny, else 640).
PUBLISHED = {"nano": (0.91, 1.08), "tiny": (5.06, 6.45), "s": (9.0, 26.8), "m": (25.3, 73.8),
             "l": (54.2, 155.6), "x": (99.1, 281.9)}
LARGE = ("m", "l", "x")  # byte round trips of 100-400 MB: outside CI


def slow_if_large(name: str) -> object:
    marks = [pytest.mark.slow] if any(f"yolox-{size}." in name for size in LARGE) else []
    return pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(CFG_FILES))
def test_cfg_file_is_the_writers_output(name: str) -> None:
    """The files are generated: ``write_cfg_files("cfg")`` rewrites them after a writer change."""
    assert (CFG / name).read_text() == standard_cfg(**CFG_FILES[name])  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [5, 9, 13])
def test_maxpool_is_yolox_spp_pool(size: int) -> None:
    """``[maxpool] size=k stride=1`` (darknet's padding=size-1) is
    ``nn.MaxPool2d(k, 1, k // 2)``."""
    net = Network.from_text(f"[net]\nwidth=20\nheight=12\nchannels=2\n[maxpool]\nsize={size}\n"
                            "stride=1\n")
    x = torch.randn(1, 2, 12, 20, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        torch.testing.assert_close(net(x)[0], F.max_pool2d(x, size, 1, size // 2), rtol=0, atol=0)


@pytest.mark.parametrize("name", list(YOLOX_SIZES))
def test_parameters_and_flops_match_yolox(name: str) -> None:
    """Parameters as YOLOX's README (to its rounding); Darknet's BFLOPs count convolutions only,
    YOLOX's (thop, x2) also batch norm, 2 x 2 per output: with those the figures agree to 0.5%."""
    with torch.device("meta"):
        net = Network.from_cfg(CFG / f"yolox-{name}.cfg", strict=True)
    params = sum(p.numel() for p in net.parameters()) / 1e6
    published_params, published_flops = PUBLISHED[name]
    assert abs(params - published_params) <= 0.006 * published_params, params
    rows = net.summary_rows()
    bflops = sum(row["bflops"] for row in rows)
    bn_outputs = sum(np.prod(row["out_shape"]) for row, layer in zip(rows, net.layers)
                     if getattr(layer, "bn", None) is not None) / 1e9
    assert 0.97 * published_flops <= bflops < published_flops, bflops
    assert abs(bflops + 4 * bn_outputs - published_flops) <= 0.005 * published_flops
    table = net.summary()
    assert table.splitlines()[-1] == f"Total BFLOPS {bflops:.3f}"
    assert "reorg3d" in table and "yolox" in table


def test_layout_shapes() -> None:
    """The three level maps are (5 + classes) x size/8, /16, /32; the FPN maps YOLOX's widths."""
    layout = yolox_layout(0.33, 0.375, 7, size=96, with_head=False)
    net = Network.from_text(layout.cfg_text)
    assert [net.layers[i].out_shape for i in layout.outputs] == [
        Shape(12, 12, 12), Shape(12, 6, 6), Shape(12, 3, 3)]
    assert [net.layers[i].out_shape.channels for i in layout.fpn] == [96, 192, 384]


def randomize(net: Network, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + (
                    0.5 if name.endswith("running_var") else -0.5))


@pytest.mark.parametrize("name", [slow_if_large(n) for n in CFG_FILES])
def test_weights_round_trip_is_byte_exact(name: str, tmp_path: Path) -> None:
    net = Network.from_cfg(CFG / name, strict=True)
    randomize(net, 0)
    header = WeightsHeader(0, 2, 5, 1234)
    original = weights_bytes(net, header)
    count = sum(t.numel() for layer in net.layers for t in layer.darknet_tensors())
    assert len(original) == header.size + 4 * count
    (tmp_path / "a.weights").write_bytes(original)
    again = Network.from_cfg(CFG / name, strict=True)
    assert read_weights(tmp_path / "a.weights", again) == header
    assert weights_bytes(again, header) == original
    for key, value in net.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_tiny_weights_pt_weights(tmp_path: Path) -> None:
    """``darknetpy convert``: .weights -> .pt -> .weights is byte-identical for a YOLOX cfg."""
    cfg = CFG / "yolox-tiny.cfg"
    net = Network.from_cfg(cfg, strict=True)
    randomize(net, 1)
    original = weights_bytes(net, WeightsHeader(0, 2, 5, 77))
    (tmp_path / "a.weights").write_bytes(original)
    weights_to_checkpoint(cfg, tmp_path / "a.weights", tmp_path / "a.pt")
    checkpoint_to_weights(tmp_path / "a.pt", tmp_path / "b.weights")
    assert (tmp_path / "b.weights").read_bytes() == original
