"""Initialisation from scratch for the ``yolov8``/``yolox`` recipes (``[net] init=torch``).

The references train from PyTorch's default initialisation, not Darknet's: every ``nn.Conv2d`` gets
``reset_parameters`` (kaiming-uniform ``a=sqrt(5)``, bias ``U(+-1/sqrt(fan_in))``), every batch norm
weight 1, bias 0, running mean 0, variance 1 (Darknet starts the variance at 0), with the recipe's
running-average factor (``bn_momentum``, ultralytics ``initialize_weights`` / YOLOX ``init_yolo``: 0.03).
Then the head's prior on the biases of the convolutions that produce its inputs:

- ``[yolov8]``: box logits 2.0, class logits ``log(5 / nc / (640 / stride)^2)`` (ultralytics 8.4.190
  ``Detect.bias_init``; 640 fixed there whatever the training size);
- ``[yolox]``: objectness and class logits ``-log((1 - 0.01) / 0.01)`` (YOLOX
  ``YOLOXHead.initialize_biases``), box logits left at the default.

Darknet cfgs (``recipe=darknet``) never come here: they keep Darknet's init and batch-norm factors.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..model.recipe_options import RecipeOptions

__all__ = ["channel_origin", "head_bias_prior", "init_from_scratch", "set_recipe_bn_momentum",
           "v8_class_bias", "yolox_prior_bias"]  # fmt: skip

YOLOX_PRIOR_PROB = 0.01


def v8_class_bias(classes: int, stride: float, image: int = 640) -> float:
    """``log(5 / nc / (image / stride)^2)`` (``Detect.bias_init``: 5 objects per image of 640)."""
    return math.log(5 / classes / (image / stride) ** 2)


def yolox_prior_bias(prior: float = YOLOX_PRIOR_PROB) -> float:
    """``-log((1 - prior) / prior)`` (``YOLOXHead.initialize_biases``)."""
    return -math.log((1 - prior) / prior)


def channel_origin(net: nn.Module, index: int, channel: int) -> tuple[nn.Module, int] | None:
    """The convolution layer (and its output channel) that channel ``channel`` of layer ``index``'s
    output comes from, following ``[route]`` concatenations; ``None`` when it is not a plain copy."""
    layer = net.layers[index]
    while True:
        if layer.darknet_name == "convolutional":
            return layer, channel
        if layer.darknet_name != "route" or getattr(layer, "groups", 1) > 1:
            return None
        for source, shape in zip(layer.sources, layer.in_shapes):
            if channel < shape.channels:
                layer = net.layers[source]
                break
            channel -= shape.channels
        else:
            return None


def _set_bias(net: nn.Module, index: int, first: int, count: int, value: float) -> int:
    """Set the conv biases behind channels ``first .. first+count`` of layer ``index``; returns how
    many were set (a channel behind a batch norm, or not a plain copy, is skipped)."""
    done = 0
    with torch.no_grad():
        for c in range(first, first + count):
            origin = channel_origin(net, index, c)
            if origin is None or origin[0].conv.bias is None:
                continue
            origin[0].conv.bias[origin[1]] = value
            done += 1
    return done


def _head_levels(net: nn.Module, head: nn.Module) -> list[tuple[int, float]]:
    """``(source layer, stride)`` of each level of a head: stride = input width / level width."""
    width = net.net.width
    return [(s, width / net.layers[s].out_shape.width) for s in head.sources]


def head_bias_prior(net: nn.Module) -> int:
    """Apply each ``[yolov8]``/``[yolox]`` head's bias prior; returns the number of biases set."""
    done = 0
    for i in net.heads:
        head = net.layers[i]
        kind = head.darknet_name
        if kind not in ("yolov8", "yolox"):
            continue
        nc = _classes(head)
        for source, stride in _head_levels(net, head):
            channels = net.layers[source].out_shape.channels
            if kind == "yolov8":
                box = channels - nc  # 4 * reg_max
                done += _set_bias(net, source, 0, box, 2.0)
                done += _set_bias(net, source, box, nc, v8_class_bias(nc, stride))
            elif kind == "yolox":
                done += _set_bias(net, source, 4, 1 + nc, yolox_prior_bias())
    return done


def _classes(head: nn.Module) -> int:
    for owner in (head, getattr(head, "options", None)):
        for name in ("classes", "nc", "num_classes"):
            value = getattr(owner, name, None)
            if isinstance(value, int):
                return value
    raise AttributeError(f"layer {head.index} [{head.darknet_name}]: no class count found")


def set_recipe_bn_momentum(net: nn.Module, momentum: float) -> None:
    """Every batch norm's running-average factor (PyTorch's convention) = ``momentum``."""
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum


def init_from_scratch(net: nn.Module, r: RecipeOptions) -> None:
    """``init=torch``: PyTorch's default init of every conv and batch norm, then the head priors.
    Call before reading a (partial) weights file, so what it holds wins."""
    if r.init != "torch":
        return
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.Conv2d.reset_parameters(m)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.modules.batchnorm._BatchNorm.reset_parameters(m)  # weight 1, bias 0, mean 0, var 1
    head_bias_prior(net)
