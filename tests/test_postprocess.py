"""darknetpy.inference.postprocess: decoding, letterbox correction and NMS against darknet's detections."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from darknetpy.inference import postprocess as pp
from darknetpy.model.boxes import box_iou
from darknetpy.model.cfg import CfgWarning, Options, Section, parse_cfg, read_cfg
from darknetpy.errors import CfgError, UsageError
from darknetpy.model.build import build_layer
from darknetpy.model.layers.base import BuildContext, DarknetLayer, Shape
from darknetpy.model.heads.options import NmsKind
from darknetpy.model.netconfig import NetConfig, parse_net_options

from .conftest import GOLDEN, detection_networks, require_shared

HEAD_NAMES = ("yolo", "Gaussian_yolo", "region")
NET = NetConfig(width=64, height=64, channels=3)


# ---- helpers ----
def build_head(
    section: Section, shape: Shape, *, index: int = 1, net: NetConfig = NET
) -> DarknetLayer:
    above = Section("convolutional", (), Path("head.cfg"), 1)
    stub = DarknetLayer(above, index - 1, (index - 2,), shape, shape)
    ctx = BuildContext(index, net, Shape(3, net.height, net.width), tuple([stub] * index))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CfgWarning)
        return build_layer(section, ctx)


def head(text: str, shape: Shape, **kwargs: object) -> DarknetLayer:
    return build_head(parse_cfg(text, "head.cfg")[0], shape, **kwargs)  # type: ignore[arg-type]


def read_dets(path: Path) -> tuple[dict[str, float], list[tuple[float, ...]]]:
    """dets.txt: ``# image W H thresh T nms N letter_box L``, rows ``class prob x y w h obj``."""
    lines = path.read_text().splitlines()
    m = re.match(r"# image (\d+) (\d+) thresh ([\d.]+) nms ([\d.]+) letter_box (\d)", lines[0])
    assert m, lines[0]
    header = dict(
        w=int(m[1]), h=int(m[2]), thresh=float(m[3]), nms=float(m[4]), letter_box=int(m[5])
    )
    rows = [
        tuple(float(v) for v in line.split())
        for line in lines[1:]
        if line.strip() and not line.startswith("#")
    ]
    return header, rows


def _close(mine: float, darknet: float) -> bool:
    if math.isinf(darknet) or math.isinf(mine):
        return mine == darknet
    return abs(mine - darknet) <= 2e-3 + 2e-3 * abs(darknet)


def match_rows(
    darknet: list[tuple[float, ...]], mine: list[tuple[float, ...]], thresh: float
) -> tuple[list[tuple[float, ...]], list[tuple[float, ...]], int]:
    """The README's detection rule: each darknet row matched to one unused row of ours of the same
    class, x, y, w, h within 2e-3 + 2e-3|v| and prob within 2e-3. Returns the unmatched rows on each
    side that are NOT excused (excused: prob within 5e-3 of the threshold) and the matched count."""
    used = [False] * len(mine)
    missing = []
    for row in darknet:
        for j, cand in enumerate(mine):
            if (
                not used[j]
                and int(cand[0]) == int(row[0])
                and abs(cand[1] - row[1]) <= 2e-3
                and all(_close(a, b) for a, b in zip(cand[2:6], row[2:6]))
            ):
                used[j] = True
                break
        else:
            missing.append(row)
    extra = [row for j, row in enumerate(mine) if not used[j]]

    def excused(row: tuple[float, ...]) -> bool:
        return abs(row[1] - thresh) <= 5e-3

    return ([r for r in missing if not excused(r)], [r for r in extra if not excused(r)], sum(used))


def golden_heads(name: str) -> tuple[NetConfig, list[DarknetLayer], list[torch.Tensor]]:
    """The heads of a golden network, built alone, and darknet's output buffers for them."""
    sections = read_cfg(GOLDEN / name / "net.cfg")
    net = parse_net_options(Options(sections[0]))
    forward = np.load(GOLDEN / name / "forward.npz")
    heads, outputs = [], []
    for index, section in enumerate(sections[1:]):
        if section.name in HEAD_NAMES:
            full = forward[f"{index}:{section.name}/full"]
            heads.append(build_head(section, Shape(*full.shape), index=index, net=net))
            outputs.append(torch.from_numpy(full)[None])
    return net, heads, outputs


NETWORKS = detection_networks() or [
    pytest.param("-", marks=pytest.mark.skip(reason="no ../shared"))
]


# ---- parity with darknet ----
@pytest.mark.parametrize("name", NETWORKS)
def test_decode_and_nms_of_darknet_buffers_reproduce_dets_txt(name: str) -> None:
    """get_network_boxes + NMS on darknet's own head outputs: same rows, same order."""
    require_shared()
    header, darknet = read_dets(GOLDEN / name / "dets.txt")
    net, heads, outputs = golden_heads(name)
    dets = pp.get_network_boxes(
        heads,
        outputs,
        (header["w"], header["h"]),
        (net.width, net.height),
        thresh=header["thresh"],
        letter_box=bool(header["letter_box"]),
    )
    kind, beta = pp.nms_settings(heads)
    rows = pp.apply_nms(dets[0], header["nms"], kind, beta).rows(header["thresh"])
    missing, extra, matched = match_rows(darknet, rows, header["thresh"])
    assert not missing and not extra, f"{matched} matched, missing {missing[:3]}, extra {extra[:3]}"
    # darknet's final array order (stable per-class sorts) is reproduced too, row for row
    assert len(rows) == len(darknet)
    for ours, theirs in zip(rows, darknet):
        assert int(ours[0]) == int(theirs[0]) and abs(ours[1] - theirs[1]) <= 2e-3
        assert all(_close(a, b) for a, b in zip(ours[2:6], theirs[2:6]))


def test_row_matcher_rejects_a_wrong_probability_or_box() -> None:
    darknet = [(1.0, 0.8, 0.5, 0.5, 0.1, 0.2, 0.9)]
    assert match_rows(darknet, [(1, 0.8005, 0.5005, 0.5, 0.1, 0.2, 0.9)], 0.5)[:2] == ([], [])
    assert match_rows(darknet, [(1, 0.81, 0.5, 0.5, 0.1, 0.2, 0.9)], 0.5)[0] == darknet
    assert match_rows(darknet, [(0, 0.8, 0.5, 0.5, 0.1, 0.2, 0.9)], 0.5)[0] == darknet
    assert match_rows(darknet, [(1, 0.8, 0.5, 0.5, 0.11, 0.2, 0.9)], 0.5)[0] == darknet
    assert match_rows(darknet, [], 0.798)[0] == []  # near the threshold: may be missing


@pytest.mark.parametrize("name", NETWORKS)
def test_end_to_end_detect_matches_darknet(name: str) -> None:
    """net.cfg + net.weights on input.npy: head outputs within the README tolerance of darknet's
    buffers, then ``net.detect`` within the detection rule of dets.txt."""
    require_shared()
    from darknetpy.model.network import Network

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CfgWarning)
        net = Network.from_cfg(GOLDEN / name / "net.cfg")
    net.load_weights(GOLDEN / name / "net.weights")
    header, darknet = read_dets(GOLDEN / name / "dets.txt")
    x = torch.from_numpy(np.load(GOLDEN / name / "input.npy"))[None]
    forward = np.load(GOLDEN / name / "forward.npz")
    net.eval()
    with torch.no_grad():
        outputs = net(x)
    for index, out in zip(net.heads, outputs):
        expected = forward[f"{index}:{net.layers[index].darknet_name}/full"]
        err = np.abs(out[0].numpy().reshape(expected.shape) - expected).max()
        assert err <= 3e-3 * np.abs(expected).max() + 1e-5, f"layer {index}: max |diff| {err}"
    rows = net.detect(x, (header["w"], header["h"]), thresh=header["thresh"], nms=header["nms"])
    assert len(rows) == 1
    missing, extra, matched = match_rows(darknet, rows[0], header["thresh"])
    missing, extra, swaps = pair_nms_ties(missing, extra, header["nms"])
    assert swaps <= 2, f"{swaps} NMS tie swaps"
    assert not missing and not extra, f"{matched} matched, missing {missing[:3]}, extra {extra[:3]}"


def pair_nms_ties(
    missing: list[tuple[float, ...]], extra: list[tuple[float, ...]], nms: float
) -> tuple[list[tuple[float, ...]], list[tuple[float, ...]], int]:
    """Excuse NMS near-ties of an end-to-end run: two overlapping candidates of one class whose
    probabilities differ by less than the forward's accumulated rounding (e.g. yolov4x-mish:
    0.958990 vs 0.958988 in darknet, 0.959000 vs 0.958995 here) may survive the other way round.
    A darknet row and one of ours pair up when the class matches, the probabilities are within
    2e-3 and the boxes overlap by more than the NMS threshold. Returns what is left, and the
    number of pairs."""
    extra = list(extra)
    left = []
    for row in missing:
        for j, cand in enumerate(extra):
            iou = box_iou(np.float32(row[2:6]), np.float32(cand[2:6]))
            if int(cand[0]) == int(row[0]) and abs(cand[1] - row[1]) <= 2e-3 and iou > nms:
                del extra[j]
                break
        else:
            left.append(row)
    return left, extra, len(missing) - len(left)


# ---- decoding ----
YOLO1 = "[yolo]\nmask=0,1\nanchors=16,32, 8,8\nclasses=1\nnum=2\n"


def yolo_buffer(h: int = 2, w: int = 2, num: int = 2, classes: int = 1) -> torch.Tensor:
    out = torch.zeros(1, num * (5 + classes), h, w)
    return out


def test_decode_yolo_hand_computed() -> None:
    layer = head(YOLO1, Shape(12, 2, 2))
    out = yolo_buffer()
    v = out.view(2, 6, 2, 2)  # (slot, entry, row, col)
    v[0, :, 1, 0] = torch.tensor([0.25, 0.75, math.log(2.0), 0.0, 0.9, 0.5])
    dets = layer.detections(out, (64, 64), thresh=0.3)[0]
    assert len(dets) == 1
    np.testing.assert_allclose(dets.boxes[0], [0.125, 0.875, 2 * 16 / 64, 32 / 64], rtol=1e-6)
    assert dets.objectness[0] == np.float32(0.9)
    assert dets.probs[0, 0] == np.float32(0.9) * np.float32(0.5)


def test_decode_yolo_order_is_rows_then_cols_then_slots() -> None:
    layer = head(YOLO1, Shape(12, 2, 2))
    out = yolo_buffer()
    v = out.view(2, 6, 2, 2)
    for slot, row, col, obj in [(1, 0, 1, 0.61), (0, 1, 0, 0.62), (0, 0, 1, 0.63), (1, 1, 1, 0.64)]:
        v[slot, 4, row, col] = obj
    dets = layer.detections(out, (64, 64), thresh=0.5)[0]
    np.testing.assert_array_equal(dets.objectness, np.float32([0.63, 0.61, 0.62, 0.64]))


def test_decode_yolo_thresholds_are_strict_and_skip_nan() -> None:
    layer = head(YOLO1, Shape(12, 2, 2))
    out = yolo_buffer()
    v = out.view(2, 6, 2, 2)
    v[0, 4, 0, 0], v[0, 5, 0, 0] = 0.5, 0.5  # prob 0.25 == thresh: zeroed
    v[0, 4, 0, 1] = 0.25  # objectness == thresh: no detection
    v[1, 4, 1, 1] = float("nan")  # NaN objectness: no detection
    dets = layer.detections(out, (64, 64), thresh=0.25)[0]
    assert len(dets) == 1 and dets.probs[0, 0] == 0


def test_decode_yolo_exp_is_double_like_darknet() -> None:
    layer = head(YOLO1, Shape(12, 1, 1))
    out = torch.zeros(1, 12, 1, 1)
    out[0, 2], out[0, 4] = 90.0, 1.0  # exp(90) overflows a float, exp(90) * 16 / 64 does not
    out[0, 8], out[0, 10] = 100.0, 1.0  # slot 1: exp(100) * 8 / 64 overflows: inf, as darknet
    dets = layer.detections(out, (64, 64), thresh=0.5)[0]
    assert dets.boxes[0, 2] == np.float32(math.exp(90) * 16 / 64)
    assert np.isinf(dets.boxes[1, 2])


def test_decode_yolo_new_coords_and_current_network_size() -> None:
    layer = head(YOLO1 + "new_coords=1\n", Shape(12, 1, 1))
    out = torch.zeros(1, 12, 1, 1)
    out[0, :5, 0, 0] = torch.tensor([0.5, 0.5, 0.5, 0.25, 0.9])
    small = layer.detections(out, (64, 64), thresh=0.5)[0]
    large = layer.detections(out, (128, 32), thresh=0.5)[0]
    np.testing.assert_allclose(small.boxes[0, 2:], [4 * 0.25 * 16 / 64, 4 * 0.0625 * 32 / 64])
    np.testing.assert_allclose(large.boxes[0, 2:], [4 * 0.25 * 16 / 128, 4 * 0.0625 * 32 / 32])


GAUSSIAN = "[Gaussian_yolo]\nmask=0\nanchors=16,32\nclasses=2\nnum=1\n"


def test_decode_gaussian_yolo_uncertainty_scales_probs() -> None:
    layer = head(GAUSSIAN + "yolo_point=left_top\n", Shape(11, 1, 2))
    out = torch.zeros(1, 11, 1, 2)
    out[0, :, 0, 1] = torch.tensor([0.5, 0.1, 0.5, 0.2, 0.0, 0.3, 0.0, 0.4, 0.8, 0.5, 0.2])
    dets = layer.detections(out, (64, 64), thresh=0.2)[0]
    assert len(dets) == 1
    bw, bh = 16 / 64, 32 / 64
    np.testing.assert_allclose(dets.boxes[0], [1.5 / 2 + bw / 2, 0.5 + bh / 2, bw, bh], rtol=1e-6)
    # prob = obj * class * (1 - mean(σ)) = 0.8 * 0.5 * 0.75; class 1: 0.8 * 0.2 * 0.75 = 0.12 <= .2
    np.testing.assert_allclose(dets.probs[0], [0.3, 0.0], rtol=1e-6)
    np.testing.assert_allclose(dets.uncertainty[0], [0.1, 0.2, 0.3, 0.4], rtol=1e-6)


REGION = "[region]\nanchors=1,2, 3,4\nclasses=2\ncoords=4\nnum=2\nsoftmax=1\n"


def test_decode_region_hand_computed() -> None:
    layer = head(REGION, Shape(14, 2, 2))
    buffer = torch.zeros(4, 2, 7)  # darknet's flattened (cell, anchor, entry) buffer
    buffer[:, :, 4] = 0.1
    buffer[2, 1] = torch.tensor([0.0, 0.0, math.log(2.0), 0.0, 0.8, 0.75, 0.25])  # row 1, col 0
    dets = layer.detections(buffer.reshape(1, 14, 2, 2), (64, 64), thresh=0.3)[0]
    assert len(dets) == 8 and np.all(dets.objectness == 1)  # every cell and anchor, objectness 1
    np.testing.assert_allclose(dets.boxes[5], [0.25, 0.75, 2 * 3 / 2, 4 / 2], rtol=1e-6)
    np.testing.assert_allclose(dets.probs[5], [0.6, 0.0], rtol=1e-6)  # 0.8*0.25 = .2 <= .3
    assert not dets.probs[:5].any() and not dets.probs[6:].any()


def test_decode_region_classfix_zeroes_low_objectness() -> None:
    layer = head(REGION + "classfix=-1\n", Shape(14, 1, 1))
    buffer = torch.tensor([[0, 0, 0, 0, 0.45, 1.0, 0.0], [0, 0, 0, 0, 0.55, 1.0, 0.0]])
    dets = layer.detections(buffer.reshape(1, 14, 1, 1), (64, 64), thresh=0.1)[0]
    np.testing.assert_allclose(dets.probs[:, 0], [0.0, 0.55])


def test_decode_region_tree_keeps_the_deepest_confident_class(tmp_path: Path) -> None:
    tree = tmp_path / "t.tree"
    tree.write_text("animal -1\nthing -1\ndog 0\ncat 0\n")
    layer = head(REGION.replace("classes=2", "classes=4") + f"tree={tree}\n", Shape(18, 1, 1))
    buffer = torch.zeros(2, 9)
    buffer[0, 4:] = torch.tensor([0.9, 0.8, 0.2, 0.7, 0.3])  # p(dog) = .7 * .8 = .56 > .5
    buffer[1, 4:] = torch.tensor([0.9, 0.6, 0.4, 0.7, 0.3])  # p(dog) = .42: falls back to animal
    dets = layer.detections(buffer.reshape(1, 18, 1, 1), (64, 64), 0.5)[0]
    np.testing.assert_allclose(dets.probs, [[0, 0, 0.56, 0], [0.6, 0, 0, 0]], rtol=1e-6)


# ---- letterbox correction ----
def test_correct_boxes_letterbox_uses_integer_new_size() -> None:
    boxes = np.float32([[0.5, 0.4, 0.2, 0.3]])
    # 1000x333 into 416x416: new_h = 333*416 // 1000 = 138 (not 138.528), offset (416-138)/2
    out = pp.correct_yolo_boxes(boxes, (1000, 333), (416, 416), letter_box=True)
    np.testing.assert_allclose(
        out[0], [0.5, (0.4 * 416 - 139) / 138, 0.2, 0.3 * 416 / 138], rtol=1e-6
    )
    # 576x768 (portrait) into 416x416: new_w = 576*416 // 768 = 312
    out = pp.correct_yolo_boxes(boxes, (576, 768), (416, 416), letter_box=True)
    np.testing.assert_allclose(
        out[0], [(0.5 * 416 - 52) / 312, 0.4, 0.2 * 416 / 312, 0.3], rtol=1e-6
    )


def test_correct_boxes_without_letterbox_is_identity_and_relative_0_gives_pixels() -> None:
    boxes = np.float32([[0.5, 0.4, 0.2, 0.3]])
    np.testing.assert_array_equal(
        pp.correct_yolo_boxes(boxes, (1000, 333), (416, 416), False), boxes
    )
    pixels = pp.correct_yolo_boxes(boxes, (1000, 333), (416, 416), False, relative=False)
    np.testing.assert_allclose(pixels[0], [500, 133.2, 200, 99.9], rtol=1e-6)


def test_get_network_boxes_per_image_sizes_and_class_check() -> None:
    layer = head(YOLO1, Shape(12, 1, 1))
    out = torch.zeros(2, 12, 1, 1)
    out[:, 4], out[:, 5] = 0.9, 1.0
    dets = pp.get_network_boxes(
        [layer], [out], [(100, 50), (50, 100)], (64, 64), 0.5, letter_box=True
    )
    assert [len(d) for d in dets] == [1, 1]
    assert dets[0].boxes[0, 3] == pytest.approx(0.5 * 2)  # the 100x50 image filled half the height
    assert dets[1].boxes[0, 2] == pytest.approx(0.25 * 2)
    with pytest.raises(UsageError, match="2 image sizes for a batch of 1"):
        pp.get_network_boxes([layer], [out[:1]], [(1, 1), (2, 2)], (64, 64))
    other = head(YOLO1.replace("classes=1", "classes=2"), Shape(14, 1, 1), index=3)
    with pytest.raises(CfgError, match="detection layers disagree on classes="):
        pp.get_network_boxes([layer, other], [out, torch.zeros(2, 14, 1, 1)], (1, 1), (64, 64))


# ---- NMS ----
def make_dets(
    boxes: list[list[float]], probs: list[list[float]], objectness: list[float] | None = None
) -> pp.Detections:
    obj = np.float32(objectness if objectness is not None else [1.0] * len(boxes))
    return pp.Detections(np.float32(boxes), obj, np.float32(probs))


# two 3x1 boxes shifted by 1: I = 2, U = 4, IoU exactly 0.5
PAIR = [[1.5, 0.5, 3, 1], [2.5, 0.5, 3, 1]]


def test_nms_suppression_is_strictly_greater() -> None:
    dets = make_dets(PAIR, [[0.9], [0.8]])
    kept = pp.do_nms_sort(dets, 0.5)
    np.testing.assert_array_equal(kept.probs[:, 0], np.float32([0.9, 0.8]))  # IoU == thresh: kept
    cut = pp.do_nms_sort(dets, 0.45)
    np.testing.assert_array_equal(cut.probs[:, 0], np.float32([0.9, 0]))
    assert len(cut) == 2  # probabilities are zeroed, nothing is removed


def test_nms_is_per_class_and_suppressed_boxes_do_not_suppress() -> None:
    boxes = [
        [1.0, 0.5, 2, 1],
        [1.6, 0.5, 2, 1],
        [2.2, 0.5, 2, 1],
    ]  # IoU(0,1)=IoU(1,2)=.538, (0,2)=.25
    dets = make_dets(boxes, [[0.9, 0.1], [0.8, 0.7], [0.7, 0.0]])
    out = pp.do_nms_sort(dets, 0.45)
    by_box = {tuple(b): p for b, p in zip(out.boxes.tolist(), out.probs.tolist())}
    assert by_box[(1.0, 0.5, 2.0, 1.0)] == pytest.approx([0.9, 0.0])  # loses class 1 to box 1
    assert by_box[(1.600000023841858, 0.5, 2.0, 1.0)] == pytest.approx([0.0, 0.7])  # wins class 1
    assert by_box[(2.200000047683716, 0.5, 2.0, 1.0)] == pytest.approx([0.7, 0.0])  # chain broken


def test_nms_ties_follow_darknets_stable_sorts_across_classes() -> None:
    same = [0.5, 0.5, 1, 1]
    # class 0 sorts the array to [1, 2, 0]; the class-1 tie keeps that order, so detection 1 wins
    dets = make_dets([same, same, same], [[0.3, 0.6], [0.9, 0.6], [0.5, 0.6]])
    out = pp.do_nms_sort(dets, 0.45)
    np.testing.assert_array_equal(out.probs, np.float32([[0.9, 0.6], [0, 0], [0, 0]]))


def test_nms_moves_zero_objectness_to_the_end_with_darknets_swaps() -> None:
    same = [0.5, 0.5, 1, 1]
    # objectness [0, 1, 1]: the C loop swaps 0 with 2 giving [2, 1, 0]; the tie then favours 2
    dets = make_dets([same, same, same], [[0.0], [0.6], [0.6]], objectness=[0.0, 1.0, 1.0])
    out = pp.do_nms_sort(dets, 0.45)
    np.testing.assert_array_equal(out.objectness, np.float32([1, 1, 0]))
    np.testing.assert_array_equal(out.probs[:, 0], np.float32([0.6, 0, 0]))


# a = (0.5, 0.5, 1, 1), b shifted by 0.1: IoU = .9/1.1 = .818; d²/c² = .01/2.21
NEAR = [[0.5, 0.5, 1, 1], [0.6, 0.5, 1, 1]]


@pytest.mark.parametrize(
    ("kind", "beta", "suppressed"),
    [
        (NmsKind.GREEDY, 5.0, False),  # .818 - (.01/2.21)**0.6 = .779: beta_nms is ignored
        (NmsKind.DIOU, 1.0, True),  # .818 - .01/2.21 = .814
        (NmsKind.DIOU, 0.3, False),  # .818 - (.01/2.21)**.3 = .618
        (NmsKind.CORNERS, 0.6, True),  # plain IoU .818
    ],
)
def test_diounms_variants(kind: NmsKind, beta: float, suppressed: bool) -> None:
    dets = make_dets(NEAR, [[0.9], [0.8]])
    out = pp.diounms_sort(dets, 0.8, kind, beta)
    assert bool(out.probs[1, 0] == 0) is suppressed
    assert out.probs[0, 0] == np.float32(0.9)


def test_apply_nms_dispatch_and_last_head_settings() -> None:
    dets = make_dets(NEAR, [[0.9], [0.8]])
    assert pp.apply_nms(dets, 0.8).probs[1, 0] == 0  # default: IoU .818 > .8
    assert pp.apply_nms(dets, 0.8, NmsKind.GREEDY).probs[1, 0] != 0
    first = head(YOLO1 + "nms_kind=greedynms\n", Shape(12, 1, 1))
    last = head(YOLO1 + "nms_kind=diounms\nbeta_nms=0.3\n", Shape(12, 1, 1), index=3)
    kind, beta = pp.nms_settings([first, last])
    assert kind is NmsKind.DIOU and beta == pytest.approx(0.3)
    assert pp.nms_settings([head(REGION, Shape(14, 1, 1))]) == (NmsKind.DEFAULT, 0.6)


def test_nms_obj_is_class_agnostic() -> None:
    dets = make_dets(PAIR, [[0.0, 0.5], [0.7, 0.0]], objectness=[0.6, 0.9])
    out = pp.do_nms_obj(dets, 0.45)
    np.testing.assert_array_equal(out.objectness, np.float32([0.9, 0]))  # sorted by objectness
    np.testing.assert_array_equal(out.probs, np.float32([[0.7, 0], [0, 0]]))


def test_nms_handles_many_candidates(rng: np.random.Generator) -> None:
    """The row-wise path (> 2048 candidates) agrees with the matrix path on a subset."""
    n = 2100
    centres = rng.uniform(0, 1, (n, 2))
    boxes = np.concatenate([centres, rng.uniform(0.01, 0.1, (n, 2))], 1).astype(np.float32)
    probs = rng.uniform(0.3, 1, (n, 1)).astype(np.float32)
    dets = pp.Detections(boxes, np.ones(n, np.float32), probs)
    big = pp.do_nms_sort(dets, 0.45)
    sub = pp.do_nms_sort(dets.take(np.arange(2000)), 0.45)
    assert 0 < np.count_nonzero(big.probs) < n
    kept_big = {tuple(b) for b, p in zip(big.boxes.tolist(), big.probs[:, 0]) if p > 0}
    kept_sub = {tuple(b) for b, p in zip(sub.boxes.tolist(), sub.probs[:, 0]) if p > 0}
    # adding boxes can only change survivors that overlap one of the 100 new boxes
    new = {tuple(b) for b in boxes[2000:].tolist()}
    assert len(kept_sub ^ (kept_big - new)) < 100


# ---- the Network entry point ----
class Identity(DarknetLayer):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def tiny_network(letter_box: bool = False):
    from darknetpy.model.network import Network

    sections = parse_cfg(
        f"[net]\nwidth=2\nheight=1\nchannels=12\nletter_box={int(letter_box)}\n[empty]\n" + YOLO1,
        "tiny.cfg",
    )
    net = parse_net_options(Options(sections[0]))
    shape = Shape(12, 1, 2)
    stub = Identity(sections[1], 0, (-1,), shape, shape)
    ctx = BuildContext(1, net, shape, (stub,))
    yolo = build_layer(sections[2], ctx)
    return Network(net, [stub, yolo], sections)


def test_detect_rows_and_modes() -> None:
    net = tiny_network().train()
    x = torch.full((1, 12, 1, 2), -10.0)
    x[0, 0:2, 0, 1] = 0.0  # slot 0 at col 1: x = y = sigmoid(0) = .5
    x[0, 2, 0, 1] = math.log(2.0)  # w = 2 * 16 / net width
    x[0, 3, 0, 1] = 0.0  # h = 32 / net height
    x[0, 4, 0, 1] = x[0, 5, 0, 1] = 10.0  # objectness and class ~ 1
    rows = net.detect(x, (200, 100), thresh=0.5)
    assert net.training  # detect runs in eval mode and restores the mode
    assert len(rows) == 1 and len(rows[0]) == 1
    cls, prob, bx, by, bw, bh, obj = rows[0][0]
    assert cls == 0 and prob == pytest.approx(1.0, abs=1e-4) and obj == pytest.approx(1.0, abs=1e-4)
    # network input is the tensor's own size (2 x 1): anchors 16x32 divide by it
    assert (bx, by, bw, bh) == pytest.approx((0.75, 0.5, 16.0, 32.0))
    both = net.detect(torch.cat([x, x]), [(200, 100), (100, 200)], thresh=0.5)
    assert [len(r) for r in both] == [1, 1]
    dets = pp.detections(net, x[0], (200, 100), thresh=0.5)
    assert dets[0][0].best_class == 0 and dets[0][0].probs.shape == (1,)


def test_detect_letter_box_defaults_to_the_cfg() -> None:
    x = torch.full((1, 12, 2, 4), -10.0)  # network input 4 x 2: a 200 x 400 image fills 1 x 2
    x[0, 4, 0, 0] = x[0, 5, 0, 0] = 10.0
    plain = tiny_network(False).detect(x, (200, 400), thresh=0.5)[0][0]
    boxed = tiny_network(True).detect(x, (200, 400), thresh=0.5)[0][0]
    forced = tiny_network(False).detect(x, (200, 400), thresh=0.5, letter_box=True)[0][0]
    assert boxed == forced and boxed != plain
