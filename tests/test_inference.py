"""The fast inference model: golden detections, fused == unfused, predict, fold_batchnorm."""

from __future__ import annotations

import dataclasses
import functools
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from darknetpy.data.image import letterbox_image, resize_image, to_chw_float
from darknetpy.errors import DataError, UsageError
from darknetpy.inference.inference_model import (
    Box,
    Detection,
    InferenceModel,
    Prediction,
    fold_batchnorm,
    fuse_conv_batchnorm,
    load,
)
from darknetpy.inference.records import prediction
from darknetpy.model.layers.conv import Conv
from darknetpy.model.network import Network

from .conftest import (
    GOLDEN,
    SHARED,
    detection_networks,
    golden_networks,
    require_shared,
    tiny_cfg,
)


# ---------------------------------------------------------------- golden helpers
def read_dets(path: Path) -> tuple[dict[str, float], np.ndarray]:
    """dets.txt: header ``# image W H thresh T nms N letter_box L``, rows
    ``class prob x y w h objectness``."""
    lines = path.read_text().splitlines()
    words = lines[0].lstrip("# ").split()
    header = {
        "width": int(words[1]),
        "height": int(words[2]),
        "thresh": float(words[4]),
        "nms": float(words[6]),
        "letter_box": bool(int(words[8])),
    }
    rows = [list(map(float, line.split())) for line in lines if line and not line.startswith("#")]
    return header, np.array(rows, dtype=np.float64).reshape(-1, 7)


def match_dets(
    expected: np.ndarray, got: np.ndarray, thresh: float, nms: float | None = None
) -> list[str]:
    """Problems with ``got`` against darknet's rows, with ../shared/README.md's tolerances:
    each darknet row matched to one unused row of the same class with x, y, w, h within
    2e-3 + 2e-3·|value| and prob within 2e-3; rows within 5e-3 of the threshold may be missing
    on either side.

    With ``nms``, up to two NMS near-ties are excused: a missing darknet row and an extra row of
    the same class, probabilities within 2e-3, overlapping by more than the NMS threshold (two
    candidates whose probabilities differ by less than the forward's rounding survive the other
    way round; yolov4x-mish has one: 0.958990 vs 0.958988 in darknet).
    """
    from darknetpy.model.boxes import box_iou

    used = np.zeros(len(got), bool)
    missing = []
    with np.errstate(invalid="ignore"):
        for row in expected:
            cls, prob, box = int(row[0]), row[1], row[2:6]
            ok = (got[:, 0] == cls) & ~used & (np.abs(got[:, 1] - prob) <= 2e-3)
            ok &= np.all(
                (np.abs(got[:, 2:6] - box) <= 2e-3 + 2e-3 * np.abs(box)) | (got[:, 2:6] == box),
                axis=1,
            )
            hits = np.nonzero(ok)[0]
            if len(hits):
                used[hits[0]] = True
            elif prob - thresh > 5e-3:
                missing.append(row)
    extra = [row for row in got[~used] if row[1] - thresh > 5e-3]
    swaps = 0
    if nms is not None:
        left = []
        for row in missing:
            for j, cand in enumerate(extra):
                iou = box_iou(np.float32(row[2:6]), np.float32(cand[2:6]))
                if cand[0] == row[0] and abs(cand[1] - row[1]) <= 2e-3 and iou > nms and swaps < 2:
                    del extra[j]
                    swaps += 1
                    break
            else:
                left.append(row)
        missing = left
    return [f"missing darknet row {r.tolist()}" for r in missing] + [
        f"extra row {r.tolist()}" for r in extra
    ]


def test_dets_matcher_rejects_a_wrong_probability_or_box() -> None:
    darknet = np.array([[1, 0.8, 0.5, 0.5, 0.1, 0.2, 0.9]])
    assert match_dets(darknet, np.array([[1, 0.8005, 0.5005, 0.5, 0.1, 0.2, 0.9]]), 0.5) == []
    for wrong in (
        [1, 0.81, 0.5, 0.5, 0.1, 0.2, 0.9],
        [0, 0.8, 0.5, 0.5, 0.1, 0.2, 0.9],
        [1, 0.8, 0.5, 0.5, 0.11, 0.2, 0.9],
    ):
        assert len(match_dets(darknet, np.array([wrong]), 0.5)) == 2  # missing + extra
    assert match_dets(darknet, np.zeros((0, 7)), 0.798) == []  # near the threshold
    # an NMS near-tie: same class and probability, the other of two overlapping boxes
    tie = np.array([[1, 0.8001, 0.51, 0.5, 0.1, 0.2, 0.9]])
    assert match_dets(darknet, tie, 0.5, nms=0.45) == []
    assert len(match_dets(darknet, tie, 0.5)) == 2


def _rows(rows: list) -> np.ndarray:
    return np.array([list(r) for r in rows], dtype=np.float64).reshape(-1, 7)


def _golden_model(name: str, names: bool = False) -> tuple[InferenceModel, torch.Tensor]:
    """The fused model of a golden network (shared by the tests: none of them changes it)."""
    require_shared()
    return _load_golden(name, names)


@functools.cache
def _load_golden(name: str, names: bool) -> tuple[InferenceModel, torch.Tensor]:
    folder = GOLDEN / name
    model = load(
        folder / "net.cfg",
        folder / "net.weights",
        names=SHARED / "names" / "coco.names" if names else None,
    )
    return model, torch.from_numpy(np.load(folder / "input.npy"))[None]


# ---------------------------------------------------------------- acceptance
@pytest.mark.parametrize("name", detection_networks())
def test_fused_model_reproduces_darknet_dets(name: str) -> None:
    """Acceptance 1: on the golden input the fused inference model gives darknet's dets.txt."""
    model, x = _golden_model(name)
    assert model.is_fused
    header, expected = read_dets(GOLDEN / name / "dets.txt")
    rows = model.detect(
        x,
        (header["width"], header["height"]),
        thresh=header["thresh"],
        nms=header["nms"],
        letter_box=header["letter_box"],
    )[0]
    got = _rows(rows)
    problems = match_dets(expected, got, header["thresh"], header["nms"])
    assert not problems, f"{len(problems)} problems, e.g. {problems[:3]}"
    assert len(expected) == 0 or len(got) > 0


@pytest.mark.parametrize("name", golden_networks())
def test_fused_heads_match_darknet_buffers(name: str) -> None:
    """model(x) is darknet's l.output of every head (the last layer for a classifier)."""
    model, x = _golden_model(name)
    golden = np.load(GOLDEN / name / "forward.npz")
    indices = list(model.network.heads) or [len(model.network.layers) - 1]
    heads = model(x)
    assert len(heads) == len(indices)
    for i, head in zip(indices, heads):
        key = next(k for k in golden.files if k.startswith(f"{i}:") and k.endswith("/full"))
        ref = golden[key].reshape(-1)
        diff = np.abs(head.numpy().reshape(-1) - ref)
        assert diff.max() <= 3e-3 * np.abs(ref).max() + 1e-5, (key, float(diff.max()))


@pytest.mark.parametrize("name", detection_networks())
def test_fused_detections_equal_unfused(name: str) -> None:
    """Acceptance 4: the fused path detects what the unfused network detects."""
    model, x = _golden_model(name)
    # the fused copy really has no batch norm left, and the network it came from still has it
    fused_convs = [m for m in model.fused.layers if isinstance(m, Conv)]
    assert all(c.bn is None and c.conv.bias is not None for c in fused_convs if not c.spec.xnor)
    assert any(m.bn is not None for m in model.network.layers if isinstance(m, Conv))
    header, _ = read_dets(GOLDEN / name / "dets.txt")
    size = (header["width"], header["height"])
    kwargs = {"thresh": header["thresh"], "nms": header["nms"], "letter_box": header["letter_box"]}
    fused = model.detect(x, size, **kwargs)[0]
    # conv then a separate BatchNorm2d (the training-time modules, in eval mode)
    with torch.enable_grad():
        heads = [h.detach() for h in model.network.eval()(x)]
    from darknetpy.inference import postprocess

    layers = [model.network.layers[i] for i in model.network.heads]
    dets = postprocess.get_network_boxes(
        layers, heads, size, (x.shape[3], x.shape[2]), header["thresh"], 0.5, header["letter_box"]
    )
    kind, beta = postprocess.nms_settings(layers)
    unfused = postprocess.apply_nms(dets[0], header["nms"], kind, beta).rows(header["thresh"])
    problems = match_dets(_rows(unfused), _rows(fused), header["thresh"], header["nms"])
    assert not problems, problems[:3]
    assert len(fused) == len(unfused) or problems == []
    # in NCHW the fused copy computes bit for bit what the network's own inference path does
    # (which folds the batch norm on the fly, in double, as darknet's fuse_conv_batchnorm)
    nchw = InferenceModel(model.network, channels_last=False, prepack=False)
    with torch.inference_mode():
        for a, b in zip(nchw(x), model.network(x)):
            assert torch.equal(a, b)


# ---------------------------------------------------------------- fusing
def test_fold_batchnorm_is_darknets_formula_in_double() -> None:
    w = torch.tensor([[[[1.0, -2.0]]], [[[0.5, 3.0]]]])
    gamma, beta = torch.tensor([2.0, 0.1]), torch.tensor([0.5, -1.0])
    mean, var = torch.tensor([1.0, -3.0]), torch.tensor([3.0, 0.0])
    folded, bias = fold_batchnorm(w, gamma, beta, mean, var)
    g, b, m, v = (t.numpy().astype(np.float64) for t in (gamma, beta, mean, var))
    scale = g / np.sqrt(v + 1e-5)  # fuse_conv_batchnorm: float values, double arithmetic
    expected_w = (w.numpy().astype(np.float64) * scale[:, None, None, None]).astype(np.float32)
    expected_b = (b - g * m / np.sqrt(v + 1e-5)).astype(np.float32)
    np.testing.assert_array_equal(folded.numpy(), expected_w)
    np.testing.assert_array_equal(bias.numpy(), expected_b)
    assert folded.dtype == bias.dtype == torch.float32


def test_fuse_keeps_the_original_network_and_shared_weights(tmp_path: Path) -> None:
    cfg = tmp_path / "share.cfg"
    cfg.write_text(
        "[net]\nwidth=8\nheight=8\nchannels=4\n"
        "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\npad=1\nactivation=leaky\n"
        "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\npad=1\nactivation=leaky\n"
        "share_index=0\n"
    )
    net = Network.from_cfg(cfg)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fused = fuse_conv_batchnorm(net)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    x = torch.rand(2, 4, 8, 8, generator=gen)
    with torch.enable_grad():
        ref = net.eval()(x)[0].detach()
    with torch.inference_mode():
        out = fused(x)[0]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert all(layer.bn is None for layer in fused.layers)


def test_fuse_in_place_folds_shared_weights_without_a_copy(tmp_path: Path) -> None:
    cfg = tmp_path / "share.cfg"
    cfg.write_text(
        "[net]\nwidth=8\nheight=8\nchannels=4\n"
        "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\npad=1\nactivation=leaky\n"
        "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\npad=1\nactivation=leaky\n"
        "share_index=0\n"
    )
    net = _random_weights(Network.from_cfg(cfg))
    x = torch.rand(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.enable_grad():
        ref = net.eval()(x)[0].detach()
    reference = fuse_conv_batchnorm(net)  # the copying path, for comparison
    fused = fuse_conv_batchnorm(net, inplace=True)
    assert fused is net
    assert all(layer.bn is None for layer in net.layers)
    with torch.inference_mode():
        out, copied = fused(x)[0], reference(x)[0]
    assert torch.equal(out, copied)  # the second layer folded from the shared original tensors
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- keep_unfused
def _random_weights(net: Network, seed: int = 1) -> Network:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
    return net


def _tiny_files(tmp_path: Path) -> tuple[Path, Path]:
    """A 2-class yolo cfg of 64x64 and .weights with random values."""
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(tiny_cfg(backbone=(8, 16), classes=2))
    weights = tmp_path / "tiny.weights"
    _random_weights(Network.from_cfg(cfg)).save_weights(weights)
    return cfg, weights


def _tensor_bytes(module: torch.nn.Module) -> int:
    """Bytes of the distinct tensors in ``module``'s state dict (shared tensors once)."""
    seen = {
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
        for t in module.state_dict().values()
    }
    return sum(seen.values())


def test_keep_unfused_false_holds_one_copy_and_runs_the_same(tmp_path: Path) -> None:
    cfg, weights = _tiny_files(tmp_path)
    kept = load(cfg, weights, prepack=False)
    dropped = load(cfg, weights, prepack=False, keep_unfused=False)
    assert dict(kept.named_children()).keys() == {"network", "fused"}
    assert dict(dropped.named_children()).keys() == {"fused"}
    # one copy of the weights instead of two
    assert _tensor_bytes(dropped) == _tensor_bytes(dropped.fused)
    assert _tensor_bytes(kept) > 1.9 * _tensor_bytes(dropped)
    # every inference method works without the unfused network, with the same results
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    for a, b in zip(kept(x), dropped(x)):
        assert torch.equal(a, b)
    assert (dropped.classes, dropped.input_size, dropped.names) == (2, (64, 64), ("0", "1"))
    image = (np.arange(40 * 50 * 3) % 251).astype(np.uint8).reshape(40, 50, 3)
    a, b = kept.predict(image, thresh=0.01)[0], dropped.predict(image, thresh=0.01)[0]
    assert len(a) > 0 and a == b
    assert kept.detect(x, (50, 40), thresh=0.01) == dropped.detect(x, (50, 40), thresh=0.01)
    assert "keep_unfused=False" in repr(dropped)
    assert isinstance(kept.network, Network)
    with pytest.raises(UsageError, match=r"tiny.cfg: .*keep_unfused=False.*keep_unfused=True"):
        _ = dropped.network
    # prepacked (the CPU default), the same
    packed = load(cfg, weights, keep_unfused=False)
    with pytest.raises(UsageError, match="keep_unfused"):
        _ = packed.network
    for a, b in zip(kept(x), packed(x)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_keep_unfused_false_builds_the_runtime_from_the_network_given(tmp_path: Path) -> None:
    cfg, weights = _tiny_files(tmp_path)
    net = Network.from_cfg(cfg)
    net.load_weights(weights)
    # a wrong name list is refused before anything is changed
    with pytest.raises(DataError, match="3 class names given"):
        InferenceModel(net, names=["a", "b", "c"], keep_unfused=False)
    assert all(m.bn is not None for m in net.layers[:2])
    reference = InferenceModel(net, prepack=False)
    model = InferenceModel(net, prepack=False, keep_unfused=False, names=["a", "b"])
    assert model.fused is net and all(m.bn is None for m in net.layers if isinstance(m, Conv))
    unfused = InferenceModel(Network.from_cfg(cfg), fuse=False, keep_unfused=False)
    assert not unfused.is_fused and unfused.fused.layers[0].bn is not None
    with pytest.raises(UsageError, match="keep_unfused"):
        _ = unfused.network
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    for a, b in zip(reference(x), model(x)):
        assert torch.equal(a, b)
    # a classifier: the message names the cfg and the problem, not the dropped network
    classifier = tmp_path / "classify.cfg"
    classifier.write_text(
        "[net]\nwidth=8\nheight=8\nchannels=3\n"
        "[convolutional]\nfilters=2\nsize=1\nactivation=leaky\n"
    )
    small = InferenceModel(Network.from_cfg(classifier), keep_unfused=False)
    assert small.classes is None and small(torch.rand(1, 3, 8, 8))[0].shape == (1, 2, 8, 8)
    with pytest.raises(UsageError, match=r"classify.cfg: no \[yolo\]"):
        small.detect(torch.rand(1, 3, 8, 8), (8, 8))


@pytest.mark.parametrize("keep_unfused", [True, False])
def test_inference_model_pickles(tmp_path: Path, keep_unfused: bool) -> None:
    """A loaded model (prepacked convolutions included) goes to spawn workers / torch.save."""
    cfg, weights = _tiny_files(tmp_path)
    model = load(cfg, weights, keep_unfused=keep_unfused)
    clone = pickle.loads(pickle.dumps(model))
    assert clone.keep_unfused == keep_unfused and clone.prepacked == model.prepacked
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    for a, b in zip(model(x), clone(x)):
        assert torch.equal(a, b)
    if keep_unfused:
        assert torch.equal(clone.network.layers[0].conv.weight, model.network.layers[0].conv.weight)


# ---------------------------------------------------------------- the Python API
def test_predict_accepts_paths_arrays_and_tensors_alike() -> None:
    require_shared()
    model, _ = _golden_model("yolov4-tiny", names=True)
    path = SHARED / "images" / "dog.jpg"
    bgr = cv2.imread(str(path))
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    tensor = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    by_path, by_bgr, by_tensor, by_uint8 = model.predict(
        [path, bgr, tensor, torch.from_numpy(rgb).permute(2, 0, 1)], thresh=0.9, batch_size=3
    )
    (by_rgb,) = model.predict(rgb, thresh=0.9, color="rgb")
    by_batch = model.predict(torch.stack([tensor, tensor]), thresh=0.9)
    assert len(by_batch) == 2
    assert len(by_path) > 3
    for other in (by_bgr, by_rgb, by_tensor, by_uint8, *by_batch):
        # the same input; batches of different sizes may round differently
        assert not match_dets(_prediction_rows(by_path), _prediction_rows(other), 0.9, nms=0.45)
    assert (by_path.width, by_path.height, by_path.source) == (768, 576, str(path))
    # the wrong channel order changes the result: the flag matters
    wrong = model.predict(rgb, thresh=0.9)[0]
    assert match_dets(_prediction_rows(by_path), _prediction_rows(wrong), 0.9, nms=0.45)


# uint8 inputs go straight from the pixels to the network input (prepare_test_input); what they
# gave before: the full-size float image (to_chw_float, RGB), then resize_image / letterbox_image.
UINT8_KINDS = ("path", "bgr", "rgb", "bgra", "grey", "bgr_view", "uint8_tensor", "float_tensor")


def _as_input(kind: str, rgb: np.ndarray, tmp_path: Path) -> tuple[object, str]:
    """``rgb`` (uint8 H, W, 3) as an input of ``kind``, and the ``color`` to pass with it."""
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    if kind == "path":
        path = tmp_path / "image.png"  # lossless: decodes to ``rgb`` exactly
        assert cv2.imwrite(str(path), bgr)
        return path, "bgr"
    if kind == "bgr":
        return bgr, "bgr"
    if kind == "rgb":
        return rgb, "rgb"
    if kind == "bgra":
        return np.dstack([bgr, np.full(rgb.shape[:2], 7, np.uint8)]), "bgr"
    if kind == "grey":
        return rgb[:, :, 1].copy(), "bgr"
    if kind == "bgr_view":  # a strided, negative-stride view
        wide = np.zeros((rgb.shape[0], 2 * rgb.shape[1], 3), np.uint8)
        wide[:, ::2] = rgb
        return wide[:, ::2, ::-1], "bgr"
    if kind == "uint8_tensor":
        return torch.from_numpy(rgb).permute(2, 0, 1), "bgr"
    assert kind == "float_tensor"
    return torch.from_numpy(to_chw_float(rgb)), "bgr"


def _old_prepare(kind: str, rgb: np.ndarray, w: int, h: int, letter: bool) -> np.ndarray:
    """The network input as ``prepare`` computed it before the one-pass kernel."""
    if kind == "grey":
        rgb = np.repeat(rgb[:, :, 1:2], 3, axis=2)
    chw = to_chw_float(np.ascontiguousarray(rgb))
    return letterbox_image(chw, w, h) if letter else resize_image(chw, w, h)


@pytest.mark.parametrize("letter", [False, True])
@pytest.mark.parametrize("kind", UINT8_KINDS)
def test_prepare_equals_the_float_path_bit_for_bit(
    tmp_path: Path, kind: str, letter: bool
) -> None:
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(tiny_cfg(width=96, height=64))
    model = load(cfg, weights=None)  # random weights on purpose: no warning
    rgb = np.random.default_rng(3).integers(0, 256, (77, 123, 3), dtype=np.uint8)
    image, color = _as_input(kind, rgb, tmp_path)
    x, size, source = model.prepare(image, color=color, letter_box=letter, index=5)
    expected = _old_prepare(kind, rgb, 96, 64, letter)
    assert x.dtype == np.float32 and x.shape == (3, 64, 96)
    np.testing.assert_array_equal(x.view(np.uint32), expected.view(np.uint32))
    assert size == (123, 77)
    kind_name = "tensor" if kind.endswith("tensor") else "array"
    assert source == (str(image) if kind == "path" else f"<{kind_name} 5>")


@pytest.mark.parametrize("kind", ["path", "bgr", "grey", "uint8_tensor"])
def test_prepare_makes_no_full_size_float_copy_of_uint8_pixels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    import darknetpy.data.image as image_module

    def refuse(image: np.ndarray) -> np.ndarray:
        raise AssertionError(f"to_chw_float called on a {image.shape} image")

    model = InferenceModel(Network.from_text(tiny_cfg()))
    rgb = np.random.default_rng(4).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    image, color = _as_input(kind, rgb, tmp_path)
    expected = model.prepare(image, color=color)[0]
    monkeypatch.setattr(image_module, "to_chw_float", refuse)
    np.testing.assert_array_equal(model.prepare(image, color=color)[0], expected)


def test_prepare_keeps_the_input_checks() -> None:
    model = InferenceModel(Network.from_text(tiny_cfg()))
    with pytest.raises(DataError, match=r"<array 0>: expected an \(H, W, 3\) array, got shape "
                                        r"\(0, 5, 3\)"):
        model.prepare(np.zeros((0, 5), np.uint8))
    with pytest.raises(DataError, match=r"got shape \(4, 4, 2\)"):
        model.prepare(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(DataError, match=r"<tensor 2>: expected a \(3, H, W\) RGB tensor"):
        model.prepare(torch.zeros((4, 4, 3), dtype=torch.uint8), index=2)
    with pytest.raises(DataError, match="image 1: unsupported type list"):
        model.prepare([[1, 2]], index=1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "letter"),
    [("path", False), ("path", True), ("bgr", False), ("rgb", False), ("grey", False),
     ("uint8_tensor", True)],
)
def test_predict_on_uint8_inputs_is_unchanged(tmp_path: Path, kind: str, letter: bool) -> None:
    """What predict found before on a photo: the old float input gives the same detections."""
    require_shared()
    model, _ = _golden_model("yolov4-tiny", names=True)
    rgb = cv2.cvtColor(cv2.imread(str(SHARED / "images" / "dog.jpg")), cv2.COLOR_BGR2RGB)
    image, color = _as_input(kind, rgb, tmp_path)
    (got,) = model.predict(image, color=color, letter_box=letter, thresh=0.2)
    w, h = model.input_size
    old = torch.from_numpy(_old_prepare(kind, rgb, w, h, letter))
    dets = model.detections(old, [(768, 576)], thresh=0.2, letter_box=letter)[0]
    expected = prediction(got.source, (768, 576), dets, 0.2, model.names)
    assert len(got) >= 3
    assert got == expected


def test_predict_results_are_frozen_pixel_boxes_with_names() -> None:
    require_shared()
    model, x = _golden_model("yolov4-tiny", names=True)
    header, _ = read_dets(GOLDEN / "yolov4-tiny" / "dets.txt")
    prediction = model.predict(x[0], thresh=header["thresh"])[0]  # the golden input, 320x320
    assert (prediction.width, prediction.height) == (320, 320)
    rows = model.detect(x, (320, 320), thresh=header["thresh"])[0]
    assert sorted((d.class_id, d.score) for d in prediction) == sorted((r[0], r[1]) for r in rows)
    scores = [d.score for d in prediction]
    assert scores == sorted(scores, reverse=True)
    names = (SHARED / "names" / "coco.names").read_text().splitlines()
    for d in prediction:
        assert isinstance(d, Detection) and isinstance(d.box, Box)
        assert d.name == names[d.class_id]
        x_, y_, w_, h_ = d.relative
        assert d.box.left == pytest.approx((x_ - w_ / 2) * 320)
        assert d.box.bottom == pytest.approx((y_ + h_ / 2) * 320)
        assert d.score > header["thresh"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        prediction.detections[0].score = 1.0  # type: ignore[misc]
    assert isinstance(prediction, Prediction)
    assert prediction.to_dict()["objects"][0]["name"] == prediction[0].name


def _prediction_rows(prediction: Prediction) -> np.ndarray:
    return np.array(
        [[d.class_id, d.score, *d.relative, d.objectness] for d in prediction], dtype=np.float64
    ).reshape(-1, 7)


def test_batched_predict_equals_one_by_one() -> None:
    model, _ = _golden_model("yolov3-tiny")
    images = sorted((SHARED / "images").glob("*.jpg"))
    together = model.predict(images, thresh=0.7, batch_size=4)
    alone = [model.predict(p, thresh=0.7)[0] for p in images]
    assert [p.source for p in together] == [str(p) for p in images]
    assert sum(len(p) for p in together) > 10
    for a, b in zip(together, alone):  # a batch of 4 rounds differently from a batch of 1
        assert (a.width, a.height) == (b.width, b.height)
        assert not match_dets(_prediction_rows(b), _prediction_rows(a), 0.7, nms=0.45)


def test_channels_last_and_unfused_options_agree() -> None:
    model, x = _golden_model("yolov4-tiny-3l")
    assert model.channels_last and model.is_fused  # the CPU defaults
    other = InferenceModel(model.network, channels_last=False, fuse=False)
    assert not other.is_fused and not other.channels_last
    assert any(m.bn is not None for m in other.fused.layers if isinstance(m, Conv))
    for a, b in zip(model(x), other(x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        assert a.is_contiguous() and b.is_contiguous()


def test_half_precision_runs_and_stays_close() -> None:
    """float16 (the CUDA default; exercised here on the CPU): every layer must accept half tensors.
    Half precision is an approximation: heads move by ~3e-2 here (half=False gives darknet's)."""
    model, x = _golden_model("yolov4-tiny")
    half = InferenceModel(model.network, half=True)
    assert half.dtype == torch.float16
    heads = half(x)
    assert all(h.dtype == torch.float32 for h in heads)
    for a, b in zip(heads, model(x)):
        assert float((a - b).abs().max()) < 0.1
    assert half.predict(x[0], thresh=0.9)[0].detections


def test_load_errors_name_the_problem(tmp_path: Path) -> None:
    require_shared()
    folder = GOLDEN / "yolov4-tiny"
    names = tmp_path / "three.names"
    names.write_text("a\nb\nc\n")
    with pytest.raises(DataError, match="3 class names given, but .* classes=80"):
        load(folder / "net.cfg", folder / "net.weights", names=names)
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            load(folder / "net.cfg", folder / "net.weights", device="cuda")
    model = load(folder / "net.cfg", folder / "net.weights")
    with pytest.raises(UsageError, match="choose one of bgr, rgb"):
        model.predict(np.zeros((4, 4, 3), np.uint8), color="bgra")
    with pytest.raises(DataError, match="must be uint8"):
        model.predict(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(DataError, match="no such image file"):
        model.predict(tmp_path / "missing.jpg")


def test_package_exports_load() -> None:
    import darknetpy

    assert darknetpy.load is load
