"""Every key darknet's parser reads for a section (parser.c: parse_<type>) is read or declared, so
strict builds accept them and only unknown keys are reported unused."""

from __future__ import annotations

import warnings

import pytest

from darknetpy.model.cfg import CfgWarning
from darknetpy.errors import CfgError

from . import network

# The keys of each parse_<type> (transcribed from parser.c), with values that keep the layer valid.
DARKNET_KEYS = {
    "convolutional": "filters=4 groups=1 size=3 stride_x=1 stride_y=1 stride=1 dilation=1 "
                     "antialiasing=0 pad=1 padding=0 activation=leaky assisted_excitation=0 "
                     "share_index=-1 batch_normalize=1 cbn=0 binary=0 xnor=0 bin_output=0 sway=0 "
                     "rotate=0 stretch=0 stretch_sway=0 flipped=0 dot=0 angle=15 grad_centr=0 "
                     "reverse=0 coordconv=0 stream=-1 wait_stream=-1",
    "maxpool": "stride=1 stride_x=1 stride_y=1 size=2 padding=1 maxpool_depth=0 out_channels=1 "
               "antialiasing=0 maxpool_zero_nonmax=0",
    "local_avgpool": "stride=1 stride_x=1 stride_y=1 size=2 padding=1",
    "avgpool": "",
    "upsample": "stride=2 scale=1",
    "reorg3d": "stride=2 reverse=0",
    "reorg": "stride=2 reverse=0",
    "route": "layers=-1 groups=1 group_id=0 stream=-1 wait_stream=-1",
    "shortcut": "activation=linear weights_type=per_feature weights_normalization=relu from=-1",
    "sam": "from=-1 activation=linear",
    "scale_channels": "from=-1 scale_wh=1 activation=linear",
    "implicit": "mean=0 std=0.2 filters=4 atoms=1",
    "activation": "activation=leaky",
    "dropout": "probability=0.2 dropblock=0 dropblock_size_rel=0 dropblock_size_abs=0",
    "batchnorm": "",
    "connected": "output=4 activation=leaky batch_normalize=1",
    "softmax": "groups=1 temperature=1 spatial=0 noloss=0",
    "crop": "crop_height=4 crop_width=4 flip=0 angle=0 saturation=1 exposure=1 noadjust=0 shift=0",
    "cost": "type=sse scale=1 ratio=0",
    "empty": "",
}
# Read for every layer by parse_network_cfg_custom.
COMMON = ("clip=0 onlyforward=0 dont_update=0 burnin_update=0 stopbackward=0 train_only_bn=0 "
          "dontload=0 dontloadscales=0 learning_rate=1")
# What each section needs before it (a 1-channel layer for scale_wh, a conv for share_index).
PREFIX = {"scale_channels": "[convolutional]\nfilters=1\nsize=1\n",
          "convolutional": "[convolutional]\nfilters=4\nsize=3\npad=1\nbatch_normalize=1\n"}


def section(name: str, keys: str) -> str:
    lines = "\n".join(f"{key}" for key in f"{keys} {COMMON}".split())
    return f"[convolutional]\nfilters=4\nsize=1\n{PREFIX.get(name, '')}[{name}]\n{lines}\n"


@pytest.mark.parametrize("name", sorted(DARKNET_KEYS))
def test_every_darknet_key_is_read(name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", CfgWarning)
        net = network(section(name, DARKNET_KEYS[name]))
    assert net.layers[-1].section.name == name


@pytest.mark.parametrize("name", sorted(DARKNET_KEYS))
def test_an_unknown_key_is_reported_with_its_line(name: str) -> None:
    text = section(name, DARKNET_KEYS[name] + " sizee=3")
    with pytest.raises(CfgError, match=rf"t.cfg:\d+ \[{name}\]: unused field 'sizee=3'"):
        network(text)
