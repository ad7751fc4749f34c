"""Every CLI verb and Darknet form, given bad arguments and bad files: exactly one non-empty line on
stderr, a non-zero exit status, no traceback (issue 12, "done when" 2).

The table runs in this process (``main(argv)``, SystemExit caught, stderr captured); a few rows
also run through ``python -m darknetpy`` to prove the real entry point. ``{name}`` in an argument
is a file of :func:`world` (good or bad); ``{tmp}`` is the test's folder.
"""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from darknetpy.model.network import Network

from .conftest import REPO, tiny_cfg, write_flat_images
from .test_bad_input_points import run_cli


def world(root: Path) -> dict[str, Path]:
    """Good and bad files for every row: cfgs, weights, .data, names, images, folders."""
    root.mkdir(parents=True, exist_ok=True)
    images = write_flat_images(root / "img", {"a.jpg": "0 .5 .5 .2 .2\n"}, size=32, value=80)
    files = {"tmp": root, "folder": root / "img", "image": images[0]}

    def put(name: str, text: str | bytes) -> Path:
        files[name.replace(".", "_")] = path = root / name
        (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)  # type: ignore[operator]
        return path

    cfg = put("tiny.cfg", tiny_cfg(width=32, height=32))
    other = put("other.cfg", tiny_cfg(backbone=(8, 16), width=32, height=32))
    put("train.cfg", tiny_cfg(width=32, height=32, batch=8, subdivisions=2,
                              net={"max_batches": 2, "learning_rate": 0.001}))  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Network.from_cfg(cfg).save_weights(root / "tiny.weights")
        Network.from_cfg(other).save_weights(root / "other.weights")
    files["tiny_weights"], files["other_weights"] = root / "tiny.weights", root / "other.weights"
    put("trunc.weights", (root / "tiny.weights").read_bytes()[:100])
    put("empty.cfg", "")
    put("typo.cfg", tiny_cfg(width=32, height=32).replace("activation=linear", "activaton=linear"))
    put("clases.cfg", tiny_cfg(width=32, height=32).replace("classes=1", "clases=1"))
    put("badline.cfg", tiny_cfg(width=32, height=32).replace("size=3", "size 3", 1))
    put("list.txt", f"{images[0]}\n")
    put("names.names", "raccoon\n")
    put("good.data", f"classes=1\ntrain={root / 'list.txt'}\nvalid={root / 'list.txt'}\n"
                     f"names={root / 'names.names'}\nbackup={root / 'backup'}\n")  # fmt: skip
    put("nokeys.data", "classes=1\n")
    put("nonames.data", f"classes=1\ntrain={root / 'list.txt'}\nvalid={root / 'list.txt'}\n"
                        f"names={root / 'missing.names'}\n")  # fmt: skip
    put("notes.txt", "hello\n")
    return files


# (row id, argv); `{missing}` is a path that does not exist
ROWS: list[tuple[str, str]] = [
    # ---- darknetpy's own verbs
    ("no-verb-unknown", "frobnicate x"),
    ("summary-missing", "summary {missing}.cfg"),
    ("summary-folder", "summary {folder}"),
    ("summary-empty-cfg", "summary {empty_cfg}"),
    ("summary-bad-line", "summary {badline_cfg}"),
    ("summary-weights-as-cfg", "summary {tiny_weights}"),
    ("summary-unknown-flag", "summary {tiny_cfg} --frobnicate"),
    ("summary-strict-misspelt-key", "summary {typo_cfg} --strict"),
    ("summary-misspelt-classes", "summary {clases_cfg}"),
    ("summary-no-arg", "summary"),
    ("partial-truncated", "partial {tiny_cfg} {trunc_weights} {tmp}/p.weights 1"),
    ("partial-bad-number", "partial {tiny_cfg} {tiny_weights} {tmp}/p.weights abc"),
    ("partial-missing-weights", "partial {tiny_cfg} {missing}.weights {tmp}/p.weights 1"),
    ("partial-other-cfg", "partial {other_cfg} {tiny_weights} {tmp}/p.weights 3"),
    ("partial-missing-folder", "partial {tiny_cfg} {tiny_weights} {tmp}/no/dir/p.weights 1"),
    ("detect-missing-cfg", "detect {missing}.cfg {tiny_weights} {image}"),
    ("detect-folder-as-cfg", "detect {folder} {tiny_weights} {image}"),
    ("detect-empty-cfg", "detect {empty_cfg} {tiny_weights} {image}"),
    ("detect-missing-weights", "detect {tiny_cfg} {missing}.weights {image}"),
    ("detect-truncated-weights", "detect {tiny_cfg} {trunc_weights} {image}"),
    ("detect-other-cfg-weights", "detect {tiny_cfg} {other_weights} {image}"),
    ("detect-missing-image", "detect {tiny_cfg} {tiny_weights} {missing}.jpg"),
    ("detect-cfg-as-source", "detect {tiny_cfg} {tiny_weights} {tiny_cfg}"),
    ("detect-darknet-order", "detect {good_data} {tiny_cfg} {tiny_weights} {image}"),
    ("detect-text-as-image", "detect {tiny_cfg} {tiny_weights} {notes_txt}"),
    ("detect-bad-thresh", "detect {tiny_cfg} {tiny_weights} {image} --thresh abc"),
    ("detect-thresh-out-of-range", "detect {tiny_cfg} {tiny_weights} {image} --thresh 2"),
    ("detect-bad-batch", "detect {tiny_cfg} {tiny_weights} {image} --batch-size 0"),
    ("detect-unknown-flag", "detect {tiny_cfg} {tiny_weights} {image} --frobnicate"),
    ("detect-names-missing", "detect {tiny_cfg} {tiny_weights} {image} --names {missing}.names"),
    ("detect-save-dir-file", "detect {tiny_cfg} {tiny_weights} {image} --save-dir {notes_txt}"),
    ("detect-bad-device", "detect {tiny_cfg} {tiny_weights} {image} --device tpu"),
    ("detect-json-missing-folder", "detect {tiny_cfg} {tiny_weights} {image} --json "
                                   "{tmp}/no/dir/x.json"),
    ("detect-no-such-gpu", "detect {tiny_cfg} {tiny_weights} {image} --device cuda:9"),
    ("convert-one-file", "convert {tiny_weights}"),
    ("convert-weights-without-cfg", "convert {tiny_weights} {tmp}/x.pt"),
    ("convert-truncated", "convert {tiny_cfg} {trunc_weights} {tmp}/x.pt"),
    ("convert-missing", "convert {tiny_cfg} {missing}.weights {tmp}/x.pt"),
    ("convert-missing-folder", "convert {tiny_cfg} {tiny_weights} {tmp}/no/dir/x.pt"),
    ("export-missing-weights", "export {tiny_cfg} {missing}.weights {tmp}/x.onnx"),
    ("export-truncated", "export {tiny_cfg} {trunc_weights} {tmp}/x.onnx"),
    ("export-missing-folder", "export {tiny_cfg} {tiny_weights} {tmp}/no/dir/x.onnx"),
    ("export-bad-opset", "export {tiny_cfg} {tiny_weights} {tmp}/x.onnx --opset abc"),
    ("export-low-opset", "export {tiny_cfg} {tiny_weights} {tmp}/x.onnx --opset 7"),
    ("train-missing-data", "train {train_cfg} {missing}.data"),
    ("train-data-missing-keys", "train {train_cfg} {nokeys_data}"),
    ("train-folder-as-cfg", "train {folder} {good_data}"),
    ("train-bad-line", "train {badline_cfg} {good_data}"),
    ("train-other-cfg-weights", "train {train_cfg} {good_data} {other_weights}"),
    ("train-unknown-flag", "train {train_cfg} {good_data} --frobnicate"),
    ("train-bad-gpus", "train {train_cfg} {good_data} --gpus a,b"),
    ("train-repeated-gpus", "train {train_cfg} {good_data} --gpus 0,0"),
    ("map-missing-weights", "map {tiny_cfg} {good_data} {missing}.weights"),
    ("map-truncated", "map {tiny_cfg} {good_data} {trunc_weights}"),
    ("map-other-cfg-weights", "map {tiny_cfg} {good_data} {other_weights}"),
    ("map-data-missing-keys", "map {tiny_cfg} {nokeys_data} {tiny_weights}"),
    ("map-names-missing", "map {tiny_cfg} {nonames_data} {tiny_weights}"),
    ("map-bad-points", "map {tiny_cfg} {good_data} {tiny_weights} --points abc"),
    ("map-darknet-order", "map {good_data} {tiny_cfg} {tiny_weights}"),
    ("summary-data-as-cfg", "summary {good_data}"),
    ("map-bad-thresh", "map {tiny_cfg} {good_data} {tiny_weights} --iou-thresh x"),
    ("map-json-missing-folder", "map {tiny_cfg} {good_data} {tiny_weights} --json "
                                "{tmp}/no/dir/m.json"),
    ("valid-missing-data", "valid {tiny_cfg} {missing}.data {tiny_weights}"),
    ("valid-data-missing-keys", "valid {tiny_cfg} {nokeys_data} {tiny_weights}"),
    ("valid-truncated", "valid {tiny_cfg} {good_data} {trunc_weights}"),
    ("recall-missing-weights", "recall {tiny_cfg} {good_data} {missing}.weights"),
    ("recall-empty-cfg", "recall {empty_cfg} {good_data} {tiny_weights}"),
    ("calc-anchors-missing-data", "calc_anchors {missing}.data --width 32 --height 32"),
    ("calc-anchors-bad-num", "calc_anchors {good_data} --num abc"),
    ("calc-anchors-no-train", "calc_anchors {nokeys_data} --width 32 --height 32"),
    ("check-missing-data", "check {missing}.data"),
    ("check-folder-as-data", "check {folder}"),
    ("convert-voc-missing", "convert-voc {missing} {tmp}/voc-out"),
    ("convert-coco-missing", "convert-coco {missing}.json {folder} {tmp}/coco-out"),
    ("import-ultralytics-missing", "import-ultralytics {missing}.yaml {missing}.pt {tmp}/o.cfg "
                                   "{tmp}/o.weights"),
    ("import-yolox-missing", "import-yolox {missing}.pth {tmp}/o.cfg {tmp}/o.weights --depth 0.33 "
                             "--width 0.375 --classes 1"),
    # ---- Darknet's forms
    ("detector-alone", "detector"),
    ("detector-unknown-verb", "detector frobnicate {good_data} {tiny_cfg}"),
    ("detector-train-missing-cfg", "detector train {good_data}"),
    ("detector-train-missing-data", "detector train {missing}.data {train_cfg}"),
    ("detector-train-swapped", "detector train {train_cfg} {good_data}"),
    ("detector-test-truncated", "detector test {good_data} {tiny_cfg} {trunc_weights} {image}"),
    ("detector-test-bad-thresh", "detector test {good_data} {tiny_cfg} {tiny_weights} {image} "
                                 "-thresh abc"),
    ("detector-test-missing-image", "detector test {good_data} {tiny_cfg} {tiny_weights} "
                                    "{missing}.jpg"),
    ("detector-test-no-names", "detector test {nonames_data} {tiny_cfg} {tiny_weights} {image}"),
    ("detector-valid-other-weights", "detector valid {good_data} {tiny_cfg} {other_weights}"),
    ("detector-map-missing-weights", "detector map {good_data} {tiny_cfg} {missing}.weights"),
    ("detector-map-swapped", "detector map {tiny_cfg} {good_data} {tiny_weights}"),
    ("detector-map-bad-points", "detector map {good_data} {tiny_cfg} {tiny_weights} -points x"),
    ("detector-recall-empty-cfg", "detector recall {good_data} {empty_cfg} {tiny_weights}"),
    ("detector-calc-anchors-missing", "detector calc_anchors {missing}.data -num_of_clusters 6 -width 32 "
                                      "-height 32"),
    ("detector-calc-anchors-extra", "detector calc_anchors {good_data} {tiny_cfg}"),
    ("detector-demo-missing-video", "detector demo {good_data} {tiny_cfg} {tiny_weights} "
                                    "{missing}.mp4"),
    ("detector-demo-out-filename-image", "detector demo {good_data} {tiny_cfg} {tiny_weights} "
                                         "{image} -out_filename {tmp}/o.mp4 -dont_show"),
    ("detector-demo-no-display", "detector demo {good_data} {tiny_cfg} {tiny_weights} {image}"),
    ("detector-test-i-without-cuda", "detector test {good_data} {tiny_cfg} {tiny_weights} {image} "
                                     "-i 1"),
    ("train-gpus-without-cuda", "detector train {good_data} {train_cfg} -gpus 0"),
]

#: what the line must say, for the rows of issue 12's list
EXPECT = {
    "summary-bad-line": r"badline\.cfg:\d+ \[convolutional\]: cannot parse 'size 3'",
    "summary-strict-misspelt-key": r"unused field 'activaton=linear' .*did you mean 'activation'",
    "summary-misspelt-classes": r"needs filters=75 .*'clases=1' \(line \d+\) is not read: did you "
                                r"mean 'classes'",
    "detect-cfg-as-source": r"looks like a cfg \(\[net\]\) given as the source",
    "detect-save-dir-file": r"--save-dir .*notes\.txt: is a file, not a folder",
    "detect-bad-thresh": r"--thresh: abc: expected a number",
    "detect-truncated-weights": r"trunc\.weights: truncated in layer 0",
    "detect-other-cfg-weights": r"other\.weights: .*different cfg",
    **{f"{verb}-missing-folder": r"the folder .*no/dir does not exist; create it first"
       for verb in ("export", "convert", "partial", "detect-json", "map-json")},
    "map-names-missing": r"nonames\.data:4: names file .*missing\.names does not exist",
    "detector-train-swapped": r"look swapped",
    "detect-darknet-order": r"good\.data:1: .*a \.data file where the cfg goes\? darknetpy's verbs",
    "summary-data-as-cfg": r"a \.data file where the cfg goes\?",
    "map-darknet-order": r"tiny\.cfg:1: .*a \.cfg where the \.data file goes\? darknetpy's verbs",
    "detector-map-swapped": r"a \.cfg where the \.data file goes\?",
    "train-gpus-without-cuda": r"--gpus 0: CUDA is not available",
    "detector-test-i-without-cuda": r"CUDA",
    "detector-demo-out-filename-image": r"--out-filename .*needs exactly one video",
    "detector-demo-no-display": r"cannot open a window: no display .*-dont_show",
}

#: rows whose command needs what this machine lacks to fail (they would run, not fail, with it)
NEEDS_NO_CUDA = {"train-gpus-without-cuda", "detector-test-i-without-cuda"}
#: rows run as on a Linux machine without a display (OpenCV's window would abort the process)
NEEDS_NO_DISPLAY = {"detector-demo-no-display"}


def _argv(row: str, files: dict[str, Path]) -> list[str]:
    missing = files["tmp"] / "missing"
    return [word.format(missing=missing, **files) for word in row.split()]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return world(tmp_path_factory.mktemp("bad-input"))


@pytest.mark.parametrize("row", [row for _, row in ROWS], ids=[name for name, _ in ROWS])
def test_bad_input_is_one_line_a_non_zero_status_and_no_traceback(
    row: str, files: dict[str, Path], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = next(n for n, r in ROWS if r == row)
    if name in NEEDS_NO_CUDA and torch.cuda.is_available():
        pytest.skip("CUDA is available: -gpus 0 selects it instead of failing")
    if name in NEEDS_NO_DISPLAY:
        if not sys.platform.startswith("linux"):
            pytest.skip("the display check is Linux's (DISPLAY / WAYLAND_DISPLAY)")
        monkeypatch.delenv("DISPLAY", raising=False)
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    status, _, err = run_cli(_argv(row, files), capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert status != 0, f"exit status 0 for: {row}\n{err}"
    assert "Traceback" not in err, err
    assert len(lines) == 1, "\n".join(lines)
    assert re.match(r"darknetpy( [\w-]+)*: error: \S", lines[0]), lines[0]
    assert re.search(EXPECT.get(name, ""), lines[0]), (EXPECT[name], lines[0])


def test_every_verb_has_a_row() -> None:
    """The table covers every subcommand ``darknetpy --help`` lists and every Darknet form."""
    from darknetpy.cli import DETECTOR_VERBS, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    verbs = set(sub.choices)  # type: ignore[arg-type]
    rows = " ".join(row for _, row in ROWS)
    covered = {verb for verb in verbs if re.search(rf"(^| ){re.escape(verb)} ", " " + rows)}
    assert verbs <= covered | {"detector"}, sorted(verbs - covered)
    forms = {verb for verb in DETECTOR_VERBS if f"detector {verb} " in rows}
    assert forms == set(DETECTOR_VERBS), sorted(set(DETECTOR_VERBS) - forms)


SUBPROCESS_ROWS = ["summary-empty-cfg", "detect-bad-thresh", "detector-train-swapped",
                   "export-missing-folder"]  # fmt: skip


@pytest.mark.parametrize("name", SUBPROCESS_ROWS)
def test_the_real_entry_point_prints_one_line_too(name: str, files: dict[str, Path]) -> None:
    argv = _argv(dict(ROWS)[name], files)
    proc = subprocess.run([sys.executable, "-m", "darknetpy", *argv], capture_output=True,
                          text=True, timeout=300, cwd=REPO)  # fmt: skip
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("darknetpy"), lines
