""".weights files corrupted every way a download or a disk can: each gives a clear WeightsError.

Truncated at every layer boundary and at random offsets, extra trailing bytes, a header from another
version (32- vs 64-bit ``seen``), a garbage header, a weights file paired with the wrong cfg. Each
must raise :class:`~darknetpy.errors.WeightsError` naming the layer and the byte counts, or, with
``lenient=True``, warn as Darknet does and go on; ``partial=True`` accepts a file ending exactly
between two layers. Nothing else may escape (no IndexError, no numpy error).

Files are truncated in place from the longest to the shortest (``os.truncate``), so hundreds of
cases per network cost no copying. Every test prints how many corrupted files it tried.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from darknetpy import Network, WeightsError, WeightsHeader
from darknetpy.cli import main
from darknetpy.errors import DarknetpyError
from darknetpy.model.weights import WeightsWarning, read_header, read_weights

from ..conftest import GOLDEN, golden_networks, quiet_weights, raccoon_photos, require_shared, tiny_cfg

SMALL = """[net]
width=16
height=16
channels=3
[convolutional]
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[convolutional]
filters=5
size=1
activation=linear
[route]
layers=-1,-2
[convolutional]
filters=5
size=1
activation=linear
[shortcut]
from=-3
weights_type=per_feature
activation=linear
[convolutional]
filters=18
size=1
activation=linear
[yolo]
mask=0,1,2
anchors=1,2, 3,4, 5,6
classes=1
num=3
"""


@dataclass(frozen=True)
class Layout:
    """Where each layer's bytes start in a .weights file, computed from the layers' tensors."""

    header: int  # header size
    starts: tuple[int, ...]  # byte offset of layer i's first byte
    sizes: tuple[int, ...]  # bytes of layer i (0: no weights, or dontload)

    @property
    def total(self) -> int:
        return self.header + sum(self.sizes)

    def locate(self, offset: int) -> tuple[str, int]:
        """What a file cut at ``offset`` is: ("complete", n), ("boundary", next layer) or
        ("inside", layer)."""
        if offset == self.total:
            return "complete", len(self.sizes)
        for i, (start, size) in enumerate(zip(self.starts, self.sizes)):
            if size and start == offset:
                return "boundary", i
            if size and start < offset < start + size:
                return "inside", i
        raise AssertionError(f"offset {offset} not inside the file")


def layout(net: Network, header: WeightsHeader) -> Layout:
    sizes = tuple(0 if layer.training_opts.dontload else layer.darknet_byte_count()
                  for layer in net.layers)
    starts, offset = [], header.size
    for size in sizes:
        starts.append(offset)
        offset += size
    return Layout(header.size, tuple(starts), sizes)


DEFAULT_HEADER = WeightsHeader(0, 2, 5, 32013)


def random_file(path: Path, net: Network, rng: np.random.Generator,
                header: WeightsHeader = DEFAULT_HEADER) -> bytes:
    count = sum(layer.darknet_byte_count() for layer in net.layers) // 4
    data = header.to_bytes() + rng.standard_normal(count).astype("<f4").tobytes()
    path.write_bytes(data)
    return data


def _layer_named(message: str, index: int) -> bool:
    return re.search(rf"\blayer {index}\b", message) is not None


def check_cut(path: Path, net: Network, lay: Layout, offset: int) -> str:
    """Load ``path`` (cut at ``offset``) strictly, partially and leniently; check each outcome."""
    kind, index = lay.locate(offset)
    size = path.stat().st_size
    assert size == offset
    if kind == "complete":
        read_weights(path, net)
        return kind
    # strict: an error naming the layer and the byte counts
    with pytest.raises(WeightsError) as info:
        read_weights(path, net)
    message = str(info.value)
    assert str(path) in message, message
    assert _layer_named(message, index), (kind, index, message)
    assert str(size) in message and str(lay.total) in message, (size, lay.total, message)
    if kind == "inside":
        assert "truncated" in message, message
        # partial does not excuse a cut inside a layer
        with pytest.raises(WeightsError, match=rf"layer {index}\b"):
            read_weights(path, net, partial=True)
    else:
        read_weights(path, net, partial=True)  # yolov4.conv.137-style file: accepted
        assert net.loaded_layers == index
    # lenient: Darknet's behaviour, a warning naming the layer
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_weights(path, net, lenient=True)
    texts = [str(w.message) for w in caught if issubclass(w.category, WeightsWarning)]
    assert texts and any(_layer_named(t, index) for t in texts), (kind, index, texts)
    assert net.loaded_layers == index + (kind == "inside")
    return kind


def cut_everywhere(path: Path, data: bytes, net: Network, lay: Layout, rng: np.random.Generator,
                   random_cuts: int, sample: int | None = None) -> dict[str, int]:
    """Cut at every layer boundary (or ``sample`` of them), inside weight layers, and at random
    offsets; each file loaded strictly, partially and leniently (:func:`check_cut`)."""
    boundaries = [start for start, size in zip(lay.starts, lay.sizes) if size]
    inside = [start + int(rng.integers(1, size)) for start, size in zip(lay.starts, lay.sizes)
              if size > 1]
    if sample is not None:
        boundaries = [int(v) for v in rng.choice(boundaries, min(sample, len(boundaries)), replace=False)]
        inside = [int(v) for v in rng.choice(inside, min(sample, len(inside)), replace=False)]
    offsets = {lay.total, *boundaries, *inside}
    offsets |= {int(o) for o in rng.integers(lay.header + 1, lay.total, random_cuts)}
    counts: dict[str, int] = {}
    path.write_bytes(data)
    for offset in sorted(offsets, reverse=True):
        os.truncate(path, offset)
        kind = check_cut(path, net, lay, offset)
        counts[kind] = counts.get(kind, 0) + 1
    return counts


# ------------------------------------------------------------------------------------------------
def test_small_network_cut_at_every_offset(tmp_path: Path, rng: np.random.Generator) -> None:
    """The small network: the file cut at *every* 4-byte offset after the header."""
    net = Network.from_text(SMALL, path="small.cfg")
    lay = layout(net, WeightsHeader())
    data = random_file(tmp_path / "w.weights", net, rng)
    assert len(data) == lay.total
    path = tmp_path / "cut.weights"
    path.write_bytes(data)
    counts: dict[str, int] = {}
    for offset in range(lay.total - 1, lay.header, -1):  # every byte, not only float boundaries
        os.truncate(path, offset)
        kind = check_cut(path, net, lay, offset)
        counts[kind] = counts.get(kind, 0) + 1
    print(f"small network: {sum(counts.values())} truncated files: {counts}")
    assert counts["boundary"] == sum(1 for s in lay.sizes if s) - 1
    assert counts["inside"] > 100


def test_header_cut_short_or_garbage(tmp_path: Path, rng: np.random.Generator) -> None:
    net = Network.from_text(SMALL, path="small.cfg")
    data = random_file(tmp_path / "w.weights", net, rng)
    path = tmp_path / "bad.weights"
    tried = 0
    for n in range(20):  # inside the 20-byte header
        path.write_bytes(data[:n])
        with pytest.raises(WeightsError, match=re.escape(str(path))):
            read_weights(path, net, lenient=True)
        tried += 1
    for _ in range(200):  # random version fields, same body
        head = rng.integers(-(2**31), 2**31, 3).astype("<i4")
        if rng.random() < 0.5:
            head[0] = rng.integers(0, 3)
            head[1] = rng.integers(0, 4)
        path.write_bytes(head.tobytes() + data[12:])
        tried += 1
        try:
            read_weights(path, net)
        except WeightsError as exc:
            message = str(exc)
            assert str(path) in message and ("header" in message or re.search(r"layer \d+", message)), message
        else:  # a valid version with the same seen width: the file is fine
            header = read_header(path)
            assert header.seen_dtype.itemsize == 8
    print(f"headers: {tried} files with a short or random header")


def test_extra_trailing_bytes(tmp_path: Path, rng: np.random.Generator) -> None:
    net = Network.from_text(SMALL, path="small.cfg")
    data = random_file(tmp_path / "w.weights", net, rng)
    path = tmp_path / "long.weights"
    extras = [1, 2, 3, 4, 5, 8, 100, 4096, len(data)]
    for extra in extras:
        path.write_bytes(data + bytes(rng.integers(0, 256, extra, dtype=np.uint8)))
        with pytest.raises(WeightsError) as info:
            read_weights(path, net)
        message = str(info.value)
        assert f"{extra} bytes left after the last layer" in message, message
        assert str(len(data) + extra) in message and str(len(data)) in message, message
        with pytest.warns(WeightsWarning, match=f"{extra} bytes left"):
            read_weights(path, net, lenient=True)
        assert net.loaded_layers == len(net.layers)
        # upto: reading only the first layers of a longer file is not an error
        read_weights(path, net, upto=2)
    print(f"extra bytes: {len(extras)} files")


@pytest.mark.parametrize("written, claimed", [((0, 2, 5), (0, 1, 0)), ((0, 1, 0), (0, 2, 0)),
                                              ((1, 0, 0), (0, 1, 9)), ((0, 1, 0), (1, 0, 0))])
def test_header_from_another_version(tmp_path: Path, rng: np.random.Generator,
                                     written: tuple[int, int, int], claimed: tuple[int, int, int]) -> None:
    """The body written after one header width, the version fields of the other: 4 bytes off."""
    net = Network.from_text(SMALL, path="small.cfg")
    real = WeightsHeader(*written, seen=1234)
    data = random_file(tmp_path / "w.weights", net, rng, real)
    fake = WeightsHeader(*claimed, seen=1234)
    path = tmp_path / "mixed.weights"
    path.write_bytes(np.array(claimed, "<i4").tobytes() + data[12:])  # seen bytes stay as written
    lay = layout(net, fake)
    with pytest.raises(WeightsError) as info:
        read_weights(path, net)
    message = str(info.value)
    size = path.stat().st_size
    assert size == len(data) and str(size) in message and str(lay.total) in message, message
    last = max(i for i, s in enumerate(lay.sizes) if s)
    if fake.size < real.size:  # 32-bit seen claimed: 4 bytes left over
        assert "4 bytes left after the last layer" in message, message
    else:  # 64-bit seen claimed: the last weight layer is 4 bytes short
        assert "truncated" in message and _layer_named(message, last), message
    with pytest.warns(WeightsWarning):
        read_weights(path, net, lenient=True)


def test_four_bytes_off_hints_at_the_header_version(tmp_path: Path, rng: np.random.Generator) -> None:
    net = Network.from_text(SMALL, path="small.cfg")
    data = random_file(tmp_path / "w.weights", net, rng, WeightsHeader(0, 2, 5, 7))
    path = tmp_path / "mixed.weights"
    path.write_bytes(np.array((0, 1, 0), "<i4").tobytes() + data[12:])
    with pytest.raises(WeightsError, match=r"(?i)header|version|seen"):
        read_weights(path, net)


def test_unreadable_weights_paths(tmp_path: Path) -> None:
    net = Network.from_text(SMALL, path="small.cfg")
    cases = {tmp_path / "missing.weights": "no such", tmp_path: "directory"}
    cfg = tmp_path / "given.cfg"  # a cfg (text) given as the weights file
    cfg.write_text(SMALL)
    cases[cfg] = "header"
    for path, what in cases.items():
        with pytest.raises(WeightsError, match=what):
            read_weights(path, net)


# ------------------------------------------------------------------------------------------------
# golden networks: real layer mixes, real Darknet-written files
def _golden() -> list[str]:
    return golden_networks() or ["<no ../shared>"]


def _cut_golden(name: str, tmp_path: Path, rng: np.random.Generator, sample: int | None) -> None:
    require_shared()
    folder = GOLDEN / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = Network.from_cfg(folder / "net.cfg")
    data = (folder / "net.weights").read_bytes()
    header = read_header(folder / "net.weights")
    lay = layout(net, header)
    assert lay.total == len(data), "the layer table must account for every byte of the file"
    counts = cut_everywhere(tmp_path / "cut.weights", data, net, lay, rng, random_cuts=2,
                            sample=sample)
    weight_layers = sum(1 for s in lay.sizes if s)
    assert counts.get("boundary", 0) == (weight_layers if sample is None
                                         else min(sample, weight_layers))
    (tmp_path / "long.weights").write_bytes(data + b"\x00" * 12)
    with pytest.raises(WeightsError, match="12 bytes left after the last layer"):
        read_weights(tmp_path / "long.weights", net)
    print(f"{name}: {sum(counts.values())} corrupted files ({counts}), 1 with extra bytes")


# Layers of these are few: every boundary is cut in CI; the others are sampled (full run: slow).
EVERY_BOUNDARY_IN_CI = ("yolov2-tiny", "yolov3-tiny", "yolov3-tiny-prn", "yolov4-tiny-3l")


@pytest.mark.parametrize("name", _golden())
def test_golden_weights_cut_at_layer_boundaries_and_random_offsets(
        name: str, tmp_path: Path, rng: np.random.Generator) -> None:
    """CI: every boundary of the small golden networks, 3 boundaries + 3 inside cuts of the rest."""
    _cut_golden(name, tmp_path, rng, None if name in EVERY_BOUNDARY_IN_CI else 3)


@pytest.mark.slow
@pytest.mark.parametrize("name", _golden())
def test_golden_weights_cut_at_every_layer_boundary(name: str, tmp_path: Path,
                                                    rng: np.random.Generator) -> None:
    """Every layer boundary and one cut inside every weight layer of every golden network."""
    _cut_golden(name, tmp_path, rng, None)


def _wrong_cfg(per_weights: int | None, rng: np.random.Generator) -> None:
    """Golden .weights files with other golden cfgs: an error unless the sizes coincide."""
    require_shared()
    names = golden_networks()
    nets: dict[str, Network] = {}

    def net_of(name: str) -> Network:
        if name not in nets:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                nets[name] = Network.from_cfg(GOLDEN / name / "net.cfg")
        return nets[name]

    tried = same_size = 0
    for wname in names:
        path = GOLDEN / wname / "net.weights"
        size = path.stat().st_size
        others = [n for n in names if n != wname]
        if per_weights is not None:
            others = [str(n) for n in rng.choice(others, per_weights, replace=False)]
        for cname in others:
            net = net_of(cname)
            tried += 1
            need = layout(net, read_header(path)).total
            if need == size:
                same_size += 1  # nothing in a .weights file can tell: it loads
                read_weights(path, net)
                continue
            with pytest.raises(WeightsError) as info:
                read_weights(path, net)
            message = str(info.value)
            assert re.search(r"\blayer \d+|after the last layer", message), message
            assert str(size) in message and str(need) in message, message
            with warnings.catch_warnings(record=True) as caught:  # lenient: Darknet's warning
                warnings.simplefilter("always")
                read_weights(path, net, lenient=True)
            assert any(issubclass(w.category, WeightsWarning) for w in caught), (wname, cname)
    print(f"wrong cfg: {tried} (weights, cfg) pairs tried, {same_size} of identical size")
    assert tried == len(names) * (per_weights or len(names) - 1)


def test_golden_weights_paired_with_the_wrong_cfg(rng: np.random.Generator) -> None:
    """CI: each golden .weights with 1 other golden cfg (all pairs: slow)."""
    _wrong_cfg(1, rng)


@pytest.mark.slow
def test_golden_weights_paired_with_every_wrong_cfg(rng: np.random.Generator) -> None:
    _wrong_cfg(None, rng)


def test_cli_prints_one_line_for_corrupt_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  rng: np.random.Generator) -> None:
    cfg = tmp_path / "small.cfg"
    cfg.write_text(SMALL)
    net = Network.from_text(SMALL, path=cfg)
    data = random_file(tmp_path / "w.weights", net, rng)
    (tmp_path / "cut.weights").write_bytes(data[: len(data) // 2 + 2])
    code = main(["partial", str(cfg), str(tmp_path / "cut.weights"), str(tmp_path / "out.weights"),
                 str(len(net.layers))])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("darknetpy: error: "), err
    assert re.search(r"layer \d+", err[0]) and "cut.weights" in err[0], err
    assert not (tmp_path / "out.weights").exists()


def test_nothing_but_darknetpy_errors_escape_random_corruption(tmp_path: Path,
                                                               rng: np.random.Generator) -> None:
    """Random splices: drop, duplicate or insert byte ranges anywhere; only WeightsError escapes."""
    net = Network.from_text(SMALL, path="small.cfg")
    data = random_file(tmp_path / "w.weights", net, rng)
    path = tmp_path / "x.weights"
    outcomes = {"error": 0, "loaded": 0}
    for i in range(300):
        a, b = sorted(int(v) for v in rng.integers(0, len(data), 2))
        op = i % 3
        if op == 0:
            mutated = data[:a] + data[b:]
        elif op == 1:
            mutated = data[:b] + data[a:b] + data[b:]
        else:
            mutated = data[:a] + bytes(rng.integers(0, 256, b - a, dtype=np.uint8)) + data[a:]
        path.write_bytes(mutated)
        try:
            read_weights(path, net)
        except DarknetpyError:
            outcomes["error"] += 1
        else:
            outcomes["loaded"] += 1
            assert len(mutated) == len(data)
    print(f"random splices: 300 files: {outcomes}")
    assert outcomes["error"] > 250


# ------------------------------------------------------------------------------------------------
# valid files holding extreme values: NaN, inf, biases that overflow the box decoding
DETECT_CFG = tiny_cfg()


def _extreme_weights(kind: str, path: Path) -> None:
    """Zero weights (unit BN variance), then the damage ``kind``; each anchor has 6 channels
    (x, y, w, h, objectness, class) in the last convolution."""
    import torch

    net = quiet_weights(Network.from_text(DETECT_CFG))
    with torch.no_grad():
        bias = net.layers[1].conv.bias
        for a in range(3):
            bias[a * 6 + 4] = bias[a * 6 + 5] = 10.0  # every cell detects something
            if kind == "inf box":
                bias[a * 6 + 2] = 100.0  # exp(100) * anchor overflows float32: w = inf
            elif kind == "zero box":
                bias[a * 6 + 2] = bias[a * 6 + 3] = -200.0  # exp underflows: w = h = 0
            elif kind == "huge centre":
                bias[a * 6 + 0] = 1e30
        if kind in ("nan", "inf"):
            for tensor in net.state_dict().values():
                if tensor.is_floating_point():
                    tensor.fill_(math.nan if kind == "nan" else math.inf)
    net.save_weights(path, header=WeightsHeader(0, 2, 5, 0))


EXTREMES = ["nan", "inf", "zero box", "huge centre", "inf box"]


def _detect(tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> int:
    cfg = tmp_path / "detect.cfg"
    cfg.write_text(DETECT_CFG)
    weights = tmp_path / "extreme.weights"
    _extreme_weights(kind, weights)
    (image,) = raccoon_photos(1)
    code = main(["detect", str(cfg), str(weights), str(image), "--save-dir",
                 str(tmp_path / "drawn"), "--json", str(tmp_path / "out.json")])
    capsys.readouterr()
    return code


@pytest.mark.parametrize("kind", [k for k in EXTREMES if k != "inf box"])
def test_extreme_weight_values_never_crash_detect(tmp_path: Path, kind: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A file full of NaN/inf (bit rot, a diverged run) or biases whose boxes under/overflow:
    detect draws and writes JSON without a crash (Darknet's degenerate boxes are kept)."""
    assert _detect(tmp_path, kind, capsys) == 0
    assert (tmp_path / "out.json").is_file() and list((tmp_path / "drawn").iterdir())


def test_inf_box_does_not_crash_drawing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _detect(tmp_path, "inf box", capsys) == 0
