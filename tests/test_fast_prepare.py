"""The channels-last input path of predict (issue 15): Darknet's resize written straight into an
(H, W, 3) buffer gives the same values bit for bit, and the batch reaches a channels-last network
without a layout copy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from darknetpy.data.darknet_resize import resize_image_numpy
from darknetpy.data.image import prepare_test_input, to_chw_float
from darknetpy.inference.pipeline import batch_tensor, prepare_image


@pytest.mark.parametrize("letter_box", [False, True])
@pytest.mark.parametrize("shape, net", [((1080, 1920), (416, 416)), ((37, 53), (64, 48)),
                                         ((300, 200), (608, 608)), ((1, 7), (32, 32))])
def test_channels_last_prepare_equals_darknets_resize(shape: tuple[int, int],
                                                      net: tuple[int, int],
                                                      letter_box: bool) -> None:
    rng = np.random.default_rng(shape[0])
    bgr = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    want = prepare_test_input(bgr, *net, letter_box, channels=(2, 1, 0))
    got = prepare_test_input(bgr, *net, letter_box, channels=(2, 1, 0), channels_last=True)
    assert got.shape == want.shape == (3, net[1], net[0])
    assert got.strides[0] == 4  # a (3, H, W) view of an (H, W, 3) buffer
    assert np.array_equal(got, want)
    if not letter_box:  # and both are Darknet's resize_image of the float image
        ref = resize_image_numpy(to_chw_float(np.ascontiguousarray(bgr[:, :, ::-1])), *net)
        assert np.array_equal(got, ref)


def test_batch_tensor_keeps_values_and_gives_channels_last() -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (50 + 9 * i, 70, 3), dtype=np.uint8) for i in range(3)]
    prepared = [prepare_image(im, (64, 48), False, channels_last=True).input for im in images]
    plain = [prepare_image(im, (64, 48), False).input for im in images]
    for count in (1, 3):
        x = batch_tensor(prepared[:count], channels_last=True)
        assert x.shape == (count, 3, 48, 64)
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(x, torch.from_numpy(np.stack(plain[:count])))
        y = batch_tensor(plain[:count], channels_last=False)
        assert y.is_contiguous() and torch.equal(x, y)
    one = batch_tensor(prepared[:1], channels_last=True)
    assert one.data_ptr() == prepared[0].ctypes.data  # no copy for one image
