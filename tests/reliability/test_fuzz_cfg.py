"""Fuzzing the cfg reader and the network builder: every input builds or fails with a located error.

Property (issue 6): any text given as a cfg either builds a network (and then a forward pass on a
tiny input works and gives the shapes the builder announced) or raises a
:class:`~darknetpy.errors.DarknetpyError` whose message has ``path:line`` or names a layer.

* hypothesis: random text, random bytes, random ``[net]`` options, random networks of random sections
  with random keys and extreme values (0, negative, huge, non-numeric);
* a mutation fuzzer over the cfgs of ``../shared/cfg`` and ``../shared/golden`` (``bench/fuzz_cfg.py``,
  run here for a fixed seed and case count; the long run is ``@slow`` or the bench script itself).

Crashes found by the fuzzers and not fixed yet are listed in :data:`KNOWN_CRASHES`, each with its
minimal reproducer as a ``strict`` xfail test, so that the test flips when the fix lands.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from darknetpy import Network
from darknetpy.model.cfg import Options, parse_cfg, read_cfg
from darknetpy.errors import DarknetpyError
from darknetpy.model.netconfig import parse_net_options

from ..conftest import require_shared
from . import REPO, address_space_limit, load_bench

BENCH = REPO / "bench" / "fuzz_cfg.py"
FUZZ_PATH = "fuzz/random.cfg"
WHOLE_FILE = re.compile(r"no \[section\] found|is a binary file")

# ------------------------------------------------------------------------------------------------
# Crashes the fuzzers found: signature (as bench/fuzz_cfg.py prints it) -> (minimal reproducer,
# the file/function that must change). Each has a strict xfail test below; when a fix lands the
# test XPASSes (= fails) and the entry must be removed from this table.
def _net(body: str, size: int = 64) -> str:
    return f"[net]\nchannels=3\nwidth={size}\nheight={size}\n{body}"


# Fixed since they were found (their reproducers now build or fail with a located CfgError; kept
# as regression cases in test_fixed_crashes_stay_fixed): an unbounded int from cfg.py _atoi reaching
# torch (TypeError in conv empty_module, conv2d/max_pool2d stride), a layer too large to allocate
# (RuntimeError in conv empty_module), a [maxpool] window far larger than its input (F.pad
# overflow in pool.py forward).
_HUGE = "9" * 40
FIXED_CRASHES: dict[str, str] = {
    "unbounded int -> torch.empty": _net(f"[convolutional]\nfilters={_HUGE}\n"),
    "unbounded int -> max_pool2d stride": _net("[maxpool]\nstride=1000000000000000000000\n"),
    "unbounded int -> conv2d stride": _net(f"[convolutional]\nstride={_HUGE}\n"),
    "conv weights too large to allocate": _net("[convolutional]\nfilters=2147483647\n"),
    "connected input too large": ("[net]\nwidth=2147483647\nheight=2147483647\nchannels=3\n"
                                  "[connected]\noutput=1\n"),
    "implicit too large": _net("[implicit]\nfilters=2147483647\n"),
    "maxpool window >> input": _net("[maxpool]\nsize=2147483647\n"),
    "maxpool size 1e11": _net("[maxpool]\nsize=99999999999\n"),
    "maxpool padding 2^31-1": _net("[maxpool]\nsize=2\npadding=2147483647\n"),
    "upsample stride 2^31-1": _net("[upsample]\nstride=2147483647\n"),
    "negative [net] channels": "[net]\nwidth=16\nheight=16\nchannels=-3\n[activation]\n",
}

KNOWN_CRASHES: dict[str, tuple[str, str]] = {
}


def outcome_of(text: str, path: str = FUZZ_PATH, forward: bool = True):
    """bench/fuzz_cfg.py's classification of one input (an ``Outcome``)."""
    return _fuzz().check_case(text, path, forward=forward, timeout=30.0)


_BENCH_MODULE = None


def _fuzz():
    global _BENCH_MODULE
    if _BENCH_MODULE is None:
        _BENCH_MODULE = load_bench("fuzz_cfg")
    return _BENCH_MODULE


def _located(message: str, path: str) -> bool:
    return bool(re.search(re.escape(path) + r":\d+", message) or re.search(r"\blayer \d+", message))


# ------------------------------------------------------------------------------------------------
# 1. the lexer alone: random text and bytes
_LINE = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["[net]", "[convolutional]", "[ net ]", "[", "]", "[]", "=", "a=b", "a==b",
                     "#x", ";x", "key", "k=", "=v", "[yolo] # c", "\x00", "\ufeff[net]"]),
    st.builds(lambda k, v: f"{k}={v}", st.text(max_size=8), st.text(max_size=12)),
)
_CFG_TEXT = st.one_of(
    st.text(max_size=400),
    st.lists(_LINE, max_size=25).map("\n".join),
    st.lists(st.one_of(_LINE, st.sampled_from(["filters=3", "size = 1", "[yolo]", "  # c"])),
             max_size=25).map(lambda lines: "\n".join(["[net]", *lines])),
)


def test_lexer_never_crashes_on_random_text() -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=600, deadline=None, derandomize=True, database=None)
    @given(_CFG_TEXT)
    def check(text: str) -> None:
        seen["inputs"] += 1
        try:
            sections = parse_cfg(text, FUZZ_PATH)
        except DarknetpyError as exc:
            seen["error"] += 1
            message = str(exc)
            assert FUZZ_PATH in message, message
            assert _located(message, FUZZ_PATH) or WHOLE_FILE.search(message), message
            return
        seen["parsed"] += 1
        assert sections
        if _OTHER_BREAKS.search(text):  # line numbers differ: test_line_numbers_count_only_lf
            return
        for section in sections:  # every entry carries the line it came from
            assert all(1 <= e.line <= text.count("\n") + 1 for e in section.entries)
            assert " " not in section.name and all("=" not in e.key for e in section.entries)

    check()
    print(f"lexer: {seen['inputs']} random texts: {seen['parsed']} parsed, {seen['error']} CfgError")
    assert seen["inputs"] >= 300 and seen["parsed"] >= 50 and seen["error"] >= 50, seen


# Line breaks of str.splitlines() other than LF (CRLF counts as one LF).
_OTHER_BREAKS = re.compile("\r(?!\n)|[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def test_line_numbers_count_only_lf() -> None:
    text = "[net]\nwidth=32\x0c\nheight=32\nchannels=3\n[convolutional]\nfilters=x\n"
    with pytest.raises(DarknetpyError, match=re.escape(f"{FUZZ_PATH}:6 ")):  # 6th line in an editor
        Network.from_text(text, path=FUZZ_PATH)


def test_read_cfg_never_crashes_on_random_bytes(tmp_path: Path) -> None:
    seen: Counter[str] = Counter()
    path = tmp_path / "random.cfg"

    @settings(max_examples=300, deadline=None, derandomize=True, database=None)
    @given(st.one_of(st.binary(max_size=300),
                     st.builds(lambda a, b: b"[net]\nwidth=1\n" + a + b"\n[conv]\n" + b,
                               st.binary(max_size=60), st.binary(max_size=60)),
                     st.builds(lambda t: b"[net]\n" + t.encode("utf-8", "surrogatepass"),
                               st.text(alphabet=st.characters(blacklist_characters="\x00"),
                                       max_size=80))))
    def check(data: bytes) -> None:
        seen["inputs"] += 1
        path.write_bytes(data)
        try:
            read_cfg(path)
        except DarknetpyError as exc:
            seen["error"] += 1
            message = str(exc)
            assert str(path) in message, message
            assert _located(message, str(path)) or WHOLE_FILE.search(message), message
        else:
            seen["parsed"] += 1

    check()
    print(f"read_cfg: {seen['inputs']} random byte files: {seen['parsed']} parsed, "
          f"{seen['error']} CfgError")
    assert seen["inputs"] >= 150 and seen["error"]


def test_unreadable_cfg_paths_are_cfg_errors(tmp_path: Path) -> None:
    cases = {"missing": tmp_path / "nope.cfg", "directory": tmp_path}
    noperm = tmp_path / "noperm.cfg"
    noperm.write_text("[net]\n")
    noperm.chmod(0)
    if not noperm.exists() or _can_read(noperm):  # running as root: permissions do not apply
        noperm = None
    else:
        cases["no permission"] = noperm
    for why, path in cases.items():
        with pytest.raises(DarknetpyError) as info:
            read_cfg(path)
        assert str(path) in str(info.value), (why, info.value)


def _can_read(path: Path) -> bool:
    try:
        path.read_bytes()
    except OSError:
        return False
    return True


# ------------------------------------------------------------------------------------------------
# 2. [net] options: typed reads of random keys and extreme values
EXTREMES = ["0", "-1", "1", "2", "3", "-0", "2147483647", "2147483648", "-2147483649",
            "99999999999999999999999", "1e39", "-1e39", "1e-45", "nan", "inf", "-inf", "abc",
            "0x10", "1.5", "+", "-", ".", "1,2", ",", "1e400", "1,,2", "1,2,", "#", "steps"]
VALUES = st.one_of(st.sampled_from(EXTREMES), st.integers(-10, 700).map(str),
                   st.text(alphabet="0123456789.,-+eE#abc", min_size=1, max_size=12))
NET_KEYS = ["batch", "subdivisions", "width", "height", "channels", "policy", "steps", "scales",
            "max_batches", "learning_rate", "momentum", "decay", "burn_in", "power", "mosaic",
            "flip", "hue", "saturation", "exposure", "resize_step", "time_steps", "step", "scale",
            "gamma", "sgdr_cycle", "sgdr_mult", "letter_box", "adam", "B1", "inputs", "unknown_key"]


def test_net_section_random_options() -> None:
    seen: Counter[str] = Counter()
    policies = st.sampled_from(["steps", "step", "poly", "sgdr", "constant", "exp", "stepz", "", "x"])

    @settings(max_examples=500, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.tuples(st.sampled_from(NET_KEYS), st.one_of(VALUES, policies)), max_size=10),
           st.booleans())
    def check(pairs: list[tuple[str, str]], sane_size: bool) -> None:
        seen["inputs"] += 1
        lines = ["[net]"] + [f"{k}={v}" for k, v in pairs if v]
        if sane_size:
            lines += ["width=32", "height=32", "channels=3"]
        text = "\n".join(lines) + "\n"
        try:
            section = parse_cfg(text, FUZZ_PATH)[0]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                net = parse_net_options(Options(section))
        except DarknetpyError as exc:
            seen["error"] += 1
            assert _located(str(exc), FUZZ_PATH), str(exc)
            return
        seen["parsed"] += 1
        assert net.batch >= 1 and net.subdivisions >= 1 and net.mini_batch >= 1
        assert len(net.steps) == len(net.scales)

    check()
    print(f"[net]: {seen['inputs']} random option sets: {seen['parsed']} parsed, "
          f"{seen['error']} CfgError")
    assert seen["parsed"] and seen["error"]


# ------------------------------------------------------------------------------------------------
# 3. random networks of random sections, built and run
SECTIONS = ["convolutional", "maxpool", "avgpool", "local_avgpool", "upsample", "route", "shortcut",
            "sam", "scale_channels", "reorg", "reorg3d", "yolo", "Gaussian_yolo", "region",
            "dropout", "connected", "softmax", "batchnorm", "activation", "crop", "cost", "empty",
            "silence", "implicit", "contrastive", "rnn", "net", "Convolutional", "xyz"]
LAYER_KEYS = {
    "convolutional": ["filters", "size", "stride", "stride_x", "stride_y", "pad", "padding",
                      "dilation", "groups", "activation", "batch_normalize", "antialiasing",
                      "binary", "xnor", "share_index"],
    "maxpool": ["size", "stride", "stride_x", "stride_y", "padding", "maxpool_depth",
                "out_channels", "antialiasing"],
    "local_avgpool": ["size", "stride", "padding"],
    "upsample": ["stride", "scale"],
    "route": ["layers", "groups", "group_id"],
    "shortcut": ["from", "activation", "weights_type", "weights_normalization"],
    "sam": ["from", "activation"],
    "scale_channels": ["from", "scale_wh", "activation"],
    "reorg": ["stride", "reverse"],
    "reorg3d": ["stride", "reverse"],
    "yolo": ["mask", "anchors", "classes", "num", "scale_x_y", "new_coords", "iou_loss"],
    "Gaussian_yolo": ["mask", "anchors", "classes", "num"],
    "region": ["anchors", "classes", "num", "coords", "softmax"],
    "connected": ["output", "activation", "batch_normalize"],
    "crop": ["crop_height", "crop_width", "flip"],
    "implicit": ["filters", "mean", "std"],
    "dropout": ["probability", "dropblock", "dropblock_size_abs"],
    "activation": ["activation"],
    "softmax": ["groups", "temperature"],
}
ALL_LAYER_KEYS = sorted({k for keys in LAYER_KEYS.values() for k in keys} | {"stopbackward",
                                                                             "dontload", "bogus"})
SANE: dict[str, list[str]] = {
    "filters": ["1", "2", "4", "8", "16", "18", "24"], "size": ["1", "2", "3", "5"],
    "stride": ["1", "2"], "stride_x": ["1", "2"], "stride_y": ["1", "2"], "pad": ["0", "1"],
    "padding": ["0", "1", "2"], "dilation": ["1", "2"], "groups": ["1", "2", "4"],
    "group_id": ["0", "1"], "batch_normalize": ["0", "1"], "antialiasing": ["0", "1", "2"],
    "binary": ["0", "1"], "xnor": ["0", "1"], "share_index": ["0", "-1", "-2"],
    "activation": ["leaky", "linear", "mish", "swish", "logistic", "relu", "relu6", "tanh",
                   "hard_mish", "elu", "selu", "gelu", "normalize_channels",
                   "normalize_channels_softmax", "normalize_channels_softmax_maxval"],
    "maxpool_depth": ["0", "1"], "out_channels": ["1", "4"], "scale": ["1", "0.5", "2"],
    "layers": ["-1", "-2", "-1,-2", "0", "-1,-3", "-3", "1"], "from": ["-1", "-2", "-3", "0"],
    "weights_type": ["none", "per_feature", "per_channel"],
    "weights_normalization": ["none", "relu", "softmax"], "scale_wh": ["0", "1"],
    "reverse": ["0", "1"], "mask": ["0,1,2", "0", "3,4,5", "0,1"],
    "anchors": ["10,14, 23,27, 37,58", "10,14, 23,27, 37,58, 81,82, 135,169, 344,319", "1,1"],
    "classes": ["1", "2", "3"], "num": ["3", "6", "1", "5"], "scale_x_y": ["1", "1.05", "2"],
    "new_coords": ["0", "1"], "iou_loss": ["mse", "giou", "ciou", "diou"], "coords": ["4"],
    "softmax": ["0", "1"], "output": ["1", "4", "10"], "crop_height": ["8", "16"],
    "crop_width": ["8", "16"], "flip": ["0", "1"], "mean": ["0", "1"], "std": ["0.02"],
    "probability": ["0", "0.5", "0.9"], "dropblock": ["0", "1"], "dropblock_size_abs": ["1", "3"],
    "temperature": ["1", "0.5"], "stopbackward": ["0", "1"], "dontload": ["0", "1"],
    "bogus": ["1"],
}
LAYER_VALUES = st.one_of(
    st.integers(-3, 9).map(str),
    st.sampled_from(EXTREMES),
    st.sampled_from(["leaky", "linear", "mish", "mesh", "LEAKY", "-1,-2", "-1,100", "1,", "-4",
                     "2,3", "1,2,3,4,5,6", "0,0"]),
)


@st.composite
def random_network(draw: st.DrawFn) -> str:
    """[net] (mostly sane, sometimes extreme) + 1..7 sections whose keys take a sane value 85% of
    the time and an extreme or random one otherwise."""
    size = draw(st.sampled_from(["16", "32", "32", "64", "13", "1", "0", "-32", "99999999",
                                 "2147483647"]))
    channels = draw(st.sampled_from(["3", "3", "3", "1", "4", "0", "-3"]))
    height = draw(st.sampled_from([size, size, size, "32", "7"]))
    lines = ["[net]", f"width={size}", f"height={height}", f"channels={channels}"]
    for _ in range(draw(st.integers(1, 7))):
        name = draw(st.sampled_from(SECTIONS))
        lines.append(f"[{name}]")
        keys = LAYER_KEYS.get(name, ALL_LAYER_KEYS)
        for _ in range(draw(st.integers(0, 5))):
            key = draw(st.sampled_from(keys) if draw(st.integers(0, 9)) else
                       st.sampled_from(ALL_LAYER_KEYS))
            if key in SANE and draw(st.integers(0, 99)) < 85:
                value = draw(st.sampled_from(SANE[key]))
            else:
                value = draw(LAYER_VALUES)
            lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


def test_random_networks_build_or_fail_with_a_located_error() -> None:
    """700 random networks (fixed seed). Failures are collected by signature, each shrunk to a
    minimal reproducer (bench/fuzz_cfg.py's minimizer) and reported together."""
    fuzz = _fuzz()
    seen: Counter[str] = Counter()
    found: dict[str, str] = {}  # signature -> first failing text

    @settings(max_examples=700, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(random_network())
    def check(text: str) -> None:
        outcome = outcome_of(text)
        seen[outcome.kind] += 1
        seen["inputs"] += 1
        if outcome.is_failure:
            signature = f"{outcome.kind}: {outcome.signature}"
            if signature in KNOWN_CRASHES:
                seen["known crash"] += 1
            else:
                found.setdefault(signature, text)

    with address_space_limit(3.0):
        check()
        reports = []
        for signature, text in found.items():
            def same(t: str, sig: str = signature) -> bool:
                o = outcome_of(t)
                return f"{o.kind}: {o.signature}" == sig
            small = fuzz.minimize(text, same, seconds=15.0)
            reports.append(f"{signature}\n{outcome_of(small).detail}\n{small}")
    print(f"random networks: {seen['inputs']} inputs: "
          + ", ".join(f"{k} {v}" for k, v in sorted(seen.items()) if k != "inputs"))
    assert not reports, "random networks crashed the builder:\n\n" + "\n\n".join(reports)
    assert seen["built"] >= 50, seen  # the strategy must reach the builders' happy path too
    assert seen["cfg_error"] >= 50, seen


# ------------------------------------------------------------------------------------------------
# 4. the mutation fuzzer (bench/fuzz_cfg.py) over the real cfgs
def _run_bench(tmp_path: Path, *args: str, timeout: int) -> dict:
    out = tmp_path / "fuzz.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--json", str(out), "--quiet", *args],
                          check=False, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    print(proc.stdout[-3000:])
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return json.loads(out.read_text())


def _check_report(report: dict) -> None:
    unexpected = {sig: entry for sig, entry in report["failures"].items() if sig not in KNOWN_CRASHES}
    message = "\n\n".join(
        f"{sig} x{e['count']} ({e['cfg']}: {'; '.join(e['mutations'])})\n{e['detail']}\n"
        f"{e.get('reproducer', '')[:1500]}" for sig, e in unexpected.items())
    assert not unexpected, f"the mutation fuzzer found crashes:\n{message}"


def test_mutation_fuzzer_over_golden_cfgs(tmp_path: Path) -> None:
    """~20 s: the golden networks (small versions of every official layer type), 250 mutants."""
    require_shared()
    report = _run_bench(tmp_path, "--golden-only", "--cases", "250", "--seed", "0",
                        timeout=400)
    outcomes = report["outcomes"]
    assert report["inputs"] >= 250
    assert outcomes.get("built", 0) >= 25 and outcomes.get("cfg_error", 0) >= 50, outcomes
    # every unmutated golden cfg builds
    assert all(kind == "built" for kind in report["baseline"].values()), report["baseline"]
    _check_report(report)


@pytest.mark.slow
def test_mutation_fuzzer_over_every_shared_cfg(tmp_path: Path) -> None:
    """Every cfg of ../shared/cfg and ../shared/golden, 12 mutants each, with forward passes."""
    require_shared()
    corpus = _fuzz().cfg_corpus()
    known = [arg for sig in KNOWN_CRASHES for arg in ("--known", sig)]
    report = _run_bench(tmp_path, "--cases", str(12 * len(corpus)), "--seed", "1", "--minimize",
                        *known, timeout=3000)
    assert report["inputs"] >= 13 * len(corpus)
    baseline = Counter(report["baseline"].values())
    assert baseline["built"] >= 70 and not set(baseline) - {"built", "cfg_error"}, baseline
    _check_report(report)


def test_mutations_change_the_text_and_keep_reproducible() -> None:
    """The mutation operators are deterministic for a seed and do change the input."""
    import numpy as np

    fuzz = _fuzz()
    base = _net("[convolutional]\nfilters=8\nsize=3\nstride=1\npad=1\nactivation=leaky\n"
                "[maxpool]\nsize=2\nstride=2\n[route]\nlayers=-1,-2\n")
    a = [fuzz.mutate(base, np.random.default_rng(7)) for _ in range(1)]
    b = [fuzz.mutate(base, np.random.default_rng(7)) for _ in range(1)]
    assert a == b
    rng = np.random.default_rng(0)
    texts = {fuzz.mutate(base, rng)[0] for _ in range(200)}
    assert len(texts) > 150 and base not in texts
    for op in fuzz.MUTATIONS:
        lines = base.splitlines()
        op(lines, np.random.default_rng(1))
        assert isinstance(lines, list)
    assert fuzz.shrink_input("[net]\nwidth=608\nheight=608\n[maxpool]\n", 64).splitlines()[:3] == [
        "[net]", "width=64", "height=64"]


# ------------------------------------------------------------------------------------------------
# 5. reproducers of the crashes found (strict xfail until fixed), and the fixed ones
@pytest.mark.parametrize("case", sorted(FIXED_CRASHES))
def test_fixed_crashes_stay_fixed(case: str) -> None:
    with address_space_limit(3.0):
        outcome = outcome_of(FIXED_CRASHES[case])
    assert outcome.kind in ("built", "cfg_error"), (outcome.kind, outcome.signature, outcome.detail)

class KnownCrash(AssertionError):
    """The reproducer still fails with the signature recorded in KNOWN_CRASHES."""


@pytest.mark.parametrize("signature", [
    pytest.param(sig, marks=pytest.mark.xfail(strict=True, raises=KnownCrash, reason=where),
                 id=sig)
    for sig, (_, where) in sorted(KNOWN_CRASHES.items())] or [
    pytest.param("", marks=pytest.mark.skip(reason="no known crash"))])
def test_known_crash_reproducer(signature: str) -> None:
    """Fails (xfail) only with the recorded signature; fixed -> XPASS -> remove the entry."""
    text, where = KNOWN_CRASHES[signature]
    with address_space_limit(3.0):
        outcome = outcome_of(text)
    if outcome.is_failure and f"{outcome.kind}: {outcome.signature}" == signature:
        raise KnownCrash(f"{where}: {outcome.detail}")
    assert not outcome.is_failure, f"another failure than recorded: {outcome.signature}: {outcome.detail}"
    assert outcome.kind in ("built", "cfg_error"), outcome
