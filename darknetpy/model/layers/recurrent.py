"""Darknet's recurrent sections built from ``[connected]`` layers: ``[rnn]``, ``[lstm]``, ``[gru]``,
and what all recurrent layers share (:class:`RecurrentLayer`: state, time steps, weights of the
inner layers). ``[crnn]``, ``[conv_lstm]`` and ``[history]`` are in :mod:`.recurrent_conv`.

Sources: ``rnn_layer.c``, ``lstm_layer.c``, ``gru_layer.c`` (``make_*_layer``, ``forward_*_layer``),
``parser.c: parse_rnn, parse_lstm, parse_gru`` and ``load_weights_upto`` / ``save_weights_upto``.

**Time steps.** Darknet splits a batch of N images into ``steps`` time steps of N/steps images each
(image ``t * N/steps + b`` is sequence ``b`` at time ``t``). At inference Darknet builds the network
with ``time_steps=1`` (``parse_network_cfg_custom(cfg, 1, 1)``), so every forward call is one time
step; in training the ``[net] time_steps`` of the cfg. Here a module in ``eval()`` mode runs one
step per call and one in ``train()`` mode runs ``time_steps`` steps (N must be a multiple).

**State.** The hidden state is kept between forward calls, as Darknet keeps it between frames: a
video run through a recurrent network sees its past. It is not part of the state dict nor of the
``.weights`` file. :meth:`RecurrentLayer.reset_state` (or :func:`reset_recurrent_state` for a whole
network) sets it back to zeros, the state of a freshly built network; it also starts from zeros when
the number of sequences, the device or the dtype changes. A traced or exported (ONNX) graph holds
no state: every call of it starts from zeros. Darknet itself zeroes the state of
``[rnn]`` and ``[crnn]`` at the start of every training-mode forward pass, and that of
``[conv_lstm]`` before computing mAP during training; it never resets ``[lstm]`` or ``[gru]``.

**Training** recurrent layers (Darknet's truncated back-propagation through time) is not supported:
``darknetpy train`` refuses such a cfg (:func:`refuse_training`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ...errors import CfgError
from ..cfg import Options, Section
from .activation import ACTIVATIONS, Activation, get_activation
from .base import BuildContext, DarknetLayer, Shape
from .common import allocate, check_count, get_c_int
from .dense import Connected


class RecurrentLayer(DarknetLayer):
    """A layer made of inner ``[connected]`` or ``[convolutional]`` layers, with a hidden state.

    Subclasses list their inner layers in ``.weights`` file order (:meth:`inner_layers`); the file
    holds each inner layer exactly as a ``[connected]`` / ``[convolutional]`` layer of its own.
    The outer section's ``dontloadscales`` does not reach the inner layers (Darknet reads it into
    the outer layer only), so their batch-norm scales are always read.
    """

    recurrent = True

    def __init__(self, section: Section, index: int, in_shape: Shape, out_shape: Shape,
                 time_steps: int) -> None:
        super().__init__(section, index, (index - 1,), in_shape, out_shape)
        self.time_steps = time_steps
        self._state: dict[str, Tensor] = {}

    # ---- state ----
    def reset_state(self) -> None:
        """Forget the hidden state: the next forward starts from zeros, as a new network does."""
        self._state = {}

    def carried(self, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """The state ``name`` kept from the last call, or zeros when there is none that fits."""
        state = self._state.get(name)
        if _exporting():  # a traced or ONNX graph has no state: each call starts from zeros
            return like.new_zeros(shape)
        if state is None or state.shape != shape or state.device != like.device or state.dtype != like.dtype:
            return like.new_zeros(shape)
        return state

    def keep(self, **states: Tensor) -> None:
        """Keep the states for the next call (detached: no graph grows across calls)."""
        if _exporting():
            return
        self._state.update({name: t.detach() for name, t in states.items()})

    def steps(self, n: int) -> int:
        """Time steps of a forward pass of ``n`` images: 1 in eval mode, ``time_steps`` in train."""
        if not self.training or self.time_steps == 1:
            return 1
        if n % self.time_steps:
            raise CfgError(
                f"{self.where()}: in training mode Darknet splits the batch into time_steps="
                f"{self.time_steps} steps, but the batch has {n} images (not a multiple); "
                "call .eval() to run one time step per call"
            )
        return self.time_steps

    # ---- .weights: the inner layers, in Darknet's order ----
    def inner_layers(self) -> list[DarknetLayer]:
        raise NotImplementedError

    def darknet_tensors(self) -> list[Tensor]:
        return [t for inner in self.inner_layers() for t in inner.darknet_tensors()]

    def read_darknet(self, read: Callable[[int, str], np.ndarray], transpose: bool) -> None:
        for inner in self.inner_layers():
            inner.read_darknet(read, transpose)

    def write_darknet(self, transpose: bool) -> list[np.ndarray]:
        return [a for inner in self.inner_layers() for a in inner.write_darknet(transpose)]

    def bflops(self) -> float:
        """Darknet leaves ``l.bflops`` at 0 for ``[rnn]``, ``[lstm]`` and ``[gru]``."""
        return 0.0


def _exporting() -> bool:
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def reset_recurrent_state(module: nn.Module) -> None:
    """Reset the hidden state of every recurrent layer in ``module`` (e.g. a :class:`Network`)
    before an unrelated sequence: a new video, or a set of independent images."""
    for layer in module.modules():
        if isinstance(layer, RecurrentLayer):
            layer.reset_state()


def refuse_training(layers: Iterable[nn.Module]) -> None:
    """Raise a CfgError at the first recurrent layer: darknetpy does not train them."""
    for layer in layers:
        if isinstance(layer, RecurrentLayer):
            raise CfgError(
                f"{layer.section.where()}: training recurrent layers is not supported; darknetpy "
                "runs them forward only (detect, map, export of the weights); train with Darknet"
            )


def _flat(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1)


def _connected(section: Section, index: int, inputs: int, outputs: int, activation: Activation,
               batch_normalize: bool) -> Connected:
    return Connected(section, index, Shape(inputs, 1, 1), outputs, activation, batch_normalize)


LINEAR = ACTIVATIONS["linear"]
LOGISTIC = ACTIVATIONS["logistic"]


class RNN(RecurrentLayer):
    """``[rnn]`` (``forward_rnn_layer``): three ``[connected]`` layers, each with the section's
    activation and batch norm, ``input_layer`` (inputs -> hidden), ``self_layer`` (hidden ->
    hidden; logistic with ``logistic=1``, loggy with ``logistic=2``) and ``output_layer``
    (hidden -> output)::

        state = input_layer(x) + self_layer(state)      (+ the old state with shortcut=1)
        y = output_layer(state)

    File order: input_layer, self_layer, output_layer.
    """

    darknet_name = "rnn"

    def __init__(self, section: Section, index: int, in_shape: Shape, hidden: int, outputs: int,
                 activation: Activation, batch_normalize: bool, self_activation: Activation,
                 shortcut: bool, time_steps: int) -> None:
        super().__init__(section, index, in_shape, Shape(outputs, 1, 1), time_steps)
        self.hidden = hidden
        self.shortcut = shortcut
        self.input_layer = _connected(section, index, in_shape.numel, hidden, activation, batch_normalize)
        self.self_layer = _connected(section, index, hidden, hidden, self_activation, batch_normalize)
        self.output_layer = _connected(section, index, hidden, outputs, activation, batch_normalize)

    def inner_layers(self) -> list[DarknetLayer]:
        return [self.input_layer, self.self_layer, self.output_layer]

    def forward(self, x: Tensor) -> Tensor:
        steps = self.steps(x.shape[0])
        xs = x.reshape(steps, x.shape[0] // steps, -1)
        # training: Darknet zeroes the state first (and its kept state stays zero afterwards)
        state = xs.new_zeros((xs.shape[1], self.hidden)) if self.training else \
            self.carried("state", (xs.shape[1], self.hidden), x)
        outputs = []
        for t in range(steps):
            new = _flat(self.input_layer(xs[t]))
            if self.shortcut:
                new = state + new
            state = new + _flat(self.self_layer(state))
            outputs.append(_flat(self.output_layer(state)))
        if self.training:
            self.reset_state()
        else:
            self.keep(state=state)
        return torch.cat(outputs).view(x.shape[0], -1, 1, 1)

    def summary_extra(self) -> str:
        return f"{self.in_shape.numel:4d} -> {self.hidden:4d} -> {self.out_shape.channels:4d}"


class LSTM(RecurrentLayer):
    """``[lstm]`` (``forward_lstm_layer``): eight linear ``[connected]`` layers (batch norm with
    ``batch_normalize=1``), ``w*`` on the previous output h and ``u*`` on the input x::

        f = σ(wf(h) + uf(x))   i = σ(wi(h) + ui(x))   g = tanh(wg(h) + ug(x))   o = σ(wo(h) + uo(x))
        c = f·c + i·g          h = o·tanh(c)          y = h

    File order: wf, wi, wg, wo, uf, ui, ug, uo. Darknet never resets h and c.
    """

    darknet_name = "lstm"
    GATES = ("f", "i", "g", "o")

    def __init__(self, section: Section, index: int, in_shape: Shape, outputs: int,
                 batch_normalize: bool, time_steps: int) -> None:
        super().__init__(section, index, in_shape, Shape(outputs, 1, 1), time_steps)
        self.outputs = outputs
        for gate in self.GATES:
            setattr(self, f"w{gate}", _connected(section, index, outputs, outputs, LINEAR, batch_normalize))
        for gate in self.GATES:
            setattr(self, f"u{gate}", _connected(section, index, in_shape.numel, outputs, LINEAR,
                                                 batch_normalize))

    def inner_layers(self) -> list[DarknetLayer]:
        return [getattr(self, f"{kind}{gate}") for kind in "wu" for gate in self.GATES]

    def forward(self, x: Tensor) -> Tensor:
        steps = self.steps(x.shape[0])
        xs = x.reshape(steps, x.shape[0] // steps, -1)
        shape = (xs.shape[1], self.outputs)
        h, c = self.carried("h", shape, x), self.carried("c", shape, x)
        outputs = []
        for t in range(steps):
            pre = {g: _flat(getattr(self, f"w{g}")(h)) + _flat(getattr(self, f"u{g}")(xs[t]))
                   for g in self.GATES}
            f, i, o = torch.sigmoid(pre["f"]), torch.sigmoid(pre["i"]), torch.sigmoid(pre["o"])
            g = torch.tanh(pre["g"])
            c = f * c + i * g
            h = torch.tanh(c) * o
            outputs.append(h)
        self.keep(h=h, c=c)
        return torch.cat(outputs).view(x.shape[0], -1, 1, 1)

    def summary_extra(self) -> str:
        return f"{self.in_shape.numel:4d} -> {self.outputs:4d}"


class GRU(RecurrentLayer):
    """``[gru]`` (``forward_gru_layer``): six linear ``[connected]`` layers (batch norm with
    ``batch_normalize=1``), ``input_*`` on the input x and ``state_*`` on the state s::

        z = σ(input_z(x) + state_z(s))     r = σ(input_r(x) + state_r(s))
        h = σ(input_h(x) + state_h(r·s))   (logistic: gru_layer.c is built without USET, not tanh)
        s = y = z·s + (1 - z)·h

    File order: input_z, input_r, input_h, state_z, state_r, state_h. Darknet never resets s.
    ``make_gru_layer`` leaves ``out_w/h/c`` at 0 (the next layer sees only ``inputs``); here the
    output is 1 x 1 x output, as for ``[lstm]``.
    """

    darknet_name = "gru"
    darknet_sized = False
    GATES = ("z", "r", "h")

    def __init__(self, section: Section, index: int, in_shape: Shape, outputs: int,
                 batch_normalize: bool, time_steps: int) -> None:
        super().__init__(section, index, in_shape, Shape(outputs, 1, 1), time_steps)
        self.outputs = outputs
        for gate in self.GATES:
            setattr(self, f"input_{gate}", _connected(section, index, in_shape.numel, outputs,
                                                      LINEAR, batch_normalize))
        for gate in self.GATES:
            setattr(self, f"state_{gate}", _connected(section, index, outputs, outputs, LINEAR,
                                                      batch_normalize))

    def inner_layers(self) -> list[DarknetLayer]:
        return [getattr(self, f"{kind}_{gate}") for kind in ("input", "state") for gate in self.GATES]

    def forward(self, x: Tensor) -> Tensor:
        steps = self.steps(x.shape[0])
        xs = x.reshape(steps, x.shape[0] // steps, -1)
        state = self.carried("state", (xs.shape[1], self.outputs), x)
        outputs = []
        for t in range(steps):
            z = torch.sigmoid(_flat(self.input_z(xs[t])) + _flat(self.state_z(state)))
            r = torch.sigmoid(_flat(self.input_r(xs[t])) + _flat(self.state_r(state)))
            h = torch.sigmoid(_flat(self.input_h(xs[t])) + _flat(self.state_h(state * r)))
            state = z * state + (1 - z) * h
            outputs.append(state)
        self.keep(state=state)
        return torch.cat(outputs).view(x.shape[0], -1, 1, 1)

    def summary_extra(self) -> str:
        return f"{self.in_shape.numel:4d} -> {self.outputs:4d}"


# ---- builders (parser.c) ----

def _vector_input(opts: Options, ctx: BuildContext, what: str) -> Shape:
    in_shape = ctx.prev_shape
    if in_shape.numel <= 0:
        where = "the [net] input" if ctx.index == 0 else "the previous layer"
        raise opts.error(f"{where} is empty ({in_shape}); {what} needs its values "
                         "(give [net] width, height and channels, or inputs=)")
    return in_shape


def _positive(opts: Options, values: Sequence[tuple[str, int]]) -> None:
    for key, value in values:
        if value < 1:
            raise opts.error(f"{key}={value} must be at least 1", key)


def build_rnn(opts: Options, ctx: BuildContext) -> RNN:
    """``parse_rnn``: ``output`` (1), ``hidden`` (1), ``activation`` (logistic),
    ``batch_normalize``, ``logistic`` (the self layer's activation: 1 logistic, 2 loggy), ``shortcut``."""
    outputs = get_c_int(opts, "output", 1)
    hidden = get_c_int(opts, "hidden", 1)
    activation = get_activation(opts, "logistic")
    batch_normalize = opts.get_bool("batch_normalize", False)
    log = get_c_int(opts, "logistic", 0)
    shortcut = opts.get_bool("shortcut", False)
    _positive(opts, (("output", outputs), ("hidden", hidden)))
    in_shape = _vector_input(opts, ctx, "[rnn]")
    self_activation = ACTIVATIONS["loggy"] if log == 2 else LOGISTIC if log == 1 else activation
    check_count(opts, max(in_shape.numel, outputs) * hidden, "the weights", "hidden")
    return allocate(opts, lambda: RNN(opts.section, ctx.index, in_shape, hidden, outputs, activation,
                                      batch_normalize, self_activation, shortcut,
                                      ctx.net.time_steps), f"{hidden} x {in_shape.numel} weights")


def build_lstm(opts: Options, ctx: BuildContext) -> LSTM:
    """``parse_lstm``: ``output`` (1), ``batch_normalize``."""
    outputs = get_c_int(opts, "output", 1)
    batch_normalize = opts.get_bool("batch_normalize", False)
    _positive(opts, (("output", outputs),))
    in_shape = _vector_input(opts, ctx, "[lstm]")
    check_count(opts, max(in_shape.numel, outputs) * outputs, "the weights", "output")
    return allocate(opts, lambda: LSTM(opts.section, ctx.index, in_shape, outputs, batch_normalize,
                                       ctx.net.time_steps), f"8 x {outputs} x {in_shape.numel} weights")


def build_gru(opts: Options, ctx: BuildContext) -> GRU:
    """``parse_gru``: ``output`` (1), ``batch_normalize``."""
    outputs = get_c_int(opts, "output", 1)
    batch_normalize = opts.get_bool("batch_normalize", False)
    _positive(opts, (("output", outputs),))
    in_shape = _vector_input(opts, ctx, "[gru]")
    check_count(opts, max(in_shape.numel, outputs) * outputs, "the weights", "output")
    return allocate(opts, lambda: GRU(opts.section, ctx.index, in_shape, outputs, batch_normalize,
                                      ctx.net.time_steps), f"6 x {outputs} x {in_shape.numel} weights")
