"""Shared fixtures: where ../shared is, golden folders, a seeded rng, tiny cfgs and runs, image
sets (images, YOLO labels, lists, .names, .data)."""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    from darknetpy import Network

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DARKNETPY_SHARED", REPO.parent / "shared"))
# load()'s default backend is auto (measured once, cached in ~/.cache/darknetpy): the suite runs
# PyTorch unless told otherwise (DARKNETPY_BACKEND=onnxruntime pytest runs it under onnxruntime);
# tests/test_backends.py tests the default and every backend
os.environ.setdefault("DARKNETPY_BACKEND", "torch")
GOLDEN = SHARED / "golden"
SKIP_REASON = "../shared not found: golden data is only available beside a development checkout"


def golden_networks() -> list[str]:
    """Names of golden network folders (those holding net.cfg + forward.npz)."""
    if not GOLDEN.is_dir():
        return []
    return sorted(p.name for p in GOLDEN.iterdir() if (p / "forward.npz").is_file())


def detection_networks() -> list[str]:
    return [n for n in golden_networks() if (GOLDEN / n / "dets.txt").is_file()]


def require_shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(SKIP_REASON)
    return SHARED


@pytest.fixture
def shared() -> Path:
    return require_shared()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# ------------------------------------------------------------------------------------------------
# a tiny network, a .data and a few embedded photos: what the training and reliability tests run
RACCOON = REPO / "data" / "raccoon"  # the embedded dataset (its lists are relative to it)
TINY_ANCHORS = "10,14, 23,27, 37,58"


def tiny_cfg(*, backbone: Sequence[int] = (8,), width: int = 64, height: int = 64,
             channels: int = 3, classes: int = 1, batch: int | None = None,
             subdivisions: int | None = None, net: Mapping[str, object] | None = None,
             yolo: Mapping[str, object] | None = None) -> str:
    """A one-head YOLO cfg: ``[net]``, one 3x3 stride-2 batch-normalised leaky convolution per
    entry of ``backbone`` (its filters), a 1x1 linear convolution of ``3 * (classes + 5)`` filters,
    and a ``[yolo]`` over 3 small anchors.

    ``batch``/``subdivisions`` (when given) open ``[net]``; ``net`` and ``yolo`` hold further keys,
    written in order after the fixed ones (values as given: ``".1"`` stays ``.1``).
    """
    lines = ["[net]"]
    lines += [f"{k}={v}" for k, v in (("batch", batch), ("subdivisions", subdivisions))
              if v is not None]  # fmt: skip
    lines += [f"width={width}", f"height={height}", f"channels={channels}"]
    lines += [f"{k}={v}" for k, v in (net or {}).items()]
    for filters in backbone:
        lines += ["[convolutional]", "batch_normalize=1", f"filters={filters}", "size=3",
                  "stride=2", "pad=1", "activation=leaky"]  # fmt: skip
    lines += ["[convolutional]", "size=1", "stride=1", "pad=1", f"filters={3 * (classes + 5)}",
              "activation=linear", "[yolo]", "mask=0,1,2", f"anchors={TINY_ANCHORS}",
              f"classes={classes}", "num=3"]  # fmt: skip
    lines += [f"{k}={v}" for k, v in (yolo or {}).items()]
    return "\n".join(lines) + "\n"


def tiny_train_cfg(*, learning_rate: float | str = 0.001, burn_in: int = 0, max_batches: int = 6,
                   policy: str = "constant", schedule: Mapping[str, object] | None = None,
                   yolo: Mapping[str, object] | None = None) -> str:
    """The training cfg of the short runs: batch 4 in 2 mini-batches of 64x64, convolutions of 8
    and 16 filters, Darknet's colour augmentation, jitter .3, no random resizing.

    ``schedule`` holds the policy's keys (``steps``, ``scales``); ``yolo`` adds head keys.
    """
    net = {"momentum": 0.9, "decay": 0.0005, "learning_rate": learning_rate, "burn_in": burn_in,
           "max_batches": max_batches, "policy": policy, **(schedule or {}), "hue": ".1",
           "saturation": 1.5, "exposure": 1.5}  # fmt: skip
    return tiny_cfg(backbone=(8, 16), batch=4, subdivisions=2, net=net,
                    yolo={"jitter": ".3", "random": 0, **(yolo or {})})  # fmt: skip


def quiet_weights(net: Network) -> Network:
    """``net`` with zero weights and unit BN variance: deterministic, finite outputs.

    (Darknet's own initialisation has BN rolling variance 0, which makes an untrained network's
    boxes overflow to inf.)
    """
    import torch

    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if tensor.is_floating_point():
                tensor.fill_(1.0 if name.endswith("running_var") else 0.0)
    return net


def raccoon_photos(n: int) -> list[Path]:
    """The first ``n`` embedded raccoon photos, by number (data/raccoon is part of the repository)."""
    assert (RACCOON / "obj").is_dir(), f"{RACCOON}/obj: the embedded dataset is missing"
    return [RACCOON / "obj" / f"raccoon-{i}.jpg" for i in range(1, n + 1)]


@dataclass(frozen=True)
class TinyRun:
    """What :func:`make_tiny_run` wrote."""

    root: Path
    cfg: Path
    data: Path
    train: Path  # the training list
    valid: Path | None  # the validation list (valid=), if any
    names: Path | None  # the names file (names=), if any
    backup: Path  # backup= (not created)
    images: tuple[Path, ...]  # the training images, in list order


def make_tiny_run(root: Path, cfg_text: str | None = None, *, name: str = "tiny",
                  images: int | Sequence[Path] | None = 8, copy: bool = False,
                  image_size: int | None = None, classes: int = 1, valid: bool = False,
                  names: bool = True, data: Mapping[str, object] | None = None) -> TinyRun:
    """Write ``root/<name>.cfg`` and ``root/<name>.data`` for a short training or evaluation run.

    * ``cfg_text``: the cfg (default ``tiny_cfg(classes=classes)``);
    * ``images``: how many embedded raccoon photos to list (the first ones), the image paths
      themselves, or ``None`` for the embedded ``train.txt``/``valid.txt`` as they are;
    * ``copy``: copy the photos with their labels into ``root/images`` and the names into
      ``root`` (nothing outside ``root`` is referenced: a test may damage any of it);
      ``image_size`` also resizes each copy so that its longer side is that many pixels;
    * ``classes``: written as ``classes=``; names past the first (``raccoon``) are ``class<i>``;
    * ``valid``: write ``valid=`` (the training list itself, or the embedded ``valid.txt``);
    * ``names``: write ``names=``; ``data``: further keys, written last, in order.
    """
    root.mkdir(parents=True, exist_ok=True)
    copy = copy or image_size is not None
    cfg = root / f"{name}.cfg"
    cfg.write_text(tiny_cfg(classes=classes) if cfg_text is None else cfg_text)
    if images is None:
        if copy:
            raise ValueError("copy/image_size need the images to list (a count or paths)")
        train = RACCOON / "train.txt"
        listed = tuple(RACCOON / line for line in train.read_text().split())
        valid_list = RACCOON / "valid.txt" if valid else None
    else:
        photos = raccoon_photos(images) if isinstance(images, int) else list(images)
        if copy:
            photos = [_copy_photo(p, root / "images", image_size) for p in photos]
        train = root / "train.txt"
        train.write_text("".join(f"{p}\n" for p in photos))
        listed = tuple(photos)
        valid_list = train if valid else None
    names_file = None
    if names:
        if copy or classes != 1:
            names_file = root / f"{name}.names"
            names_file.write_text("".join(f"{n}\n" for n in
                                          ["raccoon", *(f"class{i}" for i in range(1, classes))]))
        else:
            names_file = RACCOON / "raccoon.names"
    backup = root / "backup"
    lines = [f"classes={classes}", f"train={train}"]
    lines += [f"valid={valid_list}"] if valid_list is not None else []
    lines += [f"names={names_file}"] if names_file is not None else []
    lines += [f"backup={backup}"] + [f"{k}={v}" for k, v in (data or {}).items()]
    data_file = root / f"{name}.data"
    data_file.write_text("".join(f"{line}\n" for line in lines))
    return TinyRun(root, cfg, data_file, train, valid_list, names_file, backup, listed)


def _copy_photo(src: Path, folder: Path, size: int | None) -> Path:
    """``src`` and its label file copied into ``folder``, resized to ``size`` (longer side)."""
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / src.name
    if size is None:
        shutil.copyfile(src, dst)
    else:
        import cv2

        image = cv2.imread(str(src), cv2.IMREAD_COLOR)
        h, w = image.shape[:2]
        scale = size / max(h, w)
        small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA)  # fmt: skip
        assert cv2.imwrite(str(dst), small), dst
    label = src.with_suffix(".txt")
    if label.is_file():  # normalised coordinates: the same for any size
        shutil.copyfile(label, dst.with_suffix(".txt"))
    return dst


@pytest.fixture
def tiny_run(tmp_path: Path) -> Callable[..., TinyRun]:
    """:func:`make_tiny_run` in this test's ``tmp_path``: ``tiny_run(cfg_text, **options)``."""
    return functools.partial(make_tiny_run, tmp_path)


# ------------------------------------------------------------------------------------------------
# evaluation and checking sets: images with YOLO labels beside them, lists, a .names and a .data
SHARED_RACCOON = SHARED / "datasets" / "raccoon"  # full size: what golden/trained-raccoon learnt


def trained_raccoon(*required: str) -> Path:
    """golden/trained-raccoon, Darknet's network trained on ``SHARED_RACCOON``; skips when ../shared
    is missing, fails when ../shared is there without one of the ``required`` files of the folder."""
    folder = require_shared() / "golden" / "trained-raccoon"
    missing = [name for name in required if not (folder / name).is_file()]
    assert not missing, f"{folder}/{missing[0]} missing from ../shared"
    return folder


def write_flat_images(folder: Path, labels: Mapping[str, str | None], *, size: int = 16,
                      value: int = 0) -> list[Path]:
    """A flat grey ``size`` x ``size`` image of ``value`` per file name (its format from the
    extension) in ``folder``, each with its YOLO label text beside it (``None``: no label file)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in labels.items():
        path = folder / name
        assert cv2.imwrite(str(path), np.full((size, size, 3), value, np.uint8)), path
        if text is not None:
            path.with_suffix(".txt").write_text(text)
        paths.append(path)
    return paths


@dataclass(frozen=True)
class ImageSet:
    """What :func:`make_image_set` wrote."""

    data: Path
    lists: Mapping[str, Path]  # .data key (train, valid, ...) -> the list file written for it
    names: Path | None
    images: tuple[Path | str, ...]  # the entries of every list, in order, as written


def make_image_set(root: Path, lists: Mapping[str, Sequence[Path | str]], *, name: str = "x",
                   names: Sequence[str] | None = None, classes: int | None = None,
                   relative: bool = False, data: Mapping[str, object] | None = None) -> ImageSet:
    """Write an image set's files into ``root`` (the images themselves are not written).

    * ``root/<key>.txt`` for each key of ``lists`` (``train``, ``valid``, ...): its entries, one a
      line, as given;
    * ``root/<name>.names`` holding ``names``, when given;
    * ``root/<name>.data``: ``classes=`` (when given), one ``<key>=`` per list, ``names=``, then the
      keys of ``data`` in order; paths absolute, or bare file names with ``relative``.
    """
    root.mkdir(parents=True, exist_ok=True)

    def ref(path: Path) -> str:
        return path.name if relative else str(path)

    written: dict[str, Path] = {}
    for key, entries in lists.items():
        written[key] = root / f"{key}.txt"
        written[key].write_text("".join(f"{entry}\n" for entry in entries))
    names_file: Path | None = None
    if names is not None:
        names_file = root / f"{name}.names"
        names_file.write_text("".join(f"{n}\n" for n in names))
    lines = [f"classes={classes}"] if classes is not None else []
    lines += [f"{key}={ref(path)}" for key, path in written.items()]
    lines += [f"names={ref(names_file)}"] if names_file is not None else []
    lines += [f"{k}={v}" for k, v in (data or {}).items()]
    data_file = root / f"{name}.data"
    data_file.write_text("".join(f"{line}\n" for line in lines))
    return ImageSet(data_file, MappingProxyType(written), names_file,
                    tuple(entry for entries in lists.values() for entry in entries))


def raccoon_eval_set(root: Path, data: Mapping[str, object] | None = None) -> ImageSet:
    """Four validation photos of ``SHARED_RACCOON`` (raccoon-7, -10, -14 and -16: one raccoon
    each) as an evaluation set in ``root``: ``valid.txt``, ``r.names``, ``r.data`` (absolute paths,
    ``data`` keys last); skips when ../shared is missing."""
    require_shared()
    images = [SHARED_RACCOON / "obj" / f"raccoon-{i}.jpg" for i in (7, 10, 14, 16)]
    return make_image_set(root, {"valid": images}, name="r", names=["raccoon"], data=data)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long cases, run outside CI (pytest -m slow)")
