"""The one image -> detections pipeline (darknetpy.inference.pipeline): the same detections whichever
entry point runs it, and the threshold rule each head owns (Darknet's ``>``, YOLOX's ``>=``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from darknetpy.evaluation.run import detect_images as eval_detect_images
from darknetpy.evaluation.run import detector_facts
from darknetpy.errors import UsageError
from darknetpy.inference.inference_model import InferenceModel
from darknetpy.inference.pipeline import detect_images, prepare_image
from darknetpy.model.network import Network

from .conftest import quiet_weights, raccoon_photos, tiny_cfg

YOLOX = ("[net]\nwidth=64\nheight=64\nchannels=3\n"
         + "[convolutional]\nfilters=8\nsize=3\nstride=2\npad=1\nactivation=swish\n" * 3
         + "[convolutional]\nfilters=7\nsize=1\nstride=1\npad=0\nactivation=linear\n"
         + "[yolox]\nlayers=3\n")  # fmt: skip


def _random(net: Network, seed: int = 0) -> Network:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    return net.eval()


def _tied_score(net: Network, x: torch.Tensor) -> tuple[float, np.ndarray]:
    """One candidate's score (the head's ``scores`` as detections see them), and all of them."""
    with torch.no_grad():
        out = net(x)[0]
    head = net.head_layers()[0]
    scores = head.decode(out, (64, 64)).scores[0]
    best = scores.max(-1).values.float().numpy()
    return float(np.sort(best)[-3]), best


def test_yolox_keeps_a_score_equal_to_the_threshold() -> None:
    net = _random(Network.from_text(YOLOX))
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    tied, best = _tied_score(net, x)
    (rows,) = net.detect(x, (64, 64), thresh=tied, nms=0)
    assert len(rows) == int((best >= np.float32(tied)).sum()) == 3  # YOLOX: score >= conf
    assert any(np.float32(r.prob) == np.float32(tied) for r in rows)
    model = InferenceModel(net, fuse=False, prepack=False, channels_last=False)
    (pred,) = model.predict(x[0], thresh=tied, nms=0)
    assert len(pred) == 3 and any(np.float32(d.score) == np.float32(tied) for d in pred)


def test_darknet_heads_drop_a_probability_equal_to_the_threshold() -> None:
    net = quiet_weights(Network.from_text(tiny_cfg()))
    _random(net, seed=2)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = net(x)[0]
    c = net.head_layers()[0].decode(out, (64, 64))
    probs = c.scores[0][c.objectness[0] > 0][:, 0].float().numpy()
    tied = float(np.sort(probs)[-2])
    (rows,) = net.detect(x, (64, 64), thresh=tied, nms=0)
    assert all(np.float32(r.prob) > np.float32(tied) for r in rows) and len(rows) == 1


def test_evaluation_and_predict_run_the_same_pipeline() -> None:
    """map/valid/recall (evaluation.run.detect_images on the network) and the pipeline on the
    inference model without folding give identical detection arrays."""
    net = _random(Network.from_text(tiny_cfg(classes=2)), seed=4)
    photos = raccoon_photos(3)
    evaluated = list(eval_detect_images(net, detector_facts(net), photos, thresh=0.2, nms=0.45,
                                        batch=2))  # fmt: skip
    model = InferenceModel(net, fuse=False, prepack=False, channels_last=False)
    piped = list(detect_images(model, photos, net_size=(64, 64), letter_box=False, thresh=0.2,
                               nms=0.45, batch=2))  # fmt: skip
    assert [p for p, _, _ in evaluated] == [Path(f.image) for f in piped]
    for (_, size, a), b in zip(evaluated, piped):
        assert size == b.size
        np.testing.assert_array_equal(a.boxes, b.detections.boxes)
        np.testing.assert_array_equal(a.probs, b.detections.probs)
    x = prepare_image(photos[0], (64, 64), False)
    assert x.input.shape == (3, 64, 64) and x.source == str(photos[0])


def test_pipeline_refuses_a_bad_batch() -> None:
    net = Network.from_text(tiny_cfg())
    with pytest.raises(UsageError, match="batch=0"):
        list(detect_images(net, [], net_size=(64, 64), letter_box=False, thresh=0.5, nms=0.45,
                           batch=0))
