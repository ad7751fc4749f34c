"""[yolo], [Gaussian_yolo] and [region]: options, validation, forward against darknet's buffers."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from darknetpy.model.cfg import CfgWarning, Section, parse_cfg, read_cfg
from darknetpy.errors import CfgError
from darknetpy.model.build import build_layer
from darknetpy.model.layers.base import BuildContext, DarknetLayer, Shape
from darknetpy.model.heads.darknet_head import read_class_map
from darknetpy.model.heads.gaussian_yolo import GaussianYoloLayer
from darknetpy.model.heads.options import FLT_MAX, IouLoss, NmsKind, YoloPoint
from darknetpy.model.heads.region import RegionLayer, read_tree
from darknetpy.model.heads.yolo import YoloLayer
from darknetpy.model.netconfig import NetConfig

from .conftest import GOLDEN, golden_networks, require_shared

HEAD_NAMES = ("yolo", "Gaussian_yolo", "region")
NET = NetConfig(width=64, height=64, channels=3)


def head_section(text: str) -> Section:
    return parse_cfg(text, "head.cfg")[0]


def build_head(
    section: Section, shape: Shape, *, index: int = 1, strict: bool = True, net: NetConfig = NET
) -> DarknetLayer:
    """Build one head as layer ``index`` after a stub layer giving ``shape``."""
    above = Section("convolutional", (), Path("head.cfg"), 1)
    stub = DarknetLayer(above, index - 1, (index - 2,), shape, shape)
    ctx = BuildContext(index, net, Shape(3, net.height, net.width), tuple([stub] * index))
    return build_layer(section, ctx, strict=strict)


YOLO = """[yolo]
mask = 1,2
anchors = 10,14, 23,27, 37,58
classes=2
num=3
"""


# ---- options ----
def test_yolo_defaults_are_darknets() -> None:
    layer = build_head(head_section(YOLO), Shape(14, 4, 4))
    assert isinstance(layer, YoloLayer)
    o = layer.options
    assert (o.classes, o.total, o.mask, o.num) == (2, 3, (1, 2), 2)
    assert o.anchors == ((10, 14), (23, 27), (37, 58))
    assert o.masked_anchors == ((23, 27), (37, 58))
    assert o.iou_normalizer == 0.75 and o.obj_normalizer == 1 and o.cls_normalizer == 1
    assert o.max_delta == FLT_MAX and o.iou_loss is IouLoss.MSE and o.iou_thresh_kind is IouLoss.IOU
    assert o.nms_kind is NmsKind.DEFAULT and o.beta_nms == pytest.approx(0.6)
    assert (o.ignore_thresh, o.truth_thresh, o.iou_thresh) == (0.5, 1.0, 1.0)
    assert (o.jitter, o.resize, o.random, o.max_boxes) == (pytest.approx(0.2), 1.0, 0.0, 200)
    assert o.scale_x_y == 1 and not o.new_coords and o.show_details == 1
    assert o.counters_per_class is None and o.classes_multipliers is None and o.map is None
    assert layer.out_shape == layer.in_shape == Shape(14, 4, 4)
    assert layer.sources == (0,) and layer.darknet_name == "yolo"


def test_mask_defaults_to_every_anchor() -> None:
    layer = build_head(head_section("[yolo]\nclasses=1\nnum=2\nanchors=1,2,3,4\n"), Shape(12, 2, 2))
    assert layer.options.mask == (0, 1)


def test_every_key_darknet_reads_is_used() -> None:
    text = YOLO + (
        "max=90\njitter=.3\nresize=1.5\nrandom=1\nignore_thresh=.7\ntruth_thresh=1\niou_thresh=0.213\n"
        "iou_thresh_kind=ciou\niou_loss=ciou\niou_normalizer=0.07\nobj_normalizer=2\ncls_normalizer=0.5\n"
        "delta_normalizer=3\nmax_delta=5\ncounters_per_class=10,5\nlabel_smooth_eps=0.1\nfocal_loss=1\n"
        "scale_x_y=1.05\nnew_coords=1\nobjectness_smooth=1\nbeta_nms=0.5\nnms_kind=diounms\n"
        "map=data/coco9k.map\nshow_details=0\nembedding_layer=-4\ntrack_history_size=20\nsim_thresh=0.7\n"
        "dets_for_track=8\ndets_for_show=2\ntrack_ciou_norm=0.2\n"
    )
    o = build_head(
        head_section(text), Shape(14, 4, 4), strict=True
    ).options  # strict: no unused key
    assert o.iou_loss is IouLoss.CIOU and o.iou_thresh_kind is IouLoss.CIOU
    assert o.nms_kind is NmsKind.DIOU and o.beta_nms == pytest.approx(0.5)
    assert o.new_coords and o.objectness_smooth and o.focal_loss and o.show_details == 0
    assert o.random == 1 and o.max_boxes == 90 and o.map == Path("data/coco9k.map")
    assert o.scale_x_y == np.float32(1.05)  # kept as darknet's float
    assert o.counters_per_class == (10, 5) and o.classes_multipliers == (1.0, 2.0)


def test_classes_multipliers_cap_and_floor() -> None:
    text = (
        YOLO.replace("classes=2", "classes=3").replace("mask = 1,2", "mask=1")
        + "counters_per_class=10,0,5\nmax_delta=1.5\n"
    )
    o = build_head(head_section(text), Shape(8, 2, 2)).options
    assert o.classes_multipliers == (1.0, 1.5, 1.5)  # 10/10, 10/1 capped, 10/5 capped


def test_counters_per_class_must_match_classes() -> None:
    with pytest.raises(CfgError, match="counters_per_class= has 3 values but classes=2"):
        build_head(head_section(YOLO + "counters_per_class=1,2,3\n"), Shape(14, 4, 4))


@pytest.mark.parametrize(
    ("key", "value", "listed"),
    [
        ("iou_loss", "ciuo", "ciou, diou, giou, iou, mse"),
        ("iou_thresh_kind", "mse", "ciou, diou, giou, iou"),
        ("nms_kind", "greedy", "default, diounms, greedynms"),
        ("nms_kind", "cornersnms", "default, diounms, greedynms"),  # Gaussian only
    ],
)
def test_unknown_vocabulary_is_an_error_listing_the_table(
    key: str, value: str, listed: str
) -> None:
    with pytest.raises(
        CfgError, match=f"head.cfg:6 \\[yolo\\]: {key}='{value}' is not one of {listed}"
    ):
        build_head(head_section(YOLO + f"{key}={value}\n"), Shape(14, 4, 4))
    with pytest.raises(CfgError, match="darknet would silently use"):
        build_head(head_section(YOLO + f"{key}={value}\n"), Shape(14, 4, 4))


def test_mask_outside_num_is_an_error() -> None:
    with pytest.raises(CfgError, match=r"head.cfg:2 \[yolo\]: mask=1,3 uses anchor 3, but num=3"):
        build_head(head_section(YOLO.replace("mask = 1,2", "mask=1,3")), Shape(14, 4, 4))


@pytest.mark.parametrize(
    "text", [YOLO.replace("num=3", "num=99999999"), YOLO.replace("classes=2", "classes=0")]
)
def test_absurd_counts_are_errors_not_allocations(text: str) -> None:
    with pytest.raises(CfgError, match=r"(implausibly large|must be at least 1)"):
        build_head(head_section(text), Shape(14, 4, 4))


def test_wrong_filters_names_both_sections() -> None:
    with pytest.raises(CfgError) as info:
        build_head(head_section(YOLO), Shape(16, 4, 4), index=3)
    message = str(info.value)
    assert message.startswith(
        "head.cfg:1 [yolo]: classes=2 with 2 masks (2*(2+5)) needs filters=14"
    )
    assert "layer 2 (head.cfg:1 [convolutional])" in message and "gives 16 channels" in message


def test_anchor_count_mismatch_warns_and_pads_like_darknet() -> None:
    with pytest.warns(CfgWarning, match="anchors= has 4 values but num=3 needs 6"):
        o = build_head(
            head_section(YOLO.replace("10,14, 23,27, 37,58", "10,14,23,27")),
            Shape(14, 4, 4),
            strict=False,
        ).options
    assert o.anchors == ((10, 14), (23, 27), (0.5, 0.5))
    with pytest.warns(CfgWarning, match="darknet reads only the first 6"):
        o = build_head(
            head_section(YOLO.replace("37,58", "37,58,1,2")), Shape(14, 4, 4), strict=False
        ).options
    assert len(o.anchors) == 3


GAUSSIAN = """[Gaussian_yolo]
mask = 0
anchors = 10,14, 23,27
classes=2
num=2
"""


def test_gaussian_options_and_channels() -> None:
    text = GAUSSIAN + "uc_normalizer=0.07\nyolo_point=left_top\nnms_kind=cornersnms\n"
    layer = build_head(head_section(text), Shape(11, 3, 3))
    assert isinstance(layer, GaussianYoloLayer) and layer.darknet_name == "Gaussian_yolo"
    o = layer.options
    assert o.entries == 11 and o.uc_normalizer == np.float32(0.07)
    assert o.yolo_point is YoloPoint.LEFT_TOP and o.nms_kind is NmsKind.CORNERS
    with pytest.raises(CfgError, match=r"needs filters=11 .* gives 14 channels"):
        build_head(head_section(GAUSSIAN), Shape(14, 3, 3))
    with pytest.raises(CfgError, match="yolo_point='middle' is not one of"):
        build_head(head_section(GAUSSIAN + "yolo_point=middle\n"), Shape(11, 3, 3))
    with pytest.raises(CfgError, match="writes past its anchor buffer"):
        build_head(head_section(GAUSSIAN.replace("23,27", "23,27,5,5")), Shape(11, 3, 3))


def test_gaussian_does_not_read_yolo_only_keys() -> None:
    with pytest.raises(CfgError, match="unused field 'new_coords=1'"):
        build_head(head_section(GAUSSIAN + "new_coords=1\n"), Shape(11, 3, 3), strict=True)


REGION = """[region]
anchors = 0.5,1, 2,3
classes=3
coords=4
num=2
softmax=1
"""


def test_region_options_and_channels() -> None:
    text = REGION + (
        "max=30\nlog=1\nsqrt=1\nfocal_loss=1\njitter=.3\nresize=1.5\nrescore=1\nthresh=.6\n"
        "classfix=-1\nabsolute=1\nrandom=1\ncoord_scale=2\nobject_scale=5\nnoobject_scale=1\n"
        "mask_scale=1\nclass_scale=1\nbias_match=1\ntree=data/9k.tree\nmap=data/x.map\n"
    )
    layer = build_head(head_section(text), Shape(16, 3, 3), strict=True)
    assert isinstance(layer, RegionLayer)
    o = layer.options
    assert o.anchors == ((0.5, 1), (2, 3)) and o.softmax and o.rescore and o.bias_match
    assert o.classfix == -1 and o.thresh == np.float32(0.6) and o.object_scale == 5
    assert o.tree == Path("data/9k.tree") and o.max_boxes == 30
    with pytest.raises(CfgError, match=r"classes=3 with num=2 \(2\*\(4\+1\+3\)\) needs filters=16"):
        build_head(head_section(REGION), Shape(18, 3, 3))
    with pytest.raises(CfgError, match="coords=5"):
        build_head(head_section(REGION.replace("coords=4", "coords=5")), Shape(18, 3, 3))


def test_class_map_reads_like_atoi(tmp_path: Path) -> None:
    path = tmp_path / "x.map"
    path.write_text("3\n-1\n7 # seven\nx\n")
    assert read_class_map(path) == (3, -1, 7, 0)
    with pytest.raises(CfgError, match="cannot read the class map"):
        read_class_map(tmp_path / "missing.map")


# ---- forward ----
def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def test_yolo_forward_activations() -> None:
    layer = build_head(head_section(YOLO + "scale_x_y=2\n"), Shape(14, 1, 1))
    x = torch.zeros(1, 14, 1, 1)
    x[0, 0] = logit(0.75)  # slot 0 x
    x[0, 2] = 1.5  # slot 0 w: stays raw
    x[0, 5] = logit(0.25)  # slot 0 class 0
    y = layer(x)[0, :, 0, 0]
    assert y[0] == pytest.approx(2 * 0.75 - 0.5)  # s*x - (s-1)/2
    assert y[1] == pytest.approx(2 * 0.5 - 0.5)
    assert y[2] == 1.5 and y[3] == 0.0
    assert y[4] == pytest.approx(0.5) and y[5] == pytest.approx(0.25)
    assert y[7] == pytest.approx(0.5)  # slot 1 x (sigmoid 0, scaled: 0.5)


def test_yolo_forward_new_coords_only_scales() -> None:
    layer = build_head(head_section(YOLO + "new_coords=1\nscale_x_y=2\n"), Shape(14, 2, 2))
    x = torch.rand(2, 14, 2, 2)
    y = layer(x).view(2, 2, 7, 2, 2)
    v = x.view(2, 2, 7, 2, 2)
    torch.testing.assert_close(y[:, :, :2], v[:, :, :2] * 2 - 0.5)
    assert torch.equal(y[:, :, 2:], v[:, :, 2:])


def test_gaussian_forward_activations() -> None:
    layer = build_head(head_section(GAUSSIAN + "scale_x_y=1.5\n"), Shape(11, 1, 2))
    x = torch.randn(1, 11, 1, 2)
    y = layer(x)
    s = torch.sigmoid(x)
    beta = -0.5 * (1.5 - 1)
    torch.testing.assert_close(y[:, 0], s[:, 0] * 1.5 + beta)
    torch.testing.assert_close(y[:, 2], s[:, 2] * 1.5 + beta)
    for c in (1, 3, 5, 7, 8, 9, 10):
        torch.testing.assert_close(y[:, c], s[:, c])
    for c in (4, 6):
        assert torch.equal(y[:, c], x[:, c])


def test_region_forward_is_darknets_flattened_buffer() -> None:
    layer = build_head(head_section(REGION), Shape(16, 2, 3))
    x = torch.randn(2, 16, 2, 3)
    y = layer(x)
    assert y.shape == x.shape
    flat = y.reshape(2, -1)
    size, num, cells = 8, 2, 6
    for b in range(2):
        for cell in range(cells):
            for n in range(num):
                base = size * (cell * num + n)
                raw = x[b].reshape(16, cells)[n * size : (n + 1) * size, cell]
                got = flat[b, base : base + size]
                torch.testing.assert_close(got[:4], raw[:4])
                torch.testing.assert_close(got[4], torch.sigmoid(raw[4]))
                torch.testing.assert_close(got[5:], torch.softmax(raw[5:], 0))


def test_region_softmax_tree(tmp_path: Path) -> None:
    tree_path = tmp_path / "t.tree"
    tree_path.write_text("animal -1\nthing -1\ndog 0\ncat 0\nbird 0\n")
    tree = read_tree(tree_path)
    assert tree.parent == (-1, -1, 0, 0, 0) and tree.depth == (0, 0, 1, 1, 1)
    assert tree.group[0] == tree.group[1] != tree.group[2] == tree.group[4]
    text = REGION.replace("classes=3", "classes=5") + f"tree={tree_path}\n"
    layer = build_head(head_section(text), Shape(20, 1, 1))
    x = torch.randn(1, 20, 1, 1)
    y = layer(x).reshape(2, 10)
    raw = x.reshape(2, 10)
    torch.testing.assert_close(y[:, 5:7], torch.softmax(raw[:, 5:7], -1))
    torch.testing.assert_close(y[:, 7:], torch.softmax(raw[:, 7:], -1))
    bad = REGION + f"tree={tmp_path / 'missing.tree'}\n"
    layer = build_head(head_section(bad), Shape(16, 1, 1))  # darknetpy reads the tree on first use
    with pytest.raises(CfgError, match="cannot read the softmax tree file"):
        layer(torch.zeros(1, 16, 1, 1))


def golden_heads() -> list[tuple[str, int, str]]:
    out = []
    for name in golden_networks():
        if not (GOLDEN / name / "train.npz").is_file():
            continue
        for index, section in enumerate(read_cfg(GOLDEN / name / "net.cfg")[1:]):
            if section.name in HEAD_NAMES:
                out.append((name, index, section.name))
    return out


@pytest.mark.parametrize(
    ("name", "index", "kind"),
    golden_heads()
    or [pytest.param("-", 0, "-", marks=pytest.mark.skip(reason="../shared not found"))],
)
def test_head_forward_equals_darknet_given_its_exact_input(
    name: str, index: int, kind: str
) -> None:
    """train.npz holds the tensor entering each head and darknet's l.output for it (the head's
    forward is the same in training and inference mode)."""
    require_shared()
    section = read_cfg(GOLDEN / name / "net.cfg")[1 + index]
    data = np.load(GOLDEN / name / "train.npz")
    inp, expected = data[f"{index}:input"], data[f"{index}:output"]
    golden_shape = np.load(GOLDEN / name / "forward.npz")[f"{index}:{kind}/shape"]
    c, h, w = (int(v) for v in golden_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CfgWarning)  # e.g. yolov4-sam's uc_normalizer in [yolo]
        layer = build_head(section, Shape(c, h, w), index=index, strict=False)
    got = layer(torch.from_numpy(inp).reshape(-1, c, h, w)).numpy().reshape(expected.shape)
    err = np.abs(got - expected).max()
    assert err <= 1e-6 * max(1.0, float(np.abs(expected).max())), f"max |diff| {err}"
