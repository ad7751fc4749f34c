"""darknetpy.model.heads.options: the records of [yolo] / [Gaussian_yolo] share one base and
one parsing step."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from darknetpy.model.cfg import Options, parse_cfg
from darknetpy.errors import CfgError
from darknetpy.model.heads.options import (
    BaseYoloOptions,
    GaussianYoloOptions,
    IouLoss,
    NmsKind,
    YoloOptions,
    YoloPoint,
    parse_gaussian_yolo_options,
    parse_yolo_options,
)


def names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_each_record_adds_only_its_own_keys() -> None:
    # the loss reads focal_loss/new_coords/show_details/uc_normalizer/yolo_point with getattr
    # defaults, so a head must not gain the other head's keys
    assert names(YoloOptions) - names(BaseYoloOptions) == {"focal_loss", "new_coords",
                                                            "show_details"}
    assert names(GaussianYoloOptions) - names(BaseYoloOptions) == {"uc_normalizer", "yolo_point"}
    assert not issubclass(YoloOptions, GaussianYoloOptions)
    assert not issubclass(GaussianYoloOptions, YoloOptions)
    assert YoloOptions() != GaussianYoloOptions()


# every shared key away from its default
SHARED = """classes=2
num=3
mask=0,2
anchors=10,14, 23,27, 37,58
max=50
jitter=.3
resize=1.5
random=1
ignore_thresh=.7
truth_thresh=.9
iou_thresh=.2
iou_thresh_kind=giou
iou_loss=ciou
iou_normalizer=.07
obj_normalizer=2
cls_normalizer=3
delta_normalizer=4
max_delta=5
counters_per_class=1,2
label_smooth_eps=.1
scale_x_y=1.05
objectness_smooth=1
beta_nms=.5
nms_kind=diounms
map=m.txt
"""


def test_shared_keys_parse_alike_for_both_heads() -> None:
    yolo_section, gaussian_section = parse_cfg(
        f"[yolo]\n{SHARED}new_coords=1\n[Gaussian_yolo]\n{SHARED}yolo_point=left_top\n", "h.cfg"
    )
    yolo = parse_yolo_options(Options(yolo_section))
    gaussian = parse_gaussian_yolo_options(Options(gaussian_section))
    default = BaseYoloOptions()
    for name in names(BaseYoloOptions):
        assert getattr(yolo, name) == getattr(gaussian, name), name
        assert getattr(yolo, name) != getattr(default, name), name
    assert (yolo.mask, yolo.total, yolo.map) == ((0, 2), 3, Path("m.txt"))
    assert (yolo.iou_thresh_kind, yolo.iou_loss, yolo.nms_kind) == (
        IouLoss.GIOU, IouLoss.CIOU, NmsKind.DIOU)
    assert yolo.masked_anchors == ((10.0, 14.0), (37.0, 58.0))
    assert (yolo.entries, gaussian.entries) == (2 + 5, 2 + 9)
    assert yolo.new_coords and gaussian.yolo_point is YoloPoint.LEFT_TOP
    assert yolo.classes_multipliers == gaussian.classes_multipliers == (2.0, 1.0)


@pytest.mark.parametrize("head, message", [
    ("yolo", "h.cfg:3 [yolo]: "),
    ("Gaussian_yolo", "h.cfg:3 [Gaussian_yolo]: "),
])
def test_shared_errors_name_the_section(head, message) -> None:
    (section,) = parse_cfg(f"[{head}]\nnum=3\nmask=0,3\n", "h.cfg")
    parse = parse_yolo_options if head == "yolo" else parse_gaussian_yolo_options
    with pytest.raises(CfgError, match="^" + re.escape(message + "mask=0,3 uses anchor 3")):
        parse(Options(section))


def test_cornersnms_is_gaussian_only() -> None:
    yolo, gaussian = parse_cfg(
        "[yolo]\nnms_kind=cornersnms\n[Gaussian_yolo]\nnms_kind=cornersnms\n", "h.cfg"
    )
    with pytest.raises(CfgError, match="cornersnms"):
        parse_yolo_options(Options(yolo))
    assert parse_gaussian_yolo_options(Options(gaussian)).nms_kind is NmsKind.CORNERS
