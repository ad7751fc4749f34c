"""Recurrent sections: .weights size by Darknet's rule and byte-exact round trips, bad sections,
`darknetpy train` refusing them, and traced graphs (no state baked in). Forward parity is in
test_recurrent.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from darknetpy.cli import main
from darknetpy.errors import CfgError
from darknetpy.model.weights import WeightsHeader, read_weights, write_weights

from .test_recurrent import build, randomize, run

# ------------------------------------------------------------------ weights and errors

SMALL = {
    "rnn": ("[rnn]\noutput=3\nhidden=4\nbatch_normalize=1\n", 5,
            lambda: 4 * ((4 + 20 + 12) + (4 + 16 + 12) + (3 + 12 + 9))),
    "lstm": ("[lstm]\noutput=3\n", 5, lambda: 4 * (4 * (3 + 9) + 4 * (3 + 15))),
    "gru": ("[gru]\noutput=3\nbatch_normalize=1\n", 5,
            lambda: 4 * (3 * (3 + 15 + 9) + 3 * (3 + 9 + 9))),
    "crnn": ("[crnn]\nsize=3\npad=1\nhidden=4\noutput=2\n", None,
             lambda: 4 * ((4 + 3 * 4 * 9) + (4 + 4 * 4 * 9) + (2 + 4 * 2 * 9))),
    "conv_lstm": ("[conv_lstm]\nsize=3\npad=1\noutput=2\npeephole=1\nbatch_normalize=1\n", None,
                  lambda: 4 * (7 * (2 * 4 + 2 * 2 * 9) + 4 * (2 * 4 + 3 * 2 * 9))),
    "history": ("[history]\n[connected]\noutput=2\n", None, lambda: 4 * (2 + 3 * 16 * 4 * 2)),
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_weights_size_by_darknets_rule_and_byte_exact_round_trip(name: str, tmp_path: Path) -> None:
    body, inputs, size = SMALL[name]
    net = build(body, inputs=inputs)
    assert sum(layer.darknet_byte_count() for layer in net.layers) == size()
    rng = np.random.default_rng(0)
    original = tmp_path / "a.weights"
    original.write_bytes(WeightsHeader().to_bytes() + rng.random(size() // 4, dtype=np.float32).tobytes())
    other = build(body, inputs=inputs)
    read_weights(original, other)
    write_weights(tmp_path / "b.weights", other, WeightsHeader())
    assert (tmp_path / "b.weights").read_bytes() == original.read_bytes()


@pytest.mark.parametrize("body, message", [
    ("[crnn]\nsize=3\nstride=2\npad=1\n", r"t.cfg:\d+ \[crnn\]: size=3 stride=2 .* into 2"),
    ("[conv_lstm]\nsize=3\n", r"\[conv_lstm\]: size=3 .* must keep it"),
    ("[conv_lstm]\nsize=1\noutput=4\nbottleneck=1\n", r"bottleneck=1 needs output=4 equal"),
    ("[rnn]\nhidden=0\n", r"hidden=0 must be at least 1"),
])
def test_bad_recurrent_sections_are_cfg_errors(body: str, message: str) -> None:
    with pytest.raises(CfgError, match=message):
        build(body)


def test_train_refuses_recurrent_layers_with_one_line(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    cfg, data = tmp_path / "r.cfg", tmp_path / "r.data"
    cfg.write_text("[net]\nbatch=8\nwidth=8\nheight=8\nchannels=3\n\n[gru]\noutput=4\n")
    (tmp_path / "t.txt").write_text("")
    data.write_text(f"classes=1\ntrain={tmp_path / 't.txt'}\n")
    assert main(["train", str(cfg), str(data), "--max-batches", "1"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert f"{cfg}:7 [gru]: training recurrent layers is not supported" in err[0]


def test_a_traced_graph_starts_every_call_from_zeros() -> None:
    """ONNX and TorchScript graphs hold no state: the state must not be baked in as a constant,
    and tracing leaves the eager state alone."""
    body = "[rnn]\noutput=2\nhidden=3\n[crnn]\nsize=1\nhidden=2\noutput=2\n"
    net, reference = build(body, inputs=3), build(body, inputs=3)
    randomize(net)
    randomize(reference)
    x = torch.randn(1, 3, 1, 1, generator=torch.Generator().manual_seed(4))
    expected = [run(reference, x) for _ in range(3)]
    assert not torch.equal(expected[0], expected[1])
    fresh, second = run(net, x), run(net, x)
    class Last(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, v: torch.Tensor) -> torch.Tensor:
            return self.net(v)[0]

    with torch.no_grad():
        traced = torch.jit.trace(Last(), x, check_trace=False)
    torch.testing.assert_close(traced(x), fresh)
    torch.testing.assert_close(traced(x), fresh)
    torch.testing.assert_close(run(net, x), expected[2])
