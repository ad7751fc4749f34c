"""darknetpy.model.cpu_defects: the back-propagation of darknet's CPU build, reproduced on request
(``Network.set_darknet_build("cpu", cpu_defects=True)``), and the exact gradient by default."""

from __future__ import annotations

import torch

from darknetpy.model.network import Network

# 0 conv -> 1 conv -> 2 route(1, 0) -> 3 conv: layer 0 feeds the convolution right after it AND a
# later [route]; darknet's CPU conv backward of layer 1 overwrites layer 0's delta (col2im_cpu_ext)
OVERWRITE = """[net]
width=6
height=6
channels=2
[convolutional]
filters=3
size=1
activation=linear
[convolutional]
filters=3
size=3
pad=1
activation=linear
[route]
layers=-1,-2
[convolutional]
filters=2
size=1
activation=linear
"""

# 0 conv -> 1 upsample -> 2 route(-1) -> 3 conv: the deltas of [upsample] and [route] are never
# cleared (network.c forward_network: only layers with l.train are)
STALE = """[net]
width=4
height=4
channels=2
[convolutional]
filters=2
size=1
activation=linear
[upsample]
stride=2
[route]
layers=-1
[convolutional]
filters=1
size=1
activation=linear
"""


def _net(text: str, *, defects: bool) -> Network:
    net = Network.from_text(text, path="t.cfg", strict=True)
    torch.manual_seed(0)
    for p in net.parameters():
        torch.nn.init.uniform_(p, -1, 1)
    net.set_darknet_build("cpu", cpu_defects=defects)
    return net.train()


def _grads(net: Network, x: torch.Tensor) -> dict[str, torch.Tensor]:
    net.zero_grad(set_to_none=True)
    out = net(x)[0]
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return {k: p.grad.clone() for k, p in net.named_parameters()}


def test_exact_gradient_by_default() -> None:
    x = torch.rand(2, 2, 6, 6, generator=torch.Generator().manual_seed(1))
    net = _net(OVERWRITE, defects=False)
    assert not net.darknet_cpu_defects
    g = _grads(net, x)
    w = {k: p.detach().clone().requires_grad_(True) for k, p in net.named_parameters()}
    conv = torch.nn.functional.conv2d
    y0 = conv(x, w["layers.0.conv.weight"], w["layers.0.conv.bias"])
    y1 = conv(y0, w["layers.1.conv.weight"], w["layers.1.conv.bias"], padding=1)
    out = conv(torch.cat([y1, y0], 1), w["layers.3.conv.weight"], w["layers.3.conv.bias"])
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    for k in g:
        torch.testing.assert_close(g[k], w[k].grad, rtol=1e-5, atol=1e-6)


def test_a_convolution_overwrites_the_gradient_of_its_input_layer() -> None:
    """Layer 0 gets only what layer 1 (the convolution after it) passes down: the [route]'s share
    is lost, as col2im_cpu_ext's caffe_set(0) loses it in darknet."""
    x = torch.rand(2, 2, 6, 6, generator=torch.Generator().manual_seed(1))
    net = _net(OVERWRITE, defects=True)
    g = _grads(net, x)
    w = {k: p.detach().clone().requires_grad_(True) for k, p in net.named_parameters()}
    conv = torch.nn.functional.conv2d
    y0 = conv(x, w["layers.0.conv.weight"], w["layers.0.conv.bias"])
    y1 = conv(y0, w["layers.1.conv.weight"], w["layers.1.conv.bias"], padding=1)
    out = conv(torch.cat([y1, y0.detach()], 1), w["layers.3.conv.weight"], w["layers.3.conv.bias"])
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    for k in g:
        torch.testing.assert_close(g[k], w[k].grad, rtol=1e-5, atol=1e-6)
    exact = _grads(_net(OVERWRITE, defects=False), x)
    assert not torch.allclose(exact["layers.0.conv.weight"], g["layers.0.conv.weight"], rtol=1e-2)
    torch.testing.assert_close(exact["layers.3.conv.weight"], g["layers.3.conv.weight"])


def test_route_and_upsample_deltas_accumulate_over_passes_until_the_shape_changes() -> None:
    x = torch.rand(2, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    net = _net(STALE, defects=True)
    first = _grads(net, x)
    second = _grads(net, x)  # same weights, same input: darknet passes down twice the delta
    torch.testing.assert_close(second["layers.0.conv.weight"], 2 * first["layers.0.conv.weight"])
    torch.testing.assert_close(second["layers.3.conv.weight"], first["layers.3.conv.weight"])
    exact = _grads(_net(STALE, defects=False), x)
    torch.testing.assert_close(exact["layers.0.conv.weight"], first["layers.0.conv.weight"])
    bigger = torch.rand(2, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    fresh = _grads(net, bigger)  # darknet reallocates (zeroes) the buffers on a resize
    torch.testing.assert_close(fresh["layers.0.conv.weight"],
                               _grads(_net(STALE, defects=False), bigger)["layers.0.conv.weight"])
    net.set_darknet_build("cpu", cpu_defects=True)  # a new run starts from zero deltas
    torch.testing.assert_close(_grads(net, x)["layers.0.conv.weight"], first["layers.0.conv.weight"])


def test_defects_stay_out_of_inference_and_the_gpu_build() -> None:
    x = torch.rand(2, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    net = _net(STALE, defects=True)
    with torch.no_grad():
        net(x)
    net.eval()
    _grads(net, x)
    net.train()
    first = _grads(net, x)  # the eval/no-grad passes added nothing
    torch.testing.assert_close(first["layers.0.conv.weight"],
                               _grads(_net(STALE, defects=False), x)["layers.0.conv.weight"])
    net.set_darknet_build("gpu", cpu_defects=True)
    assert not net.darknet_cpu_defects


def test_the_layers_that_overwrite_and_the_layers_never_cleared() -> None:
    """convolution, [batchnorm] (copy_cpu) and [reorg] (reorg_cpu) assign the delta of the layer
    before them; the makers of route, upsample, reorg, avgpool, ... leave l.train 0."""
    from darknetpy.model.cpu_defects import NEVER_CLEARED, overwritten_by_next

    net = Network.from_text(
        "[net]\nwidth=8\nheight=8\nchannels=2\n"
        "[convolutional]\nfilters=4\nsize=1\n"  # 0
        "[batchnorm]\n"  # 1: overwrites 0
        "[route]\nlayers=-1\n"  # 2
        "[reorg]\nstride=2\n"  # 3: overwrites 2
        "[upsample]\nstride=2\n"  # 4
        "[maxpool]\nsize=2\nstride=2\n"  # 5
        "[convolutional]\nfilters=2\nsize=1\n"  # 6: overwrites 5
        "[avgpool]\n",  # 7
        path="t.cfg", strict=True)  # fmt: skip
    assert [overwritten_by_next(net.layers, i) for i in range(8)] == [
        True, False, True, False, False, True, False, False]
    assert [isinstance(layer, NEVER_CLEARED) for layer in net.layers] == [
        False, False, True, True, True, False, False, True]
