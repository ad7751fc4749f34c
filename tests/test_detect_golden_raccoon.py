"""``darknetpy detect`` against Darknet's ``detector test -ext_output -thresh 0.05`` on every
validation image of golden/trained-raccoon (``test.json``): same boxes within 2 pixels, same
percentages within 1.

Darknet prints (``image.c: draw_detections_v3``), per box whose best class is above the threshold,
``name: %.0f%%`` of ``prob * 100`` and ``round((x - w / 2) * im.w)``, ``round((y - h / 2) * im.h)``,
``round(w * im.w)``, ``round(h * im.h)``: float32 products, C's ``round`` (halves away from zero).
The same figures are rebuilt here from the ``relative_coordinates`` and ``confidence`` of
darknetpy's JSON, then each Darknet row is matched to one of ours of the same image and name.
A row whose probability is within 5e-3 of the threshold may be missing on either side (README's
tolerance for detections): its printed percentage is 5.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from .conftest import SHARED_RACCOON, trained_raccoon

THRESH = 0.05
PIXELS = 2  # README tolerance: same boxes within 2 pixels
PERCENT = 1  # same percentages within 1
BORDERLINE_PERCENT = 5  # prob in (0.05, 0.055]: may be missing on either side


class Row(NamedTuple):
    image: str
    name: str
    percent: float
    left: float
    top: float
    width: float
    height: float


def c_round(value: float) -> float:
    return math.copysign(math.floor(abs(value) + 0.5), value)


def darknet_row(
    image: str, name: str, prob: float, rel: tuple[float, ...], size: tuple[int, int]
) -> Row:
    """What ``draw_detections_v3 -ext_output`` prints for a box (see the module docstring)."""
    x, y, w, h = (np.float32(v) for v in rel)
    im_w, im_h = np.float32(size[0]), np.float32(size[1])
    two = np.float32(2)
    return Row(
        image,
        name,
        float(np.float32(prob) * np.float32(100)),
        c_round(float((x - w / two) * im_w)),
        c_round(float((y - h / two) * im_h)),
        c_round(float(w * im_w)),
        c_round(float(h * im_h)),
    )


def golden_rows(test_json: dict) -> list[Row]:
    return [
        Row(image, r["name"], r["percent"], r["left"], r["top"], r["width"], r["height"])
        for image, rows in test_json["images"].items()
        for r in rows
    ]


def _distance(a: Row, b: Row) -> float:
    return max(abs(a.left - b.left), abs(a.top - b.top), abs(a.width - b.width),
               abs(a.height - b.height))  # fmt: skip


def match_rows(
    golden: list[Row], ours: list[Row]
) -> tuple[list[tuple[Row, Row]], list[Row], list[Row]]:
    """Greedy one-to-one matching per (image, name), closest box first.

    Returns ``(matched (darknet, ours) pairs, darknet rows left, our rows left)``.
    """
    left = list(ours)
    pairs, missing = [], []
    for g in golden:
        candidates = [
            (d, i)
            for i, o in enumerate(left)
            if o.image == g.image
            and o.name == g.name
            and (d := _distance(g, o)) <= PIXELS
            and abs(float(f"{o.percent:.0f}") - g.percent) <= PERCENT
        ]
        if not candidates:
            missing.append(g)
            continue
        _, i = min(candidates)
        pairs.append((g, left.pop(i)))
    return pairs, missing, left


def _golden() -> tuple[Path, dict, list[Path]]:
    folder = trained_raccoon("test.json")
    test_json = json.loads((folder / "test.json").read_text())
    images = [SHARED_RACCOON / "obj" / name for name in test_json["images"]]
    assert test_json["thresh"] == THRESH and all(p.is_file() for p in images)
    return folder, test_json, images


def _assert_reproduced(golden: list[Row], ours: list[Row]) -> None:
    pairs, missing, extra = match_rows(golden, ours)
    worst = max((_distance(g, o) for g, o in pairs), default=0.0)
    same_percent = sum(f"{o.percent:.0f}" == f"{g.percent:.0f}" for g, o in pairs)
    print(f"\n{len(pairs)} of {len(golden)} darknet rows matched ({len(ours)} of ours); worst box "
          f"difference {worst:g} px; {same_percent} identical percentages")  # fmt: skip
    assert not [g for g in missing if g.percent > BORDERLINE_PERCENT], missing
    assert not [o for o in extra if float(f"{o.percent:.0f}") > BORDERLINE_PERCENT], extra
    assert len(pairs) >= len(golden) - 2  # at most a couple of borderline rows differ


def test_detect_cli_reproduces_darknet_test(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from darknetpy.cli import main

    folder, test_json, images = _golden()
    names = tmp_path / "raccoon.names"
    names.write_text("raccoon\n")
    out = tmp_path / "out.json"
    argv = ["detect", str(folder / "net.cfg"), str(folder / "net.weights"), *map(str, images)]
    flags = ["--thresh", str(THRESH), "--json", str(out), "--names", str(names), "--no-save"]
    assert main([*argv, *flags, "--ext-output"]) == 0
    capsys.readouterr()
    entries = json.loads(out.read_text())
    assert len(entries) == len(images)
    ours = [
        darknet_row(
            Path(e["filename"]).name,
            o["name"],
            o["confidence"],
            tuple(
                o["relative_coordinates"][k] for k in ("center_x", "center_y", "width", "height")
            ),
            (e["width"], e["height"]),
        )
        for e in entries
        for o in e["objects"]
        if np.float32(o["confidence"]) > np.float32(THRESH)
    ]
    _assert_reproduced(golden_rows(test_json), ours)


@pytest.mark.slow
def test_network_detect_reproduces_darknet_test() -> None:
    """The library path the evaluation commands share: ``Network.detect`` on Darknet's test-time
    input (``prepare_test_input``: resize_image, or letterbox when the cfg says so)."""
    import torch

    import darknetpy
    from darknetpy.data.image import load_image, prepare_test_input

    folder, test_json, images = _golden()
    net = darknetpy.Network.from_cfg(folder / "net.cfg")
    net.load_weights(folder / "net.weights")
    net.eval()
    config = net.net
    ours = []
    for path in images:
        image = load_image(path)
        h, w = image.shape[:2]
        x = prepare_test_input(image, config.width, config.height, config.letter_box)
        (rows,) = net.detect(torch.from_numpy(x)[None], (w, h), thresh=THRESH, nms=0.45)
        ours += [darknet_row(path.name, "raccoon", r[1], r[2:6], (w, h)) for r in rows]
    _assert_reproduced(golden_rows(test_json), ours)


def test_matching_rules() -> None:
    golden = [Row("a.jpg", "raccoon", 7, 10, 20, 100, 50), Row("a.jpg", "raccoon", 5, 0, 0, 9, 9)]
    near = Row("a.jpg", "raccoon", 7.4, 12, 19, 101, 50)  # 2 px off, 7%
    far = Row("a.jpg", "raccoon", 7.0, 13, 20, 100, 50)  # 3 px off
    other_image = Row("b.jpg", "raccoon", 7.0, 10, 20, 100, 50)
    assert match_rows(golden, [near]) == ([(golden[0], near)], [golden[1]], [])
    assert match_rows(golden, [far, other_image])[0] == []
    nine = Row("a.jpg", "raccoon", 8.6, 10, 20, 100, 50)  # prints 9%: 2 off
    assert match_rows(golden[:1], [nine]) == ([], golden[:1], [nine])
    # darknet's printout of a box: x = .5, w = .25 on 640 -> left 240, width 160
    row = darknet_row("a.jpg", "raccoon", 0.0549, (0.5, 0.5, 0.25, 0.1), (640, 480))
    assert (row.left, row.top, row.width, row.height) == (240, 216, 160, 48)
    assert f"{row.percent:.0f}" == "5"
