"""Darknet's parameter update and weight EMA.

Mirrors ``network_kernels.cu: update_network_gpu`` (which layers are updated at an iteration),
``convolutional_kernels.cu: update_convolutional_layer_gpu``, ``batchnorm_layer.c:
update_batchnorm_layer_gpu``, ``connected_layer.c: update_connected_layer``, ``shortcut_layer.c:
update_shortcut_layer_gpu``, ``representation_layer.c: update_implicit_layer_gpu``, ``blas_kernels.cu:
adam_update_gpu`` and ``network.c: ema_update, ema_apply, is_ema_initialized``.

Darknet keeps, per parameter, an update buffer ``u`` (``weight_updates``, ``bias_updates``,
``scale_updates``) into which backward ADDS ``delta`` (the negative gradient of the summed loss), and
updates once per iteration with ``B`` = the cfg ``batch`` (``net.batch * net.subdivisions``)::

    u <- u - decay*B*w          (weights only: conv, connected, implicit)
    w <- w + (lr*layer_lr/B)*u
    u <- momentum*u
    w <- clamp(w, -clip, clip)  (conv weights, when the layer has clip=)

With ``buf = -u/B`` this is ``buf <- momentum*buf + grad/B + decay*w; w <- w - lr*buf``: PyTorch's
``SGD(momentum, dampening=0, weight_decay=decay)`` on the loss summed over the batch and divided by
``B``, with weight decay on weights only (``tests/test_optim.py`` checks both forms).

Quirk kept: a layer skipped by ``dont_update`` or ``burnin_update`` still receives gradients in
backward, so its ``u`` keeps summing them (no momentum decay) until its first update.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..model.netconfig import NetConfig

__all__ = [
    "DarknetEMA",
    "DarknetOptimizer",
    "ParamSlot",
    "frozen_layers",
    "inference_layers",
    "never_updated",
    "param_slots",
    "update_skipped",
]

f32 = np.float32

# layer types whose update_*_gpu applies Adam when [net] adam=1 (the others always use SGD)
_ADAM_TYPES = ("convolutional", "connected", "implicit")


@dataclass(frozen=True)
class ParamSlot:
    """How Darknet updates one parameter tensor of darknet layer ``layer``."""

    layer: int
    name: str  # e.g. "conv.weight", "bn.bias"
    decay: bool  # weight decay applies (weights of conv/connected/implicit layers)
    lr_scale: float  # the layer's `learning_rate=` multiplier
    clip: float  # clamp the weights to +-clip after the update (0: off)
    clamp_update: bool  # shortcut weights: u clamped to [-1, 1] before the update (GPU)
    adam: bool  # this tensor uses adam_update_gpu when [net] adam=1
    dont_update: int  # no update while iteration <= dont_update
    burnin_update: int  # no update while burnin_update * burn_in > iteration


def _is_weight(module: nn.Module, name: str) -> bool:
    return not isinstance(module, nn.modules.batchnorm._BatchNorm) and name != "bias"


def param_slots(network: nn.Module) -> list[tuple[ParamSlot, nn.Parameter]]:
    """Every trainable tensor of ``network`` with Darknet's update rule for it.

    Decay goes to the weights of every layer type that has them (``conv``, ``connected``,
    ``implicit``), never to biases or batch-norm scales/biases; shortcut weights are not decayed
    and their update buffer is clamped to [-1, 1] (``update_shortcut_layer_gpu``). Shared tensors
    (``share_index``) are listed once, under the first layer that holds them.
    """
    seen: set[int] = set()
    out: list[tuple[ParamSlot, nn.Parameter]] = []
    for layer in network.layers:
        opts = layer.training_opts
        kind = layer.darknet_name
        for module_name, module in layer.named_modules():
            for pname, param in module.named_parameters(recurse=False):
                if id(param) in seen:
                    continue
                seen.add(id(param))
                weight = _is_weight(module, pname)
                full = f"{module_name}.{pname}" if module_name else pname
                out.append((ParamSlot(
                    layer=layer.index, name=full,
                    decay=weight and kind != "shortcut",
                    lr_scale=float(opts.learning_rate_scale),
                    clip=float(opts.clip) if weight and kind == "convolutional" else 0.0,
                    clamp_update=kind == "shortcut",
                    adam=kind in _ADAM_TYPES,
                    dont_update=int(opts.dont_update),
                    burnin_update=int(opts.burnin_update),
                ), param))
    return out


def _last_layer_with(network: nn.Module, test: Any) -> int:
    found = -1
    for layer in network.layers:
        if test(layer.training_opts):
            found = layer.index
    return found


def inference_layers(network: nn.Module) -> int:
    """Layers ``0 .. n-1`` run with ``train=0`` (batch norm on rolling statistics, no update): those
    before the last ``stopbackward=1`` layer (``parse_network_cfg_custom``: ``last_stop_backward``)."""
    return max(_last_layer_with(network, lambda o: o.stopbackward == 1), 0)


def frozen_layers(network: nn.Module, iteration: int) -> int:
    """Layers ``0 .. n-1`` get no gradient at ``iteration`` (0-based count of completed updates).

    Backward stops at a layer with ``stopbackward=1``, or ``stopbackward=N`` while ``N`` > iteration
    (``backward_network_gpu``), before that layer's own backward; ``train_only_bn`` spreads to every
    earlier layer (``set_train_only_bn``) and those layers compute no weight gradients and get no
    update at all.
    """
    stop = _last_layer_with(network, lambda o: o.stopbackward == 1 or o.stopbackward > iteration)
    only_bn = _last_layer_with(network, lambda o: o.train_only_bn)
    return max(stop, only_bn) + 1


def never_updated(network: nn.Module) -> int:
    """Layers ``0 .. n-1`` never get a parameter update: the ``train=0`` layers of
    :func:`inference_layers` and every ``train_only_bn`` layer (``update_network_gpu``).

    The ``stopbackward`` layer itself and layers frozen by ``stopbackward=N`` (N > 1) are still
    updated, with a zero gradient: only weight decay and the remaining momentum move them.
    """
    only_bn = _last_layer_with(network, lambda o: o.train_only_bn)
    return max(inference_layers(network), only_bn + 1)


def update_skipped(slot: ParamSlot, iteration: int, burn_in: int) -> bool:
    """``update_network_gpu``: no update for ``burnin_update`` layers before ``burnin_update*burn_in``
    and for ``dont_update`` layers until the iteration exceeds it (``iteration`` counts this update)."""
    if slot.burnin_update and slot.burnin_update * burn_in > iteration:
        return True
    return slot.dont_update >= iteration and slot.dont_update > 0


class DarknetOptimizer:
    """Darknet's SGD with momentum (and Adam when ``[net] adam=1``), one group per tensor.

    Shaped like a ``torch.optim.Optimizer`` (``param_groups``, ``state``, ``step``, ``zero_grad``,
    ``state_dict``) so that ``torch.amp.GradScaler.step(opt, ...)`` unscales and checks the
    gradients first, without being one (its constructor imports ``torch._dynamo``: seconds). The
    gradients must be those of the loss SUMMED over the batch (Darknet's ``-delta``); this class
    divides by ``batch`` as Darknet does.

    Example:
        >>> opt = DarknetOptimizer(net, net.net)                        # doctest: +SKIP
        >>> loss.backward(); opt.step(rate=0.001, iteration=1)          # doctest: +SKIP
    """

    def __init__(self, network: nn.Module, net: NetConfig, *, batch: int | None = None) -> None:
        first = never_updated(network)
        self.param_groups: list[dict[str, Any]] = [
            {"params": [p], "slot": s} for s, p in param_slots(network) if s.layer >= first
        ]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = defaultdict(dict)
        self.net = net
        self.batch = int(batch if batch is not None else net.batch)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                param.grad = None

    @torch.no_grad()
    def step(self, closure: Any = None, *, rate: float = 0.0, iteration: int = 1) -> None:
        """Apply one Darknet update at learning ``rate`` for ``iteration`` (1-based, this update).

        The gradients are consumed (set to None). Each step of the rule runs over every tensor at
        once (``torch._foreach_*``): the same operations per tensor as a loop over them, so the
        same bits on the CPU (``tests/training/test_host_syncs.py`` compares both), a few
        kernels on a GPU.
        """
        if closure is not None:
            raise TypeError("DarknetOptimizer.step does not take a closure")
        net, batch = self.net, self.batch
        minus_decay_b = float(f32(-f32(net.decay) * f32(batch)))
        updates, grads, adam, rule, clip = [], [], [], [], []
        for group in self.param_groups:
            slot: ParamSlot = group["slot"]
            (param,) = group["params"]
            state = self.state[param]
            if "u" not in state:
                state["u"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            if param.grad is not None:
                updates.append(state["u"])
                grads.append(param.grad)
                param.grad = None
            if update_skipped(slot, iteration, net.burn_in):
                continue
            lr = float(f32(f32(rate) * f32(slot.lr_scale)))
            if net.adam and slot.adam:
                adam.append((param, state, lr))
            else:
                rule.append((slot, param, state["u"], float(f32(f32(lr) / f32(batch)))))
            if slot.clip:
                clip.append((slot.clip, param))
        if updates:
            torch._foreach_sub_(updates, grads)  # backward: weight_updates += delta
        for param, state, lr in adam:
            self._adam(param, state["u"], state, lr, batch, iteration)
        _foreach_rule(rule, minus_decay_b, float(f32(net.momentum)))
        for value, params in _grouped(clip).items():  # clip=: weights clamped after the update
            torch._foreach_clamp_min_(params, -value)
            torch._foreach_clamp_max_(params, value)

    def state_dict(self) -> dict[str, Any]:
        """The update buffers by ``"<layer>:<name>"`` (plain tensors: loads with weights_only)."""
        out: dict[str, dict[str, torch.Tensor]] = {}
        for group in self.param_groups:
            slot = group["slot"]
            if slot is not None and self.state[group["params"][0]]:
                out[f"{slot.layer}:{slot.name}"] = {
                    k: v.detach().cpu() for k, v in self.state[group["params"][0]].items()
                }
        return {"buffers": out}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; buffers of tensors this network lacks are an error."""
        buffers = dict(state_dict.get("buffers", {}))
        for group in self.param_groups:
            slot = group["slot"]
            saved = buffers.pop(f"{slot.layer}:{slot.name}", None)
            param = group["params"][0]
            if saved is None:
                self.state[param] = {}
                continue
            for value in saved.values():
                if value.shape != param.shape:
                    raise ValueError(f"optimizer state {slot.layer}:{slot.name} has shape "
                                     f"{tuple(value.shape)}, the parameter {tuple(param.shape)}")
            self.state[param] = {k: v.to(param.device, param.dtype) for k, v in saved.items()}
        if buffers:
            raise ValueError(f"optimizer state for tensors this network lacks: {sorted(buffers)[:5]}")

    def _adam(self, param: torch.Tensor, u: torch.Tensor, state: dict, lr: float, batch: int,
              t: int) -> None:
        """``adam_update_gpu``: decay on every tensor of the layer, ``u`` NOT divided by batch."""
        net = self.net
        if "m" not in state:
            state["m"] = torch.zeros_like(param)
            state["v"] = torch.zeros_like(param)
        m, v = state["m"], state["v"]
        b1, b2 = float(f32(net.b1)), float(f32(net.b2))
        m.mul_(b1)
        v.mul_(b2)
        u.add_(param, alpha=float(f32(-f32(net.decay) * f32(batch))))
        m.add_(u, alpha=1 - b1)
        v.addcmul_(u, u, value=1 - b2)
        mhat = m / (1.0 - b1 ** t)
        vhat = v / (1.0 - b2 ** t)
        param.add_(lr * mhat / (vhat.sqrt() + float(f32(net.eps))))
        u.zero_()


def _grouped(items: list[tuple[float, torch.Tensor]]) -> dict[float, list[torch.Tensor]]:
    """``(value, tensor)`` pairs as ``{value: [tensor, ...]}``, in their order."""
    out: dict[float, list[torch.Tensor]] = {}
    for value, tensor in items:
        out.setdefault(value, []).append(tensor)
    return out


def _foreach_rule(rule: list[tuple[ParamSlot, torch.Tensor, torch.Tensor, float]],
                  minus_decay_b: float, momentum: float) -> None:
    """Darknet's SGD rule (module docstring) for every tensor at once: ``u -= decay*B*w`` (weights),
    ``u`` clamped to [-1, 1] (shortcut weights), ``w += (lr/B)*u`` (grouped by ``lr/B``),
    ``u *= momentum``."""
    if not rule:
        return
    decayed = [(p, u) for slot, p, u, _ in rule if slot.decay]
    if decayed:
        torch._foreach_add_([u for _, u in decayed], [p for p, _ in decayed], alpha=minus_decay_b)
    clamped = [u for slot, _, u, _ in rule if slot.clamp_update]
    if clamped:
        torch._foreach_clamp_min_(clamped, -1.0)
        torch._foreach_clamp_max_(clamped, 1.0)
    steps = _grouped([(step, p) for _, p, _, step in rule])
    update_of = {id(p): u for _, p, u, _ in rule}
    for step, params in steps.items():
        torch._foreach_add_(params, [update_of[id(p)] for p in params], alpha=step)
    torch._foreach_mul_([u for _, _, u, _ in rule], momentum)


# -------------------------------------------------------------------------------- EMA
def _ema_tensors(network: nn.Module) -> Iterator[torch.Tensor]:
    """``ema_update``: weights, biases and BN scales of [convolutional] layers (not rolling stats)."""
    for layer in network.layers:
        if layer.darknet_name != "convolutional":
            continue
        conv, bn = layer.conv, layer.bn
        yield conv.weight
        if bn is not None:
            yield bn.bias
            yield bn.weight
        elif conv.bias is not None:
            yield conv.bias


class DarknetEMA:
    """Darknet's weight EMA (``[net] ema_alpha``), driven by :meth:`after_update`.

    From ``max_batches/2`` on: the first call copies the weights; each later iteration before
    ``max_batches - 1000`` does ``ema = alpha*ema + (1-alpha)*w``; at ``max_batches - 1000`` the EMA
    is copied into the model (``train_network_waitkey``). With ``max_batches < 2000`` the apply point
    comes before the start, so (as in Darknet) the EMA is only initialised. Darknet tests the apply
    point for equality, which several GPUs (the iteration advancing by their number) step over;
    here the update that crosses it applies, once.
    """

    def __init__(self, network: nn.Module, alpha: float, max_batches: int) -> None:
        self.network = network
        self.alpha = float(f32(alpha))
        self.max_batches = max_batches
        self.shadow: list[torch.Tensor] | None = None

    @property
    def initialized(self) -> bool:
        return self.shadow is not None

    def _tensors(self) -> list[torch.Tensor]:
        return list(_ema_tensors(self.network))

    @torch.no_grad()
    def after_update(self, iteration: int, step: int = 1) -> str | None:
        """Apply Darknet's rule after the update that advanced the iteration by ``step`` (the number
        of processes) to ``iteration``; returns what it did, if anything."""
        if not self.alpha or iteration < self.max_batches // 2:
            return None
        apply_point = self.max_batches - 1000
        did = None
        if self.shadow is None:
            self.shadow = [t.detach().clone() for t in self._tensors()]
            did = "EMA initialization"
        if iteration - step < apply_point <= iteration:  # crossed by this update
            torch._foreach_copy_(self._tensors(), self.shadow)
            return "ema_apply()"
        if iteration < apply_point:  # ema = alpha*ema + (1-alpha)*w, every tensor at once
            torch._foreach_mul_(self.shadow, self.alpha)
            torch._foreach_add_(self.shadow, [t.detach() for t in self._tensors()],
                                alpha=1.0 - self.alpha)  # fmt: skip
            return did or "ema_update()"
        return did

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """Temporarily put the EMA weights into the model (to save ``_ema.weights``)."""
        if self.shadow is None:
            yield
            return
        tensors = self._tensors()
        saved = [t.detach().clone() for t in tensors]
        with torch.no_grad():
            for shadow, tensor in zip(self.shadow, tensors):
                tensor.copy_(shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                for old, tensor in zip(saved, tensors):
                    tensor.copy_(old)

    def state_dict(self) -> dict[str, Any]:
        return {"shadow": None if self.shadow is None else [t.cpu() for t in self.shadow]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        shadow = state.get("shadow")
        tensors = self._tensors()
        self.shadow = None if shadow is None else [
            s.to(t.device, t.dtype) for s, t in zip(shadow, tensors)
        ]
