"""Anchor boxes by k-means, as ``darknet detector calc_anchors``.

Reproduces ``src/detector.c: calc_anchors`` and ``src/matrix.c: do_kmeans, random_centers,
kmeans_expectation, kmeans_maximization, closest_center, dist``, in float32 like the C code:

* the data are the (w·W, h·H) of every label of every ``train`` image, in network pixels, with no
  filtering (values outside (0, 1] only produce a warning);
* the initial centres are K *distinct* data points chosen at random (a shuffle; Darknet seeds with
  the time, darknetpy with an explicit seed);
* distance = 1 − IoU of the two boxes with their corners aligned;
* assign/update until the assignments stop changing or 1000 rounds; a centre coordinate that comes
  out 0 (an empty cluster) keeps its old value;
* the centres are sorted by area, ascending, and the average IoU of every box with its closest
  centre is reported;
* ``anchors.txt`` holds ``%3.0f,%3.0f`` pairs when the width is above 32, else ``%2.4f,%2.4f``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.labels import read_boxes
from ..data.datafile import DataConfig, read_image_list, resolve_path
from ..data.labels import label_path
from ..errors import UsageError
from ..jit import jit

MAX_ITERATIONS = 1000  # do_kmeans


@jit
def _dist(bw: np.float32, bh: np.float32, cw: np.float32, ch: np.float32) -> np.float32:
    # matrix.c: dist — 1 - IoU with corners aligned, every operation in float32
    mw = bw if bw < cw else cw  # noqa: FURB136 (C's ternary, kept for its NaN behaviour)
    mh = bh if bh < ch else ch  # noqa: FURB136
    inter = np.float32(mw * mh)
    union = np.float32(np.float32(bw * bh + np.float32(cw * ch)) - inter)
    return np.float32(np.float32(1.0) - np.float32(inter / union))


@jit
def _expectation(data: np.ndarray, centers: np.ndarray, assignments: np.ndarray) -> bool:
    # kmeans_expectation + closest_center (first centre wins ties: strict '<')
    converged = True
    for i in range(data.shape[0]):
        best = 0
        best_dist = _dist(data[i, 0], data[i, 1], centers[0, 0], centers[0, 1])
        for j in range(centers.shape[0]):
            d = _dist(data[i, 0], data[i, 1], centers[j, 0], centers[j, 1])
            if d < best_dist:
                best_dist = d
                best = j
        if best != assignments[i]:
            converged = False
        assignments[i] = best
    return converged


@jit
def _maximization(data: np.ndarray, centers: np.ndarray, assignments: np.ndarray) -> None:
    # kmeans_maximization: float32 running sums in data order, mean, a 0 keeps the old value
    old = centers.copy()
    counts = np.zeros(centers.shape[0], dtype=np.int64)
    centers[:, :] = np.float32(0.0)
    for i in range(data.shape[0]):
        a = assignments[i]
        counts[a] += 1
        for j in range(data.shape[1]):
            centers[a, j] = np.float32(centers[a, j] + data[i, j])
    for c in range(centers.shape[0]):
        if counts[c]:
            for j in range(centers.shape[1]):
                centers[c, j] = np.float32(centers[c, j] / np.float32(counts[c]))
    for c in range(centers.shape[0]):
        for j in range(centers.shape[1]):
            if centers[c, j] == 0:
                centers[c, j] = old[c, j]


@jit
def _kmeans(data: np.ndarray, centers: np.ndarray, max_iterations: int) -> tuple[np.ndarray, int]:
    assignments = np.zeros(data.shape[0], dtype=np.int64)
    if centers.shape[0] == 1:  # do_kmeans: one round first, else "converged" at once on zeros
        _maximization(data, centers, assignments)
    i = 0
    while i < max_iterations and not _expectation(data, centers, assignments):
        _maximization(data, centers, assignments)
        i += 1
    return assignments, i


def kmeans(
    boxes_wh: np.ndarray, initial_centers: np.ndarray, max_iterations: int = MAX_ITERATIONS
) -> tuple[np.ndarray, np.ndarray, int]:
    """Darknet's IoU k-means (``do_kmeans`` after ``random_centers``) from given initial centres.

    Returns:
        ``(centers, assignments, iterations)``; centres in Darknet's order (not sorted).
    """
    data = np.ascontiguousarray(boxes_wh, dtype=np.float32).reshape(-1, 2)
    centers = np.array(initial_centers, dtype=np.float32).reshape(-1, 2)
    if centers.shape[0] < 1:
        raise UsageError("k-means needs at least one centre")
    assignments, iterations = _kmeans(data, centers, int(max_iterations))
    return centers, assignments, int(iterations)


def sort_by_area(anchors: np.ndarray) -> np.ndarray:
    """Anchors by float32 area ``w*h``, ascending, ties kept in order (``anchors_data_comparator``)."""
    anchors = np.asarray(anchors, dtype=np.float32).reshape(-1, 2)
    return anchors[np.argsort(anchors[:, 0] * anchors[:, 1], kind="stable")]


def average_iou(boxes_wh: np.ndarray, anchors: np.ndarray) -> float:
    """Mean over boxes of the IoU with the closest anchor (corners aligned), as ``calc_anchors``
    prints it (divided by 100): float32 sums, an IoU outside [0, 1] is left out of the sum but
    not out of the count."""
    data = np.asarray(boxes_wh, dtype=np.float32).reshape(-1, 2)
    anchors = np.asarray(anchors, dtype=np.float32).reshape(-1, 2)
    if data.shape[0] == 0:
        return float("nan")
    bw, bh = data[:, :1], data[:, 1:]
    aw, ah = anchors[None, :, 0], anchors[None, :, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        inter = np.minimum(bw, aw) * np.minimum(bh, ah)
        iou = inter / (bw * bh + aw * ah - inter)
        dist = np.float32(1) - iou
    dist = np.where(np.isnan(dist), np.float32(np.inf), dist)  # NaN never beats FLT_MAX
    best = iou[np.arange(data.shape[0]), np.argmin(dist, axis=1)]
    ok = (best >= 0) & (best <= 1)
    total = np.cumsum(best[ok], dtype=np.float32)[-1] if ok.any() else np.float32(0)
    return float(np.float32(np.float32(100) * total / np.float32(data.shape[0])) / 100)


def calc_anchors(
    boxes_wh: np.ndarray, num: int, seed: int | np.random.Generator | None = None
) -> tuple[np.ndarray, float]:
    """``darknet detector calc_anchors``: K anchors from box sizes in network pixels.

    Args:
        boxes_wh: (n, 2) label sizes times the network size, e.g. from :func:`read_anchor_boxes`.
        num: number of clusters (``-num_of_clusters``).
        seed: seed or generator for the random initial centres.

    Returns:
        ``(anchors, avg_iou)``: float32 (num, 2) sorted by area, and the mean IoU (0..1).

    Raises:
        UsageError: fewer boxes than clusters, or num < 1.
    """
    data = np.ascontiguousarray(boxes_wh, dtype=np.float32).reshape(-1, 2)
    if num < 1:
        raise UsageError(f"num_of_clusters={num}: must be at least 1")
    if data.shape[0] < num:
        raise UsageError(
            f"{data.shape[0]} boxes cannot make {num} clusters (Darknet reads out of "
            "bounds here); label more objects or ask for fewer anchors"
        )
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    initial = data[rng.permutation(data.shape[0])[:num]]  # random_centers: distinct data points
    centers, _, _ = kmeans(data, initial)
    anchors = sort_by_area(centers)
    return anchors, average_iou(data, anchors)


def format_anchors(anchors: np.ndarray, width: int) -> str:
    """``anchors.txt``: ``%3.0f,%3.0f`` pairs when ``width > 32`` else ``%2.4f,%2.4f``, joined by
    ``", "`` — paste it after ``anchors =`` in every ``[yolo]``."""
    spec = "%3.0f,%3.0f" if width > 32 else "%2.4f,%2.4f"
    return ", ".join(spec % (float(w), float(h)) for w, h in np.asarray(anchors).reshape(-1, 2))


def format_counters_per_class(counts: Sequence[int]) -> str:
    """``counters_per_class.txt``: ``counters_per_class = n0, n1, ...`` (for ``[yolo]``)."""
    return "counters_per_class = " + ", ".join(str(int(c)) for c in counts)


@dataclass(frozen=True)
class AnchorBoxes:
    """Label sizes gathered by :func:`read_anchor_boxes`."""

    wh: np.ndarray  # float32 (n, 2): w*width, h*height
    counts_per_class: tuple[int, ...]
    warnings: tuple[str, ...]  # "Wrong label" lines, one per box outside (0, 1]
    images: int


def read_anchor_boxes(data_file: str | Path, width: int, height: int) -> AnchorBoxes:
    """Every label of every ``train`` image of a .data file, scaled to ``width`` × ``height``.

    Labels are read beside the images (``replace_image_to_label``), with no filtering, like
    ``calc_anchors``; ``classes`` (default 1) grows to cover the largest id seen.

    Raises:
        UsageError: width or height not positive.
        DataError: the .data file or its train list cannot be read.
    """
    if width <= 0 or height <= 0:
        raise UsageError(
            f"width={width} height={height}: give the network size, e.g. --width 416 --height 416"
        )
    config = DataConfig.from_file(data_file)
    classes = config.classes if config.classes is not None else 1
    counts = [0] * max(classes, 0)
    sizes: list[tuple[float, float]] = []
    warnings: list[str] = []
    list_file = config.train or resolve_path("data/train.list", config.path.parent)
    images = read_image_list(list_file, base=config.path.parent, where=config.where("train"))
    for image in images:
        label = label_path(image)
        for j, (cls, x, y, w, h) in enumerate(read_boxes(label)):
            if not (0 < x <= 1 and 0 < y <= 1 and 0 < w <= 1 and 0 < h <= 1):
                warnings.append(
                    f"Wrong label: {label} - j = {j}, x = {x:f}, y = {y:f}, "
                    f"width = {w:f}, height = {h:f}"
                )
            if cls < 0:
                warnings.append(f"{label}: line {j + 1}: negative class id {cls} not counted")
            else:
                counts.extend([0] * (cls + 1 - len(counts)))
                counts[cls] += 1
            sizes.append((w, h))
    scale = np.array([width, height], dtype=np.float32)
    wh = np.array(sizes, dtype=np.float32).reshape(-1, 2) * scale
    return AnchorBoxes(wh, tuple(counts), tuple(warnings), len(images))


def plot_anchors(
    boxes_wh: np.ndarray, anchors: np.ndarray, path: str | Path, width: int, height: int
) -> Path:
    """Scatter plot of the box sizes coloured by closest anchor, anchors marked (``show_anchors``)."""
    from matplotlib.figure import Figure

    data = np.asarray(boxes_wh, dtype=np.float32).reshape(-1, 2)
    anchors = np.asarray(anchors, dtype=np.float32).reshape(-1, 2)
    inter = np.minimum(data[:, None, 0], anchors[None, :, 0]) * np.minimum(
        data[:, None, 1], anchors[None, :, 1]
    )
    iou = inter / (
        data[:, None, 0] * data[:, None, 1] + anchors[None, :, 0] * anchors[None, :, 1] - inter
    )
    closest = np.argmax(iou, axis=1) if anchors.size else np.zeros(len(data), int)
    fig = Figure(figsize=(6, 6), dpi=100)
    ax = fig.subplots()
    ax.scatter(data[:, 0], data[:, 1], c=closest, s=6, cmap="tab10", alpha=0.6)
    ax.scatter(anchors[:, 0], anchors[:, 1], marker="x", s=80, c="black", label="anchors")
    ax.set_xlim(0, width * 1.03)  # boxes as large as the image sit on the limit: keep them visible
    ax.set_ylim(0, height * 1.03)
    ax.set_xlabel("width (network pixels)")
    ax.set_ylabel("height (network pixels)")
    ax.set_title(f"{len(anchors)} anchors, avg IoU {average_iou(data, anchors) * 100:.2f}%")
    ax.legend(loc="upper left")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
