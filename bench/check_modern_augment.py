"""Check darknetpy.data.modern against the reference code itself: same random draws, same output.

Usage::

    python3 bench/check_modern_augment.py [--ultralytics /work/ref/ultralytics_src] [--yolox /work/ref/yolox]

Each reference is imported from its source tree (ultralytics 8.4.190 needs torch; torchvision is stubbed
where absent; YOLOX's data_augment.py and MosaicDetection.mixup are executed with stand-ins for the
yolox package). Python's ``random`` and NumPy's global state in the reference are replaced by shims that
draw from a ``np.random.Generator`` in the order darknetpy draws, so images and boxes must be equal bit
for bit. Prints the mismatch counts (all 0 when darknetpy reproduces the reference).
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import sys
import types
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from darknetpy.data.modern import v8 as mine_v8  # noqa: E402
from darknetpy.data.modern import yolox as mine_x  # noqa: E402
from darknetpy.data.modern.common import pixel_boxes  # noqa: E402


class Shim:
    """``random`` / ``np.random`` look-alike drawing from a Generator as darknetpy does."""

    def __init__(self, seed: int) -> None:
        self.g = np.random.default_rng(seed)

    def random(self) -> float:
        return self.g.random()

    def uniform(self, a=0.0, b=1.0, size=None):
        return self.g.uniform(a, b, size)

    def randint(self, a: int, b: int) -> int:  # Python's: both ends inclusive
        return int(self.g.integers(a, b + 1))


def import_ultralytics(src: Path):
    try:
        md.version("torchvision")
    except md.PackageNotFoundError:  # ultralytics only reads its version here
        real = md.version
        md.version = lambda name: "0.21.0" if name == "torchvision" else real(name)
        stub = types.ModuleType("torchvision")
        stub.__version__ = "0.21.0"
        sys.modules["torchvision"] = stub
    os.environ.setdefault("YOLO_OFFLINE", "1")
    sys.path.insert(0, str(src))
    import ultralytics.data.augment as augment
    from ultralytics.utils.instance import Instances

    return augment, Instances


def samples(seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 255, (int(rng.integers(40, 160)), int(rng.integers(40, 160)), 3),
                           dtype=np.uint8) for _ in range(4)]  # fmt: skip
    labels = [np.array([[k, 0.5, 0.5, 0.6, 0.4], [k + 4, 0.3, 0.7, 0.2, 0.3]], np.float32)
              for k in range(4)]  # fmt: skip
    return images, labels


def check_ultralytics(src: Path, size: int = 128, trials: int = 30) -> dict[str, int]:
    A, Instances = import_ultralytics(src)
    images, labels = samples()
    inst = lambda lab: Instances(lab[:, 1:5].copy(), bbox_format="xywh", normalized=True)  # noqa: E731
    bad = {"LetterBox": 0, "RandomHSV": 0, "RandomPerspective": 0, "Mosaic": 0}
    for img, lab in zip(images, labels):
        ref = A.LetterBox(new_shape=(size, 96))({"img": img.copy(), "instances": inst(lab),
                                                 "cls": lab[:, :1]})  # fmt: skip
        out, boxes = mine_v8.letterbox(img, pixel_boxes(lab, img.shape[1], img.shape[0]), 96, size)
        ref["instances"].convert_bbox("xyxy")
        bad["LetterBox"] += not (np.array_equal(ref["img"], out)
                                 and np.allclose(ref["instances"].bboxes, boxes[:, :4], atol=1e-3))
    uniform = A.np.random.uniform
    try:
        for seed in range(trials):
            A.np.random.uniform = np.random.default_rng(seed).uniform
            img = images[seed % 4]
            ref = A.RandomHSV(0.015, 0.7, 0.4)({"img": img[..., ::-1].copy()})["img"]
            out = mine_v8.random_hsv(img, np.random.default_rng(seed), 0.015, 0.7, 0.4)
            bad["RandomHSV"] += not np.array_equal(ref[..., ::-1], out)
    finally:
        A.np.random.uniform = uniform
    python_random = A.random
    try:
        for seed in range(trials):
            A.random = Shim(seed)
            img, lab = images[seed % 4], labels[seed % 4]
            fitted = mine_v8.load_fit(img, size, size)
            rp = A.RandomPerspective(degrees=5, translate=0.1, scale=0.5, shear=2, size=(size, size))
            ref = rp({"img": fitted.copy(), "instances": inst(lab), "cls": lab[:, :1].copy()})
            out, boxes = mine_v8.random_perspective(
                fitted, pixel_boxes(lab, fitted.shape[1], fitted.shape[0]), size, size,
                np.random.default_rng(seed), degrees=5, translate=0.1, scale=(0.5, 1.5), shear=2,
            )
            bad["RandomPerspective"] += not (
                np.array_equal(ref["img"], out)
                and np.allclose(ref["instances"].bboxes, boxes[:, :4], atol=1e-3)
                and np.array_equal(ref["cls"][:, 0], boxes[:, 4])
            )

        class Dataset:  # cache="ram": Mosaic draws its partners uniformly
            cache, buffer = "ram", []

            def __len__(self) -> int:
                return 4

            def get_image_and_label(self, i: int) -> dict:
                f = mine_v8.load_fit(images[i], size, size)
                return {"img": f, "resized_shape": f.shape[:2], "ori_shape": images[i].shape[:2],
                        "im_file": str(i), "instances": inst(labels[i]),
                        "cls": labels[i][:, :1].copy()}  # fmt: skip

        for seed in range(trials):
            A.random = Shim(seed)
            dataset = Dataset()
            ref = A.Mosaic(dataset, imgsz=size, p=1.0)(dataset.get_image_and_label(seed % 4))
            g = np.random.default_rng(seed)
            g.random()  # the reference's p coin
            pieces = []
            for i in [seed % 4] + [int(g.integers(0, 4)) for _ in range(3)]:
                f = mine_v8.load_fit(images[i], size, size)
                pieces.append((f, pixel_boxes(labels[i], f.shape[1], f.shape[0])))
            canvas, boxes = mine_v8.ultralytics_mosaic(pieces, size, size, g)
            ref["instances"].convert_bbox("xyxy")
            bad["Mosaic"] += not (
                np.array_equal(ref["img"], canvas)
                and np.allclose(ref["instances"].bboxes, boxes[:, :4], atol=1e-3)
                and np.array_equal(ref["cls"][:, 0], boxes[:, 4])
            )
    finally:
        A.random = python_random
    return bad


def _yolox_namespace(src: Path, shim: Shim) -> dict:
    """YOLOX's data_augment.py executed with ``random``/``np.random`` drawing from ``shim``."""
    utils = types.ModuleType("yolox.utils")

    def xyxy2cxcywh(b: np.ndarray) -> np.ndarray:
        b[:, 2] = b[:, 2] - b[:, 0]
        b[:, 3] = b[:, 3] - b[:, 1]
        b[:, 0] = b[:, 0] + b[:, 2] * 0.5
        b[:, 1] = b[:, 1] + b[:, 3] * 0.5
        return b

    utils.xyxy2cxcywh = xyxy2cxcywh
    sys.modules.setdefault("yolox", types.ModuleType("yolox"))
    sys.modules["yolox.utils"] = utils
    text = (src / "yolox/data/data_augment.py").read_text().replace("import numpy as np", "")
    ns: dict = {"__name__": "yolox_data_augment"}
    exec(compile(text, "data_augment.py", "exec"), ns)
    fake_np = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    fake_np.random = types.SimpleNamespace(uniform=shim.uniform,
                                           randint=lambda a, b, n: shim.g.integers(a, b, n))
    ns["np"], ns["random"] = fake_np, shim
    return ns


def check_yolox(src: Path, trials: int = 50) -> dict[str, int]:
    rgb = np.random.default_rng(0).integers(0, 255, (200, 260, 3), dtype=np.uint8)
    boxes = np.array([[10, 20, 90, 120, 0], [100, 30, 250, 190, 1], [5, 5, 6, 150, 2]], np.float32)
    bad = {"random_affine": 0, "TrainTransform": 0, "mixup": 0}
    for seed in range(trials):
        ns = _yolox_namespace(src, Shim(seed))
        img_r, t_r = ns["random_affine"](rgb[..., ::-1].copy(), boxes.astype(np.float64),
                                         target_size=(128, 96), degrees=10.0, translate=0.1,
                                         scales=(0.1, 2), shear=2.0)  # fmt: skip
        img_m, t_m = mine_x.yolox_random_affine(rgb, boxes, 128, 96, np.random.default_rng(seed))
        bad["random_affine"] += not (np.array_equal(img_r[..., ::-1], img_m)
                                     and np.allclose(t_r, t_m, atol=1e-3))  # fmt: skip
        ns = _yolox_namespace(src, Shim(seed))
        transform = ns["TrainTransform"](max_labels=120, flip_prob=0.5, hsv_prob=1.0)
        img_r, lab_r = transform(rgb[..., ::-1].copy(), boxes.astype(np.float64), (96, 128))
        img_m, b_m = mine_x.train_transform(rgb, boxes, 128, 96, np.random.default_rng(seed))
        img_r = img_r.transpose(1, 2, 0)[..., ::-1].astype(np.uint8)
        n = int((lab_r[:, 3] > 0).sum())
        cx, w = (b_m[:, 0] + b_m[:, 2]) / 2, b_m[:, 2] - b_m[:, 0]
        bad["TrainTransform"] += not (
            np.array_equal(img_r, img_m) and n == len(b_m)
            and np.allclose(lab_r[:n, 1], cx, atol=1e-3) and np.allclose(lab_r[:n, 3], w, atol=1e-3)
            and np.array_equal(lab_r[:n, 0], b_m[:, 4])
        )  # fmt: skip
    text = (src / "yolox/data/datasets/mosaicdetection.py").read_text()
    body = "class Mosaic:\n" + text[text.index("    def mixup(self"):]
    other = np.random.default_rng(1).integers(0, 255, (150, 110, 3), dtype=np.uint8)
    other_boxes = np.array([[5, 10, 60, 100, 3], [50, 40, 108, 148, 4]], np.float64)

    def adjust_box_anns(bbox, scale_ratio, padw, padh, w_max, h_max):  # yolox/utils/boxes.py
        bbox[:, 0::2] = np.clip(bbox[:, 0::2] * scale_ratio + padw, 0, w_max)
        bbox[:, 1::2] = np.clip(bbox[:, 1::2] * scale_ratio + padh, 0, h_max)
        return bbox

    for seed in range(trials):
        ns = {"np": np, "cv2": cv2, "random": Shim(seed), "adjust_box_anns": adjust_box_anns}
        exec(body, ns)
        ns["Mosaic"].__len__ = lambda self: 1
        mosaic = ns["Mosaic"]()
        mosaic.mixup_scale = (0.5, 1.5)
        mosaic._dataset = types.SimpleNamespace(
            load_anno=lambda i: other_boxes,
            pull_item=lambda i: (other[..., ::-1].copy(), other_boxes.copy(), None, None),
        )
        first = rgb[:96, :128]
        img_r, lab_r = mosaic.mixup(first[..., ::-1].copy(), boxes.astype(np.float64), (96, 128))
        img_m, lab_m = mine_x.yolox_mixup(first, boxes, other, other_boxes.astype(np.float32),
                                          np.random.default_rng(seed))  # fmt: skip
        bad["mixup"] += not (np.array_equal(img_r[..., ::-1], img_m)
                             and np.allclose(lab_r, lab_m, atol=1e-3))  # fmt: skip
    return bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ultralytics", type=Path, default=Path("/work/ref/ultralytics_src"))
    parser.add_argument("--yolox", type=Path, default=Path("/work/ref/yolox"))
    args = parser.parse_args()
    failed = 0
    for name, check, src in (("ultralytics", check_ultralytics, args.ultralytics),
                             ("yolox", check_yolox, args.yolox)):  # fmt: skip
        if not src.is_dir():
            print(f"{name}: {src} not found, skipped")
            continue
        for step, mismatches in check(src).items():
            print(f"{name} {step}: {mismatches} mismatches")
            failed += mismatches
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
