"""The command line: darknet's own command forms, and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from darknetpy.cli import main, translate_darknet_form

BAD = Path(__file__).parent / "cfgs" / "bad"

# fixture -> what the one-line message must say (file:line [section] and the problem)
BAD_CFGS = {
    "unknown_activation.cfg": r"unknown_activation.cfg:10 \[convolutional\]: activation='mesh' is not one of .*did you mean 'mish'",
    "unknown_section.cfg": r"unknown_section.cfg:6 \[convolutionall\]: unknown section \[convolutionall\] \(did you mean \[convolutional\]\?\)",
    "malformed_line.cfg": r"malformed_line.cfg:8 \[convolutional\]: cannot parse 'size 3'; expected key=value",
    "impossible_reference.cfg": r"impossible_reference.cfg:10 \[route\]: layers=-5 refers to layer -4",
    "second_net.cfg": r"second_net.cfg:9 \[net\]: \[net\] may only be the first section",
    "key_before_section.cfg": r"key_before_section.cfg:1: 'width=32' comes before any \[section\]",
    "no_net_first.cfg": r"no_net_first.cfg:1 \[convolutional\]: the first section must be \[net\]",
    "empty_value.cfg": r"empty_value.cfg:7 \[convolutional\]: filters= has an empty value",
    "yolo_filters_mismatch.cfg": r"yolo_filters_mismatch.cfg:11 \[yolo\]: .*filters=255.*gives 18 channels",
    "subdivisions_gt_batch.cfg": r"subdivisions_gt_batch.cfg:6 \[net\]: subdivisions=8 is larger than batch=4",
    "unknown_policy.cfg": r"unknown_policy.cfg:5 \[net\]: policy='stepz' is not one of .*did you mean 'step'",
}


@pytest.mark.parametrize("name", sorted(BAD_CFGS))
def test_bad_cfg_gives_one_line_error_naming_file_and_line(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", str(BAD / name)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("darknetpy: error: ")
    import re

    assert re.search(BAD_CFGS[name], err[0]), err[0]


def test_every_bad_fixture_has_an_expected_message() -> None:
    assert sorted(p.name for p in BAD.glob("*.cfg")) == sorted(BAD_CFGS)


def test_python_dash_m_entry_point_prints_no_traceback() -> None:
    proc = subprocess.run([sys.executable, "-m", "darknetpy", "summary", str(BAD / "second_net.cfg")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_darknet_command_forms_are_translated() -> None:
    assert translate_darknet_form("detector train a.data b.cfg w.weights -map -gpus 0,1".split()) == [
        "train", "b.cfg", "a.data", "w.weights", "--map", "--gpus", "0,1"]
    assert translate_darknet_form("detector map a.data b.cfg w -points 11".split()) == [
        "map", "b.cfg", "a.data", "w", "--points", "11"]
    assert translate_darknet_form("detector calc_anchors a.data -num_of_clusters 9 -width 416".split()) == [
        "calc_anchors", "a.data", "--num", "9", "--width", "416"]
    assert translate_darknet_form(["summary", "x.cfg"]) == ["summary", "x.cfg"]
