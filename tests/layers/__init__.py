"""Unit tests of the layer modules (darknetpy/layers), with hand-computed values."""

from __future__ import annotations

import torch

from darknetpy.model.network import Network


def network(body: str, *, channels: int = 3, height: int = 8, width: int = 8) -> Network:
    """A network from cfg text without ``[net]`` (added with the given input size), in eval mode."""
    text = f"[net]\nwidth={width}\nheight={height}\nchannels={channels}\n{body}"
    net = Network.from_text(text, path="t.cfg", strict=True)
    return net.eval()


def run(net: Network, x: torch.Tensor) -> list[torch.Tensor]:
    """Every layer's output for ``x`` (N, C, H, W), without autograd."""
    with torch.no_grad():
        return net.forward_layers(x)


def arange(*shape: int) -> torch.Tensor:
    """0, 1, 2, ... as a float tensor of ``shape``."""
    n = 1
    for s in shape:
        n *= s
    return torch.arange(n, dtype=torch.float32).view(*shape)
