"""Byte contracts of .weights files: golden files round-trip byte for byte; damaged files fail clearly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from darknetpy import Network, WeightsError, WeightsHeader
from darknetpy.model.weights import read_header, read_weights, weights_bytes, write_weights

from .conftest import GOLDEN, golden_networks, require_shared

TINY = """[net]
width=32
height=32
channels=3
[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky
[convolutional]
filters=6
size=1
activation=linear
[connected]
output=5
activation=linear
"""


def _random_weights(path: Path, net: Network, rng: np.random.Generator,
                    header: WeightsHeader = WeightsHeader()) -> bytes:
    count = sum(layer.darknet_byte_count() for layer in net.layers) // 4
    data = header.to_bytes() + rng.standard_normal(count).astype("<f4").tobytes()
    path.write_bytes(data)
    return data


def test_header_seen_width_follows_the_version() -> None:
    assert WeightsHeader(0, 2, 5, 7).to_bytes() == np.array([0, 2, 5], "<i4").tobytes() + np.array([7], "<u8").tobytes()
    assert WeightsHeader(0, 1, 0, 7).to_bytes() == np.array([0, 1, 0], "<i4").tobytes() + np.array([7], "<u4").tobytes()
    assert WeightsHeader(0, 1, 0).size == 16 and WeightsHeader(0, 2, 0).size == 20
    assert WeightsHeader(1001, 0, 0).transpose and not WeightsHeader(0, 2, 5).transpose


@pytest.mark.parametrize("header", [WeightsHeader(0, 2, 5, 123456), WeightsHeader(0, 1, 0, 99),
                                    WeightsHeader(1, 0, 0, 5)])
def test_random_weights_round_trip_byte_for_byte(tmp_path: Path, rng: np.random.Generator,
                                                header: WeightsHeader) -> None:
    net = Network.from_text(TINY)
    original = _random_weights(tmp_path / "in.weights", net, rng, header)
    assert net.load_weights(tmp_path / "in.weights") == header
    net.save_weights(tmp_path / "out.weights")
    assert (tmp_path / "out.weights").read_bytes() == original
    assert weights_bytes(net, header) == original


def test_truncated_inside_a_layer_names_the_layer_and_bytes(tmp_path: Path, rng: np.random.Generator) -> None:
    net = Network.from_text(TINY)
    data = _random_weights(tmp_path / "in.weights", net, rng)
    (tmp_path / "cut.weights").write_bytes(data[: 20 + 4 * 8 * 4 + 100])
    with pytest.raises(WeightsError) as info:
        Network.from_text(TINY).load_weights(tmp_path / "cut.weights")
    message = str(info.value)
    assert "truncated in layer 0 (<string>:5 [convolutional])" in message
    assert "only 100 left" in message and f"the cfg needs {len(data)}" in message


def test_file_ending_between_layers_is_partial(tmp_path: Path, rng: np.random.Generator) -> None:
    net = Network.from_text(TINY)
    data = _random_weights(tmp_path / "in.weights", net, rng)
    first = 20 + net.layers[0].darknet_byte_count()
    (tmp_path / "part.weights").write_bytes(data[:first])
    with pytest.raises(WeightsError, match=r"ends after layer 0 .*before layer 1"):
        Network.from_text(TINY).load_weights(tmp_path / "part.weights")
    fresh = Network.from_text(TINY)
    before = fresh.layers[1].conv.weight.detach().clone()
    read_weights(tmp_path / "part.weights", fresh, partial=True)
    assert fresh.loaded_layers == 1
    assert np.array_equal(fresh.layers[1].conv.weight.detach().numpy(), before.numpy())


def test_extra_bytes_are_an_error_unless_lenient(tmp_path: Path, rng: np.random.Generator) -> None:
    net = Network.from_text(TINY)
    data = _random_weights(tmp_path / "in.weights", net, rng)
    (tmp_path / "long.weights").write_bytes(data + b"\0" * 8)
    with pytest.raises(WeightsError, match="8 bytes left after the last layer"):
        Network.from_text(TINY).load_weights(tmp_path / "long.weights")
    with pytest.warns(UserWarning, match="8 bytes left"):
        Network.from_text(TINY).load_weights(tmp_path / "long.weights", lenient=True)


def test_not_a_weights_file(tmp_path: Path) -> None:
    (tmp_path / "x.weights").write_text("[net]\nwidth=416\nheight=416\n")
    with pytest.raises(WeightsError, match="is not a darknet .weights header"):
        read_header(tmp_path / "x.weights")
    with pytest.raises(WeightsError, match="no such weights file"):
        read_header(tmp_path / "missing.weights")


def test_dontload_layer_consumes_no_bytes_and_keeps_its_values(tmp_path: Path, rng: np.random.Generator) -> None:
    """Darknet's ``load_weights_upto`` skips a ``dontload`` layer without reading: the file holds the
    other layers back to back, those load, and the skipped layer keeps the values it had."""
    text = TINY.replace("filters=6\n", "filters=6\ndontload=1\n")
    net = Network.from_text(text)
    first, skipped = (net.layers[i].darknet_byte_count() for i in (0, 1))
    assert skipped > 0
    header = WeightsHeader()
    body = rng.standard_normal((first + net.layers[2].darknet_byte_count()) // 4).astype("<f4").tobytes()
    (tmp_path / "short.weights").write_bytes(header.to_bytes() + body)
    kept = {k: v.clone() for k, v in net.layers[1].state_dict().items()}
    before = weights_bytes(net, header)[header.size:]
    net.load_weights(tmp_path / "short.weights")
    for name, tensor in net.layers[1].state_dict().items():
        assert torch.equal(tensor, kept[name]), name
    after = weights_bytes(net, header)[header.size:]  # saving writes every layer, dontload or not
    assert after[:first] == body[:first]  # layer 0 loaded
    assert after[first:first + skipped] == before[first:first + skipped]  # layer 1 untouched
    assert after[first + skipped:] == body[first:]  # layer 2 loaded from where layer 0 ended
    assert before[:first] != body[:first] and before[first + skipped:] != body[first:]


def test_write_is_atomic_and_keeps_the_old_file_on_failure(tmp_path: Path, rng: np.random.Generator) -> None:
    net = Network.from_text(TINY)
    target = tmp_path / "ckpt.weights"
    original = _random_weights(target, net, rng)

    class Boom(RuntimeError):
        pass

    def failing_write(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise Boom

    net.layers[0].write_darknet = failing_write  # type: ignore[method-assign]
    with pytest.raises(Boom):
        write_weights(target, net)
    assert target.read_bytes() == original
    assert not list(tmp_path.glob(".*.tmp"))


# ---------------------------------------------------------------- golden files
def _golden_weight_files() -> list[str]:
    names = [f"{n}/net.weights" for n in golden_networks()]
    if (GOLDEN / "trained-raccoon").is_dir():
        names.append("trained-raccoon/net.weights")
    return names or ["<no ../shared>"]


@pytest.mark.parametrize("name", _golden_weight_files())
def test_golden_weights_load_and_save_byte_identical(name: str, tmp_path: Path) -> None:
    require_shared()
    path = GOLDEN / name
    net = Network.from_cfg(path.parent / "net.cfg")
    net.load_weights(path)
    net.save_weights(tmp_path / "out.weights")
    assert (tmp_path / "out.weights").read_bytes() == path.read_bytes()


def test_old_header_loads_and_resaves_as_itself_and_as_new_header(tmp_path: Path) -> None:
    require_shared()
    folder = GOLDEN / "weights"
    net = Network.from_cfg(folder / "old_header.cfg")
    header = net.load_weights(folder / "old_header.weights")
    assert (header.major, header.minor) == (0, 1) and header.seen_dtype.itemsize == 4
    net.save_weights(tmp_path / "same.weights")
    assert (tmp_path / "same.weights").read_bytes() == (folder / "old_header.weights").read_bytes()
    net.save_weights(tmp_path / "new.weights", header=WeightsHeader(0, 2, 5, header.seen))
    assert (tmp_path / "new.weights").read_bytes() == (folder / "new_header.weights").read_bytes()


def test_partial29_is_reproduced_by_the_cli(tmp_path: Path) -> None:
    require_shared()
    out = tmp_path / "partial29.weights"
    proc = subprocess.run(
        [sys.executable, "-m", "darknetpy", "partial", str(GOLDEN / "yolov4-tiny-3l" / "net.cfg"),
         str(GOLDEN / "yolov4-tiny-3l" / "net.weights"), str(out), "29"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == (GOLDEN / "weights" / "partial29.weights").read_bytes()
    net = Network.from_cfg(GOLDEN / "weights" / "partial29.cfg")
    read_weights(out, net, partial=True)  # how training loads a partial file
    assert net.loaded_layers == 29


def test_dontloadscales_reads_no_bn_statistics(tmp_path: Path, rng: np.random.Generator) -> None:
    text = TINY.replace("batch_normalize=1\n", "batch_normalize=1\ndontloadscales=1\n")
    net = Network.from_text(text)
    filters = net.layers[0].bn.weight.numel()
    count = sum(layer.darknet_read_byte_count() for layer in net.layers) // 4
    assert count * 4 == sum(layer.darknet_byte_count() for layer in net.layers) - 12 * filters
    values = rng.standard_normal(count).astype("<f4")
    (tmp_path / "w.weights").write_bytes(WeightsHeader().to_bytes() + values.tobytes())
    bn = net.layers[0].bn
    with torch.no_grad():  # values no file holds, so that "kept" cannot pass by coincidence
        bn.weight.uniform_(2, 3)
        bn.running_mean.uniform_(4, 5)
        bn.running_var.uniform_(6, 7)
    kept = {name: getattr(bn, name).detach().clone() for name in ("weight", "running_mean", "running_var")}
    net.load_weights(tmp_path / "w.weights")
    assert np.array_equal(bn.bias.detach().numpy(), values[:filters])  # beta read
    for name, before in kept.items():  # gamma, mean and variance neither read nor changed
        assert torch.equal(getattr(bn, name), before), name
    conv = filters + 8 * 27
    assert np.array_equal(net.layers[0].conv.weight.detach().numpy().ravel(), values[filters:conv])
    # the other layers loaded from where layer 0's short record ended (saving writes them as read)
    read0, full0 = net.layers[0].darknet_read_byte_count(), net.layers[0].darknet_byte_count()
    assert read0 == 4 * conv and full0 == read0 + 12 * filters
    assert weights_bytes(net)[WeightsHeader().size + full0:] == values[conv:].tobytes()
