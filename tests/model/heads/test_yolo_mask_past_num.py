"""A [yolo] whose mask= reaches past num= while anchors= lists enough pairs (Scaled-YOLOv4's
cspx-p7-mish.cfg: mask=16,17,18,19, num=16, 20 anchors): loaded with a warning, with the anchors
the cfg lists."""

from __future__ import annotations

import warnings

import pytest
import torch

from darknetpy.errors import CfgError
from darknetpy.model.cfg import CfgWarning
from darknetpy.model.network import Network

ANCHORS = ", ".join(f"{10 + i},{20 + 2 * i}" for i in range(20))


def _cfg(mask: str = "16,17,18,19", anchors: str = ANCHORS) -> str:
    return ("[net]\nwidth=64\nheight=64\nchannels=3\n"
            "[convolutional]\nfilters=28\nsize=1\nstride=32\nactivation=linear\n"  # 4 * (5 + 2)
            f"[yolo]\nmask={mask}\nanchors={anchors}\nclasses=2\nnum=16\n")


def test_mask_past_num_uses_the_listed_anchors_with_a_warning() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net = Network.from_text(_cfg(), path="p7.cfg").eval()
    messages = [str(w.message) for w in caught if issubclass(w.category, CfgWarning)]
    assert messages == [
        "p7.cfg:11 [yolo]: mask=16,17,18,19 uses anchor 19, but num=16 gives anchors 0..15 "
        "(darknet reads past its anchor buffer there); darknetpy uses the 20 anchors anchors= "
        "lists, as num=20: set num=20"]
    head = net.layers[1]
    assert head.options.total == 20 and len(head.options.anchors) == 20
    assert head.options.masked_anchors == ((26.0, 52.0), (27.0, 54.0), (28.0, 56.0),
                                           (29.0, 58.0))
    with torch.no_grad():
        out = net(torch.zeros(1, 3, 64, 64))[0]
    boxes = head.decode(out, (64, 64)).boxes[0]  # a zero input: w = anchor_w / 64 * exp(0)
    torch.testing.assert_close(boxes[:4, 2], torch.tensor([26.0, 27.0, 28.0, 29.0]) / 64)


def test_mask_past_the_listed_anchors_is_still_an_error() -> None:
    with pytest.raises(CfgError, match=r"p7\.cfg:11 \[yolo\]: mask=16,17,18,20 uses anchor 16, "
                                       r"but num=16"):
        Network.from_text(_cfg("16,17,18,20"), path="p7.cfg")
