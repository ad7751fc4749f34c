"""Training curves of several runs side by side: Darknet's and darknetpy's ``detector train`` logs.

    python3 bench/training_curves.py OUT.png LABEL=LOG [LABEL=LOG ...] [--at 100,200,300]

A LOG is the console output of ``darknet detector train ... -map`` or ``darknetpy train ... --map``
(the iteration lines ``N: loss, avg avg loss, rate, ...`` and the mAP lines), or a golden
``train-curve.json`` (``map50_at``, ``avg_loss_at``). Prints a table (mAP@0.5 and average loss at
the ``--at`` iterations, the CPU model) and draws the average loss and the mAP of every run into
OUT.png (:func:`_draw`).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ITERATION = re.compile(r"^\s*(\d+): [-\d.naif]+, ([-\d.naif]+) avg loss")
MAP = re.compile(r"mean.average.precision \(mAP@0\.50\) = ([\d.]+)")


def read_log(path: Path) -> tuple[dict[int, float], dict[int, float]]:
    """({iteration: average loss}, {iteration: mAP@0.5}) of a training log or train-curve.json."""
    if path.suffix == ".json":
        d = json.loads(path.read_text())
        return ({int(k): float(v) for k, v in d["avg_loss_at"].items()},
                {int(k): float(v) for k, v in d["map50_at"].items()})  # fmt: skip
    losses: dict[int, float] = {}
    maps: dict[int, float] = {}
    last = 0
    for line in path.read_text(errors="replace").splitlines():
        line = line.split("\x1b[J")[-1]
        m = ITERATION.match(line)
        if m:
            last = int(m.group(1))
            losses[last] = float(m.group(2))
            continue
        m = MAP.search(line)
        if m and last not in maps:
            maps[last] = float(m.group(1))
    return losses, maps


def main() -> None:
    from darknetpy.inference.backend_cache import cpu_model

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("runs", nargs="+", metavar="LABEL=LOG")
    p.add_argument("--at", default="100,200,300")
    a = p.parse_args()
    at = [int(v) for v in a.at.split(",")]
    runs = {label: read_log(Path(log)) for label, log in (r.split("=", 1) for r in a.runs)}
    print(f"CPU: {cpu_model()}")
    width = max(len(k) for k in runs)
    print(f"{'run':{width}s} | " + " | ".join(f"mAP@{i:<4d}" for i in at) + " | "
          + " | ".join(f"loss@{i:<4d}" for i in at))  # fmt: skip
    for label, (losses, maps) in runs.items():
        print(f"{label:{width}s} | " + " | ".join(f"{maps[i]:8.3f}" if i in maps else "       -"
                                                  for i in at)
              + " | " + " | ".join(f"{losses[i]:9.3f}" if i in losses else "        -" for i in at))
    _draw(Path(a.out), runs, max(at))
    print(f"drew {a.out}")


def _draw(out: Path, runs: dict[str, tuple[dict[int, float], dict[int, float]]], last: int) -> None:
    """Three panels: the average loss (log scale), its tail from the first mAP on (linear), the mAP.
    Darknet's runs dashed in greys, runs labelled ``exact`` in reds, the others in blues."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    loss_ax, tail_ax, map_ax = (fig.add_subplot(1, 3, i) for i in (1, 2, 3))
    groups: dict[str, list[str]] = {}
    for label in runs:
        dashed = re.match(r"darknet\b", label, re.IGNORECASE) is not None  # not darknetpy
        groups.setdefault("darknet" if dashed else "exact" if "exact" in label else "other",
                          []).append(label)
    cmaps = {"darknet": "Greys", "exact": "Reds", "other": "Blues"}
    first_map = min((min(m) for _, m in runs.values() if m), default=0)
    for group, labels in groups.items():
        for n, label in enumerate(labels):
            losses, maps = runs[label]
            color = colormaps[cmaps[group]](0.5 + 0.45 * (n + 1) / (len(labels) + 1))
            style = "--" if group == "darknet" else "-"
            its = [i for i in sorted(losses) if i <= last and i % 10 == 0]
            loss_ax.plot(its, [losses[i] for i in its], style, color=color, label=label, lw=1.2)
            tail = [i for i in its if i >= first_map]
            tail_ax.plot(tail, [losses[i] for i in tail], style, color=color, lw=1.2)
            mits = [i for i in sorted(maps) if i <= last]
            map_ax.plot(mits, [maps[i] for i in mits], style, color=color, marker="o", label=label)
    loss_ax.set_yscale("log")
    for ax, ylabel in ((loss_ax, "average loss"), (tail_ax, "average loss"), (map_ax, "mAP@0.5")):
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
        ax.grid(True, color="0.85")
    tail_ax.set_title(f"from iteration {first_map}", fontsize=9)
    map_ax.set_ylim(0, 1)
    map_ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out, format="png")


if __name__ == "__main__":
    main()
