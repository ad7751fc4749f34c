"""darknetpy.evaluation: Darknet's `detector map` on hand-worked cases, COCO metrics, result files.

Every expected value below is worked out by hand in the comment next to it (one class unless said
otherwise, boxes relative to the image).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from darknetpy.errors import DataError, UsageError
from darknetpy.evaluation import (
    COCO_IDS,
    Metrics,
    average_precision,
    basecfg,
    box_iou,
    coco_image_id,
    coco_metrics,
    darknet_map,
    format_coco_results,
    format_voc_results,
    group_detections,
    metrics_to_dict,
    plot_pr_curves,
    write_metrics_json,
)

from .conftest import SHARED_RACCOON, make_image_set, raccoon_eval_set, trained_raccoon

FAR = (0.9, 0.1, 0.05, 0.05)  # overlaps no ground truth below


def det(box: tuple[float, ...], *probs: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return box, probs


# ------------------------------------------------------------------------------------- IoU


def test_box_iou_hand_values() -> None:
    a = [[0.5, 0.5, 0.2, 0.2]]
    # shifted by half a width: overlap 0.1 x 0.2 = 0.02, union 0.04 + 0.04 - 0.02 = 0.06 -> 1/3
    b = [[0.6, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2], [0.9, 0.9, 0.1, 0.1], [0.7, 0.5, 0.2, 0.2]]
    iou = box_iou(a, b)
    assert iou.dtype == np.float32 and iou.shape == (1, 4)
    np.testing.assert_allclose(iou[0], [1 / 3, 1.0, 0.0, 0.0], atol=1e-6)  # touching edges -> 0


# ------------------------------------------------------------------- AP: 0 vs 11 vs 101 points

# 3 truths; ranked TP .9, FP .8, TP .7, FP .6, FP .5; the third truth is never found.
# precision 1, 1/2, 2/3, 1/2, 2/5; recall 1/3, 1/3, 2/3, 2/3, 2/3.
THREE_TRUTHS = [(0, 0.1, 0.1, 0.1, 0.1), (0, 0.5, 0.5, 0.1, 0.1), (0, 0.8, 0.8, 0.1, 0.1)]
RANKED = [
    det((0.1, 0.1, 0.1, 0.1), 0.9),
    det(FAR, 0.8),
    det((0.5, 0.5, 0.1, 0.1), 0.7),
    det(FAR, 0.6),
    det(FAR, 0.5),
]


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        # area under the envelope: 1/3 * 1 + (2/3 - 1/3) * 2/3 = 5/9
        (0, 5 / 9),
        # r = 0, .1, .2, .3 -> 1; r = .4, .5, .6 -> 2/3; r >= .7 -> 0: (4 + 3 * 2/3) / 11
        (11, 6 / 11),
        # r = 0 .. .33 (34 points) -> 1; r = .34 .. .66 (33 points) -> 2/3: (34 + 22) / 101
        (101, 56 / 101),
    ],
)
def test_ap_all_point_11_and_101(points: int, expected: float) -> None:
    result = darknet_map([RANKED], [THREE_TRUTHS], 1, points=points)
    assert result.map == pytest.approx(expected, abs=1e-12)
    assert result.ap == (pytest.approx(expected, abs=1e-12),)
    assert result.detections_count == 5 and result.unique_truth_count == 3


def test_average_precision_direct() -> None:
    p, r = np.array([1, 0.5, 2 / 3, 0.5, 0.4]), np.array([1, 1, 2, 2, 2]) / 3
    assert average_precision(p, r, 0) == pytest.approx(5 / 9)
    assert average_precision(p, r, 11) == pytest.approx(6 / 11)
    assert average_precision([], [], 0) == 0.0
    with pytest.raises(UsageError, match="points=1"):
        average_precision(p, r, 1)


def test_counts_at_conf_thresh() -> None:
    # above 0.65: TP .9, FP .8, TP .7 -> TP 2, FP 1, FN 1; P = R = F1 = 2/3; IoU (1 + 0 + 1) / 3
    result = darknet_map([RANKED], [THREE_TRUTHS], 1, thresh=0.65)
    assert (result.tp, result.fp, result.fn) == (2, 1, 1)
    assert result.tp_per_class == (2,) and result.fp_per_class == (1,)
    assert result.precision == pytest.approx(2 / 3, abs=1e-6)
    assert result.recall == pytest.approx(2 / 3, abs=1e-6)
    assert result.f1 == pytest.approx(2 / 3, abs=1e-6)
    assert result.average_iou == pytest.approx(2 / 3, abs=1e-5)


# ------------------------------------------------------------------------------- ties


def test_ties_keep_input_order() -> None:
    # two truths; .9 hits truth A, then two entries tied at .8: one FP, one hitting truth B.
    truths = [(0, 0.2, 0.2, 0.2, 0.2), (0, 0.7, 0.7, 0.2, 0.2)]
    hit_a, hit_b = det((0.2, 0.2, 0.2, 0.2), 0.9), det((0.7, 0.7, 0.2, 0.2), 0.8)
    miss = det(FAR, 0.8)
    # FP first: P 1, 1/2, 2/3 at R 1/2, 1/2, 1 -> 1/2 * 1 + 1/2 * 2/3 = 5/6
    assert darknet_map([[hit_a, miss, hit_b]], [truths], 1).map == pytest.approx(5 / 6)
    # TP first: P 1, 1, 2/3 at R 1/2, 1, 1 -> 1
    assert darknet_map([[hit_a, hit_b, miss]], [truths], 1).map == pytest.approx(1.0)
    # ties across images: image order decides the same way
    first, second = [hit_a, miss], [hit_b]
    assert darknet_map([first, second], [truths[:1], truths[1:]], 1).map == pytest.approx(5 / 6)
    assert darknet_map([second, first], [truths[1:], truths[:1]], 1).map == pytest.approx(1.0)


# ----------------------------------------------------------------------- duplicates


def test_duplicate_detections_of_one_truth() -> None:
    truth = [(0, 0.5, 0.5, 0.2, 0.2)]
    exact = det((0.5, 0.5, 0.2, 0.2), 0.9)  # IoU 1
    shifted = det((0.55, 0.5, 0.2, 0.2), 0.8)  # overlap .15 x .2 = .03, union .05 -> IoU 0.6
    result = darknet_map([[exact, shifted]], [truth], 1)
    # ranked TP, FP: P 1, 1/2 at R 1, 1 -> AP 1; TP 1, FP 1; average IoU (1 + 0) / 2
    assert result.map == pytest.approx(1.0)
    assert (result.tp, result.fp, result.fn) == (1, 1, 0)
    assert result.precision == pytest.approx(0.5) and result.recall == pytest.approx(1.0)
    assert result.f1 == pytest.approx(2 / 3, abs=1e-6)
    assert result.average_iou == pytest.approx(0.5, abs=1e-6)
    # Darknet claims truths at conf_thresh in detection order within the image, not by score:
    # listing the 0.8 box first makes it the TP there (IoU 0.6) while the AP ranking is unchanged.
    swapped = darknet_map([[shifted, exact]], [truth], 1)
    assert swapped.map == pytest.approx(1.0)
    assert (swapped.tp, swapped.fp) == (1, 1)
    assert swapped.average_iou == pytest.approx(0.3, abs=1e-6)


def test_earlier_entry_below_thresh_blocks_the_tp() -> None:
    # the 0.1 box comes first and matches the truth: the 0.9 box is an FP "for conf_thresh"
    truth = [(0, 0.5, 0.5, 0.2, 0.2)]
    result = darknet_map(
        [[det((0.5, 0.5, 0.2, 0.2), 0.1), det((0.5, 0.5, 0.2, 0.2), 0.9)]], [truth], 1, thresh=0.25
    )
    assert (result.tp, result.fp, result.fn) == (0, 1, 1)
    assert result.map == pytest.approx(1.0)  # ranking: .9 TP, .1 FP


def test_no_fallback_to_second_best_truth() -> None:
    # truths A at x=.5 and B at x=.56; both boxes prefer A (IoU 1 and .818 vs .538 and .667).
    truths = [(0, 0.5, 0.5, 0.2, 0.2), (0, 0.56, 0.5, 0.2, 0.2)]
    boxes = [det((0.5, 0.5, 0.2, 0.2), 0.9), det((0.52, 0.5, 0.2, 0.2), 0.8)]
    result = darknet_map([boxes], [truths], 1)
    # ranked TP, FP (duplicate of A; B never claimed): P 1, 1/2 at R 1/2, 1/2 -> AP 1/2
    assert result.map == pytest.approx(0.5)
    assert (result.tp, result.fp, result.fn) == (1, 1, 1)


# -------------------------------------------------------------- classes, thresholds, NaN


def test_classes_without_ground_truth_count_zero() -> None:
    truth = [(0, 0.5, 0.5, 0.2, 0.2)]
    dets = [det((0.5, 0.5, 0.2, 0.2), 0.9, 0.0, 0.0), det(FAR, 0.0, 0.7, 0.0)]
    result = darknet_map([dets], [truth], 3)
    # class 0 perfect, class 1 only an FP and no truth, class 2 nothing: (1 + 0 + 0) / 3
    assert result.ap == (pytest.approx(1.0), 0.0, 0.0)
    assert result.map == pytest.approx(1 / 3)
    assert result.truth_per_class == (1, 0, 0)
    assert result.tp_per_class == (1, 0, 0) and result.fp_per_class == (0, 1, 0)


def test_one_box_with_two_classes_gives_two_entries() -> None:
    truths = [(0, 0.5, 0.5, 0.2, 0.2), (1, 0.5, 0.5, 0.2, 0.2)]
    result = darknet_map([[det((0.5, 0.5, 0.2, 0.2), 0.6, 0.3)]], [truths], 2)
    assert result.detections_count == 2
    assert result.ap == (pytest.approx(1.0), pytest.approx(1.0))
    assert (result.tp, result.fp) == (2, 0)


def test_iou_exactly_at_threshold_is_not_a_match() -> None:
    # the box is the left half of the truth: intersection .125, union .25 -> IoU exactly 0.5
    truth = [(0, 0.5, 0.5, 0.5, 0.5)]
    half = [det((0.375, 0.5, 0.25, 0.5), 0.9)]
    assert box_iou([half[0][0]], [truth[0][1:]])[0, 0] == np.float32(0.5)
    at = darknet_map([half], [truth], 1, iou_thresh=0.5)
    assert at.map == 0.0 and (at.tp, at.fp) == (0, 1)
    below = darknet_map([half], [truth], 1, iou_thresh=0.49)
    assert below.map == pytest.approx(1.0) and (below.tp, below.fp) == (1, 0)


def test_prob_exactly_at_conf_thresh_is_not_counted() -> None:
    truth = [(0, 0.5, 0.5, 0.2, 0.2)]
    result = darknet_map([[det((0.5, 0.5, 0.2, 0.2), 0.25)]], [truth], 1, thresh=0.25)
    assert (result.tp, result.fp) == (0, 0)
    assert result.map == pytest.approx(1.0)  # the AP still ranks it


def test_nan_where_darknet_prints_nan() -> None:
    truth = [(0, 0.5, 0.5, 0.2, 0.2)]
    result = darknet_map([[det((0.5, 0.5, 0.2, 0.2), 0.1)]], [truth], 1, thresh=0.25)
    assert math.isnan(result.precision) and math.isnan(result.f1)
    assert result.recall == 0.0 and result.average_iou == 0.0 and result.fn == 1
    assert "precision = -nan" in result.report(["thing"])
    empty = darknet_map([[]], [[]], 2)
    assert empty.map == 0.0 and empty.detections_count == 0 and math.isnan(empty.recall)


def test_difficult_truth_drops_unmatched_entries_from_the_ranking() -> None:
    truth = [(0, 0.2, 0.2, 0.2, 0.2)]
    hard = [(0, 0.7, 0.7, 0.2, 0.2)]
    dets = [det((0.7, 0.7, 0.2, 0.2), 0.95), det((0.2, 0.2, 0.2, 0.2), 0.9)]
    plain = darknet_map([dets], [truth], 1)
    # without difficult: ranked FP, TP -> P 0, 1/2 at R 0, 1 -> AP 1/2
    assert plain.map == pytest.approx(0.5)
    with_hard = darknet_map([dets], [truth], 1, difficult=[hard])
    # the .95 box hits the difficult truth: gone from the ranking (AP 1, 1 entry) ...
    assert with_hard.map == pytest.approx(1.0) and with_hard.detections_count == 1
    # ... but Darknet still counts it as an FP at conf_thresh
    assert (with_hard.tp, with_hard.fp) == (1, 1)


def test_truth_indices_are_per_image() -> None:
    truth = [(0, 0.5, 0.5, 0.2, 0.2)]
    same = det((0.5, 0.5, 0.2, 0.2), 0.9)
    result = darknet_map([[same], [same]], [truth, truth], 1)
    assert result.map == pytest.approx(1.0) and (result.tp, result.fp) == (2, 0)


def test_bad_inputs_raise() -> None:
    with pytest.raises(DataError, match="class id 3"):
        darknet_map([[]], [[(3, 0.5, 0.5, 0.1, 0.1)]], 2)
    with pytest.raises(UsageError, match="expected 2"):
        darknet_map([[det(FAR, 0.5)]], [[]], 2)
    with pytest.raises(UsageError, match="images"):
        darknet_map([[], []], [[]], 1)


def test_report_matches_darknet_wording() -> None:
    text = darknet_map([RANKED], [THREE_TRUTHS], 1, thresh=0.65).report(["raccoon"])
    assert "class_id = 0, name = raccoon, ap = 55.56%   \t (TP = 2, FP = 1) " in text
    assert " for conf_thresh = 0.65, TP = 2, FP = 1, FN = 1, average IoU = 66.67 % " in text
    assert " mean average precision (mAP@0.50) = 0.555556, or 55.56 % " in text


# --------------------------------------------------------------------- grouping rows


def test_group_detections_rebuilds_per_class_vectors() -> None:
    rows = [
        (1, 0.3, 0.5, 0.5, 0.1, 0.1, 0.8),
        (0, 0.6, 0.5, 0.5, 0.1, 0.1, 0.8),  # same box as the row above
        (1, 0.7, 0.2, 0.2, 0.1, 0.1, 0.9),
    ]
    dets = group_detections(rows, 2)
    assert len(dets) == 2
    # do_nms_sort leaves dets sorted by the last class's probability: .7 first, then .3
    assert tuple(dets[0].box) == (0.2, 0.2, 0.1, 0.1)
    np.testing.assert_allclose(dets[0].probs, [0.0, 0.7])
    np.testing.assert_allclose(dets[1].probs, [0.6, 0.3])


# ---------------------------------------------------------------------------- COCO


def test_coco_metrics_perfect_and_half() -> None:
    truths = [[(0, 0.25, 0.25, 0.4, 0.4), (0, 0.75, 0.75, 0.4, 0.4)]]
    sizes = [(640, 480)]
    perfect = [[det(t[1:], 0.9) for t in truths[0]]]
    metrics = coco_metrics(perfect, truths, sizes, 1)
    assert metrics.AP == pytest.approx(1.0) and metrics.AP50 == pytest.approx(1.0)
    assert metrics.APl == pytest.approx(1.0)
    assert math.isnan(metrics.APs)  # no small object: COCOeval says -1
    # one of two found: precision 1 up to recall .5 -> 51 of COCO's 101 recall points
    half = coco_metrics([perfect[0][:1]], truths, sizes, 1)
    assert half.AP == pytest.approx(51 / 101, abs=1e-9)
    nothing = coco_metrics([[]], truths, sizes, 1)
    assert nothing.AP == 0.0


# --------------------------------------------------------------------- output files


def test_metrics_json_and_pr_plots(tmp_path: Path) -> None:
    result = darknet_map([RANKED], [THREE_TRUTHS], 1, thresh=0.65)
    coco = coco_metrics([RANKED], [THREE_TRUTHS], [(100, 100)], 1)
    metrics = Metrics(result, coco, ("raccoon",), 1)
    path = write_metrics_json(metrics, tmp_path / "m.json")
    data = json.loads(path.read_text())
    assert data["map50"] == pytest.approx(5 / 9)
    assert data["per_class"] == {"raccoon": {"ap": pytest.approx(5 / 9), "tp": 2, "fp": 1}}
    assert set(data["coco"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert data["precision"] == pytest.approx(2 / 3, abs=1e-6)
    assert set(metrics_to_dict(metrics)) >= {
        "map50",
        "per_class",
        "precision",
        "recall",
        "f1",
        "average_iou",
        "coco",
    }
    plots = plot_pr_curves(result, tmp_path / "pr", ["rac/coon"])
    assert [p.name for p in plots] == ["pr_0_rac_coon.png"]
    assert plots[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_coco_image_id_rule() -> None:
    assert basecfg("data/val/000000000042.jpg") == "000000000042"
    assert coco_image_id("data/val/000000000042.jpg") == 42
    assert coco_image_id("COCO_val2014_000000000042.jpg") == 0  # atoi stops at 'C'
    assert coco_image_id("c:\\imgs\\17.x.png") == 17
    assert len(COCO_IDS) == 80 and COCO_IDS[11] == 13 and COCO_IDS[-1] == 90


def test_coco_results_text() -> None:
    # pixel box centred at (10, 20), 30 x 50 in a 100 x 60 image: ymax 45 is inside, xmin -5 clips
    images = [("imgs/000000000007.jpg", (100, 60), [det((10.0, 20.0, 30.0, 50.0), 0.5, 0.0, 0.25)])]
    text = format_coco_results(images)
    assert text == (
        "[\n"
        '{"image_id":7, "category_id":1, "bbox":[0.000000, 0.000000, 25.000000, 45.000000], '
        '"score":0.500000},\n'
        '{"image_id":7, "category_id":3, "bbox":[0.000000, 0.000000, 25.000000, 45.000000], '
        '"score":0.250000}\n'
        "]\n"
    )
    assert json.loads(text)[1]["category_id"] == 3
    mapped = format_coco_results(images, image_ids={"000000000007.jpg": 123}, category_ids=None)
    assert json.loads(mapped)[0]["image_id"] == 123 and json.loads(mapped)[0]["category_id"] == 0
    assert format_coco_results([]) == "[\n\n]\n" and json.loads(format_coco_results([])) == []


def test_voc_results_text() -> None:
    images = [("a/b/img1.jpg", (100, 60), [det((10.0, 20.0, 30.0, 50.0), 0.0, 0.5)])]
    per_class = format_voc_results(images, 2)
    # 1-based corners: xmin -4 -> 1, ymin -4 -> 1, xmax 26, ymax 46
    assert per_class == ["", "img1 0.500000 1.000000 1.000000 26.000000 46.000000\n"]


# --------------------------------------------------------- end to end on the golden network


@pytest.fixture(scope="module")
def raccoon() -> tuple[Metrics, dict]:
    """evaluate() on golden/trained-raccoon (Darknet's `detector map -thresh 0.05` in map.json)."""
    folder = trained_raccoon("map.json")
    from darknetpy.evaluation import evaluate

    data = SHARED_RACCOON / "raccoon.data"
    metrics = evaluate(
        folder / "net.cfg", data, folder / "net.weights", thresh=0.05, keep_detections=True
    )
    return metrics, json.loads((folder / "map.json").read_text())


@pytest.mark.parametrize("run", ["0", "11", "101", "0@0.05"])
def test_trained_raccoon_matches_darknet_map(raccoon: tuple[Metrics, dict], run: str) -> None:
    metrics, golden = raccoon
    want = golden[run]
    assert metrics.detections is not None and metrics.truths is not None
    result = darknet_map(
        metrics.detections,
        metrics.truths,
        1,
        thresh=want["conf_thresh"],
        points=int(run.split("@")[0]),
        iou_thresh=want["iou_thresh"],
    )
    if run == "0@0.05":
        assert result == metrics.map  # evaluate() itself ran with -points 0 -thresh 0.05
    assert result.unique_truth_count == want["unique_truth_count"]
    assert abs(result.map - want["map"]) <= 0.002
    assert abs(result.tp - want["tp"]) <= 1 and abs(result.fp - want["fp"]) <= 1
    assert (
        abs(result.detections_count - want["detections_count"]) <= 0.02 * want["detections_count"]
    )
    if want["tp"] + want["fp"]:
        assert result.average_iou == pytest.approx(want["average_iou"], abs=0.002)
        assert result.precision == pytest.approx(want["precision"], abs=0.01)
        assert result.recall == pytest.approx(want["recall"], abs=0.01)
    else:
        assert math.isnan(result.precision) and math.isnan(want["precision"])


def test_trained_raccoon_metrics_json(raccoon: tuple[Metrics, dict], tmp_path: Path) -> None:
    metrics, golden = raccoon
    assert metrics.names == ("raccoon",) and metrics.images == 40
    data = json.loads(write_metrics_json(metrics, tmp_path / "map.json").read_text())
    assert data["map50"] == pytest.approx(golden["0@0.05"]["map"], abs=0.002)
    assert data["per_class"]["raccoon"]["tp"] == golden["0@0.05"]["tp"]
    assert metrics.coco is not None and 0 < data["coco"]["AP"] < data["coco"]["AP50"] <= 1


def test_valid_writes_darknet_coco_results(tmp_path: Path) -> None:
    folder = trained_raccoon("net.weights")
    from darknetpy.evaluation import validate

    evalset = raccoon_eval_set(tmp_path, data={"eval": "coco", "results": tmp_path / "res"})
    images = evalset.images
    (path,) = validate(folder / "net.cfg", evalset.data, folder / "net.weights", out="x")
    assert path == tmp_path / "res" / "x.json"
    rows = json.loads(path.read_text())
    assert rows and {r["image_id"] for r in rows} == {0}  # atoi("raccoon-7") == 0
    assert {r["category_id"] for r in rows} == {1}  # coco_ids[0]
    assert min(r["score"] for r in rows) > 0.001
    sizes = [cv2_size(p) for p in images]
    assert all(r["bbox"][0] >= 0 and r["bbox"][1] >= 0 for r in rows)
    assert all(r["bbox"][0] + r["bbox"][2] <= max(w for w, _ in sizes) + 1e-3 for r in rows)


def cv2_size(path: Path) -> tuple[int, int]:
    import cv2

    h, w = cv2.imread(str(path)).shape[:2]
    return w, h


def test_evaluate_refuses_names_that_do_not_match_the_cfg(tmp_path: Path) -> None:
    folder = trained_raccoon("net.cfg")
    from darknetpy.evaluation import evaluate

    data = make_image_set(tmp_path, {"valid": ["nothing.jpg"]}, names=["raccoon", "dog"]).data
    with pytest.raises(DataError, match="2 names, but the last detection layer"):
        evaluate(folder / "net.cfg", data, folder / "net.weights")


# ------------------------------------------------------------------ module layout, recall rows

# every public name of the single-module darknetpy.evaluate before it became the package darknetpy.evaluation
# (but Detection, now ScoredBox: darknetpy.Detection is predict's record, one meaning per name)
PUBLIC_BEFORE_SPLIT = (
    "COCO_IDS", "MAP_DETECTION_THRESH", "MAP_NMS", "VALID_DETECTION_THRESH", "VALID_NMS",
    "COCO_KEYS", "ScoredBox", "Truth", "PRCurve", "MapResult", "CocoMetrics", "Metrics", "box_iou",
    "average_precision", "darknet_map", "coco_metrics", "plot_pr_curves", "metrics_to_dict",
    "write_metrics_json", "basecfg", "coco_image_id", "read_coco_image_ids", "format_coco_results",
    "format_voc_results", "group_detections", "run_detector", "evaluate", "validate",
)  # fmt: skip


def test_darknetpy_evaluation_keeps_every_public_name() -> None:
    import darknetpy.evaluation as package

    for name in PUBLIC_BEFORE_SPLIT:
        assert callable(getattr(package, name)) or getattr(package, name) is not None, name
    assert set(PUBLIC_BEFORE_SPLIT) <= set(package.__all__)


def test_recall_row_prints_like_darknet() -> None:
    from darknetpy.evaluation import RecallRow

    # fprintf("%5d %5d %5d\tRPs/Img: %.2f\tIOU: %.2f%%\tRecall:%.2f%%\n", i, correct, total,
    #         (float)proposals / (i + 1), avg_iou * 100 / total, 100. * correct / total)
    row = RecallRow(2, Path("x.jpg"), correct=2, total=3, proposals=10, iou_sum=1.9)
    assert row.format() == "    2     2     3\tRPs/Img: 3.33\tIOU: 63.33%\tRecall:66.67%"
    assert row.recall == pytest.approx(2 / 3) and row.average_iou == pytest.approx(1.9 / 3)
    empty = RecallRow(0, Path("bg.jpg"), correct=0, total=0, proposals=4, iou_sum=0.0)
    assert empty.format() == "    0     0     0\tRPs/Img: 4.00\tIOU: -nan%\tRecall:-nan%"


def test_read_coco_category_ids(tmp_path: Path) -> None:
    from darknetpy.evaluation import read_coco_category_ids

    path = tmp_path / "i.json"
    path.write_text(json.dumps({"categories": [{"id": 9}, {"id": 2}, {"id": 5}]}))
    assert read_coco_category_ids(path) == (2, 5, 9)
    path.write_text("{}")
    with pytest.raises(DataError, match="not a readable COCO annotation file"):
        read_coco_category_ids(path)


def test_validate_refuses_wrong_category_count_and_unknown_format(tmp_path: Path) -> None:
    folder = trained_raccoon("net.cfg")
    from darknetpy.evaluation import validate

    image = SHARED_RACCOON / "obj" / "raccoon-7.jpg"
    data = make_image_set(tmp_path, {"valid": [image]}, data={"eval": "kitti"}).data
    args = (folder / "net.cfg", data, folder / "net.weights")
    with pytest.raises(UsageError, match="eval=kitti"):
        validate(*args)
    with pytest.raises(UsageError, match="2 category ids for 1 classes"):
        validate(*args, fmt="coco", category_ids=(1, 2), destination=tmp_path / "r.json")
    (path,) = validate(*args, fmt="coco", category_ids=(7,), destination=tmp_path / "r.json")
    assert {r["category_id"] for r in json.loads(path.read_text())} == {7}
