"""``chart.png``: the average loss and mAP curves of a training run (``image_opencv.cpp:
draw_train_chart, draw_train_loss``), drawn with matplotlib's Agg canvas (no window, no global
backend change).

As Darknet draws it: x from 0 to ``max_batches``, the loss axis from 0 to ``[net] max_chart_loss``
(20 by default; larger values leave the plot), one blue point per iteration at the average loss, and
the mAP@0.5 as a red line with its value at each evaluation (right axis, percent).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from ..files import atomic_write

__all__ = ["draw_chart"]


def draw_chart(path: str | Path | Sequence[str | Path], losses: Sequence[tuple[int, float]],
               maps: Sequence[tuple[int, float]], *, max_batches: int,
               max_chart_loss: float = 20.0, title: str = "") -> Path:
    """Write the chart as a PNG at ``path`` (or at each of several paths), atomically.

    Args:
        losses: ``(iteration, average loss)`` pairs.
        maps: ``(iteration, mAP@0.5 in [0, 1])`` pairs.
        max_batches: the x range.
        max_chart_loss: top of the loss axis (``[net] max_chart_loss``).
        title: a line above the plot (iteration, loss, hours left).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlim(0, max(max_batches, 1))
    ax.set_ylim(0, max_chart_loss)
    ax.set_xlabel("iteration")
    ax.set_ylabel("average loss")
    ax.grid(True, color="0.85")
    if losses:
        its, values = zip(*losses)
        ax.scatter(its, values, s=4, color="tab:blue", label="avg loss")
    right = ax.twinx()
    right.set_ylim(0, 100)
    right.set_ylabel("mAP@0.5 (%)", color="tab:red")
    if maps:
        its, values = zip(*maps)
        percent = [100.0 * v for v in values]
        right.plot(its, percent, color="tab:red", marker="o", markersize=3, label="mAP@0.5")
        for x, y in zip(its, percent):
            right.annotate(f"{y:.0f}%", (x, y), textcoords="offset points", xytext=(0, 6),
                           ha="center", fontsize=8, color="tab:red")  # fmt: skip
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    if handles:
        ax.legend(handles=handles, loc="upper right")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    paths = [Path(path)] if isinstance(path, (str, Path)) else [Path(p) for p in path]
    for one in paths:
        atomic_write(one, lambda f: f.write(buffer.getbuffer()))
    return paths[0]
