"""darknetpy's side of the multi-step Darknet reference (``tests/darknet_steps/README.md``).

:func:`run_steps` trains a network of ``tests/darknet_steps`` for K iterations on the recorded fixed
batch, from the weights Darknet initialised, through darknetpy's own training code
(:func:`darknetpy.training.setup.prepare`, the loop's ``_train_step`` and ``_update``) with
Darknet's CPU build reproduced (``set_darknet_build("cpu", cpu_defects=True)``), and returns the
loss of every step and the states after the steps of :data:`CHECKPOINTS`.

``python -m tests.training.darknet_steps`` measures the float32 noise of each recorded network: how
far the trajectory moves against the plain run when only rounding changes (:data:`VARIANTS`):

- ``ulp<seed>``: each initial weight moved by one unit in the last place (times ``1 +- 2**-23``,
  the sign drawn from the seed);
- ``float64``: the whole computation in float64 (float32's own rounding, removed);
- ``sequential``: the batch-norm statistics summed one value after the other in float32, as
  darknet's ``mean_cpu``/``variance_cpu`` loops sum them (PyTorch sums pairwise): a second float32
  implementation of the same formula, whose rounding differs as darknet's does.

It writes the largest relative differences per step and per tensor to ``noise.json``, which
``tests/training/test_darknet_steps.py`` reads as its tolerances.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from darknetpy.model.network import build_network
from darknetpy.model.weights import read_weights

FOLDER = Path(__file__).resolve().parents[1] / "darknet_steps"
NETWORKS = ("yolov4-tiny", "yolov3-tiny", "yolov4-csp", "yolov2-tiny")
STEPS = 20
CHECKPOINTS = (5, 20)  # the steps whose weights are recorded and compared
NOISE_SEEDS = (1, 2, 3, 4, 5, 6)
VARIANTS = (*(f"ulp{seed}" for seed in NOISE_SEEDS), "float64", "sequential")
ULP = 2.0 ** -23


def read_losses(path: Path) -> list[float]:
    """``losses.txt`` of the driver: ``step loss rate seen`` after a ``#`` header line."""
    rows = [ln.split() for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
    return [float(r[1]) for r in rows]


def darknet_state(name: str, step: int, folder: Path = FOLDER) -> dict[str, torch.Tensor]:
    """The state dict of Darknet's ``step<step>.weights`` read into darknetpy's network."""
    net = build_network(folder / name / "net.cfg", quiet=True)
    read_weights(folder / name / f"step{step}.weights", net)
    return {k: v.detach().clone() for k, v in net.state_dict().items() if "num_batches" not in k}


def _data(tmp: Path, images: np.ndarray) -> Path:
    """A .data file whose list holds the batch's images (``prepare`` needs one; the steps
    themselves train on the recorded tensors, never on these files)."""
    for i, im in enumerate(images):
        cv2.imwrite(str(tmp / f"{i}.png"), im[:, :, ::-1])
        (tmp / f"{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp / "train.txt").write_text("".join(f"{tmp / f'{i}.png'}\n" for i in range(len(images))))
    (tmp / "d.data").write_text(f"classes=1\ntrain={tmp / 'train.txt'}\nbackup={tmp / 'backup'}\n")
    return tmp / "d.data"


def _sequential_batch_stats(x: torch.Tensor, dims: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``_DarknetCpuBatchNorm.batch_stats`` summed as darknet's loops sum: in float32, one value
    after the other, batch then spatial position (``np.add.accumulate`` is sequential; the square
    of the centred value in double, as C's ``pow``)."""
    c = x.shape[1]
    xs = x.detach().transpose(0, 1).reshape(c, -1).numpy()
    n = xs.shape[1]
    mean = np.add.accumulate(xs, axis=1, dtype=np.float32)[:, -1] * np.float32(1.0 / n)
    sq = ((xs.astype(np.float64) - mean[:, None].astype(np.float64)) ** 2).astype(np.float32)
    var = np.add.accumulate(sq, axis=1, dtype=np.float32)[:, -1] * np.float32(1.0 / (n - 1))
    return torch.from_numpy(mean.copy()), torch.from_numpy(var.copy())


@contextmanager
def _variant(variant: str | None) -> Iterator[None]:
    """Patch darknetpy for the ``float64`` and ``sequential`` variants while a run lasts."""
    from darknetpy.model.layers import common
    from darknetpy.training import setup
    from darknetpy.training import train as T

    saved = (common._DarknetCpuBatchNorm.__dict__["batch_stats"], setup.prepare, T.to_device_images)
    if variant == "sequential":
        common._DarknetCpuBatchNorm.batch_stats = staticmethod(_sequential_batch_stats)
    elif variant == "float64":
        prepare, to_device = setup.prepare, T.to_device_images

        def prepare64(*args: Any, **kwargs: Any) -> Any:
            run = prepare(*args, **kwargs)
            run.net.double()
            return run

        setup.prepare = prepare64
        T.to_device_images = lambda images, device, **kw: to_device(images, device).double()
    try:
        yield
    finally:
        common._DarknetCpuBatchNorm.batch_stats, setup.prepare, T.to_device_images = saved


def run_steps(name: str, tmp: Path, *, steps: int = STEPS, perturb: int | None = None,
              cpu_defects: bool = True, folder: Path = FOLDER, variant: str | None = None,
              ) -> tuple[list[float], dict[int, dict[str, torch.Tensor]]]:
    """Darknet's training step ``steps`` times on the recorded batch; (losses, {step: state}) with
    the states after the steps of :data:`CHECKPOINTS`.

    ``perturb``: move every initial parameter by one ulp (sign drawn from this seed).
    ``cpu_defects`` False trains with the exact gradient (what the test shows would not match).
    ``variant``: ``"float64"`` or ``"sequential"`` (module docstring).
    """
    from darknetpy.training import distributed as D
    from darknetpy.training import setup
    from darknetpy.training import train as T

    with _variant(variant):
        return _run_steps(name, tmp, steps, perturb, cpu_defects, folder, D, setup.prepare, T)


def _run_steps(name: str, tmp: Path, steps: int, perturb: int | None, cpu_defects: bool,
               folder: Path, D: Any, prepare: Any, T: Any,
               ) -> tuple[list[float], dict[int, dict[str, torch.Tensor]]]:
    batch = np.load(folder / "batch.npz")
    images = torch.from_numpy(batch["images"].transpose(0, 3, 1, 2).astype(np.float32)
                              / np.float32(255))  # fmt: skip
    truth = torch.from_numpy(batch["truth"])
    ctx = D.setup("cpu", None)
    try:
        run = prepare(ctx, folder / name / "net.cfg", _data(tmp, batch["images"]),
                      folder / name / "step0.weights", clear=True, amp="off", workers=0, seed=1,
                      max_batches=None, backup=tmp / "backup", map_epochs=4, strict=False,
                      progress=False, cache=False, bn_momentum="cpu",
                      darknet_cpu_defects=cpu_defects)  # fmt: skip
        if perturb is not None:
            g = torch.Generator().manual_seed(perturb)
            with torch.no_grad():
                for p in run.net.parameters():
                    sign = torch.randint(0, 2, p.shape, generator=g).float() * 2 - 1
                    p.mul_(1 + sign * ULP)
        losses, states = [], {}
        for step in range(1, steps + 1):
            run.net.train()
            loss = T._train_step(run, images, truth)
            T._update(run, loss)
            losses.append(float(loss))
            if step in CHECKPOINTS:
                states[step] = {k: v.detach().clone() for k, v in run.net.state_dict().items()
                                if "num_batches" not in k}  # fmt: skip
        return losses, states
    finally:
        D.teardown(ctx)


def rel_loss(mine: list[float], ref: list[float]) -> list[float]:
    return [abs(a - b) / abs(b) for a, b in zip(mine, ref, strict=True)]


def rel_state(mine: Mapping[str, torch.Tensor], ref: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Per tensor: max |mine - ref| / max |ref|."""
    return {k: float((mine[k].double() - v.double()).abs().max() / max(float(v.abs().max()), 1e-12))
            for k, v in ref.items()}  # fmt: skip


def measure(names: tuple[str, ...] = NETWORKS, folder: Path = FOLDER) -> dict:
    """The noise envelope of each network (module docstring)."""
    import tempfile

    out: dict = {"variants": list(VARIANTS), "steps": STEPS, "ulp": ULP, "torch": torch.__version__}
    for name in names:
        with tempfile.TemporaryDirectory() as t:
            base_losses, base = run_steps(name, Path(t), folder=folder)
        loss_env = [0.0] * STEPS
        state_env = {step: dict.fromkeys(base[step], 0.0) for step in CHECKPOINTS}
        by_variant = {}
        for variant in VARIANTS:
            with tempfile.TemporaryDirectory() as t:
                losses, states = run_steps(
                    name, Path(t), folder=folder,
                    perturb=int(variant[3:]) if variant.startswith("ulp") else None,
                    variant=None if variant.startswith("ulp") else variant)  # fmt: skip
            rl = rel_loss(losses, base_losses)
            loss_env = [max(a, b) for a, b in zip(loss_env, rl)]
            worst = {}
            for step in CHECKPOINTS:
                rs = rel_state({k: v.float() for k, v in states[step].items()}, base[step])
                for k, v in rs.items():
                    state_env[step][k] = max(state_env[step][k], v)
                worst[str(step)] = max(rs.values())
            by_variant[variant] = {"loss": max(rl), "weights": worst}
        out[name] = {"loss": loss_env, "weights": {str(s): e for s, e in state_env.items()},
                     "by_variant": by_variant}  # fmt: skip
        print(f"{name}: loss noise at steps 1/5/10/20 "
              f"{loss_env[0]:.1e}/{loss_env[4]:.1e}/{loss_env[9]:.1e}/{loss_env[19]:.1e}; weights "
              + ", ".join(f"after {s}: max {max(e.values()):.1e}, median "
                          f"{float(np.median(list(e.values()))):.1e}" for s, e in state_env.items())
              + "; largest loss difference by variant "
              + ", ".join(f"{v} {d['loss']:.1e}" for v, d in by_variant.items()),
              flush=True)  # fmt: skip
    return out


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else FOLDER
    import warnings

    warnings.filterwarnings("ignore", message=".*batch=4 is lower than 8")
    result = measure(folder=folder)
    (folder / "noise.json").write_text(json.dumps(result, indent=1) + "\n")
    print("wrote", folder / "noise.json")
