"""Darknet's command lines and the CLI's own forms (issue 12, "Command lines"): ``-gpus`` selecting
CUDA devices (checked on the CPU with a simulated CUDA), ``detector demo``, ``-save_labels``,
``-i N``, ``-mjpeg_port``, ``--help``, ``--version``, swapped files, ``.pt`` for map/valid/recall
and ``--lenient``."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import darknetpy
from darknetpy.cli import main, translate_darknet_form
from darknetpy.errors import UsageError
from darknetpy.training import distributed as D
from darknetpy.training.launch_plan import gpu_lr_factor, plan_launch

from .conftest import TinyRun, tiny_train_cfg


@pytest.fixture(autouse=True)
def _outputs_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """detect/demo write to ./predictions by default: keep that out of the checkout."""
    monkeypatch.chdir(tmp_path)


pytestmark = pytest.mark.filterwarnings("ignore:.*batch=4 is lower than 8")


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def _cuda(monkeypatch: pytest.MonkeyPatch, count: int) -> list[int]:
    """Pretend this machine has ``count`` CUDA devices; returns the ids set_device received."""
    chosen: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    return chosen


def _fake_train(monkeypatch: pytest.MonkeyPatch) -> dict:
    import darknetpy.training.train as train_module

    seen: dict = {}

    def fake(cfg, data, weights=None, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen.update(cfg=cfg, data=data, weights=weights, **kwargs)
        return dataclasses.make_dataclass("R", [("interrupted", bool)])(False)

    monkeypatch.setattr(train_module, "train", fake)
    return seen


# ---------------------------------------------------------------- -gpus
@pytest.mark.parametrize("argv", [["detector", "train", "x.data", "x.cfg", "-gpus", "0"],
                                  ["train", "x.cfg", "x.data", "--gpus", "0,1"]])
def test_gpus_without_cuda_is_one_error_line(argv: list[str], monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    _cuda(monkeypatch, 0)
    seen = _fake_train(monkeypatch)
    assert main(argv) == 2
    err = _one_error_line(capsys)
    assert "CUDA is not available" in err and "no CUDA device" in err and "--gpus" in err
    assert not seen  # no training, on the CPU or elsewhere


def test_gpus_naming_a_missing_device_is_one_error_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _cuda(monkeypatch, 2)
    seen = _fake_train(monkeypatch)
    assert main(["train", "x.cfg", "x.data", "--gpus", "1,2"]) == 2
    assert "no CUDA device 2; this machine has 2 (ids 0..1)" in _one_error_line(capsys)
    assert main(["train", "x.cfg", "x.data", "--gpus", "0", "--device", "cpu"]) == 2
    assert "selects CUDA devices" in _one_error_line(capsys)
    assert main(["train", "x.cfg", "x.data", "--gpus", "0", "--cpu-processes", "2"]) == 2
    assert "give one of them" in _one_error_line(capsys)
    assert not seen


def test_gpus_0_is_one_process_on_cuda_0(monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = _cuda(monkeypatch, 2)
    seen = _fake_train(monkeypatch)
    assert main(["detector", "train", "x.data", "x.cfg", "-gpus", "1"]) == 0
    assert seen["device"] == "cuda" and seen["gpus"] == [1] and seen["gpu_lr_rule"] == "darknet"
    ctx = D.setup(seen["device"], seen["gpus"])  # what train() does first: device cuda:1
    assert ctx.device == torch.device("cuda", 1) and chosen == [1] and not ctx.enabled
    assert plan_launch([0]) == plan_launch([0], device="cuda")
    assert plan_launch([0]).processes == 1 and plan_launch([0]).devices == ("cuda:0",)


def test_gpus_0_1_is_two_nccl_processes_each_on_its_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = _cuda(monkeypatch, 4)
    launched: list = []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(D, "launch", lambda fn, n, *args: launched.append((fn, n, args)))
    assert main(["detector", "train", "x.data", "x.cfg", "-gpus", "2,3", "-map"]) == 0
    ((fn, n, (cfg, data, weights, kwargs)),) = launched
    assert n == 2 and (cfg, data, weights) == ("x.cfg", "x.data", None)
    assert kwargs["device"] == "cuda" and kwargs["gpus"] == [2, 3] and kwargs["map"]
    # each process: torchrun's variables (as distributed._entry sets them), its own GPU, NCCL
    backends: list[str] = []
    monkeypatch.setattr(D.dist, "init_process_group",
                        lambda backend, rank, world_size: backends.append(backend))
    monkeypatch.setattr(D.dist, "is_initialized", lambda: False)
    devices = []
    for rank in range(n):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(n))
        devices.append(D.setup(kwargs["device"], kwargs["gpus"]).device)
    assert devices == [torch.device("cuda", 2), torch.device("cuda", 3)] and chosen == [2, 3]
    assert backends == ["nccl", "nccl"]
    plan = plan_launch([2, 3])
    assert (plan.processes, plan.devices, plan.backend, plan.lr_factor) == (
        2, ("cuda:2", "cuda:3"), "nccl", 2)
    assert plan_launch([2, 3], lr_rule="none").lr_factor == 1


def test_gpu_lr_rule_darknet_by_default_or_none(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [gpu_lr_factor(n) for n in (1, 2, 4)] == [1, 2, 4]  # detector.c: lr *= ngpus
    assert [gpu_lr_factor(n, "none") for n in (1, 2, 4)] == [1, 1, 1]  # hank-ai/darknet
    with pytest.raises(UsageError, match="darknet, none"):
        gpu_lr_factor(2, "linear")
    seen = _fake_train(monkeypatch)
    _cuda(monkeypatch, 1)
    assert main(["train", "x.cfg", "x.data", "--gpus", "0", "--gpu-lr-rule", "none"]) == 0
    assert seen["gpu_lr_rule"] == "none"


def test_cpu_processes_is_gloo_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _cuda(monkeypatch, 0)
    launched: list = []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(D, "launch", lambda fn, n, *args: launched.append((n, args[3])))
    assert main(["train", "x.cfg", "x.data", "--cpu-processes", "3"]) == 0
    ((n, kwargs),) = launched
    assert n == 3 and kwargs["device"] == "cpu" and not kwargs["gpus"]
    plan = plan_launch(None, cpu_processes=3)
    assert (plan.backend, plan.devices, plan.lr_factor) == ("gloo", ("cpu",) * 3, 3)
    seen = _fake_train(monkeypatch)
    assert main(["train", "x.cfg", "x.data"]) == 0 and seen["device"] == "cpu"  # the default
    with pytest.raises(UsageError, match="selects CUDA devices"):
        D.setup("cpu", [0])  # the library never trains gpus= on the CPU either


@pytest.mark.parametrize("rule, factor", [("darknet", 2), ("none", 1)])
def test_gpu_lr_rule_reaches_the_network(rule: str, factor: int, tiny_run: Callable[..., TinyRun],
                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """prepare() of one of two processes (simulated: no process group; DDP and the broadcast of the
    weights stubbed): [net] learning_rate x 2 under Darknet's rule, x 1 under none."""
    from darknetpy.training.setup import prepare

    run = tiny_run(tiny_train_cfg(learning_rate=0.001), images=4)
    monkeypatch.setattr(D, "broadcast_module", lambda *args: None)
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", lambda model, **kw: model)
    r = prepare(D.DistContext(world_size=2), run.cfg, run.data, None, clear=False, amp="off",
                workers=0, seed=1, max_batches=None, backup=tmp_path / "b", map_epochs=4,
                strict=False, progress=False, cache=False, gpu_lr_rule=rule)  # fmt: skip
    assert r.c.learning_rate == pytest.approx(0.001 * factor)
    assert r.net.net.learning_rate == pytest.approx(0.001 * factor)


@pytest.mark.slow
@pytest.mark.parametrize("rule, rate", [("darknet", 0.002), ("none", 0.001)])
def test_cpu_processes_train_with_the_rule(rule: str, rate: float, tiny_run: Callable[..., TinyRun],
                                           capfd: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Two real gloo processes from the CLI: the printed rate is the cfg's x2, or x1 with none."""
    run = tiny_run(tiny_train_cfg(learning_rate=0.001, max_batches=2), images=4)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    argv = ["train", str(run.cfg), str(run.data), "--cpu-processes", "2", "--gpu-lr-rule",
            rule, "--workers", "0", "--no-progress", "--no-chart", "--seed", "1",
            "--backup", str(run.root / rule)]
    assert main(argv) == 0
    out = capfd.readouterr().out
    rates = [float(m) for m in re.findall(r" 2: [^,]+, [^,]+, ([0-9.]+) rate", out)]
    assert rates == [pytest.approx(rate)], out
    assert "2 process(es) on cpu" in out


# ---------------------------------------------------------------- small forms
def test_version_and_detector_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    version = capsys.readouterr().out.strip()
    assert exc.value.code == 0 and version == f"darknetpy {darknetpy.__version__}"
    assert main(["detector", "--help"]) == 0
    out = capsys.readouterr().out
    for verb in ("train", "test", "demo", "map", "valid", "recall", "calc_anchors"):
        assert f"darknetpy detector {verb} " in out
    with pytest.raises(SystemExit) as exc:
        main(["detector", "test", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "detector test DATA CFG WEIGHTS" in out and "--thresh" in out


def test_darknetpy_options_with_a_separate_value_in_a_darknet_form() -> None:
    argv = "detector train a.data b.cfg --max-batches 3 -map w.weights".split()
    assert translate_darknet_form(argv) == ["train", "b.cfg", "a.data", "w.weights",
                                            "--max-batches", "3", "--map"]
    argv = "detector train a.data b.cfg w.weights --max-batches 3 --seed 4".split()
    assert translate_darknet_form(argv)[3:] == ["w.weights", "--max-batches", "3", "--seed", "4"]


def test_train_in_darknets_order_says_swapped(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    cfg, data = tmp_path / "a.cfg", tmp_path / "a.data"
    cfg.write_text("# a cfg\n[net]\nwidth=64\n")
    data.write_text("classes=1\ntrain=t.txt\n")
    assert main(["train", str(data), str(cfg)]) == 2
    err = _one_error_line(capsys)
    assert "look swapped" in err and f"darknetpy train {cfg} {data}" in err


# ---------------------------------------------------------------- demo, -save_labels, -i
@dataclasses.dataclass(frozen=True)
class _Model:
    cfg: Path
    weights: Path
    data: Path
    video: Path


@pytest.fixture
def model(tmp_path: Path) -> _Model:
    """A tiny two-class network (quiet weights: every box scores 0.25), its .data and a 3-frame
    video written with cv2.VideoWriter."""
    import cv2
    import numpy as np

    from darknetpy.model.network import Network

    from .conftest import quiet_weights, tiny_cfg

    cfg, weights = tmp_path / "tiny.cfg", tmp_path / "tiny.weights"
    cfg.write_text(tiny_cfg(backbone=(8, 16), classes=2))
    quiet_weights(Network.from_cfg(cfg)).save_weights(weights)
    (tmp_path / "tiny.names").write_text("cat\ndog\n")
    data = tmp_path / "tiny.data"
    data.write_text(f"classes=2\nnames={tmp_path / 'tiny.names'}\n")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(3):
        writer.write(rng.integers(0, 256, (48, 64, 3), np.uint8))
    writer.release()
    return _Model(cfg, weights, data, video)


def _frames(path: Path) -> int:
    import cv2

    capture, n = cv2.VideoCapture(str(path)), 0
    while capture.read()[0]:
        n += 1
    return n


def _windows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the waitKey delays of the windows a run opens (none really open)."""
    import cv2

    waits: list[int] = []
    monkeypatch.setenv("DISPLAY", ":99")  # a display to open them on (none is opened)
    monkeypatch.setattr(cv2, "imshow", lambda name, image: None)
    monkeypatch.setattr(cv2, "waitKey", lambda delay=0: waits.append(delay) or -1)
    return waits


def test_demo_on_a_video_file_writes_out_filename(model: _Model, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import cv2

    waits = _windows(monkeypatch)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "result.avi"
    argv = ["detector", "demo", str(model.data), str(model.cfg), str(model.weights),
            str(model.video), "-out_filename", str(out), "-dont_show", "-thresh", "0.2"]
    assert main(argv) == 0
    assert _frames(out) == 3 and waits == []  # -dont_show: no window
    assert "3 video frames" in capsys.readouterr().err
    # without -dont_show darknet's demo shows each frame (waitKey(1), not a key per frame);
    # without -out_filename it saves nothing
    assert main(argv[:6]) == 0
    assert waits == [1, 1, 1] and not (tmp_path / "predictions").exists()
    capsys.readouterr()

    def no_display(name: str, image: object) -> None:
        raise cv2.error("no display")

    monkeypatch.setattr(cv2, "imshow", no_display)  # a machine without a display: one line
    assert main(argv[:6]) == 2
    assert "-dont_show" in _one_error_line(capsys)


@pytest.mark.parametrize("argv_tail, opened", [
    (["-c", "1"], 1),
    ([], 0),  # darknet's default camera
    (["rtsp://cam.local:554/live/ch1"], "rtsp://cam.local:554/live/ch1"),
    (["http://cam.local/video.mjpg?x=1"], "http://cam.local/video.mjpg?x=1"),
])
def test_demo_opens_webcams_and_streams_as_given(argv_tail: list[str], opened: object,
                                                 model: _Model, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import cv2

    import darknetpy.inference.detect_run as detect_run

    asked: list[object] = []
    real = cv2.VideoCapture

    def capture(target: object) -> cv2.VideoCapture:  # the camera/stream plays the test video
        asked.append(target)
        return real(str(model.video))

    monkeypatch.setattr(detect_run.cv2, "VideoCapture", capture)
    out, dets = tmp_path / "live.avi", tmp_path / "live.json"
    argv = ["detector", "demo", str(model.data), str(model.cfg), str(model.weights), *argv_tail,
            "-out_filename", str(out), "-dont_show", "-out", str(dets)]
    assert main(argv) == 0
    assert asked == [opened] and _frames(out) == 3
    import json

    names = {entry["filename"] for entry in json.loads(dets.read_text())}
    assert names == {opened if isinstance(opened, str) else f"camera:{opened}"}


def test_demo_ignores_web_server_ports_with_a_note(model: _Model, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["detector", "demo", str(model.data), str(model.cfg), str(model.weights),
            str(model.video), "-mjpeg_port", "8090", "-json_port", "8070", "-dont_show"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("darknetpy: note:")]
    assert len(notes) == 2 and "-mjpeg_port 8090 ignored" in notes[0] and "-json_port" in notes[1]


def test_save_labels_writes_darknets_label_file(model: _Model, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import cv2
    import numpy as np

    image = tmp_path / "shots" / "a.png"
    image.parent.mkdir()
    cv2.imwrite(str(image), np.full((40, 50, 3), 128, np.uint8))
    argv = ["detector", "test", str(model.data), str(model.cfg), str(model.weights), str(image),
            "-save_labels", "-dont_show", "-thresh", "0.2"]
    assert main(argv) == 0
    lines = (tmp_path / "shots" / "a.txt").read_text().splitlines()
    line = re.compile(r"[01] \d\.\d{4} \d\.\d{4} \d\.\d{4} \d\.\d{4}")
    assert lines and all(line.fullmatch(x) for x in lines)
    assert lines[0].startswith("0 ")  # both classes score 0.25: the first wins, as in darknet
    assert main(argv[:-2] + ["-thresh", "0.3"]) == 0  # nothing above: an empty file, replaced
    assert (tmp_path / "shots" / "a.txt").read_text() == ""


def test_yolo_label_lines_best_class_per_box_in_order() -> None:
    from darknetpy.inference.darknet_output import yolo_label_lines
    from darknetpy.inference.records import Box, Detection, Prediction

    def det(class_id: int, score: float, box_index: int) -> Detection:
        rel = (0.5, 0.25 * (box_index + 1), 0.125, 0.0625)
        return Detection(class_id, str(class_id), score, Box(0, 0, 1, 1), 1.0, rel, box_index)

    prediction = Prediction("x.jpg", 8, 8, (det(2, 0.9, 1), det(0, 0.6, 0), det(1, 0.7, 0),
                                            det(0, 0.3, 2), det(3, 0.9, 1)))
    assert yolo_label_lines(prediction, 0.5) == ["1 0.5000 0.2500 0.1250 0.0625",
                                                 "2 0.5000 0.5000 0.1250 0.0625"]


def test_dash_i_selects_the_gpu(model: _Model, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["detector", "test", "d.data", "c.cfg", "w.weights", "x.jpg", "-i", "1"]
    assert translate_darknet_form(argv)[-2:] == ["--device", "cuda:1"]
    argv = ["detector", "train", "d", "c", "-i", "1"]
    assert translate_darknet_form(argv)[-2:] == ["--gpus", "1"]
    assert translate_darknet_form(["detector", "map", "d", "c", "w", "-i", "2"])[-2:] == [
        "--device", "cuda:2"]
    notes: list[str] = []  # -gpus outside train: its first GPU, as the verb runs on one
    argv = ["detector", "map", "d", "c", "w", "-gpus", "1,2"]
    assert translate_darknet_form(argv, notes)[-2:] == ["--device", "cuda:1"]
    assert notes == ["-gpus 1,2: detector map runs on one GPU, cuda:1"]
    _cuda(monkeypatch, 0)
    argv = ["detector", "test", str(model.data), str(model.cfg), str(model.weights),
            str(model.video), "-i", "0", "-dont_show"]
    assert main(argv) == 2
    assert "CUDA is not available" in _one_error_line(capsys)
    seen = _fake_train(monkeypatch)
    assert main(["detector", "train", "x.data", "x.cfg", "-i", "0"]) == 2
    assert "CUDA is not available" in _one_error_line(capsys) and not seen
    _cuda(monkeypatch, 2)
    assert main(argv[:-3] + ["-i", "3", "-dont_show"]) == 2
    assert "cuda:3" in _one_error_line(capsys)  # a GPU the machine lacks: one line, no traceback


def test_sources_keep_stream_addresses_whole(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from darknetpy.inference.sources import read_sources

    monkeypatch.chdir(tmp_path)
    got = read_sources(["rtsp://user:pw@cam:554/live?ch=1", "HTTPS://cam/x.mjpg", "camera:2"])
    assert [(s.kind, s.name, s.capture) for s in got] == [
        ("stream", "rtsp://user:pw@cam:554/live?ch=1", "rtsp://user:pw@cam:554/live?ch=1"),
        ("stream", "HTTPS://cam/x.mjpg", "HTTPS://cam/x.mjpg"),
        ("camera", "camera:2", 2)]
    assert all("/" not in str(s.path) and ":" not in str(s.path) for s in got)  # output names
    (tmp_path / "camera:2").write_bytes(b"x")  # a file of that name is a file
    assert read_sources(["camera:2"])[0].kind != "camera"


# ------------------------------------------------------------ .pt in map/valid/recall; --lenient
@pytest.fixture
def eval_set(model: _Model, tmp_path: Path) -> Path:
    """The tiny model's .data with valid= over two flat images with one truth each."""
    from .conftest import make_image_set, write_flat_images

    images = write_flat_images(tmp_path / "val", {"a.png": "0 0.5 0.5 0.4 0.4\n",
                                                  "b.png": "1 0.3 0.3 0.2 0.2\n"}, size=32)
    names = model.data.read_text().split("names=")[1].strip()
    return make_image_set(tmp_path / "set", {"valid": images}, name="e",
                          data={"classes": 2, "names": names, "results": tmp_path / "res"}).data


def test_map_valid_recall_accept_a_pt_checkpoint(model: _Model, eval_set: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    pt = tmp_path / "tiny.pt"
    assert main(["convert", str(model.cfg), str(model.weights), str(pt)]) == 0
    capsys.readouterr()
    for verb, extra in (("map", ["--no-coco", "--thresh", "0.2"]), ("recall", []),
                        ("valid", ["--out", str(tmp_path / "{}.json")])):
        outputs = []
        for weights in (model.weights, pt):
            tail = [e.format(weights.suffix[1:]) for e in extra]
            assert main([verb, str(model.cfg), str(eval_set), str(weights), *tail]) == 0, verb
            outputs.append(capsys.readouterr().out.replace(weights.suffix[1:] + ".json", ""))
        assert outputs[0] == outputs[1] and outputs[0], verb
    assert (tmp_path / "weights.json").read_text() == (tmp_path / "pt.json").read_text()
    # and darknet's form
    assert main(["detector", "map", str(eval_set), str(model.cfg), str(pt), "--no-coco"]) == 0


def test_extra_bytes_name_the_lenient_flag(model: _Model, eval_set: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    long = tmp_path / "long.weights"
    long.write_bytes(model.weights.read_bytes() + bytes(8))
    runs = {"detect": ["detect", str(model.cfg), str(long), str(model.video), "--no-save"],
            "map": ["map", str(model.cfg), str(eval_set), str(long), "--no-coco"],
            "recall": ["recall", str(model.cfg), str(eval_set), str(long)],
            "valid": ["valid", str(model.cfg), str(eval_set), str(long),
                      "--out", str(tmp_path / "v.json")]}
    if importlib.util.find_spec("onnx") is not None:  # export's optional dependency
        runs["export"] = ["export", str(model.cfg), str(long), str(tmp_path / "tiny.onnx")]
    for verb, argv in runs.items():
        assert main(argv) == 2, verb
        err = _one_error_line(capsys)
        assert "8 bytes left" in err and "--lenient" in err and "lenient=True" in err, err
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # the same warning again, for every verb
            assert main([*argv, "--lenient"]) == 0, verb
        err = capsys.readouterr().err
        assert "darknetpy: warning:" in err and "8 bytes left" in err, verb
    seen = _fake_train(monkeypatch)
    assert main(["train", str(model.cfg), str(model.data), str(long), "--lenient"]) == 0
    assert seen["lenient"] is True
    assert main(["detector", "test", str(model.data), str(model.cfg), str(long), str(model.video),
                 "--lenient", "-dont_show"]) == 0
