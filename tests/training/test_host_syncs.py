"""A Darknet training iteration waits for the device a fixed, small number of times (issue 16).

Every Python-level read of a tensor's values (``item``, ``bool``, ``float``, ``int``, ``__index__``,
``tolist``, ``cpu``, ``numpy``) is counted during one iteration on the CPU (on a GPU each of them
would stop the host until the device caught up; on the CPU ``cpu()`` is a no-op but still counts).
The count must not grow with the number of heads, truths or subdivisions. The reads left are, per
iteration: the loader's truth rows viewed as a host array (``numpy``, host memory, no device
involved), the printed loss (``item``, which also serves the NaN check) and one flag for "every
parameter is finite" (``bool``).

Also here: the ``torch._foreach_*`` optimizer update and EMA against the per-tensor loops they
replace (bit for bit on the CPU), and the fused finiteness check.

``pytest -s`` prints the counts per variant.
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from darknetpy.model.heads import compute_loss
from darknetpy.model.heads.darknet_loss.assign import Truths, _rounds, yolo_assignments
from darknetpy.model.heads.darknet_loss.gaussian import _gaussian_cells
from darknetpy.model.heads.darknet_loss.specs import YoloSpec
from darknetpy.model.heads.records import TruthRows
from darknetpy.model.network import Network
from darknetpy.training import distributed as D
from darknetpy.training.optim import DarknetEMA, DarknetOptimizer, update_skipped
from darknetpy.training.setup import prepare
from darknetpy.training.train import _all_finite, _train_step, _update

from ..conftest import make_tiny_run

READS = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "cpu", "numpy")
ITERATION_READS = 3  # truth.numpy() (host), the loss's item(), the all-finite flag
ANCHORS = "4,5, 8,9, 12,10, 16,20, 24,22, 30,28, 36,40, 44,42, 56,60"


@contextmanager
def counted_reads() -> Iterator[Counter]:
    """Count the calls of every method in :data:`READS` on any tensor, while inside."""
    counts: Counter = Counter()
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name: str, original):  # noqa: ANN001, ANN202
        def counting(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            counts[name] += 1
            return original(self, *args, **kwargs)

        return counting

    try:
        for name, original in originals.items():
            setattr(torch.Tensor, name, wrap(name, original))
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def _cfg(heads: int, subdivisions: int, extra: str = "") -> str:
    """batch 4, 64x64; ``heads`` [yolo] heads on 16x16, 8x8 and 4x4 grids, 3 anchors each."""
    lines = ["[net]", "batch=4", f"subdivisions={subdivisions}", "width=64", "height=64",
             "channels=3", "momentum=0.9", "decay=0.0005", "learning_rate=0.001", "burn_in=0",
             "max_batches=10", "policy=constant"]  # fmt: skip
    for k in range(heads):
        lines += ["[convolutional]", "batch_normalize=1", "filters=8", "size=3", "stride=2",
                  "pad=1", "activation=leaky"] if k == 0 else ["[route]", "layers=-3",
                  "[convolutional]", "batch_normalize=1", "filters=8", "size=3", "stride=2",
                  "pad=1", "activation=leaky"]  # fmt: skip
        if k == 0:
            lines += ["[convolutional]", "batch_normalize=1", "filters=8", "size=3", "stride=2",
                      "pad=1", "activation=leaky"]  # fmt: skip
        lines += ["[convolutional]", "size=1", "stride=1", "pad=1", "filters=18",
                  "activation=linear", "[yolo]", f"mask={3 * k},{3 * k + 1},{3 * k + 2}",
                  f"anchors={ANCHORS}", "classes=1", "num=9", "iou_thresh=0.213",
                  extra]  # fmt: skip
    return "\n".join(lines) + "\n"


def _truth(truths: int, batch: int = 4, seed: int = 0) -> torch.Tensor:
    """(batch, 90, 5) zero-padded rows, ``truths`` per image (several share cells when many)."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((batch, 90, 5), np.float32)
    rows[:, :truths, :2] = rng.uniform(0.2, 0.8, (batch, truths, 2))
    rows[:, :truths, 2:4] = rng.uniform(0.05, 0.5, (batch, truths, 2))
    return torch.from_numpy(rows)


def _iteration_reads(root: Path, heads: int, truths: int, subdivisions: int) -> Counter:
    """Reads during one iteration (the second: the first builds every lazy thing once)."""
    run_files = make_tiny_run(root, _cfg(heads, subdivisions), images=4)
    ctx = D.setup("cpu", None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = prepare(ctx, run_files.cfg, run_files.data, None, clear=False, amp="off",
                          workers=0, seed=0, max_batches=10, backup=root / "backup",
                          map_epochs=4, strict=False, progress=False, cache=False)  # fmt: skip
        images, truth = run.loader.get(1, 64, 64).images, _truth(truths)
        assert len(run.net.heads) == heads
        run.net.train()
        _update(run, _train_step(run, images, truth))
        with counted_reads() as counts:
            _update(run, _train_step(run, images, truth))
        return counts
    finally:
        D.teardown(ctx)


def test_one_iteration_reads_the_device_a_fixed_few_times(tmp_path: Path) -> None:
    table = {}
    for heads in (2, 3):
        for truths in (1, 20):
            for subdivisions in (1, 4):
                root = tmp_path / f"h{heads}t{truths}s{subdivisions}"
                table[heads, truths, subdivisions] = _iteration_reads(root, heads, truths,
                                                                      subdivisions)
    print("\nheads truths subdivisions: reads per iteration")
    for key, counts in table.items():
        print(f"  {key}: {sum(counts.values())} {dict(counts)}")
    totals = {key: sum(counts.values()) for key, counts in table.items()}
    assert set(totals.values()) == {ITERATION_READS}, totals
    assert all(counts == table[2, 1, 1] for counts in table.values())


@pytest.mark.parametrize("kind", ["yolo", "Gaussian_yolo", "region"])
def test_loss_with_truth_rows_reads_nothing(kind: str) -> None:
    """compute_loss given TruthRows leaves every figure on the device until it is looked at."""
    if kind == "region":
        head, filters = "[region]\nanchors=1,1,2,2\nclasses=2\nnum=2\ncoords=4\nclassfix=1\n", 14
    else:
        head = (f"[{kind}]\nmask=0,1\nanchors=8,8,16,16\nclasses=2\nnum=2\niou_thresh=0.2\n"
                "truth_thresh=0.5\nobjectness_smooth=1\n")  # fmt: skip
        filters = 2 * (7 if kind == "yolo" else 11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = Network.from_text("[net]\nwidth=32\nheight=32\nchannels=3\n[convolutional]\n"
                                f"filters={filters}\nsize=1\nactivation=linear\n{head}")
    z = torch.randn(4, filters, 4, 4, requires_grad=True)
    truth = _truth(20)
    plain = compute_loss(net, {1: z}, truth, input_size=(32, 32))
    rows = TruthRows(truth, truth.numpy().copy())
    with counted_reads() as counts:
        terms = compute_loss(net, {1: z}, rows, input_size=(32, 32))
        terms.total.backward()
    assert sum(counts.values()) == 0, dict(counts)
    assert torch.equal(terms.deltas[1], plain.deltas[1])
    assert terms.costs[1] == plain.costs[1] == pytest.approx(float(terms.cost_tensor))
    assert terms.stats[1].line == plain.stats[1].line


def _reference_step(opt: DarknetOptimizer, rate: float, iteration: int) -> None:
    """The per-tensor loop DarknetOptimizer.step replaced (SGD part)."""
    f32, net, batch = np.float32, opt.net, opt.batch
    with torch.no_grad():
        for group in opt.param_groups:
            slot, (param,) = group["slot"], group["params"]
            state = opt.state[param]
            u = state.setdefault("u", torch.zeros_like(param))
            if param.grad is not None:
                u.sub_(param.grad)
                param.grad = None
            if update_skipped(slot, iteration, net.burn_in):
                continue
            lr = float(f32(f32(rate) * f32(slot.lr_scale)))
            if slot.decay:
                u.add_(param, alpha=float(f32(-f32(net.decay) * f32(batch))))
            if slot.clamp_update:
                u.clamp_(-1.0, 1.0)
            param.add_(u, alpha=float(f32(f32(lr) / f32(batch))))
            u.mul_(float(f32(net.momentum)))
            if slot.clip:
                param.clamp_(-slot.clip, slot.clip)


def _residual_net() -> Network:
    cfg = ("[net]\nbatch=8\nwidth=16\nheight=16\nchannels=3\nmomentum=0.9\ndecay=0.0005\n"
           "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\nactivation=leaky\nclip=0.2\n"
           "[convolutional]\nfilters=4\nsize=1\nactivation=linear\nlearning_rate=0.5\n"
           "[shortcut]\nfrom=-2\nweights_type=per_channel\n"
           "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\nactivation=mish\n"
           "dont_update=2\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Network.from_text(cfg)


def test_foreach_update_equals_the_per_tensor_loop_bit_for_bit() -> None:
    ours, ref = _residual_net(), _residual_net()
    ref.load_state_dict(ours.state_dict())
    opt, ref_opt = DarknetOptimizer(ours, ours.net), DarknetOptimizer(ref, ref.net)
    rng = np.random.default_rng(1)
    for iteration, rate in enumerate((0.5, 0.2, 1.0, 0.05), start=1):
        for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
            grad = torch.from_numpy(rng.normal(scale=3.0, size=a.shape).astype(np.float32))
            if not (iteration == 2 and name.startswith("layers.1")):  # a tensor without gradient
                a.grad, b.grad = grad.clone(), grad.clone()
        opt.step(rate=rate, iteration=iteration)
        _reference_step(ref_opt, rate, iteration)
        for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
            assert torch.equal(a, b), f"{name} at iteration {iteration}"
            assert torch.equal(opt.state[a]["u"], ref_opt.state[b]["u"]), name


def test_foreach_ema_equals_the_per_tensor_loop_bit_for_bit() -> None:
    net = _residual_net()
    ema = DarknetEMA(net, 0.9, max_batches=3000)  # starts at 1500, applied at 2000
    tensors = ema._tensors()
    torch.manual_seed(0)
    assert ema.after_update(1500) == "EMA initialization"
    shadow = [t.detach().clone() for t in tensors]
    for iteration in range(1501, 1504):
        with torch.no_grad():
            for t in tensors:
                t.add_(torch.randn_like(t))
        assert ema.after_update(iteration) == "ema_update()"
        for s, t in zip(shadow, tensors):
            s.mul_(ema.alpha).add_(t.detach(), alpha=1.0 - ema.alpha)
        assert all(torch.equal(a, b) for a, b in zip(ema.shadow, shadow))
    assert ema.after_update(2000) == "ema_apply()"
    assert all(torch.equal(t, s) for t, s in zip(tensors, shadow))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_all_finite_finds_one_bad_value_anywhere(bad: float) -> None:
    net = _residual_net()
    params = list(net.parameters())
    assert _all_finite(params)
    for k in (0, len(params) - 1):
        broken = copy.deepcopy(params)
        with torch.no_grad():
            broken[k].view(-1)[-1] = bad
        assert not _all_finite(broken)


@pytest.mark.parametrize("point", ["center", "left_top", "right_bottom"])
def test_rounds_bound_covers_every_shared_position(point: str) -> None:
    """The host-side bound on pairs sharing a position (truths per cell) is never below the
    device-side count, also with many truths in few cells and out-of-grid boxes."""
    spec = YoloSpec(classes=2, anchors=((8, 8), (16, 16), (20, 14), (30, 30)), mask=(0, 1, 2),
                    iou_thresh=0.2)  # fmt: skip
    rng = np.random.default_rng(3)
    for trial in range(20):
        rows = np.zeros((3, 16, 5), np.float32)
        k = rng.integers(1, 17)
        rows[:, :k, :2] = rng.choice([0.1, 0.3, 0.55, 0.99, 1.2, -0.1], size=(3, k, 2))
        rows[:, :k, 2:4] = rng.uniform(0.05, 0.9, (3, k, 2))
        rows[:, :k, 4] = rng.integers(0, 2, (3, k))
        truths = Truths.from_tensor(rows, 100, batch=3)
        valid = truths.valid(2, class_check_first=False, any_class=True)
        asg = yolo_assignments(truths, valid, spec, (4, 4), (32, 32),
                               cell_of=_gaussian_cells(point), point=point)  # fmt: skip
        pos = asg.positions(3, 4, 4)
        rank = _rounds(torch.where(asg.take, pos, -1))
        needed = int(rank[asg.take].max()) + 1 if bool(asg.take.any()) else 0
        assert needed <= asg.rounds, (trial, needed, asg.rounds)
