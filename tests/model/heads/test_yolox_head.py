"""``[yolox]`` (darknetpy/model/heads/yolox/head.py): building, the network contract (forward,
detect, compute_loss) on small networks and on the imported YOLOX golden."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from darknetpy.errors import CfgError
from darknetpy.inference.export import export_onnx, output_names
from darknetpy.model.heads import HEADS
from darknetpy.model.heads.yolox import decode_yolox, postprocess_yolox, yolox_loss
from darknetpy.model.heads.yolox.head import YoloxHead
from darknetpy.model.network import Network
from darknetpy.tools.import_yolox import build_imported, import_yolox

REPO = Path(__file__).resolve().parents[3]
SHARED = Path(os.environ.get("DARKNETPY_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden" / "modern" / "yolox-tiny"
GOLDEN_BN_EPS = 1e-5  # what the golden's batch norms used (see tests/tools/test_import_yolox.py)


def _cfg(classes: int = 2, filters: int | None = None, width: int = 64, extra: str = "") -> str:
    """Three levels at strides 8, 16, 32: each a 1x1 convolution giving 5 + classes channels
    (``filters`` channels when given); ``[yolox]`` has ``layers=`` and ``extra``."""
    f = 5 + classes if filters is None else filters
    down = "[convolutional]\nfilters=8\nsize=3\nstride=2\npad=1\nactivation=swish\n"
    level = f"[convolutional]\nfilters={f}\nsize=1\nstride=1\npad=0\nactivation=linear\n"
    return (f"[net]\nwidth={width}\nheight=64\nchannels=3\n" + down * 3 + level  # 0-3: /8
            + "[route]\nlayers=-2\n" + down + level  # 4-6: /16
            + "[route]\nlayers=-2\n" + down + level  # 7-9: /32
            + f"[yolox]\nlayers=3,6,9\n{extra}")


def _net(classes: int = 2) -> Network:
    torch.manual_seed(0)
    net = Network.from_text(_cfg(classes))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    return net.eval()


def test_registered_and_built() -> None:
    assert HEADS["yolox"] is YoloxHead
    net = _net(classes=3)
    head = net.layers[10]
    assert isinstance(head, YoloxHead) and net.heads == (10,)
    assert head.sources == (3, 6, 9) and head.strides == (8, 16, 32) and head.classes == 3
    assert head.out_shape.channels == 8 and head.out_shape.height == 8 * 8 + 4 * 4 + 2 * 2
    assert head.use_l1 is False
    assert "yolox" in net.summary()


def test_classes_default_to_the_level_channels() -> None:
    net = Network.from_text(_cfg(classes=4))
    assert net.layers[10].classes == 4


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (_cfg(filters=8, extra="classes=2\n"), r"\[yolox\]: layers=3 has 8 channels; .* needs 7"),
        (_cfg(classes=2, extra="classes=3\n"), r"layers=3 has 7 channels; .*classes=3 needs 8"),
        (_cfg(classes=2, width=72), r"layers=.* input: a \[yolox\] level must divide the input"),
        (_cfg(classes=0), r"classes=0: a \[yolox\] head needs at least one class"),
    ],
    ids=["channels", "classes", "stride", "no-class"],
)
def test_bad_sections_are_cfg_errors(cfg: str, message: str) -> None:
    with pytest.raises(CfgError, match=message):
        Network.from_text(cfg)


def test_forward_is_decode_yolox_and_loss_is_yolox_loss() -> None:
    net = _net()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outputs = net.forward_layers(x)
    levels = [outputs[i] for i in (3, 6, 9)]
    torch.testing.assert_close(outputs[10], decode_yolox(levels, (8, 16, 32)), rtol=0, atol=0)

    truth = torch.tensor([[[0.5, 0.4, 0.3, 0.5, 1.0], [0.2, 0.2, 0.1, 0.1, 0.0]],
                          [[0.7, 0.6, 0.4, 0.2, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]]])
    head = net.layers[10]
    for use_l1 in (False, True):
        head.use_l1 = use_l1
        inputs = net.head_inputs(x)
        terms = net.compute_loss(inputs, truth)
        ref = yolox_loss([v.detach() for v in levels], truth, (8, 16, 32), use_l1=use_l1)
        torch.testing.assert_close(terms.total, ref.total)
        # the contract: costs[head] = (total, iou, obj, cls, l1, num_fg/num_gt)
        assert terms.costs[10] == pytest.approx(tuple(float(v) for v in ref))
        stats = terms.stats[10]
        assert stats.kind == "yolox" and stats.count > 0 and 0 < stats.avg_iou <= 1
        assert (" l1 0.0000," in stats.line) != use_l1
        terms.total.backward()
        assert all(p.grad is not None for i in (3, 6, 9) for p in net.layers[i].parameters())
        net.zero_grad()


def test_detect_is_yolox_postprocess() -> None:
    net = _net()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        decoded = net.forward_layers(x)[10]
    expected = postprocess_yolox(decoded, 0.05, 0.45)[0]
    rows = net.detect(x, (64, 64), thresh=0.05, nms=0.45)[0]
    assert len(rows) == len(expected) > 1
    for row, want in zip(rows, expected.tolist(), strict=True):
        assert row.class_id == int(want[6])
        assert row.prob == pytest.approx(want[4] * want[5], abs=1e-6)
        assert row.objectness == pytest.approx(want[4], abs=1e-6)
        box = [row.x - row.w / 2, row.y - row.h / 2, row.x + row.w / 2, row.y + row.h / 2]
        np.testing.assert_allclose(np.array(box) * 64, want[:4], atol=1e-4)


# --- the imported YOLOX golden ----------------------------------------------------------------


def _golden_net() -> Network:
    if not (GOLDEN / "state_dict.pt").is_file():
        pytest.skip(f"{GOLDEN} not found: YOLOX golden data is only beside a development checkout")
    spec = json.loads((GOLDEN / "yolox.json").read_text())
    cfg, tensors = import_yolox(GOLDEN / "state_dict.pt", spec["depth"], spec["width"],
                                spec["num_classes"], spec["depthwise"], spec["act"], size=256,
                                input_order="rgb", bn_eps=GOLDEN_BN_EPS)
    return build_imported(cfg, tensors).eval()


def test_golden_network_detect_reproduces_dets_txt() -> None:
    net = _golden_net()
    x = torch.from_numpy(np.load(GOLDEN / "input.npy"))[None] / 255
    ref = np.loadtxt(GOLDEN / "dets.txt", ndmin=2)
    with torch.no_grad():
        decoded = net.forward_layers(x)[net.heads[0]][0].numpy()
        (rows,) = net.detect(x, (256, 256), thresh=0.29600000381469727, nms=0.45)
    want = np.load(GOLDEN / "forward.npz")["decoded"]
    assert np.abs(decoded - want).max() <= 1e-3 * np.abs(want).max()
    assert len(rows) == len(ref)
    got = np.array([[r.class_id, r.prob, r.objectness, r.x - r.w / 2, r.y - r.h / 2,
                     r.x + r.w / 2, r.y + r.h / 2] for r in rows])
    got[:, 3:] *= 256
    for x1, y1, x2, y2, obj, cls_conf, cls in ref:
        match = (got[:, 0] == cls) & (np.abs(got[:, 3:] - [x1, y1, x2, y2]).max(1) <= 1e-3 * 256)
        match &= np.abs(got[:, 1] - obj * cls_conf) <= 2e-3
        assert match.any() and abs(got[np.argmax(match), 2] - obj) <= 2e-3


@pytest.mark.parametrize("part", ["no_l1", "l1"])
def test_golden_compute_loss(part: str) -> None:
    if not (GOLDEN / "train.npz").is_file():
        pytest.skip(f"{GOLDEN} not found: YOLOX golden data is only beside a development checkout")
    net = _golden_net()
    head = net.layers[net.heads[0]]
    head.use_l1 = part == "l1"
    train = np.load(GOLDEN / "train.npz")
    names = ("reg_preds", "obj_preds", "cls_preds")
    levels = [torch.from_numpy(np.concatenate([train[f"{part}/out/{n}/{k}"] for n in names], 1))
              .requires_grad_() for k in range(3)]
    labels = torch.from_numpy(train["labels"])
    truth = torch.cat([labels[..., 1:5] / 256, labels[..., 0:1]], -1)
    terms = net.compute_loss({net.heads[0]: levels}, truth)
    terms.total.backward()
    ref = train[f"{part}/loss"]
    assert float(terms.total.detach()) == pytest.approx(ref[0], rel=1e-4)
    assert terms.costs[net.heads[0]] == pytest.approx(tuple(ref.tolist()), rel=1e-4)
    stats = terms.stats[net.heads[0]]
    assert stats.iou_loss == pytest.approx(ref[1], rel=1e-4)
    assert stats.class_loss == pytest.approx(ref[3], rel=1e-4)
    for k, level in enumerate(levels):
        assert level.grad is not None
        grad = np.concatenate([train[f"{part}/grad/{n}/{k}"] for n in names], 1)
        assert np.abs(level.grad.numpy() - grad).max() <= 1e-4 * np.abs(grad).max()


def test_onnx_export_gives_the_decoded_head_and_candidates(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    net = _net()
    path = export_onnx(net, tmp_path / "yolox.onnx", with_decode=True, dynamic_batch=True)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = dict(zip(output_names(net, with_decode=True), session.run(None, {"images": x.numpy()}),
                   strict=True))
    with torch.no_grad():
        decoded = net(x)[0]
    np.testing.assert_allclose(got["head_10"], decoded.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got["boxes"], decoded[..., :4].numpy() / 64, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["objectness"], decoded[..., 4].numpy(), rtol=1e-4, atol=1e-6)
    scores = (decoded[..., 4:5] * decoded[..., 5:]).numpy()
    np.testing.assert_allclose(got["scores"], scores, rtol=1e-4, atol=1e-6)
