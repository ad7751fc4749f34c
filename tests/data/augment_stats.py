"""Summary statistics of augmented training batches, the same for Darknet's dump and darknetpy's loader.

A :class:`Sample` collects output images (pixels, truth rows, mosaic or not) and the pieces each was made of:
one piece per call of ``image_data_augmentation`` (Darknet) / :func:`darknetpy.data.pixels.augment_image`
(darknetpy), with its crop, flip, colour and blur decisions, its truth rows before and after
``fill_truth_detection`` and, in a mosaic, its cut point and shifts. :func:`summarize` turns a sample into
named statistics, each the mean of a quantity over units (images, boxes, pieces) with a standard error.

Units are not independent: the images of one call of ``load_data_detection`` (a "chunk") share its
mosaic coin. Standard errors are therefore cluster-robust with the chunk as cluster: a statistic is a
ratio of sums ``R = sum(y) / sum(n)``, ``se^2 = C/(C-1) * sum_c (Y_c - R*N_c)^2 / (sum n)^2`` over the
C chunks; a standard deviation uses its linearisation ``((x - mean)^2 - sd^2) / (2 sd)``.

Recording Darknet's summary from the driver's dump (tests/darknet_aug/README.md)::

    python -m tests.data.augment_stats DUMP/seed1 DUMP/seed2 ... > tests/darknet_aug/summary.json
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import cv2
import numpy as np

#: quantiles of box x, y, w, h whose values the Darknet summary records (compared as shares below them)
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
#: a statistic agrees when ``|difference| <= TOLERANCE_SE * sqrt(se_darknet^2 + se_darknetpy^2)``
TOLERANCE_SE = 4.0


@dataclass(frozen=True)
class Piece:
    """One augmented source image: ``image_data_augmentation``'s arguments, the label rows of its source,
    the truth rows ``fill_truth_detection`` kept, and (mosaic pieces) ``blend_truth_mosaic``'s cut point
    and the sum of its four shifts (-1 for a single image)."""

    ow: int
    oh: int
    pleft: int
    ptop: int
    swidth: int
    sheight: int
    flip: bool
    dhue: float
    dsat: float
    dexp: float
    blur: int
    noise: int
    labels: int
    kept: int
    cut_x: int = -1
    cut_y: int = -1
    shifts: int = -1


#: per-image features, in the order of :func:`image_features`
FEATURES = ("mean_r", "mean_g", "mean_b", "sd_r", "sd_g", "sd_b", "gradient", "hsv_s", "hsv_v")


def image_features(pixels: np.ndarray) -> np.ndarray:
    """:data:`FEATURES` of one uint8 (3, h, w) RGB image, on Darknet's scale ``value / 255``: the mean
    and standard deviation of each channel, the mean absolute difference of neighbouring pixels
    (sharpness: resize, blur) and the mean HSV saturation and value (OpenCV's HSV; colour jitter)."""
    chw = np.asarray(pixels, np.float64) / 255.0
    hwc = np.ascontiguousarray(np.asarray(pixels, np.uint8).transpose(1, 2, 0))
    gradient = (np.abs(np.diff(chw, axis=2)).mean() + np.abs(np.diff(chw, axis=1)).mean()) / 2
    hsv = cv2.cvtColor(hwc, cv2.COLOR_RGB2HSV).reshape(-1, 3).mean(axis=0) / 255.0
    return np.concatenate([chw.mean(axis=(1, 2)), chw.std(axis=(1, 2)), [gradient], hsv[1:]])


@dataclass
class Sample:
    """Augmented images with their pieces, grouped in clusters (one per ``load_data_detection`` call)."""

    image_cluster: list[int] = field(default_factory=list)
    image_mosaic: list[bool] = field(default_factory=list)
    image_features: list[np.ndarray] = field(default_factory=list)
    image_truths: list[int] = field(default_factory=list)
    image_labels: list[int] = field(default_factory=list)  # label rows of its pieces' sources
    image_kept: list[int] = field(default_factory=list)  # truth rows of its pieces after the crop
    boxes: list[np.ndarray] = field(default_factory=list)  # (k, 4) x, y, w, h per image
    pieces: list[tuple[int, bool, Piece]] = field(default_factory=list)  # (cluster, mosaic, piece)
    width: int = 0  # network size of the images
    height: int = 0

    def add_image(self, cluster: int, mosaic: bool, pixels: np.ndarray, truth: np.ndarray,
                  pieces: Sequence[Piece]) -> None:
        """One output image: uint8 (3, h, w) RGB, truth rows ``x, y, w, h, class`` (the first row with
        ``x == 0`` ends them) and the pieces it was made of (1, or 4 for a mosaic)."""
        # float32 as both hold them (the dump prints 9 digits, which round-trip)
        truth = np.asarray(truth, np.float32).astype(np.float64).reshape(-1, np.shape(truth)[-1])
        end = np.flatnonzero(truth[:, 0] == 0)
        truth = truth[: end[0] if len(end) else len(truth)]
        self.height, self.width = np.shape(pixels)[1:]
        self.image_cluster.append(cluster)
        self.image_mosaic.append(mosaic)
        self.image_features.append(image_features(pixels))
        self.image_truths.append(len(truth))
        self.image_labels.append(sum(p.labels for p in pieces))
        self.image_kept.append(sum(p.kept for p in pieces))
        self.boxes.append(truth[:, :4])
        self.pieces.extend((cluster, mosaic, p) for p in pieces)

    def __len__(self) -> int:
        return len(self.image_cluster)


# ----------------------------------------------------------------------------------------- estimators


def ratio(y: np.ndarray, n: np.ndarray, clusters: np.ndarray) -> dict:
    """``sum(y) / sum(n)`` with its cluster-robust standard error (module docstring)."""
    y, n = np.asarray(y, np.float64), np.asarray(n, np.float64)
    ids, inverse = np.unique(clusters, return_inverse=True)
    big_y = np.bincount(inverse, y, len(ids))
    big_n = np.bincount(inverse, n, len(ids))
    total, c = big_n.sum(), len(ids)
    value = big_y.sum() / total
    se = np.sqrt(c / max(c - 1, 1) * np.sum((big_y - value * big_n) ** 2)) / total
    return {"value": float(value), "se": float(se), "n": int(round(total)), "clusters": int(c)}


def mean(values: np.ndarray, clusters: np.ndarray) -> dict:
    """The mean over units, with its standard error and the units' standard deviation ``sd``."""
    values = np.asarray(values, np.float64)
    return {**ratio(values, np.ones_like(values), clusters), "sd": float(values.std())}


def std(values: np.ndarray, clusters: np.ndarray) -> dict:
    """The standard deviation over units, with the standard error of its linearisation."""
    values = np.asarray(values, np.float64)
    sd = values.std()
    influence = ((values - values.mean()) ** 2 - sd**2) / (2 * sd)
    return {**ratio(influence, np.ones_like(values), clusters), "value": float(sd)}


def share_below(values: np.ndarray, threshold: float, clusters: np.ndarray) -> dict:
    """The share of units with ``value <= threshold``."""
    values = np.asarray(values, np.float64) <= threshold
    return {**ratio(values, np.ones_like(values, np.float64), clusters), "threshold": float(threshold)}


# ----------------------------------------------------------------------------------------- statistics


def summarize(sample: Sample, reference: dict | None = None) -> dict[str, dict]:
    """Named statistics: ``{name: {"value", "se", "n", "clusters", "unit", "what", ...}}``.

    ``box_<x|y|w|h>_q<pp>`` is the share of boxes at or below a threshold: the sample's own
    ``pp``-percentile, or ``reference``'s threshold for that name when a reference summary is given
    (so that both sides count the same event).
    """
    stats: dict[str, dict] = {}

    def put(name: str, unit: str, what: str, stat: dict) -> None:
        stats[name] = {"unit": unit, "what": what, **stat}

    clusters = np.asarray(sample.image_cluster)
    mosaic = np.asarray(sample.image_mosaic, bool)
    single = ~mosaic
    features = np.asarray(sample.image_features, np.float64).reshape(-1, len(FEATURES))
    truths = np.asarray(sample.image_truths, np.float64)
    labels = np.asarray(sample.image_labels, np.float64)
    kept = np.asarray(sample.image_kept, np.float64)

    put("mosaic_share", "image", "share of output images that are 4-piece mosaics", mean(mosaic, clusters))
    for i, name in enumerate(FEATURES):
        put(f"pixel_{name}", "image", f"per-image {name} of the pixels (value/255), averaged over images",
            mean(features[:, i], clusters))
    for i, name in enumerate(FEATURES[:3]):
        put(f"pixel_{name}_spread", "image", f"standard deviation over images of the per-image {name}",
            std(features[:, i], clusters))
    put("truths_per_image", "image", "truth rows per output image", mean(truths, clusters))
    for sel, kind in ((single, "single"), (mosaic, "mosaic")):
        put(f"truths_per_{kind}_image", "image", f"truth rows per {kind} output image",
            ratio(truths * sel, sel, clusters))
    put("empty_image_share", "image", "share of output images without a truth row",
        mean(truths == 0, clusters))
    put("truths_lost_single", "label row", "single images: share of the source's label rows missing "
        "from the output truth (crop, 1-pixel filter)", ratio((labels - truths) * single, labels * single,
                                                             clusters))
    put("truths_lost_mosaic", "label row", "mosaic images: share of the 4 sources' label rows missing "
        "from the output truth (crop and mosaic cut)", ratio((labels - truths) * mosaic, labels * mosaic,
                                                            clusters))
    put("truths_lost_mosaic_cut", "piece truth row", "mosaic images: share of the pieces' truth rows "
        "(after the crop) dropped by blend_truth_mosaic", ratio((kept - truths) * mosaic, kept * mosaic,
                                                               clusters))

    counts = np.array([len(b) for b in sample.boxes])
    box_clusters = np.repeat(clusters, counts)
    box_mosaic = np.repeat(mosaic, counts)
    boxes = np.concatenate([b for b in sample.boxes if len(b)] or [np.zeros((0, 4))])
    columns = dict(zip("xywh", boxes.T))
    columns["area"] = boxes[:, 2] * boxes[:, 3]
    for name, values in columns.items():
        put(f"box_{name}_mean", "box", f"mean box {name} (relative to the network input)",
            mean(values, box_clusters))
        if name == "area":
            continue
        put(f"box_{name}_sd", "box", f"standard deviation of box {name}", std(values, box_clusters))
        for q in QUANTILES:
            key = f"box_{name}_q{round(q * 100):02d}"
            threshold = (reference[key]["threshold"] if reference is not None
                         else float(np.quantile(values, q)))  # fmt: skip
            put(key, "box", f"share of boxes with {name} <= threshold (Darknet's {q:.2f}-quantile)",
                share_below(values, threshold, box_clusters))
    for flag, kind in ((False, "single"), (True, "mosaic")):
        sel = box_mosaic == flag
        for name in ("w", "h"):
            put(f"box_{name}_mean_{kind}", "box", f"mean box {name} in {kind} images",
                ratio(columns[name] * sel, sel, box_clusters))
    edge = 1.0 / min(sample.width, sample.height)
    x0, x1 = boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 0] + boxes[:, 2] / 2
    y0, y1 = boxes[:, 1] - boxes[:, 3] / 2, boxes[:, 1] + boxes[:, 3] / 2
    touching = (x0 <= edge) | (x1 >= 1 - edge) | (y0 <= edge) | (y1 >= 1 - edge)
    put("box_at_border_share", "box", "share of boxes with an edge within 1 pixel of the image border",
        mean(touching, box_clusters))

    pc = np.array([c for c, _, _ in sample.pieces])
    in_mosaic = np.array([m for _, m, _ in sample.pieces], bool)
    p = {f.name: np.array([getattr(piece, f.name) for _, _, piece in sample.pieces], np.float64)
         for f in fields(Piece)}  # fmt: skip
    put("piece_flip_share", "piece", "share of pieces mirrored", mean(p["flip"], pc))
    put("piece_blur_share", "piece", "share of pieces blurred (blur != 0)", mean(p["blur"] != 0, pc))
    put("piece_blur_strong_share", "piece", "share of pieces with blur > 1 (the whole image blurred)",
        mean(p["blur"] > 1, pc))
    put("piece_noise_share", "piece", "share of pieces with Gaussian noise", mean(p["noise"] != 0, pc))
    put("piece_dhue_mean", "piece", "mean hue shift dhue", mean(p["dhue"], pc))
    put("piece_dhue_abs", "piece", "mean |dhue|", mean(np.abs(p["dhue"]), pc))
    for name in ("dsat", "dexp"):
        put(f"piece_{name}_above_1", "piece", f"share of pieces with {name} > 1", mean(p[name] > 1, pc))
        put(f"piece_{name}_log_abs", "piece", f"mean |ln {name}|", mean(np.abs(np.log(p[name])), pc))
    put("piece_source_width", "piece", "mean source width in pixels (uniform drawing from the list)",
        mean(p["ow"], pc))
    relative = {"swidth": p["swidth"] / p["ow"], "sheight": p["sheight"] / p["oh"],
                "pleft": p["pleft"] / p["ow"], "ptop": p["ptop"] / p["oh"]}  # fmt: skip
    for sel, kind in ((~in_mosaic, "single"), (in_mosaic, "mosaic")):
        for name, values in relative.items():
            put(f"piece_{name}_{kind}", "piece", f"{kind} pieces: mean crop {name} relative to the "
                "source size (after mosaic's move to the corner)", ratio(values * sel, sel, pc))
        put(f"piece_truths_kept_{kind}", "label row", f"{kind} pieces: share of the source's label rows "
            "kept by fill_truth_detection (crop, 1-pixel filter)",
            ratio(p["kept"] * sel, p["labels"] * sel, pc))
    put("mosaic_cut_x", "piece", "mosaic pieces: mean cut_x / width",
        ratio(p["cut_x"] / sample.width * in_mosaic, in_mosaic, pc))
    put("mosaic_cut_y", "piece", "mosaic pieces: mean cut_y / height",
        ratio(p["cut_y"] / sample.height * in_mosaic, in_mosaic, pc))
    put("mosaic_shifted_share", "piece", "mosaic pieces: share with a shift (padding skipped)",
        ratio((p["shifts"] > 0) * in_mosaic, in_mosaic, pc))
    put("mosaic_shift_mean", "piece", "mosaic pieces: mean sum of the 4 shifts (pixels) / width",
        ratio(p["shifts"] / sample.width * in_mosaic, in_mosaic, pc))
    return stats


def compare(reference: dict[str, dict], ours: dict[str, dict], tolerance: float = TOLERANCE_SE) -> list[str]:
    """The statistics whose difference exceeds ``tolerance`` combined standard errors, one line each."""
    bad = []
    for name, ref in reference.items():
        mine = ours[name]
        limit = tolerance * float(np.hypot(ref["se"], mine["se"]))
        diff = mine["value"] - ref["value"]
        if not abs(diff) <= limit + 1e-12:
            bad.append(f"{name}: darknetpy {mine['value']:.5g} vs Darknet {ref['value']:.5g} "
                       f"(difference {diff:+.3g}, allowed {limit:.3g}; {ref['what']})")
    return bad


# ----------------------------------------------------------------------------------------- Darknet's dump


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _piece(row: dict[str, str], cut: dict[str, str] | None) -> Piece:
    ints = {k: int(row[k]) for k in ("ow", "oh", "pleft", "ptop", "swidth", "sheight", "blur", "noise",
                                     "labels", "kept")}  # fmt: skip
    floats = {k: float(row[k]) for k in ("dhue", "dsat", "dexp")}
    mosaic = {}
    if cut is not None:
        shifts = sum(int(cut[k]) for k in ("left_shift", "right_shift", "top_shift", "bot_shift"))
        mosaic = {"cut_x": int(float(cut["cut_x"])), "cut_y": int(float(cut["cut_y"])), "shifts": shifts}
    return Piece(flip=bool(int(row["flip"])), **ints, **floats, **mosaic)


def read_darknet_dump(folders: Sequence[Path], width: int = 256, height: int = 256) -> Sample:
    """A :class:`Sample` of the driver's files in each folder (``images.u8``, ``images.csv``,
    ``truth.csv``, ``pieces.csv``, ``mosaic.csv``); a cluster is one ``(seed, iteration, chunk)``."""
    sample = Sample()
    cluster_ids: dict[tuple[str, ...], int] = {}
    for folder in map(Path, folders):
        images = _read_csv(folder / "images.csv")
        pixels = np.memmap(folder / "images.u8", np.uint8, "r").reshape(len(images), 3, height, width)
        truth: dict[tuple[str, ...], list] = defaultdict(list)
        for row in _read_csv(folder / "truth.csv"):
            key = (row["seed"], row["iteration"], row["chunk"], row["slot"])
            truth[key].append([float(row[k]) for k in ("x", "y", "w", "h", "class")])
        cuts = {(r["seed"], r["iteration"], r["chunk"], r["piece"]): r
                for r in _read_csv(folder / "mosaic.csv")}  # fmt: skip
        pieces: dict[tuple[str, ...], list[Piece]] = defaultdict(list)
        for row in _read_csv(folder / "pieces.csv"):
            key = (row["seed"], row["iteration"], row["chunk"])
            pieces[key].append(_piece(row, cuts.get((*key, row["piece"]))))
        for index, row in enumerate(images):
            key = (row["seed"], row["iteration"], row["chunk"])
            n, slot, made = int(row["n"]), int(row["slot"]), pieces[key]
            mosaic = len(made) == 4 * n
            if not mosaic and len(made) != n:
                raise ValueError(f"{folder}: call {key} made {len(made)} pieces for {n} images")
            own = [made[q * n + slot] for q in range(4)] if mosaic else [made[slot]]  # i_mixup outer
            rows = np.asarray(truth[(*key, row["slot"])], np.float64).reshape(-1, 5)
            if len(rows) != int(row["truths"]):
                raise ValueError(f"{folder}: image {index}: {len(rows)} truth rows, not {row['truths']}")
            cluster = cluster_ids.setdefault(key, len(cluster_ids))
            sample.add_image(cluster, mosaic, pixels[index], rows, own)
    return sample


def main(argv: Sequence[str]) -> int:
    """``python -m tests.data.augment_stats FOLDER...``: Darknet's summary as JSON on stdout."""
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    folders = [Path(a) for a in argv]
    sample = read_darknet_dump(folders)
    calls = {(r["seed"], r["iteration"]) for f in folders for r in _read_csv(f / "images.csv")}
    summary = {
        "seeds": sorted({int(seed) for seed, _ in calls}),
        "iterations": len(calls),
        "images": len(sample),
        "pieces": len(sample.pieces),
        "clusters": len(set(sample.image_cluster)),
        "tolerance_se": TOLERANCE_SE,
        "stats": summarize(sample),
    }
    json.dump(summary, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
