"""[rnn], [lstm], [gru], [crnn], [conv_lstm], [history]: structure against Darknet's printed layer
tables (../shared/golden/structure.json), weights layout, and forward against the equations of
rnn_layer.c, lstm_layer.c, gru_layer.c, crnn_layer.c and conv_lstm_layer.c written out here with
plain tensor operations on the values as the .weights file orders them."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F

from darknetpy.errors import CfgError
from darknetpy.model.layers.recurrent import RecurrentLayer, reset_recurrent_state
from darknetpy.model.network import Network

from ..conftest import GOLDEN, SHARED, require_shared

HEADER_BYTES = 20
ACT = {
    "linear": lambda x: x,
    "leaky": lambda x: torch.where(x > 0, x, 0.1 * x),
    "logistic": torch.sigmoid,
    "loggy": lambda x: 2 * torch.sigmoid(x) - 1,
    "tanh": torch.tanh,
}


def build(body: str, *, inputs: int | None = None, shape: tuple[int, int, int] = (3, 4, 4),
          time_steps: int = 1, batch: int = 1) -> Network:
    """A network of ``body`` after a [net] of ``inputs=`` or channels/height/width."""
    size = f"inputs={inputs}\n" if inputs else "channels={}\nheight={}\nwidth={}\n".format(*shape)
    text = f"[net]\nbatch={batch}\ntime_steps={time_steps}\n{size}{body}"
    return Network.from_text(text, path="t.cfg", strict=True).eval()


def randomize(net: Network, seed: int = 0) -> None:
    """Random values in every tensor of the .weights file (variances positive)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(net.named_parameters()) + list(net.named_buffers()):
            if tensor.dtype != torch.float32:
                continue
            values = torch.rand(tensor.shape, generator=gen) - 0.5
            tensor.copy_(values + 1.0 if name.endswith("running_var") else values)


def arrays(inner, kind: str) -> dict[str, torch.Tensor]:
    """An inner layer's values by Darknet's names, taken from its .weights arrays."""
    values = [torch.from_numpy(a.copy()) for a in inner.write_darknet(False)]
    if kind == "connected":
        names = ["biases", "weights", "scales", "mean", "variance"]
    else:
        names = ["biases", "scales", "mean", "variance", "weights"] if len(values) == 5 else ["biases", "weights"]
    return dict(zip(names, values))


def dense(x: torch.Tensor, inner, act: str) -> torch.Tensor:
    """forward_connected_layer: W·x, then (x - mean)/sqrt(var + 1e-5)·scale with batch norm, + bias."""
    p = arrays(inner, "connected")
    y = x.reshape(x.shape[0], -1) @ p["weights"].view(p["biases"].numel(), -1).T
    if "scales" in p:
        y = (y - p["mean"]) / torch.sqrt(p["variance"] + 1e-5) * p["scales"]
    return ACT[act](y + p["biases"])


def conv(x: torch.Tensor, inner, act: str, size: int, pad: int) -> torch.Tensor:
    """forward_convolutional_layer (stride 1), batch norm on rolling statistics."""
    p = arrays(inner, "conv")
    filters = p["biases"].numel()
    w = p["weights"].view(filters, -1, size, size)
    y = F.conv2d(x, w, None, 1, pad)
    if "scales" in p:
        y = (y - p["mean"].view(1, -1, 1, 1)) / torch.sqrt(p["variance"].view(1, -1, 1, 1) + 1e-5)
        y = y * p["scales"].view(1, -1, 1, 1)
    return ACT[act](y + p["biases"].view(1, -1, 1, 1))


def run(net: Network, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(x)[0]


def run_layers(net: Network, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return net.forward_layers(x)


# ------------------------------------------------------------------ Darknet's layer tables

def _printouts() -> dict[str, str]:
    path = GOLDEN / "structure.json"
    if not path.is_file():
        return {}
    return {k: v["error"] for k, v in json.loads(path.read_text()).items()
            if "error" in v and re.search(r"rnn|gru|lstm", k)}


@pytest.mark.parametrize("cfg", ["crnn.train.cfg", "gru.cfg", "lstm.train.cfg", "rnn.cfg",
                                 "rnn.train.cfg"])
def test_darknet_printed_layer_table_matches(cfg: str) -> None:
    """structure.json keeps the tail of Darknet's layer table for these cfgs: the last recurrent
    layer's inner layers, the layers after it, and the total BFLOPS."""
    require_shared()
    text = _printouts().get(cfg)
    if text is None:
        pytest.skip(f"{cfg}: no printout in structure.json")
    with torch.device("meta"):
        net = Network.from_cfg(SHARED / "cfg" / cfg)
    lines = text.splitlines()
    first = next(k for k, line in enumerate(lines) if re.match(r"\s*\d+ \w", line))
    top = [re.match(r"\s*(\d+) (\w+)\s+(\d+)(?:\s+->\s+(\d+))?", line) for line in lines[first:]]
    top = [m for m in top if m]
    assert int(top[-1][1]) + 1 == len(net.layers)
    for m in top:
        layer = net.layers[int(m[1])]
        assert layer.darknet_name == m[2]
        if m[4]:  # connected: inputs -> outputs
            assert (layer.in_shape.numel, layer.out_shape.numel) == (int(m[3]), int(m[4]))
    recurrent = net.layers[int(top[0][1]) - 1]
    assert isinstance(recurrent, RecurrentLayer)
    inner_rows = []
    for line in lines[:first]:
        if m := re.match(r"\t\tconnected\s+(\d+)\s+->\s+(\d+)", line):
            inner_rows.append((int(m[1]), int(m[2]), None))
        elif m := re.match(r"conv\s+(\d+)\s+(\d+) x (\d+)/\s*(\d+)\s+(\d+) x\s*(\d+) x\s*(\d+) -> .* ([\d.]+) BF", line):
            inner_rows.append((int(m[7]) * int(m[5]) * int(m[6]), int(m[1]) * int(m[5]) * int(m[6]), float(m[8])))
    assert inner_rows, "no inner layer line found"
    inner = recurrent.inner_layers()[-len(inner_rows):]
    for layer, (inputs, outputs, bflops) in zip(inner, inner_rows):
        assert (layer.in_shape.numel, layer.out_shape.numel) == (inputs, outputs)
        if bflops is not None:
            assert layer.bflops() == pytest.approx(bflops, abs=5e-4)
    total = float(re.search(r"Total BFLOPS ([\d.]+)", text)[1])
    assert sum(layer.bflops() for layer in net.layers) == pytest.approx(total, abs=5e-4)
    net = Network.from_cfg(SHARED / "cfg" / cfg).eval()  # and it runs: 1 x 1 x inputs in
    outputs = run_layers(net, torch.rand(2, 256, 1, 1, generator=torch.Generator().manual_seed(0)))
    assert [o.shape[1:].numel() for o in outputs] == [layer.out_shape.numel for layer in net.layers]
    assert all(torch.isfinite(o).all() for o in outputs)


def test_yolov3_tiny_occlusion_track_matches_darknet_and_runs() -> None:
    require_shared()
    expected = json.loads((GOLDEN / "structure.json").read_text())["yolov3-tiny_occlusion_track.cfg"]
    net = Network.from_cfg(SHARED / "cfg" / "yolov3-tiny_occlusion_track.cfg").eval()
    rows = [(layer.index, layer.darknet_name, layer.out_shape.channels, layer.out_shape.height,
             layer.out_shape.width) for layer in net.layers]
    assert rows == [tuple(r[:5]) for r in expected["layers"]]
    for layer, row in zip(net.layers, expected["layers"]):
        assert layer.bflops() == pytest.approx(row[5], rel=0.01, abs=1e-6), layer.where()
    assert HEADER_BYTES + sum(layer.darknet_byte_count() for layer in net.layers) == expected["weights_bytes"]
    randomize(net)
    x = torch.rand(1, 3, 416, 416, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        first = net.forward_layers(x)
        second = net.forward_layers(x)
        reset_recurrent_state(net)
        again = net.forward_layers(x)
    assert [tuple(o.shape[1:]) for o in first] == [tuple(r[2:5]) for r in expected["layers"]]
    assert all(torch.isfinite(o).all() for o in first)
    assert not torch.equal(first[13], second[13])  # the [crnn] state carries over
    assert torch.equal(first[12], second[12]) and torch.equal(first[13], again[13])


# ------------------------------------------------------------------ forward against the equations

def test_lstm_is_torch_lstm_cell_with_darknets_weights() -> None:
    net = build("[lstm]\noutput=4\n", inputs=5)
    randomize(net)
    lstm = net.layers[0]
    cell = torch.nn.LSTMCell(5, 4)
    w = {name: arrays(getattr(lstm, name), "connected") for name in
         ("wf", "wi", "wg", "wo", "uf", "ui", "ug", "uo")}
    with torch.no_grad():  # LSTMCell's gate order is i, f, g, o
        cell.weight_ih.copy_(torch.cat([w[f"u{g}"]["weights"].view(4, 5) for g in "ifgo"]))
        cell.weight_hh.copy_(torch.cat([w[f"w{g}"]["weights"].view(4, 4) for g in "ifgo"]))
        cell.bias_ih.copy_(torch.cat([w[f"u{g}"]["biases"] for g in "ifgo"]))
        cell.bias_hh.copy_(torch.cat([w[f"w{g}"]["biases"] for g in "ifgo"]))
    xs = torch.randn(3, 2, 5, 1, 1, generator=torch.Generator().manual_seed(2))
    h = c = torch.zeros(2, 4)
    for x in xs:
        h, c = cell(x.view(2, 5), (h, c))
        torch.testing.assert_close(run(net, x).view(2, 4), h.detach(), rtol=1e-5, atol=1e-6)
    assert lstm.inner_layers() == [getattr(lstm, n) for n in ("wf", "wi", "wg", "wo", "uf", "ui", "ug", "uo")]
    lstm.reset_state()
    h, _ = cell(xs[0].view(2, 5))
    torch.testing.assert_close(run(net, xs[0]).view(2, 4), h.detach(), rtol=1e-5, atol=1e-6)


def test_gru_follows_gru_layer_c() -> None:
    net = build("[gru]\noutput=3\nbatch_normalize=1\n", shape=(2, 2, 1))
    randomize(net)
    gru = net.layers[0]
    s = torch.zeros(2, 3)
    for step in range(2):
        x = torch.randn(2, 2, 2, 1, generator=torch.Generator().manual_seed(step))
        z = torch.sigmoid(dense(x, gru.input_z, "linear") + dense(s, gru.state_z, "linear"))
        r = torch.sigmoid(dense(x, gru.input_r, "linear") + dense(s, gru.state_r, "linear"))
        h = torch.sigmoid(dense(x, gru.input_h, "linear") + dense(s * r, gru.state_h, "linear"))
        s = z * s + (1 - z) * h
        torch.testing.assert_close(run(net, x).view(2, 3), s, rtol=1e-5, atol=1e-6)
    assert gru.inner_layers() == [gru.input_z, gru.input_r, gru.input_h, gru.state_z, gru.state_r,
                                  gru.state_h]


@pytest.mark.parametrize("options, self_act", [
    ("activation=leaky\nbatch_normalize=1\n", "leaky"),
    ("activation=tanh\nlogistic=2\nshortcut=1\n", "loggy"),
    ("logistic=1\n", "logistic"),
])
def test_rnn_follows_rnn_layer_c(options: str, self_act: str) -> None:
    net = build(f"[rnn]\noutput=3\nhidden=4\n{options}", inputs=5)
    randomize(net)
    rnn = net.layers[0]
    act = re.search(r"activation=(\w+)", options)
    act = act[1] if act else "logistic"
    state = torch.zeros(1, 4)
    for step in range(3):
        x = torch.randn(1, 5, 1, 1, generator=torch.Generator().manual_seed(step))
        new = dense(x, rnn.input_layer, act)
        if "shortcut=1" in options:
            new = state + new
        state = new + dense(state, rnn.self_layer, self_act)
        expected = dense(state, rnn.output_layer, act)
        torch.testing.assert_close(run(net, x).view(1, 3), expected, rtol=1e-5, atol=1e-6)
    assert rnn.inner_layers() == [rnn.input_layer, rnn.self_layer, rnn.output_layer]


@pytest.mark.parametrize("shortcut", [0, 1])
def test_crnn_follows_crnn_layer_c(shortcut: int) -> None:
    net = build(f"[crnn]\nsize=3\npad=1\nhidden=3\noutput=2\nactivation=leaky\nbatch_normalize=1\n"
                f"shortcut={shortcut}\n", shape=(2, 5, 4))
    randomize(net)
    crnn = net.layers[0]
    state = torch.zeros(1, 3, 5, 4)
    for step in range(2):
        x = torch.randn(1, 2, 5, 4, generator=torch.Generator().manual_seed(step))
        new = conv(x, crnn.input_layer, "leaky", 3, 1)
        if shortcut:
            new = state + new
        state = new + conv(state, crnn.self_layer, "leaky", 3, 1)
        torch.testing.assert_close(run(net, x), conv(state, crnn.output_layer, "leaky", 3, 1),
                                   rtol=1e-5, atol=1e-5)
    assert crnn.out_shape.channels == 2 and crnn.bflops() == pytest.approx(
        2 * 9 * (2 * 3 + 3 * 3 + 3 * 2) * 20 / 1e9)


@pytest.mark.parametrize("peephole", [0, 1])
def test_conv_lstm_follows_conv_lstm_layer_c(peephole: int) -> None:
    net = build(f"[conv_lstm]\nsize=1\noutput=3\npeephole={peephole}\nstate_constrain=1\n"
                "batch_normalize=1\nactivation=leaky\n", shape=(2, 3, 2))
    randomize(net)
    layer = net.layers[0]
    with torch.no_grad():  # f, i, g near 1: c grows past state_constrain=1
        for name in ("uf", "ui", "ug"):
            getattr(layer, name).bn.bias.fill_(5.0)
    h = c = torch.zeros(1, 3, 3, 2)

    def k(name: str, v: torch.Tensor) -> torch.Tensor:
        return conv(v, getattr(layer, name), "leaky", 1, 0)

    for step in range(3):
        x = 3 * torch.randn(1, 2, 3, 2, generator=torch.Generator().manual_seed(step))
        vf = k("vf", c) if peephole else 0
        vi = k("vi", c) if peephole else 0
        f = torch.sigmoid(k("wf", h) + k("uf", x) + vf)
        i = torch.sigmoid(k("wi", h) + k("ui", x) + vi)
        g = torch.tanh(k("wg", h) + k("ug", x))
        c = f * c + i * g
        o = torch.sigmoid(k("wo", h) + k("uo", x) + (k("vo", c) if peephole else 0))
        h = torch.tanh(c) * o
        c = c.clamp(-1, 1)  # state_constrain=1
        torch.testing.assert_close(run(net, x), h, rtol=1e-5, atol=1e-6)
    names = ["vf", "vi", "vo"] * peephole + ["wf", "wi", "wg", "wo", "uf", "ui", "ug", "uo"]
    assert layer.inner_layers() == [getattr(layer, n) for n in names]
    assert layer.bflops() == pytest.approx(
        sum(2 * 3 * 6 * (2 if n[0] == "u" else 3) for n in names) / 1e9 + (12 if peephole else 9) * 18 / 1e9)


def test_conv_lstm_bottleneck_shortcut_follows_darknets_gpu_forward() -> None:
    net = build("[conv_lstm]\nsize=1\noutput=2\nbottleneck=1\nshortcut=1\n", shape=(2, 1, 2))
    randomize(net)
    layer = net.layers[0]
    assert [n for n in ("wi", "wg", "wo") if hasattr(layer, n)] == []
    h = c = torch.zeros(1, 2, 1, 2)
    for step in range(2):
        x = torch.randn(1, 2, 1, 2, generator=torch.Generator().manual_seed(step))
        b = torch.tanh(conv(torch.cat([h, x], 1), layer.wf, "linear", 1, 0))
        u = {g: conv(b, getattr(layer, "u" + g), "linear", 1, 0) for g in "figo"}
        c = torch.sigmoid(u["f"]) * c + torch.sigmoid(u["i"]) * torch.tanh(u["g"])
        h = torch.tanh(c) * torch.sigmoid(u["o"])
        y = h.flatten().clone()
        y[:2] += b.flatten()[:2]
        torch.testing.assert_close(run(net, x).flatten(), y, rtol=1e-5, atol=1e-6)


def test_history_copies_at_inference_and_shifts_in_train_mode() -> None:
    net = build("[history]\nhistory_size=3\n", shape=(2, 1, 1), time_steps=2, batch=4)
    x = torch.arange(8.0).view(4, 2, 1, 1)  # steps of 2 sequences: images 0,1 then 2,3
    y = run(net, x[:1])
    assert y.flatten().tolist() == [0, 1, 0, 0, 0, 0]  # Darknet's steps == 1 copy: no history
    net.train()
    y = net(x)[0].view(4, 6)
    assert y.tolist() == [[0, 1, 0, 0, 0, 0], [2, 3, 0, 0, 0, 0],
                          [4, 5, 0, 1, 0, 0], [6, 7, 2, 3, 0, 0]]
    assert net(x)[0].view(4, 6)[0].tolist() == [0, 1, 4, 5, 0, 1]  # carried from the last call
    with pytest.raises(CfgError, match="time_steps=2"):
        net(x[:3])


def test_train_mode_runs_time_steps_and_rnn_starts_from_zero() -> None:
    body = "[rnn]\noutput=2\nhidden=3\nactivation=leaky\n[lstm]\noutput=2\n"
    net = build(body, inputs=3, time_steps=2, batch=4)
    randomize(net)
    x = torch.randn(4, 3, 1, 1, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        eval_steps = torch.cat([net(x[:2])[0], net(x[2:])[0]])  # two calls of one step
        reset_recurrent_state(net)
        net.layers[0].keep(state=torch.ones(2, 3))  # [rnn] ignores it in train mode
        net.train()
        trained = net(x)[0]
    torch.testing.assert_close(trained, eval_steps, rtol=1e-5, atol=1e-6)
