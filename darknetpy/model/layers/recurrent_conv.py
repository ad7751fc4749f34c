"""Darknet's convolutional recurrent sections: ``[crnn]``, ``[conv_lstm]`` and ``[history]``
(``crnn_layer.c``, ``conv_lstm_layer.c``: ``make_*``, ``forward_*``; ``parser.c: parse_crnn,
parse_conv_lstm, parse_history``). Time steps and state work as described in :mod:`.recurrent`.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from ..cfg import Options, Section
from .activation import ACTIVATIONS, Activation, ActivationPath, get_activation
from .base import BuildContext, DarknetLayer, Shape
from .common import allocate, c_div, check_count, get_c_int, require_image
from .conv import Conv, ConvSpec
from .recurrent import RecurrentLayer, _positive


def fix_nan_and_inf(x: Tensor) -> Tensor:
    """``blas.c: fix_nan_and_inf_cpu``: a NaN or infinite value at flat index i of the buffer
    (all images of one time step) becomes ``1 / i`` (+inf at i = 0)."""
    flat = x.reshape(-1)
    index = torch.arange(flat.numel(), device=x.device, dtype=x.dtype)
    return torch.where(torch.isfinite(flat), flat, 1.0 / index).view(x.shape)


def _conv(section: Section, index: int, in_shape: Shape, filters: int, spec: ConvSpec,
          activation: Activation) -> Conv:
    """An inner ``[convolutional]`` layer (``make_convolutional_layer`` as the recurrent layers call
    it); the output keeps the input's height and width (checked by the builders)."""
    spec = replace(spec, filters=filters)
    return Conv(section, index, in_shape, Shape(filters, in_shape.height, in_shape.width), spec,
                activation)


class CRNN(RecurrentLayer):
    """``[crnn]`` (``forward_crnn_layer``): ``[rnn]`` with three ``[convolutional]`` layers, each
    with the section's size, stride, padding, groups, activation and batch norm::

        state = input_layer(x) + self_layer(state)      (+ the old state with shortcut=1)
        y = output_layer(state)

    File order: input_layer, self_layer, output_layer. ``l.bflops`` is the three layers' sum.
    """

    darknet_name = "crnn"

    def __init__(self, section: Section, index: int, in_shape: Shape, hidden: int, outputs: int,
                 spec: ConvSpec, activation: Activation, shortcut: bool, time_steps: int) -> None:
        super().__init__(section, index, in_shape,
                         Shape(outputs, in_shape.height, in_shape.width), time_steps)
        self.shortcut = shortcut
        hidden_shape = Shape(hidden, in_shape.height, in_shape.width)
        self.hidden_shape = hidden_shape
        self.input_layer = _conv(section, index, in_shape, hidden, spec, activation)
        self.self_layer = _conv(section, index, hidden_shape, hidden, spec, activation)
        self.output_layer = _conv(section, index, hidden_shape, outputs, spec, activation)

    def inner_layers(self) -> list[DarknetLayer]:
        return [self.input_layer, self.self_layer, self.output_layer]

    def bflops(self) -> float:
        return sum(inner.bflops() for inner in self.inner_layers())

    def forward(self, x: Tensor) -> Tensor:
        steps = self.steps(x.shape[0])
        xs = x.reshape(steps, x.shape[0] // steps, *x.shape[1:])
        s = self.hidden_shape
        shape = (xs.shape[1], s.channels, s.height, s.width)
        state = xs.new_zeros(shape) if self.training else self.carried("state", shape, x)
        outputs = []
        for t in range(steps):
            new = self.input_layer(xs[t])
            if self.shortcut:
                new = state + new
            state = new + self.self_layer(state)
            outputs.append(self.output_layer(state))
        if self.training:
            self.reset_state()  # Darknet zeroes the state at every training forward
        else:
            self.keep(state=state)
        return torch.cat(outputs)

    def summary_extra(self) -> str:
        spec = self.input_layer.spec
        return f"{self.hidden_shape.channels:5d} {spec.size:2d} x{spec.size:2d}/{spec.stride_x:2d}"


class ConvLSTM(RecurrentLayer):
    """``[conv_lstm]`` (``forward_conv_lstm_layer``): LSTM gates from ``[convolutional]`` layers with
    the section's size, stride, padding, groups, activation and batch norm: ``u*`` on the input x,
    ``w*`` on the previous output h, and with ``peephole=1`` ``v*`` on the cell c::

        f = σ(wf(h) + uf(x) + vf(c))   i = σ(wi(h) + ui(x) + vi(c))   g = act(wg(h) + ug(x))
        c = f·c + i·g                  o = σ(wo(h) + uo(x) + vo(c))   (vo on the new c)
        h = y = act(c)·o               c = clamp(c, ±state_constrain), then NaN/inf fixed in c and h

    ``act`` is ``lstm_activation`` (tanh); Darknet's CPU build ignores the key (always tanh), its
    GPU build uses it, as here. ``state_constrain`` defaults to 32 · time steps (32 at inference).

    ``bottleneck=1`` is the GPU build's variant (the CPU build stops on an assertion): one ``wf``
    on Darknet's buffer [h of every image, then x of every image] read as 2·output channels (for
    one image: h and x side by side), ``b = act(wf(...))``; the ``u*`` convolutions read b, and
    f, i, g, o have no ``w*`` term. With ``shortcut=1`` (bottleneck only, as in Darknet) the first
    half of the output buffer gets the first half of b added.

    File order: [vf, vi, vo], wf, [wi, wg, wo], uf, ui, ug, uo.
    """

    darknet_name = "none"  # get_layer_string has no case for CONV_LSTM

    def __init__(self, section: Section, index: int, in_shape: Shape, outputs: int, spec: ConvSpec,
                 activation: Activation, peephole: bool, bottleneck: bool, shortcut: bool,
                 lstm_activation: Activation, state_constrain: int | None, time_steps: int) -> None:
        out_shape = Shape(outputs, in_shape.height, in_shape.width)
        super().__init__(section, index, in_shape, out_shape, time_steps)
        self.peephole, self.bottleneck, self.shortcut = peephole, bottleneck, shortcut
        self.lstm_activation = lstm_activation
        self.state_constrain = state_constrain  # None: 32 * time steps of the call
        names = (["vf", "vi", "vo"] if peephole else []) + (["wf"] if bottleneck else ["wf", "wi", "wg", "wo"])
        for name in names:
            inner_in = Shape(2 * outputs if bottleneck else outputs, in_shape.height, in_shape.width)
            setattr(self, name, _conv(section, index, inner_in if name == "wf" else out_shape,
                                      outputs, spec, activation))
        for name in ("uf", "ui", "ug", "uo"):
            setattr(self, name, _conv(section, index, in_shape, outputs, spec, activation))
        self._names = names + ["uf", "ui", "ug", "uo"]

    def inner_layers(self) -> list[DarknetLayer]:
        return [getattr(self, name) for name in self._names]

    def bflops(self) -> float:
        """The inner layers' sum plus 12 (peephole) or 9 flops per output value, as Darknet's
        ``l.bflops`` for its batch of ``net.batch / time_steps`` images (1 for the layer table)."""
        per_value = 12 if self.peephole else 9
        return sum(inner.bflops() for inner in self.inner_layers()) + per_value * self.out_shape.numel / 1e9

    def _act(self, x: Tensor) -> Tensor:
        return self.lstm_activation.for_layer(ActivationPath.GENERIC)(x)

    def forward(self, x: Tensor) -> Tensor:
        steps = self.steps(x.shape[0])
        xs = x.reshape(steps, x.shape[0] // steps, *x.shape[1:])
        o_shape = self.out_shape
        shape = (xs.shape[1], o_shape.channels, o_shape.height, o_shape.width)
        h, c = self.carried("h", shape, x), self.carried("c", shape, x)
        constrain = self.state_constrain if self.state_constrain is not None else 32 * steps
        outputs = []
        for t in range(steps):
            pre: dict[str, Tensor] = {}
            if self.peephole:
                pre["vf"], pre["vi"] = self.vf(c), self.vi(c)
            if self.bottleneck:
                both = torch.cat([h.reshape(-1), xs[t].reshape(-1)]).view(
                    h.shape[0], 2 * h.shape[1], h.shape[2], h.shape[3])
                u_input = bottleneck = self._act(self.wf(both))
            else:
                for name in ("wf", "wi", "wg", "wo"):
                    pre[name] = getattr(self, name)(h)
                u_input = xs[t]
            for name in ("uf", "ui", "ug", "uo"):
                pre[name] = getattr(self, name)(u_input)
            f = torch.sigmoid(_sum(pre, "f"))
            i = torch.sigmoid(_sum(pre, "i"))
            g = self._act(_sum(pre, "g"))
            c = f * c + i * g
            if self.peephole:
                pre["vo"] = self.vo(c)
            o = torch.sigmoid(_sum(pre, "o"))
            h = self._act(c) * o
            if constrain:
                c = c.clamp(-constrain, constrain)
            c, h = fix_nan_and_inf(c), fix_nan_and_inf(h)
            y = h
            if self.shortcut and self.bottleneck:
                half = y.numel() // 2
                y = torch.cat([y.reshape(-1)[:half] + bottleneck.reshape(-1)[:half],
                               y.reshape(-1)[half:]]).view(y.shape)
            outputs.append(y)
        self.keep(h=h, c=c)
        return torch.cat(outputs)

    def summary_extra(self) -> str:
        spec = self.uf.spec
        return f"{self.out_shape.channels:5d} {spec.size:2d} x{spec.size:2d}/{spec.stride_x:2d}" + (
            " peephole" if self.peephole else "") + (" bottleneck" if self.bottleneck else "")


def _sum(pre: dict[str, Tensor], gate: str) -> Tensor:
    """``w + u (+ v)`` of one gate, in Darknet's order (copy w, add u, add v)."""
    terms = [pre[k + gate] for k in "wuv" if k + gate in pre]
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


class History(RecurrentLayer):
    """``[history]`` (``forward_history_layer``): output channels = ``history_size`` x input.

    With one time step (inference) Darknet copies the batch's input values to the start of the
    output buffer and leaves the rest at zero: for one image ``[x, 0, ..., 0]`` (no history at all).
    With ``time_steps`` > 1 (train mode) each image gets ``[x_t, x_{t-1}, ..., x_{t-size+1}]`` of
    its sequence, the earlier steps carried from the previous call (:meth:`reset_state`).
    """

    darknet_name = "none"  # get_layer_string has no case for HISTORY

    def __init__(self, section: Section, index: int, in_shape: Shape, history_size: int,
                 time_steps: int) -> None:
        out = Shape(in_shape.channels * history_size, in_shape.height, in_shape.width)
        super().__init__(section, index, in_shape, out, time_steps)
        self.history_size = history_size

    def inner_layers(self) -> list[DarknetLayer]:
        return []

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        steps = self.steps(n)
        if steps == 1:
            out = x.new_zeros(n * self.out_shape.numel)
            out[: x.numel()] = x.reshape(-1)
            return out.view(n, *self._out_dims())
        batch = n // steps
        inputs = self.in_shape.numel
        prev = self.carried("prev", (batch, self.out_shape.numel), x)
        outputs = []
        for t in range(steps):
            step = torch.cat([x[t * batch:(t + 1) * batch].reshape(batch, -1),
                              prev[:, : inputs * (self.history_size - 1)]], dim=1)
            outputs.append(step)
            prev = step
        self.keep(prev=prev)
        return torch.cat(outputs).view(n, *self._out_dims())

    def _out_dims(self) -> tuple[int, int, int]:
        return self.out_shape.channels, self.out_shape.height, self.out_shape.width

    def summary_extra(self) -> str:
        return f"history {self.history_size}"


# ---- builders (parser.c) ----

def _conv_spec(opts: Options, ctx: BuildContext, in_shape: Shape, what: str) -> ConvSpec:
    """The inner layers' geometry (``parse_crnn`` / ``parse_conv_lstm``): ``size`` (3), ``stride``
    (1), ``dilation`` (1), ``pad`` / ``padding``, ``groups`` (1), ``batch_normalize``, ``xnor``.
    The state has the input's height and width, so the convolution must keep them."""
    size = get_c_int(opts, "size", 3)
    stride = get_c_int(opts, "stride", 1)
    dilation = get_c_int(opts, "dilation", 1)
    pad = get_c_int(opts, "pad", 0)
    padding = get_c_int(opts, "padding", 0)
    if pad:
        padding = c_div(size, 2)
    groups = max(1, get_c_int(opts, "groups", 1))
    batch_normalize = opts.get_bool("batch_normalize", False)
    xnor = opts.get_bool("xnor", False)
    if xnor:
        groups = 1  # make_convolutional_layer: "disable groups for XNOR-net"
    if size == 1:
        dilation = 1
    _positive(opts, (("size", size), ("stride", stride), ("dilation", dilation)))
    require_image(opts, in_shape, what)
    for side, length in (("height", in_shape.height), ("width", in_shape.width)):
        darknet = c_div(length + 2 * padding - size, stride) + 1
        real = (length + 2 * padding * dilation - dilation * (size - 1) - 1) // stride + 1
        if darknet != length or real != length:
            raise opts.error(
                f"size={size} stride={stride} padding {padding} dilation {dilation} turn the input "
                f"{side} {length} into {darknet}; {what} keeps its state at the input's size, so its "
                "convolutions must keep it (stride=1 and pad=1 with an odd size, or size=1)", "size")
    return ConvSpec(1, size, stride, stride, padding, dilation, groups, batch_normalize, 0, xnor,
                    False)


def _check_groups(opts: Options, groups: int, channels: dict[str, int]) -> None:
    for what, count in channels.items():
        if count % groups:
            raise opts.error(f"groups={groups} must divide the {what} ({count})", "groups")


def build_crnn(opts: Options, ctx: BuildContext) -> CRNN:
    """``parse_crnn``: the convolution keys of :func:`_conv_spec`, ``output`` (1), ``hidden`` (1),
    ``activation`` (logistic), ``shortcut``."""
    in_shape = ctx.prev_shape
    spec = _conv_spec(opts, ctx, in_shape, "[crnn]")
    outputs = get_c_int(opts, "output", 1)
    hidden = get_c_int(opts, "hidden", 1)
    activation = get_activation(opts, "logistic")
    shortcut = opts.get_bool("shortcut", False)
    _positive(opts, (("output", outputs), ("hidden", hidden)))
    _check_groups(opts, spec.groups, {"input channels": in_shape.channels, "hidden": hidden,
                                      "output": outputs})
    check_count(opts, max(in_shape.channels, outputs, hidden) * hidden * spec.size ** 2,
                "the weights", "hidden")
    return allocate(opts, lambda: CRNN(opts.section, ctx.index, in_shape, hidden, outputs, spec,
                                       activation, shortcut, ctx.net.time_steps), "the weights")


def build_conv_lstm(opts: Options, ctx: BuildContext) -> ConvLSTM:
    """``parse_conv_lstm``: the convolution keys of :func:`_conv_spec`, ``output`` (1),
    ``activation`` (linear), ``peephole``, ``bottleneck``, ``state_constrain`` (32 · time steps),
    ``shortcut``, ``lstm_activation`` (tanh); ``time_normalizer`` is training-only."""
    in_shape = ctx.prev_shape
    spec = _conv_spec(opts, ctx, in_shape, "[conv_lstm]")
    outputs = get_c_int(opts, "output", 1)
    activation = get_activation(opts, "linear")
    peephole = opts.get_bool("peephole", False)
    bottleneck = opts.get_bool("bottleneck", False)
    state_constrain = get_c_int(opts, "state_constrain", 0) if opts.has("state_constrain") else None
    shortcut = opts.get_bool("shortcut", False)
    lstm_activation = opts.get_choice("lstm_activation", ACTIVATIONS, "tanh")
    opts.ignore("time_normalizer")
    _positive(opts, (("output", outputs),))
    _check_groups(opts, spec.groups, {"input channels": in_shape.channels, "output": outputs})
    if bottleneck and in_shape.channels != outputs:
        raise opts.error(
            f"bottleneck=1 needs output={outputs} equal to the input channels "
            f"({in_shape.channels}): Darknet feeds the bottleneck's {outputs} channels to the "
            "input convolutions", "bottleneck")
    check_count(opts, max(in_shape.channels, 2 * outputs) * outputs * spec.size ** 2,
                "the weights", "output")
    return allocate(opts, lambda: ConvLSTM(
        opts.section, ctx.index, in_shape, outputs, spec, activation, peephole, bottleneck,
        shortcut, lstm_activation, state_constrain, ctx.net.time_steps), "the weights")


def build_history(opts: Options, ctx: BuildContext) -> History:
    """``parse_history``: ``history_size`` (4)."""
    history_size = get_c_int(opts, "history_size", 4)
    _positive(opts, (("history_size", history_size),))
    in_shape = ctx.prev_shape
    if in_shape.numel <= 0:
        raise opts.error(f"the input of [history] is empty ({in_shape})")
    check_count(opts, in_shape.numel * history_size, "the output", "history_size")
    return History(opts.section, ctx.index, in_shape, history_size, ctx.net.time_steps)

