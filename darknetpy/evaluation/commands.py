"""Darknet's evaluation commands end to end: cfg + .data + weights in, numbers or files out.

* :func:`evaluate`: ``detector map`` (``validate_detector_map``), plus COCO AP on the same detections;
* :func:`validate`: ``detector valid`` (``validate_detector``), COCO json or VOC text files;
* :func:`iter_recall` / :func:`recall`: ``detector recall`` (``validate_detector_recall``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.labels import read_boxes
from ..data.datafile import DataConfig, resolve_path
from ..data.labels import label_path
from ..errors import DataError, UsageError
from ..inference.postprocess import do_nms_obj
from ..inference.inference_model import InferenceModel
from ..model.network import Network
from .coco import coco_metrics
from .darknet_map import box_iou, darknet_map
from .records import (
    MAP_DETECTION_THRESH,
    MAP_NMS,
    RECALL_DETECTION_THRESH,
    RECALL_IOU_THRESH,
    RECALL_NMS,
    VALID_DETECTION_THRESH,
    VALID_NMS,
    ScoredBox,
    Metrics,
    _c,
)
from .run import (
    _from_arrays,
    _progress,
    class_names,
    detect_images,
    difficult_label_paths,
    detector_facts,
    load_detector,
    read_truths,
    valid_images,
)
from .valid import COCO_IDS, format_coco_results, format_voc_results

VALID_FORMATS = ("coco", "voc")  # the eval= formats darknetpy writes

#: ``distribute(images, detect)`` of :func:`evaluate_network`.
Distribute = Callable[[Sequence[Path], Callable[[Sequence[Path]], list[Any]]], list[Any]]


def evaluate(
    cfg: str | Path,
    data: str | Path,
    weights: str | Path,
    *,
    thresh: float = 0.25,
    iou_thresh: float = 0.5,
    points: int = 0,
    letter_box: bool | None = None,
    device: str = "cpu",
    coco: bool = True,
    batch: int = 8,
    keep_detections: bool = False,
    progress: bool = False,
    lenient: bool = False,
    backend: str | None = "torch",
) -> Metrics:
    """``darknet detector map DATA CFG WEIGHTS``: mAP on the ``valid`` list (plus COCO AP).

    The cfg's network with ``weights`` (a ``.weights`` file or a ``.pt`` checkpoint; ``lenient``:
    :func:`~.run.load_detector`) loaded, on ``device``, through :func:`evaluate_network` (see it for
    the arguments); ``backend``: what runs the network (:mod:`darknetpy.inference.backends`; None:
    ``darknetpy.load``'s default).

    Raises:
        DataError: unreadable .data, list, names or image; names count differs from the cfg classes.
    """
    config = DataConfig.from_file(data)
    net, _ = load_detector(cfg, weights, device, lenient=lenient, backend=backend)
    return evaluate_network(net, config, thresh=thresh, iou_thresh=iou_thresh, points=points,
                            letter_box=letter_box, device=device, coco=coco, batch=batch,
                            keep_detections=keep_detections, progress=progress)  # fmt: skip


def evaluate_network(
    net: Network | InferenceModel,
    data: str | Path | DataConfig,
    *,
    thresh: float = 0.25,
    iou_thresh: float = 0.5,
    points: int = 0,
    letter_box: bool | None = None,
    device: str | torch.device | None = None,
    coco: bool = True,
    batch: int = 8,
    keep_detections: bool = False,
    progress: bool = False,
    distribute: Distribute | None = None,
) -> Metrics:
    """``validate_detector_map`` on a network in memory (as loaded, or being trained: training's
    mAP evaluates its network, or its EMA weights, here): mAP on the ``valid`` list (plus COCO AP).

    Detections use threshold 0.005 and NMS 0.45 as ``validate_detector_map``; ground truth comes from
    the label file beside each image, unfiltered; a ``difficult=`` list in the .data file is honoured.
    The network runs in eval mode and is left in the mode it was in.

    Args:
        thresh: confidence threshold of the printed TP/FP/precision/recall/F1/average IoU.
        iou_thresh: IoU a match must exceed.
        points: 0 (area under the curve), 11 (VOC2007) or 101 (COCO).
        letter_box: None: the cfg's ``[net] letter_box`` (Darknet's map ignores ``-letter_box``);
            True/False force letterboxed / plainly resized inputs.
        data: the .data file (or it read).
        device: where the inputs go; None: the device of the network's parameters.
        coco: also compute COCO AP with pycocotools.
        batch: images per forward pass (see :func:`~.run.detect_images`).
        keep_detections: keep every image's detections and ground truth in the result.
        distribute: ``distribute(images, detect)`` runs ``detect`` (paths -> per path ``(size,
            detections)``) over the images, e.g. a shard per process, and returns every image's
            result in order (training's mAP with several processes); default ``detect(images)``.

    Raises:
        DataError: unreadable .data, list, names or image; names count differs from the classes.
        UsageError: the network has no detection layer.
    """
    facts = detector_facts(net)
    if device is None:
        device = next((p.device for p in net.parameters()), torch.device("cpu"))
    config = data if isinstance(data, DataConfig) else DataConfig.from_file(data)
    names = class_names(config, facts.classes, getattr(net, "fused", net).where())
    images = valid_images(config, "data/train.txt")
    difficult = None
    dif_labels = difficult_label_paths(config)
    if dif_labels is not None:
        if len(dif_labels) < len(images):
            raise DataError(
                f"{config.where('difficult')}: the difficult= list has {len(dif_labels)} entries, "
                f"fewer than the {len(images)} of valid=; it must be parallel to it"
            )
        difficult = [read_boxes(p) for p in dif_labels[: len(images)]]

    def detect(paths: Sequence[Path]) -> list[tuple[tuple[int, int], list[ScoredBox]]]:
        found = detect_images(net, facts, _progress(paths, progress, "map"),
                              thresh=MAP_DETECTION_THRESH, nms=MAP_NMS, letter_box=letter_box,
                              device=device, batch=batch)  # fmt: skip
        return [(size, _from_arrays(d.boxes, d.probs)) for _, size, d in found]

    per_image = detect(images) if distribute is None else distribute(images, detect)
    sizes = [size for size, _ in per_image]
    dets = [d for _, d in per_image]
    truths = read_truths(images)  # malformed label lines: counted, reported
    result = darknet_map(
        dets,
        truths,
        facts.classes,
        thresh=thresh,
        iou_thresh=iou_thresh,
        points=points,
        difficult=difficult,
    )
    coco_result = coco_metrics(dets, truths, sizes, facts.classes) if coco else None
    if not keep_detections:
        return Metrics(result, coco_result, names, len(images))
    return Metrics(
        result,
        coco_result,
        names,
        len(images),
        tuple(tuple(d) for d in dets),
        tuple(tuple(t) for t in truths),
    )


def _to_pixels(box: Sequence[float], size: tuple[int, int]) -> tuple[float, ...]:
    """``get_network_boxes(w, h, relative=0)``: x and w times the width, y and h times the height,
    in float32."""
    f32 = np.float32
    w, h = f32(size[0]), f32(size[1])
    return tuple(float(f32(v) * s) for v, s in zip(box, (w, h, w, h)))


def validate(
    cfg: str | Path,
    data: str | Path,
    weights: str | Path,
    *,
    out: str | None = None,
    destination: str | Path | None = None,
    fmt: str | None = None,
    image_ids: Mapping[str, int] | None = None,
    category_ids: Sequence[int] | None = None,
    device: str = "cpu",
    batch: int = 8,
    progress: bool = False,
    lenient: bool = False,
    backend: str | None = "torch",
) -> list[Path]:
    """``darknet detector valid DATA CFG WEIGHTS``: result files for an external evaluator.

    Threshold 0.001, NMS 0.6, boxes in pixels, letter_box from the cfg. ``coco`` writes
    ``<results>/coco_results.json`` (or ``<results>/<out>.json``); ``voc`` writes
    ``<results>/comp4_det_test_<name>.txt`` (or ``<out><name>.txt``) per class. ``results`` is the
    .data key (default ``results``, beside the .data file when not in the working directory).

    Args:
        out: Darknet's ``-out``: the file name prefix inside ``results``.
        destination: instead, the exact output: the ``.json`` file (coco) or the folder (voc).
        fmt: ``coco`` or ``voc``; None: the .data key ``eval`` (default ``voc``), or ``coco`` when
            ``destination`` ends in ``.json``.
        image_ids: for ``coco``: file name -> image id (:func:`~.valid.read_coco_image_ids`); default
            Darknet's ``atoi(basename)``.
        category_ids: for ``coco``: class index -> category id; default Darknet's ``coco_ids`` when
            the network has at most 80 classes, else the class index.

    Raises:
        UsageError: an ``eval`` format darknetpy does not write (``imagenet``, ``bdd``, ``kitti``).
    """
    config = DataConfig.from_file(data)
    if fmt is None:
        json_out = destination is not None and Path(destination).suffix.lower() == ".json"
        fmt = "coco" if json_out else config.eval
    if fmt not in VALID_FORMATS:
        raise UsageError(
            f"{config.where('eval')}: eval={fmt}: darknetpy writes {' or '.join(VALID_FORMATS)} "
            "results; set eval=coco or eval=voc, or pass the format explicitly"
        )
    net, facts = load_detector(cfg, weights, device, lenient=lenient, backend=backend)
    names = class_names(config, facts.classes, cfg)
    if category_ids is None and facts.classes <= len(COCO_IDS):
        category_ids = COCO_IDS
    elif category_ids is not None and len(category_ids) != facts.classes:
        raise UsageError(
            f"{len(category_ids)} category ids for {facts.classes} classes; give one per "
            "class (a COCO annotation file with exactly the dataset's categories)"
        )
    images = valid_images(config, "data/train.list")
    found = detect_images(
        net,
        facts,
        _progress(images, progress, "valid"),
        thresh=VALID_DETECTION_THRESH,
        nms=VALID_NMS,
        device=device,
        batch=batch,
    )
    pixel = [
        (
            path,
            size,
            [ScoredBox(_to_pixels(x.box, size), x.probs) for x in _from_arrays(d.boxes, d.probs)],
        )
        for path, size, d in found
    ]
    results_dir = resolve_path(config.results, config.path.parent)
    if fmt == "coco":
        path = Path(destination) if destination else results_dir / f"{out or 'coco_results'}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(format_coco_results(pixel, category_ids=category_ids, image_ids=image_ids))
        return [path]
    folder = Path(destination) if destination else results_dir
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder}: exists and is not a folder; VOC results are one file per class "
                        "in a folder (give a folder, or a .json name for COCO results)")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in zip(names, format_voc_results(pixel, facts.classes)):
        path = folder / f"{out or 'comp4_det_test_'}{name}.txt"
        path.write_text(text)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------------------------
# detector recall


@dataclass(frozen=True)
class RecallRow:
    """``validate_detector_recall``'s running totals after image ``index`` (0-based)."""

    index: int
    path: Path
    correct: int  # truths whose best IoU is > 0.5
    total: int  # truths so far
    proposals: int  # boxes with objectness > 0.001 after do_nms_obj, so far
    iou_sum: float  # float32 running sum of each truth's best IoU

    @property
    def proposals_per_image(self) -> float:
        return float(np.float32(self.proposals) / np.float32(self.index + 1))

    def _iou_percent(self) -> float:
        with np.errstate(invalid="ignore", divide="ignore"):  # avg_iou * 100 / total in float
            return float(np.float32(self.iou_sum) * np.float32(100) / np.float32(self.total))

    @property
    def average_iou(self) -> float:
        """Mean best IoU per truth, 0..1 (NaN before the first truth)."""
        return self._iou_percent() / 100

    @property
    def recall(self) -> float:
        """correct / total, 0..1 (NaN before the first truth)."""
        return self.correct / self.total if self.total else float("nan")

    def format(self) -> str:
        """The line Darknet prints to stderr: ``i correct total RPs/Img IOU Recall``."""
        iou = _c(self._iou_percent(), ".2f")
        rec = _c(100.0 * self.correct / self.total if self.total else float("nan"), ".2f")
        return (
            f"{self.index:5d} {self.correct:5d} {self.total:5d}\tRPs/Img: "
            f"{self.proposals_per_image:.2f}\tIOU: {iou}%\tRecall:{rec}%"
        )


def iter_recall(
    cfg: str | Path,
    data: str | Path,
    weights: str | Path,
    *,
    device: str = "cpu",
    batch: int = 8,
    lenient: bool = False,
    backend: str | None = "torch",
) -> Iterator[RecallRow]:
    """``darknet detector recall DATA CFG WEIGHTS``, one cumulative row per image of ``valid=``.

    As ``validate_detector_recall``: inputs resized without letterbox whatever the cfg says,
    ``get_network_boxes`` at 0.001, class-agnostic ``do_nms_obj`` at 0.4; every truth of the label
    file (unfiltered) takes the best IoU of the boxes with objectness > 0.001 and is found when it
    is above 0.5.
    """
    config = DataConfig.from_file(data)
    images = valid_images(config, "data/train.txt")
    read_truths(images, "recall")  # only its warning: malformed label lines, counted and reported
    net, facts = load_detector(cfg, weights, device, lenient=lenient, backend=backend)
    thresh = np.float32(RECALL_DETECTION_THRESH)
    correct = total = proposals = 0
    iou_sum = np.float32(0)
    found = detect_images(
        net,
        facts,
        images,
        thresh=RECALL_DETECTION_THRESH,
        nms=0,
        letter_box=False,
        device=device,
        batch=batch,
    )
    for index, (path, _, dets) in enumerate(found):
        dets = do_nms_obj(dets, RECALL_NMS)
        live = dets.objectness > thresh
        proposals += int(live.sum())
        truths = read_boxes(label_path(path))
        if truths:
            boxes = np.array([t[1:5] for t in truths], dtype=np.float32)
            iou = box_iou(dets.boxes[live], boxes)  # (live boxes, truths)
            best = iou.max(axis=0) if iou.shape[0] else np.zeros(len(truths), np.float32)
            best = np.maximum(best, np.float32(0))
            for value in best:  # float32 running sum in truth order, as the C loop
                iou_sum = np.float32(iou_sum + value)
            correct += int((best > np.float32(RECALL_IOU_THRESH)).sum())
            total += len(truths)
        yield RecallRow(index, path, correct, total, proposals, float(iou_sum))


def recall(
    cfg: str | Path, data: str | Path, weights: str | Path, *, device: str = "cpu", batch: int = 8
) -> RecallRow:
    """The final row of :func:`iter_recall` (totals over the whole ``valid=`` list)."""
    last = None
    for last in iter_recall(cfg, data, weights, device=device, batch=batch):
        pass
    if last is None:
        raise DataError(f"{data}: the valid= list holds no image")
    return last
