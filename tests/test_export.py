"""ONNX export checked with onnxruntime: every layer, the heads, the decoded boxes, the options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from darknetpy.inference import postprocess
from darknetpy.cli import main
from darknetpy.errors import UsageError
from darknetpy.inference.export import export_onnx, output_names
from darknetpy.inference.inference_model import InferenceModel, fuse_conv_batchnorm
from darknetpy.model.layers import INPUT
from darknetpy.model.network import Network

from .conftest import GOLDEN, detection_networks, golden_networks, require_shared

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

# Shallow enough that float32 rounding stays well below 1e-4 end to end (measured 1.6e-5 to
# 3.1e-5; yolov2, yolov3 and yolov7-tiny reach 6e-5 to 1.03e-4 depending on the thread count, and
# the deeper networks 1.7e-4 to 3.5e-3 as PyTorch does against itself with another convolution
# kernel: those are held to float32's own precision by the float64 test below).
SMALL = ["yolov2-tiny", "yolov3-tiny", "yolov3-tiny-prn", "yolov4-tiny", "yolov4-tiny-3l"]


def _golden_network(name: str) -> tuple[Network, np.ndarray]:
    require_shared()
    net = Network.from_cfg(GOLDEN / name / "net.cfg")
    net.load_weights(GOLDEN / name / "net.weights")
    return net.eval(), np.load(GOLDEN / name / "input.npy")[None]


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", golden_networks())
def test_every_onnx_layer_computes_what_pytorch_computes(name: str, tmp_path: Path) -> None:
    """Each layer of the ONNX graph, given the inputs onnxruntime computed for it, equals the
    PyTorch layer within 1e-4 (relative to the layer's largest value, at least 1): the graph is
    the same computation, layer by layer, for every golden network."""
    net, x = _golden_network(name)
    path = export_onnx(net, tmp_path / "all.onnx", all_layers=True)
    outs = _session(path).run(None, {"images": x})
    fused = fuse_conv_batchnorm(net)
    assert len(outs) == len(fused.layers)
    worst = 0.0
    with torch.inference_mode():
        for i, layer in enumerate(fused.layers):
            inputs = [torch.from_numpy(x if s == INPUT else outs[s]) for s in layer.sources]
            ref = layer(*inputs).numpy()
            assert outs[i].shape == ref.shape, i
            err = float(np.abs(outs[i] - ref).max() / max(1.0, float(np.abs(ref).max())))
            worst = max(worst, err)
            assert err <= 1e-4, f"layer {i} ({layer.section.name}): {err:.3g}"
    assert worst > 0 or len(fused.layers) < 3  # onnxruntime's kernels really ran


@pytest.mark.parametrize("name", SMALL)
def test_heads_end_to_end_within_1e4_with_dynamic_batch_and_decode(
    name: str, tmp_path: Path
) -> None:
    """The shipped form (dynamic batch, decoded boxes): heads within 1e-4 of PyTorch's for a batch
    of three different images; the decoded outputs select darknet's detections."""
    net, x = _golden_network(name)
    path = export_onnx(net, tmp_path / "m.onnx", dynamic_batch=True, with_decode=True)
    # a batch of 3 (the export traced 2): the image, upside down, and darker
    batch = np.concatenate([x, np.ascontiguousarray(x[:, :, ::-1]), x * np.float32(0.5)])
    outs = _session(path).run(None, {"images": batch})
    names = output_names(net, with_decode=True)
    assert [o.name for o in _session(path).get_outputs()] == names
    with torch.inference_mode():
        ref = net(torch.from_numpy(batch))
    for got, want in zip(outs, ref):
        assert got.shape == tuple(want.shape)
        np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-4)
    boxes, objectness, scores = outs[len(ref) :]
    heads = [net.layers[i] for i in net.heads]
    size = (x.shape[3], x.shape[2])
    thresh = 0.5
    onnx_heads = [torch.from_numpy(o) for o in outs[: len(ref)]]
    for b in range(3):  # darknet's decoding of the same heads, before NMS, image = network input
        dets = postprocess.get_network_boxes(
            heads, [h[b : b + 1] for h in onnx_heads], size, size, thresh
        )[0]
        keep = objectness[b] > np.float32(thresh)
        assert keep.sum() == len(dets) > 0
        np.testing.assert_allclose(boxes[b][keep], dets.boxes, rtol=1e-4, atol=1e-5)
        probs = np.where(scores[b][keep] > np.float32(thresh), scores[b][keep], 0)
        assert ((probs > 0) == (dets.probs > 0)).mean() > 0.999  # a value at thresh may flip
        np.testing.assert_allclose(probs, dets.probs, rtol=0, atol=2e-3)


def _float32_heads(net: Network, x: np.ndarray) -> list[list[np.ndarray]]:
    """The heads as three float32 PyTorch paths compute them: the unfused network with oneDNN
    convolutions, with PyTorch's native ones, and ``darknetpy.load()``'s fused prepacked model."""
    t = torch.from_numpy(x)
    with torch.inference_mode():
        onednn = [h.numpy() for h in net(t)]
        with torch.backends.mkldnn.flags(enabled=False):
            native = [h.numpy() for h in net(t)]
        fused = [h.numpy() for h in InferenceModel(net)(t)]
    return [onednn, native, fused]


@pytest.mark.filterwarnings("ignore:TF32 acceleration")  # mkldnn.flags() on a CPU-only build
@pytest.mark.parametrize("name", detection_networks())
def test_heads_end_to_end_as_close_to_exact_as_pytorch(name: str, tmp_path: Path) -> None:
    """Every detection network, end to end: onnxruntime's heads are no further from the float64
    result than PyTorch's float32 heads are. Past ~100 layers these golden networks amplify float32
    rounding above 1e-4 for *any* two float32 implementations (PyTorch with oneDNN against PyTorch
    with its native convolutions differs by 1.9e-3 on yolov4): ``bench/bench_onnx_precision.py``
    prints the table. Also within the README's depth tolerance of PyTorch's float32 heads."""
    net, x = _golden_network(name)
    outs = _session(export_onnx(net, tmp_path / "m.onnx")).run(None, {"images": x})
    exact_net = Network.from_cfg(GOLDEN / name / "net.cfg")
    exact_net.load_weights(GOLDEN / name / "net.weights")
    exact_net = exact_net.double().eval()
    with torch.no_grad():
        exact = [h.numpy() for h in exact_net(torch.from_numpy(x).double())]
    paths = _float32_heads(net, x)

    def error(heads: list[np.ndarray]) -> float:
        return max(float(np.abs(h - e).max()) for h, e in zip(heads, exact))

    float32_noise = max(error(heads) for heads in paths)
    assert float32_noise > 0  # float32 really rounded
    assert error(outs) <= 2 * float32_noise + 1e-6, (error(outs), float32_noise)
    for got, want in zip(outs, paths[0]):
        assert np.abs(got - want).max() <= 3e-3 * np.abs(want).max() + 1e-5


def test_opset_and_fixed_batch(tmp_path: Path) -> None:
    net, x = _golden_network("yolov3-tiny")
    path = export_onnx(net, tmp_path / "m11.onnx", opset=11)
    model = onnx.load(str(path))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [11]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    outs = _session(path).run(None, {"images": x})
    with torch.inference_mode():
        assert [o.shape for o in outs] == [tuple(r.shape) for r in net(torch.from_numpy(x))]
    with pytest.raises(UsageError, match="opset 11 or later"):
        export_onnx(net, tmp_path / "m9.onnx", opset=9)


def test_with_decode_needs_a_detection_head(tmp_path: Path) -> None:
    net, _ = _golden_network("darknet53")
    with pytest.raises(UsageError, match="--with-decode needs a \\[yolo\\]"):
        export_onnx(net, tmp_path / "c.onnx", with_decode=True)
    assert output_names(net) == ["output"]


def test_cli_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_shared()
    folder = GOLDEN / "yolov4-tiny"
    out = tmp_path / "m.onnx"
    argv = ["export", str(folder / "net.cfg"), str(folder / "net.weights"), str(out)]
    assert main([*argv, "--opset", "13", "--dynamic-batch", "--with-decode"]) == 0
    said = capsys.readouterr().out
    assert "opset 13" in said and "boxes" in said
    session = _session(out)
    assert session.get_inputs()[0].shape[0] == "batch"
    assert [o.name for o in session.get_outputs()][-3:] == ["boxes", "objectness", "scores"]
    assert (
        main(
            [
                "export",
                str(folder / "net.cfg"),
                str(folder / "net.weights"),
                str(folder / "net.weights"),
            ]
        )
        == 2
    )
    assert "refusing to overwrite an input file" in capsys.readouterr().err
