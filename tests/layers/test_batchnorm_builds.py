"""DarknetBatchNorm: the GPU build's training arithmetic is PyTorch's, the CPU build's is darknet's C
code (batchnorm_layer.c, blas.c), written out here loop by loop in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from darknetpy.model.layers.common import DarknetBatchNorm, batch_norm, set_bn_build
from tests.layers import network

EPS = 1e-5


def _darknet_cpu_reference(x: np.ndarray, scales: np.ndarray, biases: np.ndarray,
                           delta_out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """forward_batchnorm_layer + backward_batchnorm_layer of the CPU build, one channel at a time
    as mean_cpu, variance_cpu, normalize_cpu, backward_scale_cpu, mean_delta_cpu,
    variance_delta_cpu and normalize_delta_cpu compute them: (y, dx, dscales, variance)."""
    b, c, h, w = x.shape
    n = b * h * w
    y, dx = np.zeros_like(x), np.zeros_like(x)
    dscales, variances = np.zeros(c), np.zeros(c)
    for f in range(c):
        xs = x[:, f].ravel()
        mean = xs.sum() / n
        variance = ((xs - mean) ** 2).sum() / (n - 1)  # variance_cpu: 1/(N-1)
        norm = (xs - mean) / np.sqrt(variance + EPS)  # normalize_cpu
        y[:, f] = (norm * scales[f] + biases[f]).reshape(b, h, w)
        d = delta_out[:, f].ravel()
        dscales[f] = (d * norm).sum()  # backward_scale_cpu
        d = d * scales[f]  # scale_bias
        mean_delta = d.sum() * (-1.0 / np.sqrt(variance + EPS))
        variance_delta = (d * (xs - mean)).sum() * -0.5 * (variance + EPS) ** -1.5
        dx[:, f] = (d / (np.sqrt(variance) + EPS) + variance_delta * 2.0 * (xs - mean) / n
                    + mean_delta / n).reshape(b, h, w)  # normalize_delta_cpu
        variances[f] = variance
    return y, dx, dscales, variances


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, DarknetBatchNorm]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 4, 5, 6, generator=g) * torch.tensor([1.0, 0.01, 3.0, 0.2]).view(1, 4, 1, 1)
    delta = torch.randn(3, 4, 5, 6, generator=g)
    bn = batch_norm(4)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 0.5, -2.0, 1.5]))
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.0, 0.3]))
    return x, delta, bn


@pytest.mark.parametrize("bias_grad", [True, False])
def test_cpu_build_computes_darknets_forward_backward_and_rolling_averages(bias_grad: bool) -> None:
    x, delta, bn = _inputs()
    bn.build, bn.cpu_backward, bn.bias_grad, bn.momentum = "cpu", True, bias_grad, 0.1
    bn.train()
    xr = x.clone().requires_grad_(True)
    y = bn(xr)
    y.backward(delta)
    ry, rdx, rdscales, rvar = _darknet_cpu_reference(x.double().numpy(), bn.weight.detach().double().numpy(),
                                                    bn.bias.detach().double().numpy(), delta.double().numpy())
    np.testing.assert_allclose(y.detach().numpy(), ry, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(xr.grad.numpy(), rdx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.weight.grad.numpy(), rdscales, rtol=1e-4, atol=1e-4)
    expected_bias = delta.sum(dim=(0, 2, 3)).numpy() if bias_grad else np.zeros(4)
    np.testing.assert_allclose(bn.bias.grad.numpy(), expected_bias, rtol=1e-5, atol=1e-5)
    # rolling averages start at 0 (darknet's calloc): one pass leaves 0.1 x the batch values,
    # the variance the UNBIASED one that normalised the batch
    np.testing.assert_allclose(bn.running_var.numpy(), 0.1 * rvar, rtol=1e-5)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * x.double().mean(dim=(0, 2, 3)).numpy(),
                               rtol=1e-5, atol=1e-7)


def test_cpu_build_trains_with_the_exact_gradient_of_its_forward_unless_asked() -> None:
    """Without the defects switch: the CPU build's forward (unbiased variance) and its exact
    gradient; with it, darknet's backward, whose eps outside the square root departs most in the
    channel of small variance (sd 0.01: 5% against 0.5% for the 1/N terms elsewhere)."""
    x, delta, bn = _inputs()
    bn.train()
    bn.build = "cpu"
    xe = x.double().clone().requires_grad_(True)
    w, b = bn.weight.detach().double().requires_grad_(True), bn.bias.detach().double()
    mean, var = xe.mean(dim=(0, 2, 3), keepdim=True), xe.var(dim=(0, 2, 3), keepdim=True)
    ((xe - mean) / torch.sqrt(var + EPS) * w.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)).backward(delta.double())
    xc = x.clone().requires_grad_(True)
    bn(xc).backward(delta)
    torch.testing.assert_close(xc.grad.double(), xe.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(bn.weight.grad.double(), w.grad, rtol=1e-4, atol=1e-4)
    assert torch.count_nonzero(bn.bias.grad) == 4
    bn.cpu_backward = True
    xd = x.clone().requires_grad_(True)
    bn(xd).backward(delta)
    rel = (xd.grad.double() - xe.grad).abs().amax(dim=(0, 2, 3)) / xe.grad.abs().amax(dim=(0, 2, 3))
    assert rel[1] > 5 * max(rel[0], rel[2], rel[3]) and rel[1] > 0.02, rel


def test_cpu_build_normalises_with_the_unbiased_variance() -> None:
    x, _, bn = _inputs()
    bn.train()
    gpu = bn(x)
    bn.build = "cpu"
    cpu = bn(x)
    n = x.numel() // x.shape[1]
    centred = gpu - bn.bias.view(1, -1, 1, 1)  # (x - mean) / sd * scale: scaled by sqrt((n-1)/n)
    torch.testing.assert_close(cpu - bn.bias.view(1, -1, 1, 1), centred * (((n - 1) / n) ** 0.5),
                               rtol=1e-3, atol=1e-4)


def test_gpu_build_is_pytorchs_batch_norm_exactly() -> None:
    x, delta, bn = _inputs()
    ref = torch.nn.BatchNorm2d(4, eps=EPS, momentum=0.01)
    ref.load_state_dict(bn.state_dict())
    bn.train(), ref.train()
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = bn(xa), ref(xb)
    ya.backward(delta), yb.backward(delta)
    assert torch.equal(ya, yb) and torch.equal(xa.grad, xb.grad)
    assert torch.equal(bn.weight.grad, ref.weight.grad) and torch.equal(bn.bias.grad, ref.bias.grad)
    assert torch.equal(bn.running_var, ref.running_var)


def test_inference_is_the_same_in_both_builds() -> None:
    x, _, bn = _inputs()
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.1, 0.2, -0.3, 0.0]))
        bn.running_var.copy_(torch.tensor([1.0, 0.5, 2.0, 0.1]))
    bn.eval()
    gpu = bn(x)
    bn.build = "cpu"
    assert torch.equal(bn(x), gpu)


def test_set_bn_build_drops_the_bias_gradient_of_conv_and_batchnorm_only() -> None:
    """backward_batchnorm_layer (convolutional, [batchnorm]) has no backward_bias on the CPU;
    backward_connected_layer computes its own."""
    net = network(
        "[convolutional]\nfilters=2\nsize=1\nbatch_normalize=1\nactivation=linear\n"
        "[batchnorm]\n"
        "[connected]\noutput=3\nbatch_normalize=1\nactivation=linear\n"
    )
    set_bn_build(net, "cpu", cpu_defects=True)
    conv, bn, connected = net.layers
    assert (conv.bn.build, bn.bn.build, connected.bn.build) == ("cpu", "cpu", "cpu")
    assert conv.bn.cpu_backward and bn.bn.cpu_backward and connected.bn.cpu_backward
    assert (conv.bn.bias_grad, bn.bn.bias_grad, connected.bn.bias_grad) == (False, False, True)
    net.train()
    out = net.forward_layers(torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)))[-1]
    (out * torch.arange(3.0)).sum().backward()
    assert torch.count_nonzero(conv.bn.bias.grad) == 0 and torch.count_nonzero(bn.bn.bias.grad) == 0
    assert torch.count_nonzero(connected.bn.bias.grad) == 3
    assert torch.count_nonzero(conv.bn.weight.grad) == 2
    set_bn_build(net, "cpu")  # the sound default: every bias trains, the exact gradient
    assert (conv.bn.bias_grad, bn.bn.bias_grad, conv.bn.cpu_backward) == (True, True, False)
    set_bn_build(net, "gpu", cpu_defects=True)  # the defect is the CPU build's alone
    assert conv.bn.bias_grad and conv.bn.build == "gpu"
