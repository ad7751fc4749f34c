"""Darknet's CPU-build training defects, reproduced on request (``darknetpy train --darknet-cpu-defects``).

AlexeyAB/darknet 59596d78 built without a GPU back-propagates differently from its cuDNN build and
from the exact gradient. darknetpy trains with the exact gradient by default; with
:meth:`~darknetpy.model.network.Network.set_darknet_build` ``("cpu", cpu_defects=True)`` it
reproduces them, so that a run can be compared step by step with ``darknet detector train`` on a
CPU (``tests/darknet_steps/``). First, the CPU build's batch-norm backward is not the gradient of its
forward (``batchnorm_layer.c:136-147``, ``normalize_delta_cpu``: the factor 2/N where the forward
divided the variance by N - 1, ``blas.c:271``, and ``1/(sqrt(variance) + eps)`` where the forward
divided by ``sqrt(variance + eps)``); darknetpy's default on the CPU build is that forward with its
exact gradient. Then three defects:

1. **Batch-norm biases never trained** (``batchnorm_layer.c:211-221``, ``backward_batchnorm_layer``
   has no ``backward_bias``; the GPU path calls ``backward_bias_gpu`` at line 399): the betas of
   ``[convolutional]`` and ``[batchnorm]`` layers keep their initial values
   (:class:`~darknetpy.model.layers.common.DarknetBatchNorm`).
2. **A convolution overwrites the gradient of its input layer** (``col2im.c:65``: ``col2im_cpu_ext``
   starts with ``caffe_set(..., 0, data_im)``, so ``backward_convolutional_layer`` replaces
   ``state.delta`` instead of adding to it; cuDNN's ``cudnnConvolutionBackwardData`` is called with
   beta = 1 and adds). ``backward_network`` runs from the last layer down and a convolution reads
   the layer just before it, so it runs last among that layer's consumers: the gradient that
   ``[route]`` and ``[shortcut]`` layers further on had added to layer i-1 is lost whenever layer i
   is a convolution (:func:`split_for_overwrite`). ``[batchnorm]`` (``copy_cpu`` at
   ``batchnorm_layer.c:220``) and ``[reorg]`` (``reorg_cpu``) assign their input's delta too.
3. **Deltas of [route] and [upsample] layers never cleared** (``network.c:276``, ``forward_network``
   zeroes ``l.delta`` only ``if (l.delta && state.train && l.train)``, and only the makers of
   convolutional, batchnorm, maxpool, shortcut, crnn and conv_lstm layers set ``l.train``;
   ``forward_network_gpu`` zeroes every delta, ``network_kernels.cu:79``; the condition came with
   commit 24bb6a8e): where their consumers add (not a convolution right after them), the gradient
   such a layer passes down is the sum of every gradient it received since the run started, over
   all mini-batches and iterations (:class:`StaleDelta`). The same rule leaves the deltas of
   ``[reorg]``, ``[avgpool]``, ``[scale_channels]`` and ``[sam]`` uncleared, and darknetpy treats
   them alike (:data:`NEVER_CLEARED`); the recordings of ``tests/darknet_steps`` cover [route] and
   [upsample]. (``[connected]`` and the recurrent layers are left exact: not reproduced.)

Darknet's delta buffers keep their size until a random resize reallocates them; here a change of
the mini-batch shape starts the sum again at zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .layers.base import DarknetLayer
from .layers.conv import Conv
from .layers.dense import BatchNorm
from .layers.graph import Route, Sam, ScaleChannels
from .layers.pool import AvgPool
from .layers.resample import Reorg, Upsample

__all__ = ["NEVER_CLEARED", "OVERWRITERS", "StaleDelta", "overwritten_by_next", "split_for_overwrite"]

# Layer classes whose delta forward_network never clears (their makers leave l.train 0) and whose
# backward adds to their inputs' deltas (backward_route_layer, backward_upsample_layer, ...).
NEVER_CLEARED: tuple[type, ...] = (Route, Upsample, Reorg, AvgPool, ScaleChannels, Sam)
# Layer classes whose backward assigns the delta of the layer before them instead of adding to it.
OVERWRITERS: tuple[type, ...] = (Conv, BatchNorm, Reorg)


def overwritten_by_next(layers: Sequence[DarknetLayer], index: int) -> bool:
    """Whether layer ``index+1`` (a convolution, [batchnorm] or [reorg], which read the layer before
    them) overwrites layer ``index``'s delta in its backward."""
    return index + 1 < len(layers) and isinstance(layers[index + 1], OVERWRITERS)


def split_for_overwrite(out: Tensor) -> tuple[Tensor, Tensor]:
    """``(for the next layer, for every other consumer)``: the overwriting layer right after gets the
    tensor itself, the later consumers a detached copy, so that only the convolution's gradient
    reaches the layer (defect 2)."""
    return out, out.detach()


class StaleDelta(torch.autograd.Function):
    """Identity forward; backward adds the incoming gradient to the layer's running sum and passes
    the sum on (defect 3). ``holder`` is a dict that keeps the sum between calls."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, holder: dict[str, Tensor]) -> Tensor:
        ctx.holder = holder
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        total = ctx.holder.get("sum")
        if total is None or total.shape != grad.shape or total.device != grad.device:
            total = torch.zeros_like(grad)
        total = total + grad
        ctx.holder["sum"] = total.detach()
        return total, None
