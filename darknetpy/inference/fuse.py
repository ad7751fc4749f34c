"""Batch norm folded into the convolutions for inference (``network.c: fuse_conv_batchnorm``):
what :class:`~darknetpy.inference.inference_model.InferenceModel` and ONNX export run."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..model.layers.conv import Conv
from ..model.network import Network

__all__ = ["fold_batchnorm", "fuse_conv_batchnorm"]


def fold_batchnorm(
    weight: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an inference batch norm into the convolution before it (``network.c:
    fuse_conv_batchnorm``), in double precision, results in the weight's dtype.

    ``b = β - γ·mean/sqrt(var + eps)``; ``W_f = W_f · γ_f/sqrt(var_f + eps)``.
    """
    with torch.no_grad():
        scale = gamma.double() / torch.sqrt(var.double() + eps)
        shape = (-1,) + (1,) * (weight.dim() - 1)
        folded = (weight.double() * scale.view(shape)).to(weight.dtype)
        bias = beta.double() - gamma.double() * mean.double() / torch.sqrt(var.double() + eps)
    return folded, bias.to(beta.dtype)


def fuse_conv_batchnorm(network: Network, *, inplace: bool = False) -> Network:
    """A copy of ``network`` in eval mode whose ``[convolutional]`` layers carry their batch norm in
    the convolution (weights and a bias) and have ``bn = None``; with ``inplace``, ``network``
    itself, changed so (no copy: each layer's original tensors are freed as it is folded).

    ``xnor`` convolutions keep their batch norm (it follows the binarised convolution). Layers
    sharing weights (``share_index``) are each folded from the original tensors, so the fused
    network computes what the unfused one does (darknet's ``fuse_conv_batchnorm`` instead drops the
    batch norm of the sharing layer). Other layers with batch norm ([connected], [batchnorm]) are
    not fused, as in darknet. The copy is not meant for ``save_weights``.
    """
    fused = (network if inplace else copy.deepcopy(network)).eval()
    for layer in fused.layers:
        if isinstance(layer, Conv) and layer.bn is not None and not layer.spec.xnor:
            bn = layer.bn
            weight, bias = fold_batchnorm(
                layer.conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps
            )
            # New tensors replace the layer's own references only: a later layer sharing these
            # (share_index) still holds the original weight and batch norm, and folds from them.
            layer.conv.weight = nn.Parameter(weight, requires_grad=False)
            layer.conv.bias = nn.Parameter(bias, requires_grad=False)
            layer.bn = None
            layer._fused = None
    for p in fused.parameters():
        p.requires_grad_(False)
    return fused
