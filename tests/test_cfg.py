"""The cfg lexer and Options: darknet's read_cfg/strip/option_find rules, and clear errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from darknetpy.model.cfg import CfgWarning, Options, parse_cfg, read_cfg, read_key_values
from darknetpy.errors import CfgError
from darknetpy.model.netconfig import NetConfig, Policy

BAD = Path(__file__).parent / "cfgs" / "bad"


def test_whitespace_is_removed_anywhere_and_sections_keep_line_numbers() -> None:
    text = "# comment\n[ net ]\nmax_batches = 500 500\n; other comment\n\n[convolutional]\nmask = 0, 1,2\n"
    net, conv = parse_cfg(text, "x.cfg")
    assert (net.name, net.line, net.options) == ("net", 2, {"max_batches": "500500"})
    assert (conv.name, conv.line) == ("convolutional", 6)
    assert conv.entries[0].line == 7 and conv.options["mask"] == "0,1,2"
    assert conv.where() == "x.cfg:6 [convolutional]"


def test_first_occurrence_wins_and_the_duplicate_is_reported_unused() -> None:
    (section,) = parse_cfg("[convolutional]\nfilters=8\nfilters=16\nbogus=1\n", "d.cfg")
    opts = Options(section)
    assert opts.get_int("filters") == 8
    unused = opts.unused()
    assert [(e.key, e.value, e.line) for e in unused] == [("filters", "16", 3), ("bogus", "1", 4)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opts.check_unused()
    messages = [str(w.message) for w in caught if issubclass(w.category, CfgWarning)]
    assert len(messages) == 2
    assert messages[0].startswith("d.cfg:3 [convolutional]: unused field 'filters=16' (duplicate key")
    assert messages[1].startswith("d.cfg:4 [convolutional]: unused field 'bogus=1'")
    with pytest.raises(CfgError, match=r"d.cfg:3 \[convolutional\]: unused field 'filters=16'"):
        opts.check_unused(strict=True)


def test_typed_getters_follow_atoi_atof_and_lists_stop_at_inline_comments() -> None:
    (section,) = parse_cfg("[yolo]\nclasses=1.5\nscale=.5e1\nmask=3,4,5 # later\nflag=2\n")
    opts = Options(section)
    assert opts.get_int("classes") == 1  # atoi reads the numeric prefix
    assert opts.get_float("scale") == 5.0
    assert opts.get_ints("mask") == (3, 4, 5)
    assert opts.get_bool("flag") is True
    assert opts.get_int("missing", 7) == 7
    with pytest.raises(CfgError, match="missing required integer key 'filters='"):
        opts.get_int("filters")


def test_choice_lists_the_vocabulary_and_suggests_the_nearest() -> None:
    (section,) = parse_cfg("[convolutional]\nactivation=mesh\n", "a.cfg")
    with pytest.raises(CfgError) as info:
        Options(section).get_choice("activation", {"mish": 1, "leaky": 2, "linear": 3}, "linear")
    assert str(info.value) == (
        "a.cfg:2 [convolutional]: activation='mesh' is not one of leaky, linear, mish (did you mean 'mish'?)"
    )


def test_inline_comment_in_a_string_value_is_explained() -> None:
    (section,) = parse_cfg("[convolutional]\nactivation=leaky #c\n")
    with pytest.raises(CfgError, match="inline '#' comments"):
        Options(section).get_choice("activation", {"leaky": 1}, "linear")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("width=3\n[net]\n", r"x.cfg:1: 'width=3' comes before any \[section\]"),
        ("[net]\nwidth\n", r"x.cfg:2 \[net\]: cannot parse 'width'; expected key=value"),
        ("[net]\nwidth=\n", r"x.cfg:2 \[net\]: width= has an empty value"),
        ("[net]#x\n", r"x.cfg:1: section header '\[net\]#x' does not end with '\]'"),
        ("# only a comment\n", r"x.cfg: no \[section\] found"),
    ],
)
def test_malformed_text_is_an_error_with_file_and_line(text: str, message: str) -> None:
    with pytest.raises(CfgError, match=message):
        parse_cfg(text, "x.cfg")


def test_read_cfg_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(CfgError, match="no such cfg file"):
        read_cfg(tmp_path / "missing.cfg")
    binary = tmp_path / "net.weights"
    binary.write_bytes(b"\x00\x00\x00\x00\x02\x00")
    with pytest.raises(CfgError, match="binary file"):
        read_cfg(binary)


def test_net_config_reads_training_keys_and_validates() -> None:
    (net,) = parse_cfg(
        "[net]\nbatch=64\nsubdivisions=16\nwidth=416\nheight=416\nchannels=3\nmosaic=1\n"
        "policy=steps\nsteps=400,450\nscales=.1,.1\nburn_in=10\n"
    )
    cfg = NetConfig.from_section(net)
    assert (cfg.batch, cfg.mini_batch, cfg.policy, cfg.steps, cfg.scales) == (
        64, 4, Policy.STEPS, (400, 450), (0.1, 0.1))
    assert cfg.mixup_code == 3
    (bad,) = parse_cfg("[net]\nwidth=8\nheight=8\nchannels=3\npolicy=steps\nsteps=1,2\nscales=.1\n", "s.cfg")
    with pytest.raises(CfgError, match=r"s.cfg:7 \[net\]: steps= has 2 values but scales= has 1"):
        NetConfig.from_section(bad)


def test_data_file_lexing(tmp_path: Path) -> None:
    path = tmp_path / "a.data"
    path.write_text("classes = 2\n# c\ntrain = data/train.txt\nclasses=3\n")
    entries = read_key_values(path)
    assert [(e.key, e.value, e.line) for e in entries] == [
        ("classes", "2", 1), ("train", "data/train.txt", 3), ("classes", "3", 4)]


def test_every_bad_fixture_exists() -> None:
    assert len(list(BAD.glob("*.cfg"))) >= 10
