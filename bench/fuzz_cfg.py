"""Mutation fuzzer for the cfg reader and the network builder.

Every Darknet cfg in ``../shared/cfg`` (and ``../shared/golden/*/net.cfg``) is shrunk to a small input
size (``[net] width/height``), then mutated 1-3 times (lines deleted, duplicated or swapped; numbers
set to 0, -1, huge or non-numeric; section names changed; the file truncated; garbage inserted) and
given to :meth:`darknetpy.Network.from_text`. Every input must either build (then a forward pass on a
tiny input must work and give the shapes the builder announced) or raise a
:class:`~darknetpy.errors.DarknetpyError` whose message has ``path:line`` or names a layer. Anything
else is a crash: it is printed with its signature (exception type and the darknetpy function it
escaped from) and, with ``--minimize``, a minimal reproducer.

Usage::

    python3 bench/fuzz_cfg.py                       # 10 minutes, seed 0
    python3 bench/fuzz_cfg.py --seconds 60 --seed 3 --minimize
    python3 bench/fuzz_cfg.py --cases 500 --json out.json

The process limits its own address space (``--memory-gb``, default 4 GiB above what it uses at
start) so that a cfg asking for a 100 GB layer fails inside the fuzzer instead of the machine; such a
failure is reported as a crash (``RuntimeError``/``MemoryError`` from an allocation), as the builder
should say which layer is too large.

``tests/reliability/test_fuzz_cfg.py`` runs this script for ~20 s with a fixed seed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import resource
import signal
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import os

SHARED = Path(os.environ.get("DARKNETPY_SHARED", REPO.parent / "shared"))

# Values a mutated number becomes: zero, negative, huge (int32 edge, beyond int64, float overflow),
# non-numeric and special floats.
EXTREME_VALUES: tuple[str, ...] = (
    "0", "-1", "-2", "1", "2", "-0", "3", "7", "65", "-65", "4096", "2147483647", "2147483648",
    "-2147483648", "99999999999", "1000000000000000000000", "1e39", "-1e39", "1e-45", "nan", "inf",
    "-inf", "abc", "0x10", "1.5", "-0.5", "+", "1,2", ",", "1e400", "9" * 40,
)

# Keys the builders read, to add a random (usually wrong) key to a section.
KNOWN_KEYS: tuple[str, ...] = (
    "filters", "size", "stride", "stride_x", "stride_y", "pad", "padding", "dilation", "groups",
    "group_id", "activation", "batch_normalize", "layers", "from", "mask", "anchors", "classes", "num",
    "jitter", "scale_x_y", "iou_loss", "antialiasing", "output", "weights_type",
    "weights_normalization", "reverse", "maxpool_depth", "out_channels", "share_index", "coords",
    "new_coords", "ignore_thresh", "truth_thresh", "random", "max_delta", "dontload", "stopbackward",
    "learning_rate", "probability", "crop_height", "crop_width", "flatten", "extra", "scale_wh",
    "channels", "width", "height", "batch", "subdivisions", "policy", "steps", "scales",
)

SECTION_NAMES: tuple[str, ...] = (
    "convolutional", "maxpool", "avgpool", "local_avgpool", "upsample", "route", "shortcut", "sam",
    "scale_channels", "reorg", "reorg3d", "yolo", "Gaussian_yolo", "region", "dropout", "connected",
    "softmax", "batchnorm", "activation", "crop", "cost", "empty", "silence", "implicit",
    "contrastive", "net", "network", "rnn", "lstm", "local", "detection", "Convolutional", "conv ",
    "", "yolo]", "[yolo", "unknown",
)

GARBAGE_LINES: tuple[str, ...] = (
    "=", "==", "a=b=c", "key", "[", "]", "[]", "[ ]", "filters=", "=3", "\x00\x01\x02", "#", ";x",
    "\ufeff[net]", "\u00e9t\u00e9=1", "x" * 5000, "filters=64 # comment", "layers=-1,,-2",
    "mask=,", "anchors=1,2,3", "\t\t", "\r", "[net", "activation=LEAKY", "from=-99999",
)

LOCATED = re.compile(r"\blayer \d+")


def cfg_corpus(include_golden: bool = True) -> list[Path]:
    """Every cfg in ``../shared/cfg`` (recursively), then the golden networks' ``net.cfg``."""
    files = sorted((SHARED / "cfg").rglob("*.cfg"))
    if include_golden:
        files += sorted((SHARED / "golden").glob("*/net.cfg"))
    return files


def corpus_name(path: Path) -> str:
    """``yolov4.cfg`` or ``golden-yolov4.cfg``: the name a fuzz case's messages must carry."""
    rel = path.relative_to(SHARED)
    if rel.parts[0] == "golden":
        return f"golden-{rel.parts[1]}.cfg"
    return "-".join(rel.parts[1:])


def shrink_input(text: str, size: int) -> str:
    """Set ``[net] width/height`` to ``size`` (added when missing), keep everything else."""
    out, in_net, done = [], False, False
    for line in text.splitlines():
        stripped = re.sub(r"[ \t\r]", "", line)
        if stripped.startswith("["):
            if in_net and not done:
                out += [f"width={size}", f"height={size}"]
                done = True
            in_net = stripped in ("[net]", "[network]")
            out.append(line)
            continue
        if in_net and re.match(r"(width|height)=", stripped):
            continue
        out.append(line)
    if in_net and not done:
        out += [f"width={size}", f"height={size}"]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- mutations
def _lines(text: str) -> list[str]:
    return text.splitlines()


def _join(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def _content_indices(lines: list[str]) -> list[int]:
    return [i for i, s in enumerate(lines) if s.strip() and not s.strip().startswith(("#", ";"))]


def _section_starts(lines: list[str]) -> list[int]:
    return [i for i, s in enumerate(lines) if s.strip().startswith("[")]


def m_delete_line(lines: list[str], rng: np.random.Generator) -> str:
    idx = _content_indices(lines)
    i = int(rng.choice(idx))
    del lines[i]
    return f"delete line {i + 1}"


def m_duplicate_line(lines: list[str], rng: np.random.Generator) -> str:
    idx = _content_indices(lines)
    i = int(rng.choice(idx))
    j = int(rng.integers(0, len(lines) + 1))
    lines.insert(j, lines[i])
    return f"copy line {i + 1} to {j + 1}"


def m_swap_lines(lines: list[str], rng: np.random.Generator) -> str:
    idx = _content_indices(lines)
    i, j = (int(v) for v in rng.choice(idx, 2))
    if rng.random() < 0.5 and i + 1 < len(lines):
        j = i + 1
    lines[i], lines[j] = lines[j], lines[i]
    return f"swap lines {i + 1},{j + 1}"


def m_number(lines: list[str], rng: np.random.Generator) -> str:
    idx = [i for i in _content_indices(lines) if "=" in lines[i] and re.search(r"\d", lines[i])]
    if not idx:
        return m_insert_garbage(lines, rng)
    i = int(rng.choice(idx))
    key, _, value = lines[i].partition("=")
    numbers = list(re.finditer(r"[+-]?\d+(\.\d*)?([eE][+-]?\d+)?", value))
    new = str(rng.choice(EXTREME_VALUES))
    if not numbers or rng.random() < 0.3:
        value = new
    else:
        m = numbers[int(rng.integers(len(numbers)))]
        value = value[: m.start()] + new + value[m.end():]
    lines[i] = f"{key}={value}"
    return f"line {i + 1}: {key.strip()}={value.strip()[:40]}"


def m_section_name(lines: list[str], rng: np.random.Generator) -> str:
    starts = _section_starts(lines)
    i = int(rng.choice(starts))
    name = str(rng.choice(SECTION_NAMES))
    lines[i] = f"[{name}]" if not name.startswith("[") and not name.endswith("]") else name
    return f"section at line {i + 1} -> {lines[i]!r}"


def m_truncate(lines: list[str], rng: np.random.Generator) -> str:
    text = _join(lines)
    cut = int(rng.integers(0, len(text)))
    lines[:] = text[:cut].split("\n")
    return f"truncate at char {cut}"


def m_insert_garbage(lines: list[str], rng: np.random.Generator) -> str:
    j = int(rng.integers(0, len(lines) + 1))
    if rng.random() < 0.3:
        raw = bytes(rng.integers(0, 256, int(rng.integers(1, 40)), dtype=np.uint8))
        garbage = raw.decode("utf-8", errors="replace")
    else:
        garbage = str(rng.choice(GARBAGE_LINES))
    lines.insert(j, garbage)
    return f"insert garbage at {j + 1}: {garbage[:20]!r}"


def m_random_key(lines: list[str], rng: np.random.Generator) -> str:
    starts = _section_starts(lines)
    i = int(rng.choice(starts))
    key = str(rng.choice(KNOWN_KEYS))
    value = str(rng.choice(EXTREME_VALUES))
    # Put it right after the header so that it is the first occurrence (first wins).
    lines.insert(i + 1, f"{key}={value}")
    return f"after line {i + 1}: {key}={value}"


def m_delete_section(lines: list[str], rng: np.random.Generator) -> str:
    starts = _section_starts(lines)
    if len(starts) < 2:
        return m_delete_line(lines, rng)
    k = int(rng.integers(1, len(starts)))
    end = starts[k + 1] if k + 1 < len(starts) else len(lines)
    del lines[starts[k]:end]
    return f"delete section at line {starts[k] + 1}"


def m_duplicate_section(lines: list[str], rng: np.random.Generator) -> str:
    starts = _section_starts(lines)
    k = int(rng.integers(0, len(starts)))
    end = starts[k + 1] if k + 1 < len(starts) else len(lines)
    block = lines[starts[k]:end]
    j = int(rng.choice(starts + [len(lines)]))
    lines[j:j] = block
    return f"copy section at line {starts[k] + 1} to {j + 1}"


def m_reference(lines: list[str], rng: np.random.Generator) -> str:
    idx = [i for i in _content_indices(lines)
           if re.sub(r"\s", "", lines[i]).startswith(("layers=", "from=", "mask="))]
    if not idx:
        return m_number(lines, rng)
    i = int(rng.choice(idx))
    key = re.sub(r"\s", "", lines[i]).split("=", 1)[0]
    choices = ["-1", "0", "-1000", "1000", "-1,-1", "0,0,0", "-1,1000", "", "5,", ",5", "-0", "1.5"]
    value = str(rng.choice(choices)) or str(int(rng.integers(-50, 50)))
    lines[i] = f"{key}={value}"
    return f"line {i + 1}: {key}={value}"


MUTATIONS: tuple[Callable[[list[str], np.random.Generator], str], ...] = (
    m_delete_line, m_duplicate_line, m_swap_lines, m_number, m_number, m_number, m_section_name,
    m_truncate, m_insert_garbage, m_random_key, m_random_key, m_delete_section,
    m_duplicate_section, m_reference, m_reference,
)


def mutate(text: str, rng: np.random.Generator, count: int | None = None) -> tuple[str, list[str]]:
    """``count`` (1-3 when None) random mutations of ``text``; returns the text and what was done."""
    lines = _lines(text)
    done = []
    for _ in range(count or int(rng.integers(1, 4))):
        if not _content_indices(lines) or not _section_starts(lines):
            lines.append(str(rng.choice(GARBAGE_LINES)))
            done.append("append garbage")
            continue
        done.append(MUTATIONS[int(rng.integers(len(MUTATIONS)))](lines, rng))
    return _join(lines), done


# ----------------------------------------------------------------------------- one case
class CaseTimeout(BaseException):
    """A case ran longer than its time limit (BaseException: the library must not swallow it)."""


@dataclass
class Outcome:
    """What one input did. ``kind`` is one of :data:`KINDS`."""

    kind: str
    detail: str = ""
    signature: str = ""  # crashes: "TypeName @ darknetpy/file.py:function"
    trace: str = ""

    @property
    def is_failure(self) -> bool:
        return self.kind in FAILURES


KINDS = ("built", "cfg_error", "cfg_error_file_only", "unimplemented",
         "crash", "unlocated_error", "bad_shape", "forward_crash", "forward_shape_mismatch",
         "timeout")
FAILURES = frozenset({"crash", "unlocated_error", "bad_shape", "forward_crash",
                      "forward_shape_mismatch"})
# A timeout is not a failure by itself (a mutant may legitimately describe a huge network, and
# the machine may be busy); timeouts are listed with their input so that a hang can be spotted.


def _signature(exc: BaseException) -> str:
    """``TypeName @ darknetpy/x.py:func`` of the deepest darknetpy frame the exception passed."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = "?"
    for frame in frames:
        norm = frame.filename.replace("\\", "/")
        if "/darknetpy/" in norm:
            where = f"darknetpy/{norm.rsplit('/darknetpy/', 1)[1]}:{frame.name}"
    return f"{type(exc).__name__} @ {where}"


def is_located(message: str, path: str) -> bool:
    """The message names ``path:line`` or a layer (``layer 12``)."""
    return bool(re.search(re.escape(path) + r":\d+", message) or LOCATED.search(message))


def _placeholder(exc: BaseException) -> bool:
    if not isinstance(exc, NotImplementedError):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and "/darknetpy/layers/" in frames[-1].filename.replace("\\", "/")


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`CaseTimeout` after ``seconds`` (main thread, POSIX only; no-op elsewhere)."""
    if seconds <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise CaseTimeout(f"over {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def forward_budget_ok(net: object, max_elements: int = 12_000_000) -> bool:
    """True when every layer's output together stays below ``max_elements`` floats."""
    total = 0
    for layer in net.layers:  # type: ignore[attr-defined]
        shape = layer.out_shape
        total += max(shape.channels, 0) * max(shape.height, 0) * max(shape.width, 0)
    shape = net.input_shape  # type: ignore[attr-defined]
    return total + shape.channels * shape.height * shape.width <= max_elements


def check_case(text: str, path: str, *, forward: bool = True, timeout: float = 20.0,
               seed: int = 0) -> Outcome:
    """Build ``text`` as a network named ``path``; classify what happened (never raises)."""
    import torch

    from darknetpy import Network
    from darknetpy.errors import DarknetpyError

    try:
        with time_limit(timeout), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                net = Network.from_text(text, path=path)
            except DarknetpyError as exc:
                message = str(exc)
                if is_located(message, path):
                    return Outcome("cfg_error", message[:300])
                if path in message and "no [section]" in message:
                    return Outcome("cfg_error_file_only", message[:300])
                return Outcome("unlocated_error", message[:300], _signature(exc))
            except Exception as exc:  # noqa: BLE001 - the point of the fuzzer
                if _placeholder(exc):
                    return Outcome("unimplemented", str(exc)[:200])
                return Outcome("crash", f"{type(exc).__name__}: {str(exc)[:300]}", _signature(exc),
                               traceback.format_exc(limit=-6))
            inp = net.input_shape
            if min(inp.channels, inp.height, inp.width) <= 0:
                return Outcome("bad_shape", f"[net] input {inp}", "bad_shape @ [net]")
            for layer in net.layers:
                s = layer.out_shape
                if min(s.channels, s.height, s.width) <= 0:
                    return Outcome("bad_shape", f"{layer.where()}: out_shape {s}",
                                   f"bad_shape @ {type(layer).__name__}")
            if not forward or not forward_budget_ok(net):
                return Outcome("built", "forward skipped")
            shape = net.input_shape
            gen = torch.Generator().manual_seed(seed)
            x = torch.rand(1, shape.channels, shape.height, shape.width, generator=gen)
            net.eval()
            try:
                with torch.no_grad():
                    outs = net.forward_layers(x)
            except DarknetpyError as exc:
                return Outcome("built", f"forward refused: {str(exc)[:200]}")
            except Exception as exc:  # noqa: BLE001
                if _placeholder(exc):
                    return Outcome("unimplemented", str(exc)[:200])
                return Outcome("forward_crash", f"{type(exc).__name__}: {str(exc)[:300]}",
                               "forward " + _signature(exc), traceback.format_exc(limit=-6))
            for layer, out in zip(net.layers, outs):
                s = layer.out_shape
                if out.dim() != 4 or tuple(out.shape[1:]) != (s.channels, s.height, s.width):
                    if out.dim() == 2 and out.shape[1] == s.numel:  # connected/softmax: (N, out)
                        continue
                    return Outcome("forward_shape_mismatch",
                                   f"{layer.where()}: announced {s}, forward gave {tuple(out.shape)}",
                                   f"shape @ {type(layer).__name__}")
            return Outcome("built", "forward ok")
    except CaseTimeout as exc:
        return Outcome("timeout", str(exc), "timeout")
    except MemoryError as exc:
        return Outcome("crash", "MemoryError", _signature(exc), traceback.format_exc(limit=-6))


# ----------------------------------------------------------------------------- minimizing
def minimize(text: str, still_fails: Callable[[str], bool], seconds: float = 60.0) -> str:
    """Greedy delta debugging: drop sections, then lines, while ``still_fails`` holds."""
    deadline = time.monotonic() + seconds
    lines = _lines(text)
    changed = True
    while changed and time.monotonic() < deadline:
        changed = False
        starts = _section_starts(lines)
        for k in range(len(starts) - 1, 0, -1):  # whole sections, last first, keep [net]
            if time.monotonic() > deadline:
                break
            starts = _section_starts(lines)
            if k >= len(starts):
                continue
            end = starts[k + 1] if k + 1 < len(starts) else len(lines)
            trial = lines[: starts[k]] + lines[end:]
            if still_fails(_join(trial)):
                lines, changed = trial, True
        for i in range(len(lines) - 1, -1, -1):
            if time.monotonic() > deadline:
                break
            if i >= len(lines):
                continue
            trial = lines[:i] + lines[i + 1:]
            if still_fails(_join(trial)):
                lines, changed = trial, True
    return _join(lines)


# ----------------------------------------------------------------------------- campaign
@dataclass
class Report:
    """Counts of a fuzz campaign and one example per failure signature."""

    seed: int
    inputs: int = 0
    seconds: float = 0.0
    outcomes: Counter = field(default_factory=Counter)
    per_cfg: Counter = field(default_factory=Counter)
    baseline: dict = field(default_factory=dict)  # cfg -> (size, outcome kind) unmutated
    failures: dict = field(default_factory=dict)  # signature -> example
    timeouts: list = field(default_factory=list)  # inputs slower than --timeout (not failures)

    def to_json(self) -> dict:
        out = asdict(self)
        out["outcomes"] = dict(self.outcomes)
        out["per_cfg"] = dict(self.per_cfg)
        return out


def baseline_size(text: str, path: str, sizes: tuple[int, ...] = (64, 128, 256)) -> tuple[str, Outcome]:
    """The smallest of ``sizes`` at which the unmutated cfg builds (else the last tried)."""
    outcome = Outcome("cfg_error")
    shrunk = text
    for size in sizes:
        shrunk = shrink_input(text, size)
        outcome = check_case(shrunk, path, forward=False)
        if outcome.kind == "built":
            return shrunk, outcome
    return shrunk, outcome


def run_campaign(seed: int = 0, *, seconds: float | None = 600.0, cases: int | None = None,
                 files: list[Path] | None = None, forward: bool = True, do_minimize: bool = False,
                 timeout: float = 20.0, verbose: bool = True,
                 skip_signatures: frozenset[str] = frozenset()) -> Report:
    """Mutate the corpus round-robin until ``seconds`` or ``cases`` run out."""
    rng = np.random.default_rng(seed)
    files = files if files is not None else cfg_corpus()
    report = Report(seed)
    start = time.monotonic()
    bases: list[tuple[str, str]] = []
    for path in files:
        name = f"fuzz/{corpus_name(path)}"
        base, outcome = baseline_size(path.read_text(encoding="utf-8", errors="replace"), name)
        report.baseline[corpus_name(path)] = outcome.kind
        report.inputs += 1
        report.outcomes[outcome.kind] += 1
        _record(report, outcome, base, ["unmutated"], name, do_minimize, forward, timeout, verbose,
                skip_signatures)
        bases.append((base, name))
    i = 0
    while True:
        if cases is not None and i >= cases:
            break
        if seconds is not None and time.monotonic() - start > seconds:
            break
        base, name = bases[i % len(bases)]
        text, done = mutate(base, rng)
        outcome = check_case(text, name, forward=forward, timeout=timeout, seed=i)
        report.inputs += 1
        report.outcomes[outcome.kind] += 1
        report.per_cfg[name] += 1
        _record(report, outcome, text, done, name, do_minimize, forward, timeout, verbose,
                skip_signatures)
        i += 1
    report.seconds = round(time.monotonic() - start, 1)
    return report


def _record(report: Report, outcome: Outcome, text: str, done: list[str], name: str,
            do_minimize: bool, forward: bool, timeout: float, verbose: bool,
            skip_signatures: frozenset[str]) -> None:
    if outcome.kind == "timeout":
        report.timeouts.append({"cfg": name, "mutations": done})
        return
    if not outcome.is_failure:
        return
    sig = f"{outcome.kind}: {outcome.signature}"
    entry = report.failures.setdefault(sig, {"count": 0})
    entry["count"] += 1
    if entry["count"] > 1:
        return
    entry.update(cfg=name, mutations=done, detail=outcome.detail, trace=outcome.trace)
    reproducer = text
    if do_minimize and sig not in skip_signatures:
        reproducer = minimize(
            text, lambda t: _same(check_case(t, name, forward=forward, timeout=timeout), outcome),
            seconds=90.0)
    entry["reproducer"] = reproducer if len(reproducer) < 6000 else reproducer[:6000] + "\n...\n"
    if verbose:
        detail = " ".join(outcome.detail.split())[:300]
        print(f"\n!! {sig} ({name}, {'; '.join(done)})\n   {detail}", flush=True)
        if do_minimize:
            print("   minimal reproducer:\n" + "\n".join("     " + s for s in reproducer.splitlines()))


def _same(a: Outcome, b: Outcome) -> bool:
    return a.kind == b.kind and a.signature == b.signature


def limit_memory(extra_gb: float) -> None:
    """Cap this process's address space at what it maps now plus ``extra_gb`` GiB."""
    if extra_gb <= 0:
        return
    try:
        with open("/proc/self/status") as f:
            vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
    except (OSError, StopIteration):
        vm = 2 << 30
    cap = int(vm + extra_gb * (1 << 30))
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="time budget (default 600)")
    parser.add_argument("--cases", type=int, default=None, help="number of mutated inputs instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-forward", action="store_true", help="build only")
    parser.add_argument("--minimize", action="store_true", help="shrink each new crash to a reproducer")
    parser.add_argument("--known", action="append", default=[], metavar="SIGNATURE",
                        help="a failure signature already known: not minimized (repeatable)")
    parser.add_argument("--memory-gb", type=float, default=4.0, help="address-space headroom (GiB)")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per input")
    parser.add_argument("--golden-only", action="store_true", help="only ../shared/golden/*/net.cfg")
    parser.add_argument("--json", type=Path, default=None, help="write the report as JSON")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if not (SHARED / "cfg").is_dir():
        print(f"{SHARED}/cfg not found: set DARKNETPY_SHARED", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(1)
    import darknetpy  # noqa: F401 - import before the memory cap

    limit_memory(args.memory_gb)
    files = sorted((SHARED / "golden").glob("*/net.cfg")) if args.golden_only else cfg_corpus()
    report = run_campaign(args.seed, seconds=None if args.cases else args.seconds, cases=args.cases,
                          files=files, forward=not args.no_forward, do_minimize=args.minimize,
                          timeout=args.timeout, verbose=not args.quiet,
                          skip_signatures=frozenset(args.known))
    print(f"\nfuzz_cfg: seed {report.seed}: {report.inputs} inputs tried "
          f"({len(files)} unmutated cfgs + {report.inputs - len(files)} mutants) in {report.seconds} s")
    for kind in KINDS:
        if report.outcomes.get(kind):
            print(f"  {kind:<24} {report.outcomes[kind]}")
    if report.failures:
        print(f"{len(report.failures)} distinct failure signatures:")
        for sig, entry in sorted(report.failures.items(), key=lambda kv: -kv[1]["count"]):
            detail = " ".join(entry["detail"].split())[:120]
            print(f"  {entry['count']:5d}  {sig}  (first: {entry['cfg']}: {detail})")
    else:
        print("no crash: every input built or raised a located DarknetpyError")
    if report.timeouts:
        print(f"{len(report.timeouts)} inputs ran longer than {args.timeout} s (not failures): "
              + "; ".join(f"{t['cfg']} ({', '.join(t['mutations'])})" for t in report.timeouts[:5]))
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=1))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
