"""Running a detector over a ``.data`` file's image list the way Darknet's evaluation commands do.

* :func:`load_detector`: the network of a cfg + weights, and the [net] facts the commands need
  (:func:`detector_facts` for a network already in memory, e.g. the one being trained);
* :func:`detect_images`: the image -> detections pipeline (:mod:`darknetpy.inference.pipeline`)
  over image files, as ``validate_detector_map`` / ``validate_detector`` /
  ``validate_detector_recall`` do;
* :func:`run_detector`: the same, as :class:`~.records.ScoredBox` lists for :func:`darknet_map`;
* the ``.data`` inputs of those commands (``valid=`` list, ``names=``, ``difficult=``), read with
  :mod:`darknetpy.data.datafile`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.datafile import DataConfig, DataWarning, read_image_list, read_names, resolve_path
from ..data.labels import label_path, read_boxes, read_labels
from ..errors import DataError, UsageError
from ..inference import pipeline
from ..inference.inference_model import InferenceModel, load
from ..model.heads.detections import Detections
from ..model.network import Network
from ..model.pt_checkpoint import is_checkpoint, network_from_checkpoint
from .records import ScoredBox, Truth


@dataclass(frozen=True)
class DetectorFacts:
    """What the evaluation commands read from a cfg: network size, ``letter_box``, classes."""

    width: int
    height: int
    letter_box: bool
    classes: int  # of the last detection layer, as validate_detector_map takes it


def load_detector(
    cfg: str | Path, weights: str | Path | None, device: str | torch.device = "cpu", *,
    lenient: bool = False, backend: str | None = "torch",
) -> tuple[Network | InferenceModel, DetectorFacts]:
    """Build the cfg's network, load ``weights``, move it to ``device`` in eval mode.

    ``weights`` is a ``.weights`` file or a darknetpy ``.pt`` checkpoint (told apart by content,
    as ``detect`` does); ``lenient`` loads a damaged ``.weights`` file as Darknet does (warning).
    Another ``backend`` than ``torch`` gives the fused :class:`InferenceModel` running in it
    (:mod:`darknetpy.inference.backends`; float32, detections through the same pipeline; None:
    ``load``'s default, ``$DARKNETPY_BACKEND`` or auto).

    Raises:
        UsageError: the cfg has no detection layer.
        CfgError, WeightsError: as :class:`~darknetpy.model.network.Network` raises them.
    """
    if backend != "torch":
        model = load(cfg, weights, device=device, half=False, keep_unfused=False,
                     lenient=lenient, backend=backend)  # fmt: skip
        return model, detector_facts(model.fused)
    if weights is not None and is_checkpoint(weights):
        net = network_from_checkpoint(weights, cfg)
        return net.to(device).eval(), detector_facts(net)
    net = Network.from_cfg(Path(cfg))
    facts = detector_facts(net)
    if weights is not None:
        net.load_weights(weights, lenient=lenient)
    net.to(device).eval()
    return net, facts


def detector_facts(net: Network | InferenceModel) -> DetectorFacts:
    """What the evaluation commands read from a network's cfg.

    Raises:
        UsageError: the network has no detection layer.
    """
    net = net.fused if isinstance(net, InferenceModel) else net
    if not net.heads:
        raise UsageError(
            f"{net.where()}: no [yolo], [region], [Gaussian_yolo] or other detection layer; "
            "map/valid/recall need a detection network"
        )
    config = net.net
    return DetectorFacts(int(config.width), int(config.height), bool(config.letter_box),
                         net.head_layers()[-1].classes)


def detect_images(
    net: Network | InferenceModel,
    facts: DetectorFacts,
    images: Iterable[Path],
    *,
    thresh: float,
    nms: float,
    letter_box: bool | None = None,
    device: str | torch.device | None = "cpu",
    batch: int = 8,
) -> Iterator[tuple[Path, tuple[int, int], Detections]]:
    """Per image ``(path, (width, height), detections)``: boxes relative to the image, Darknet's order.

    The pipeline of :func:`darknetpy.inference.pipeline.detect_images` on ``net`` as it is (a
    network loaded from files, or the one in memory being trained; it runs in eval mode and is
    left in the mode it was in): each image decoded with OpenCV (RGB), resized with Darknet's
    ``resize_image`` (or letterboxed when ``letter_box``, default: the cfg's ``[net] letter_box``),
    predicted, then ``get_network_boxes`` at ``thresh`` and NMS at ``nms`` (0: none; the last head's
    NMS). Darknet predicts one image at a time; ``batch`` images share a forward pass here, which
    gives the same outputs (inference batch norm) up to float rounding, faster.
    """
    letter = facts.letter_box if letter_box is None else bool(letter_box)
    found = pipeline.detect_images(net, images, net_size=(facts.width, facts.height),
                                   letter_box=letter, thresh=thresh, nms=nms, batch=batch,
                                   device=device)  # fmt: skip
    for f in found:
        yield Path(f.image), f.size, f.detections


def _progress(images: Sequence[Path], progress: bool, what: str) -> Iterable[Path]:
    if not progress:
        return images
    from tqdm import tqdm

    return tqdm(images, desc=what, unit="img")


def _from_arrays(boxes: np.ndarray, probs: np.ndarray) -> list[ScoredBox]:
    """Detections from parallel arrays, in order, leaving out boxes NMS zeroed in every class."""
    keep = np.flatnonzero((np.asarray(probs) > 0).any(axis=1))
    return [ScoredBox(tuple(float(v) for v in boxes[i]), np.asarray(probs[i])) for i in keep]


def run_detector(
    cfg: str | Path,
    weights: str | Path,
    images: Sequence[Path],
    *,
    thresh: float,
    nms: float,
    letter_box: bool | None = None,
    device: str = "cpu",
    batch: int = 8,
    progress: bool = False,
) -> list[tuple[Path, tuple[int, int], list[ScoredBox]]]:
    """Run a network on image files as ``validate_detector_map`` / ``validate_detector`` do.

    See :func:`detect_images`; boxes are relative to the image, and boxes NMS suppressed in every
    class are left out.
    """
    net, facts = load_detector(cfg, weights, device)
    found = detect_images(
        net,
        facts,
        _progress(images, progress, "detect"),
        thresh=thresh,
        nms=nms,
        letter_box=letter_box,
        device=device,
        batch=batch,
    )
    return [(path, size, _from_arrays(d.boxes, d.probs)) for path, size, d in found]


def group_detections(rows: Sequence[Sequence[float]], classes: int) -> list[ScoredBox]:
    """Turn ``Network.detect`` rows ``(class, prob, x, y, w, h, objectness)`` back into detections.

    Rows sharing a box (and objectness) are one Darknet ``detection`` with a probability per
    class. The result is ordered as ``do_nms_sort`` leaves the ``dets`` array: by the last class's
    probability, descending, ties in row order (glibc's ``qsort`` is stable). For one class that is
    Darknet's order exactly; with several, a box whose last-class probability NMS zeroed sorts as 0.
    """
    groups: dict[tuple[float, ...], list[np.ndarray]] = {}
    order: list[tuple[tuple[float, ...], int]] = []
    for row in rows:
        cls, prob = int(row[0]), float(row[1])
        if not 0 <= cls < classes:
            raise UsageError(
                f"detection row {tuple(row)} has class {cls}, expected 0..{classes - 1}"
            )
        key = tuple(float(v) for v in row[2:7])
        slots = groups.setdefault(key, [])
        for probs in slots:  # a second row of the same class is a second box at the same place
            if probs[cls] == 0:
                probs[cls] = prob
                break
        else:
            probs = np.zeros(classes, dtype=np.float32)
            probs[cls] = prob
            slots.append(probs)
            order.append((key, len(slots) - 1))
    dets = [ScoredBox(key[:4], groups[key][i]) for key, i in order]
    rank = np.argsort(-np.array([d.probs[-1] for d in dets], dtype=np.float32), kind="stable")
    return [dets[i] for i in rank]


# ----------------------------------------------------------------------------------------------
# The .data inputs of map / valid / recall


def valid_images(config: DataConfig, default: str) -> list[Path]:
    """The ``valid=`` list (``default`` when absent: Darknet's ``option_find_str`` fallback)."""
    list_file = config.valid or resolve_path(default, config.path.parent)
    where = config.where("valid") if config.valid else f"{config.path} (no valid=, using {default})"
    return read_image_list(list_file, base=config.path.parent, where=where)


def class_names(config: DataConfig, classes: int, cfg: str | Path) -> tuple[str, ...]:
    """The ``names=`` file, which must have the cfg's class count (class ids when absent)."""
    if config.names is None:
        return tuple(str(k) for k in range(classes))
    names = read_names(config.names, where=config.where("names"))
    if len(names) != classes:  # validate_detector_map stops here too
        raise DataError(
            f"{config.names}: {len(names)} names, but the last detection layer of {cfg} "
            f"has classes={classes}; make them agree"
        )
    return names


def difficult_label_paths(config: DataConfig) -> list[Path] | None:
    """Label files of the ``difficult=`` list (None when the .data file has none).

    The list names images that usually do not exist (only their labels do), so an entry is resolved
    by where its *label* exists: from the working directory, the list's folder, then the .data
    file's folder (:func:`darknetpy.data.datafile.read_image_list` resolves by the image itself).
    """
    if config.difficult is None:
        return None
    entries = read_image_list(
        config.difficult, base=config.path.parent, where=config.where("difficult")
    )
    folders = (config.difficult.parent, config.path.parent)
    out = []
    for entry in entries:
        label = label_path(entry)
        if not entry.is_absolute() and not label.is_file():
            found = (label_path(f / entry) for f in folders)
            label = next((p for p in found if p.is_file()), label)
        out.append(label)
    return out


def read_truths(images: Sequence[Path], command: str = "map") -> list[list[Truth]]:
    """Each image's ground truth as ``validate_detector_map`` reads it (``read_boxes``: unfiltered,
    a file read until its first value that does not parse); ``command`` names the reader in the
    warning (``map``, ``recall``).

    Darknet says nothing when a line is not ``class x y w h``: it reads the file as a stream of
    values, so the boxes after that line shift or are lost. darknetpy counts the same truths, and
    reports such lines (found with :func:`~darknetpy.data.labels.read_labels`, as training does)
    in one :class:`~darknetpy.data.datafile.DataWarning`.
    """
    truths: list[list[Truth]] = []
    bad_files: list[Path] = []
    bad_lines = counted = well_formed = 0
    for image in images:
        label = label_path(image)
        boxes = read_boxes(label)
        truths.append([Truth(*box) for box in boxes])
        _, report = read_labels(label)
        if report.malformed:
            bad_files.append(label)
            bad_lines += report.malformed
            counted += len(boxes)
            well_formed += report.boxes + report.non_finite + report.bad_class + report.invalid
    if bad_files:
        warnings.warn(
            f"{bad_lines} label lines in {len(bad_files)} files are not 'class x y w h' (first: "
            f"{bad_files[0]}); Darknet's {command} reads such files as a stream of values: "
            f"{counted} truths counted in them, where their well-formed lines hold {well_formed}; "
            "fix the lines (darknetpy check DATA lists them)",
            DataWarning,
            stacklevel=2,
        )
    return truths
