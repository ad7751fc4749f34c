"""Make the inputs of the multi-step Darknet reference (``README.md`` here says how they were used).

``python3 tests/darknet_steps/prepare.py ../shared OUT`` writes, for each network of :data:`NETWORKS`,
``OUT/<name>/net.cfg`` (a slimmed training cfg) and, once, ``OUT/batch.npz`` (``images`` uint8
(N, H, W, 3) RGB, ``truth`` float32 (N, 90, 5) rows x, y, w, h, class relative to the image) and
the raw float32 files the driver reads (``input.bin`` = images / 255 as (N, 3, H, W), ``truth.bin``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import cv2
import numpy as np

SIZE = 128
IMAGES = ("raccoon-1", "raccoon-119", "raccoon-52", "raccoon-12")  # 1, 3, 1 and 2 boxes
# name: (golden folder whose cfg is slimmed, divide filters by)
NETWORKS = {
    "yolov4-tiny": ("yolov4-tiny", 8),
    "yolov3-tiny": ("yolov3-tiny", 8),
    "yolov4-csp": ("yolov4-csp", 4),  # the golden cfg is slimmed already; 4 more
    "yolov2-tiny": ("yolov2-tiny", 8),
}
NET = {  # the [net] keys of every reference run
    "batch": "4", "subdivisions": "2", "width": str(SIZE), "height": str(SIZE),
    "learning_rate": "0.0001", "burn_in": "4", "power": "4", "max_batches": "1000",
    "policy": "steps", "steps": "12", "scales": ".5", "momentum": "0.9", "decay": "0.0005",
}


# [net] keys the driver never uses: the data pipeline's (its batch is fixed; letter_box with
# mosaic, as yolov4-csp.cfg has them, is a combination darknetpy refuses) and the EMA of
# train_detector's loop (update_network does not apply it)
DROP = ("mosaic", "letter_box", "mixup", "cutmix", "blur", "jitter", "ema_alpha")


def slim_cfg(text: str, divide: int) -> str:
    """The cfg with [net] from :data:`NET`, one class, and every hidden ``filters=`` divided."""
    blocks = re.split(r"(?m)^(?=\[)", text)
    out = []
    for i, block in enumerate(blocks):
        lines = [ln for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith(("#", ";"))]
        if not lines:
            continue
        head = lines[0].strip()
        keys = [(ln.split("=", 1)[0].strip(), ln.split("=", 1)[1].strip()) for ln in lines[1:] if "=" in ln]
        opts = dict(keys)
        if head == "[net]":
            opts = {k: v for k, v in opts.items() if k not in NET and k not in DROP} | NET
        elif head in ("[yolo]", "[region]"):
            opts["classes"] = "1"
        elif head in ("[convolutional]", "[conv]") and "filters" in opts:
            nxt = next((b.strip().splitlines()[0] for b in blocks[i + 1:] if b.strip()), "")
            if nxt.startswith("[yolo]"):
                opts["filters"] = str(6 * len(_section(blocks, i + 1, "mask").split(",")))
            elif nxt.startswith("[region]"):
                opts["filters"] = str(6 * int(_section(blocks, i + 1, "num")))
            else:
                opts["filters"] = str(max(4, int(opts["filters"]) // divide))
        out.append(head + "\n" + "".join(f"{k}={v}\n" for k, v in opts.items()))
    return "\n".join(out)


def _section(blocks: list[str], start: int, key: str) -> str:
    for block in blocks[start:]:
        for ln in block.splitlines():
            if ln.split("=", 1)[0].strip() == key:
                return ln.split("=", 1)[1].strip()
    raise KeyError(key)


def make_batch(shared: Path) -> tuple[np.ndarray, np.ndarray]:
    images, truth = [], np.zeros((len(IMAGES), 90, 5), np.float32)
    for n, name in enumerate(IMAGES):
        bgr = cv2.imread(str(shared / "datasets/raccoon/obj" / f"{name}.jpg"))
        images.append(cv2.resize(bgr, (SIZE, SIZE), interpolation=cv2.INTER_AREA)[:, :, ::-1])
        rows = np.loadtxt(shared / "datasets/raccoon/obj" / f"{name}.txt", ndmin=2)
        for j, (cls, x, y, w, h) in enumerate(rows):
            truth[n, j] = (x, y, w, h, cls)
    return np.ascontiguousarray(np.stack(images)), truth


def main(shared: Path, out: Path) -> None:
    images, truth = make_batch(shared)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "batch.npz", images=images, truth=truth)
    (images.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)).tofile(out / "input.bin")
    truth.tofile(out / "truth.bin")
    for name, (golden, divide) in NETWORKS.items():
        (out / name).mkdir(exist_ok=True)
        text = (shared / "golden" / golden / "net.cfg").read_text()
        (out / name / "net.cfg").write_text(slim_cfg(text, divide))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
