"""Loading never runs code from a file, and no command overwrites its own input.

* A ``.pt`` file whose pickle carries a ``__reduce__`` payload (here: ``os.mkdir(marker)``) is
  refused with a DarknetpyError by every entry point that reads checkpoints (``read_checkpoint``,
  ``network_from_checkpoint``, ``darknetpy.load``, ``convert``, ``export``, ``detect``, the
  training state beside a checkpoint), and the payload never runs.
* Every command that writes a file refuses to write it over one of its inputs (same path, another
  spelling of it, a symlink to it), exits with status 2 and one line, and leaves the input intact.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch

from darknetpy import Network
from darknetpy.cli import build_parser, main
from darknetpy.errors import DarknetpyError
from darknetpy.inference.inference_model import load
from darknetpy.training import checkpoint
from darknetpy.training import train as train_mod

from ..conftest import RACCOON, make_tiny_run, quiet_weights, tiny_cfg

TINY = tiny_cfg(batch=1, subdivisions=1)


class Payload:
    """Unpickling this calls ``os.mkdir(marker)``: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def quiet_network() -> Network:
    """The tiny network with zero weights (unit BN variance): deterministic, finite outputs.

    (Darknet's own initialisation has BN rolling variance 0, which makes an untrained network's
    boxes overflow to inf; that case is tested in test_corrupt_weights.py.)
    """
    return quiet_weights(Network.from_text(TINY))


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(TINY)
    net = quiet_network()
    weights = tmp_path / "tiny.weights"
    net.save_weights(weights)
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    from darknetpy.model import pt_checkpoint as convert
    payload = convert.checkpoint_dict(net)  # a well-formed checkpoint...
    payload["cfg"] = Payload(marker)  # ...carrying code where the cfg text goes
    torch.save(payload, evil)
    bare = tmp_path / "bare.pt"  # the payload alone, zip format
    torch.save(Payload(marker), bare)
    legacy = tmp_path / "legacy.pt"  # the old (non-zip) torch format
    torch.save(Payload(marker), legacy, _use_new_zipfile_serialization=False)
    plain = tmp_path / "plain.pkl.pt"  # a plain pickle
    plain.write_bytes(pickle.dumps(Payload(marker)))
    good = tmp_path / "good.pt"
    convert.save_pt_checkpoint(net, good)
    image = tmp_path / "raccoon.jpg"
    image.write_bytes((RACCOON / "obj" / "raccoon-1.jpg").read_bytes())
    return {"cfg": cfg, "weights": weights, "marker": marker, "evil": evil, "bare": bare,
            "legacy": legacy, "plain": plain, "good": good, "image": image}


MALICIOUS = ["evil", "bare", "legacy", "plain"]


@pytest.mark.parametrize("kind", MALICIOUS)
def test_malicious_checkpoint_is_refused_by_the_library(files: dict[str, Path], kind: str) -> None:
    from darknetpy.model import pt_checkpoint as convert
    from darknetpy.tools import convert as tools_convert

    evil = files[kind]
    calls = {
        "read_checkpoint": lambda: convert.read_checkpoint(evil),
        "network_from_checkpoint": lambda: convert.network_from_checkpoint(evil),
        "network_from_checkpoint+cfg": lambda: convert.network_from_checkpoint(evil, files["cfg"]),
        "checkpoint_to_weights": lambda: tools_convert.checkpoint_to_weights(
            evil, files["cfg"].parent / "out.weights"),
        "Network.load_weights": lambda: Network.from_text(TINY).load_weights(evil),
    }
    calls["darknetpy.load(pt)"] = lambda: load(evil)
    calls["darknetpy.load(cfg, pt)"] = lambda: load(files["cfg"], evil)
    for name, call in calls.items():
        with pytest.raises(DarknetpyError) as info:
            call()
        assert str(evil) in str(info.value), (name, info.value)
        assert not files["marker"].exists(), f"{name}: the pickled payload ran"
    assert not (files["cfg"].parent / "out.weights").exists()


@pytest.mark.parametrize("kind", MALICIOUS)
def test_malicious_checkpoint_is_refused_by_the_cli(files: dict[str, Path], kind: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    evil, cfg, out = files[kind], files["cfg"], files["cfg"].parent / "out.weights"
    commands = [["convert", str(evil), str(out)], ["convert", str(cfg), str(evil), str(out)],
                ["export", str(cfg), str(evil), str(cfg.parent / "m.onnx")],
                ["detect", str(cfg), str(evil), str(files["image"]), "--no-save"]]
    for argv in commands:
        code = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, (argv, err)
        assert err and err[0].startswith("darknetpy: error: ") and str(evil) in err[0], (argv, err)
        assert "Traceback" not in "\n".join(err), (argv, err)
        assert not files["marker"].exists(), f"{argv}: the pickled payload ran"
    assert not out.exists()


@pytest.mark.parametrize("kind", ["evil", "bare"])
def test_malicious_checkpoint_error_is_one_line_without_unsafe_advice(
        files: dict[str, Path], kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["convert", str(files[kind]), str(files["cfg"].parent / "out.weights")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "weights_only` set to `False`" not in err[0] and "weights_only=False" not in err[0], err


def test_the_good_checkpoint_still_loads(files: dict[str, Path]) -> None:
    """The refusals above are not a refusal of everything."""
    from darknetpy.model import pt_checkpoint as convert
    net = convert.network_from_checkpoint(files["good"])
    assert len(net.layers) == 3


def test_malicious_training_state_is_ignored_not_run(files: dict[str, Path]) -> None:
    """The exact-resume state beside a checkpoint is read safely: refused with a warning."""
    from darknetpy.model.weights import read_header

    weights = files["weights"]
    for kind in MALICIOUS:
        state = checkpoint.state_path(weights)
        state.write_bytes(files[kind].read_bytes())
        with pytest.warns(UserWarning, match="state"):
            assert checkpoint.load_state(weights, read_header(weights)) is None
        assert not files["marker"].exists(), f"{kind}: the pickled payload ran"


def test_training_resume_with_a_malicious_state_does_not_run_it(tmp_path: Path) -> None:
    from .test_training_guards import QUIET, make_run

    cfg, data = make_run(tmp_path / "run", max_batches=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = train_mod.train(cfg, data, seed=0, **QUIET)
    marker = tmp_path / "PWNED"
    state = first.weights.with_name(first.weights.name.rsplit(".", 1)[0] + ".state.pt")
    torch.save({"format": "darknetpy-train-state/1", "loop": Payload(marker)}, state)
    with pytest.warns(UserWarning, match="state"):
        again = train_mod.train(cfg, data, first.weights, seed=0, max_batches=3,
                                backup=tmp_path / "again", **QUIET)
    assert again.iteration == 3 and not marker.exists()


# ------------------------------------------------------------------------------------------------
# no command writes over its input
def _commands() -> set[str]:
    parser = build_parser()
    for action in parser._subparsers._group_actions:
        return set(action.choices)
    return set()


def _digest(paths: list[Path]) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.is_file()}


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], inputs: list[Path]) -> None:
    before = _digest(inputs)
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    after = _digest(inputs)
    assert after == before, f"{argv}: an input file was overwritten"
    assert code == 2, (argv, code, err)
    assert err and err[-1].startswith("darknetpy: error: "), (argv, err)
    assert "overwrite" in err[-1] or "input" in err[-1], (argv, err)


def _overwrite_cases(f: dict[str, Path]) -> dict[str, list[str]]:
    cfg, w, pt, img = (str(f[k]) for k in ("cfg", "weights", "good", "image"))
    same_w = str(Path(w).parent / "." / Path(w).name)  # another spelling of the same file
    link = f["cfg"].parent / "link.weights"
    link.symlink_to(f["weights"])
    cases = {
        "partial out=weights": ["partial", cfg, w, w, "1"],
        "partial out=./weights": ["partial", cfg, w, same_w, "1"],
        "partial out=symlink to weights": ["partial", cfg, w, str(link), "1"],
        "partial out=cfg": ["partial", cfg, w, cfg, "1"],
        "export out=weights": ["export", cfg, w, w],
        "export out=cfg": ["export", cfg, w, cfg],
        "detect --json=image": ["detect", cfg, w, img, "--no-save", "--json", img],
        "detect --json=weights": ["detect", cfg, w, img, "--no-save", "--json", w],
        "detect --json=cfg": ["detect", cfg, w, img, "--no-save", "--json", cfg],
        "detect --save-dir=image folder": ["detect", cfg, w, img, "--save-dir", str(f["image"].parent)],
    }
    assert {argv[0] for argv in cases.values()} <= _commands()
    return cases


def test_cli_refuses_to_overwrite_an_input(files: dict[str, Path],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    inputs = [files[k] for k in ("cfg", "weights", "good", "image")]
    cases = _overwrite_cases(files)
    failures = []
    for name, argv in cases.items():
        try:
            _refused(argv, capsys, inputs)
        except AssertionError as exc:
            failures.append(f"{name}: {str(exc).splitlines()[0]}")
            # restore the inputs for the next case
            Path(files["cfg"]).write_text(TINY)
            quiet_network().save_weights(files["weights"])
            files["image"].write_bytes((RACCOON / "obj" / "raccoon-1.jpg").read_bytes())
    print(f"overwrite: {len(cases)} command lines tried, {len(failures)} not refused")
    assert not [f for f in failures if not f.startswith(tuple(KNOWN_OVERWRITES))], failures


# Cases found to overwrite their input: case -> what must change. Each is a strict xfail below.
KNOWN_OVERWRITES: dict[str, str] = {
}


@pytest.mark.parametrize("case", [
    pytest.param(case, marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=why))
    for case, why in sorted(KNOWN_OVERWRITES.items())] or [pytest.param(
        "", marks=pytest.mark.skip(reason="no known case"))])
def test_known_overwrite(files: dict[str, Path], capsys: pytest.CaptureFixture[str], case: str) -> None:
    _refused(_overwrite_cases(files)[case], capsys, [files[k] for k in ("cfg", "weights", "image")])


def _eval_files(files: dict[str, Path]) -> dict[str, Path]:
    root = files["cfg"].parent
    run = make_tiny_run(root, TINY, name="r", images=1, copy=True, valid=True,
                        data={"results": root / "results"})
    assert run.valid is not None and run.names is not None
    return {"data": run.data, "valid": run.valid, "names": run.names}


def _eval_outcome(argv: list[str], capsys: pytest.CaptureFixture[str], inputs: list[Path]) -> str:
    """"refused", "overwritten", "crash: <type>" or "wrote elsewhere"."""
    before = _digest(inputs)
    try:
        code = main(argv)
    except Exception as exc:  # noqa: BLE001 - a non-darknetpy error escaping main is a bug
        capsys.readouterr()
        return f"crash: {type(exc).__name__}: {str(exc)[:100]}"
    capsys.readouterr()
    if _digest(inputs) != before:
        return "overwritten"
    return "refused" if code == 2 else f"exit {code}, inputs intact"


def _eval_cases(files: dict[str, Path]) -> tuple[dict[str, list[str]], list[Path]]:
    extra = _eval_files(files)
    cfg, w, data = str(files["cfg"]), str(files["weights"]), str(extra["data"])
    inputs = [files["cfg"], files["weights"], extra["data"], extra["valid"], extra["names"]]
    cases = {
        "map --json=cfg": ["map", cfg, data, w, "--no-coco", "--json", cfg],
        "map --json=weights": ["map", cfg, data, w, "--no-coco", "--json", w],
        "map --json=data": ["map", cfg, data, w, "--no-coco", "--json", data],
        "valid --out=data": ["valid", cfg, data, w, "--out", data],
        "valid --out=names": ["valid", cfg, data, w, "--out", str(extra["names"])],
        "valid --out=cfg.json (not an input)": ["valid", cfg, data, w, "--out",
                                                 str(files["cfg"].with_suffix(".json"))],
    }
    return cases, inputs


# Evaluation command lines found to overwrite an input or crash: case -> what must change.
KNOWN_EVAL: dict[str, str] = {
}


def test_evaluation_outputs_refuse_to_overwrite_an_input(files: dict[str, Path],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    cases, inputs = _eval_cases(files)
    outcomes = {}
    for name, argv in cases.items():
        if name in KNOWN_EVAL:
            continue
        outcomes[name] = _eval_outcome(argv, capsys, inputs)
    print(f"evaluation outputs: {outcomes}")
    assert outcomes.pop("valid --out=cfg.json (not an input)") == "exit 0, inputs intact"
    assert all(v == "refused" for v in outcomes.values()), outcomes


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.xfail(
    strict=True, raises=AssertionError, reason=why))
                                  for c, why in sorted(KNOWN_EVAL.items())] or [pytest.param(
    "", marks=pytest.mark.skip(reason="no known case"))])
def test_known_evaluation_overwrite(files: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                    case: str) -> None:
    cases, inputs = _eval_cases(files)
    assert _eval_outcome(cases[case], capsys, inputs) == "refused"
