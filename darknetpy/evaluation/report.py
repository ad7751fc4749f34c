"""Outputs of an evaluation: PR-curve plots and the JSON interface of ``darknetpy map --json``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .records import MapResult, Metrics, _names_or_ids


def plot_pr_curves(
    result: MapResult, out_dir: str | Path, names: Sequence[str] | None = None
) -> list[Path]:
    """Write one precision-recall plot per class (``pr_<id>_<name>.png``); returns the paths."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, Agg canvas

    names = _names_or_ids(names, result.classes)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, curve in enumerate(result.pr_curves):
        fig = Figure(figsize=(5, 4), dpi=100)
        ax = fig.subplots()
        if curve.recall.size:
            ax.plot(curve.recall, curve.precision, drawstyle="steps-post")
            envelope = np.maximum.accumulate(curve.precision[::-1])[::-1]
            ax.plot(curve.recall, envelope, linestyle="--", linewidth=0.8)
        ax.set_xlim(0, 1.0)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(
            f"{names[k]}: AP = {result.ap[k] * 100:.2f}% "
            f"({'AUC' if result.points == 0 else f'{result.points}-point'})"
        )
        ax.grid(True, alpha=0.3)
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in names[k]) or "class"
        path = out_dir / f"pr_{k}_{safe}.png"
        fig.savefig(path)
        paths.append(path)
    return paths


def metrics_to_dict(metrics: Metrics) -> dict[str, Any]:
    """The JSON interface: ``map50``, ``per_class`` {name: {ap, tp, fp}}, P/R/F1, IoU, ``coco``."""
    result = metrics.map
    per_class: dict[str, dict[str, float | int]] = {}
    for k, name in enumerate(_names_or_ids(metrics.names, result.classes)):
        key = name if name not in per_class else f"{name}#{k}"
        per_class[key] = {
            "ap": result.ap[k],
            "tp": result.tp_per_class[k],
            "fp": result.fp_per_class[k],
        }
    return {
        "map50": result.map,
        "per_class": per_class,
        "precision": result.precision,
        "recall": result.recall,
        "f1": result.f1,
        "average_iou": result.average_iou,
        "coco": metrics.coco.as_dict() if metrics.coco is not None else None,
        "tp": result.tp,
        "fp": result.fp,
        "fn": result.fn,
        "conf_thresh": result.conf_thresh,
        "iou_thresh": result.iou_thresh,
        "points": result.points,
        "detections_count": result.detections_count,
        "unique_truth_count": result.unique_truth_count,
    }


def write_metrics_json(metrics: Metrics, path: str | Path) -> Path:
    """Write :func:`metrics_to_dict` as JSON (NaN written as ``NaN``, like ``golden/*/map.json``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics_to_dict(metrics), indent=2) + "\n")
    return path
