"""Draw YOLOv8- or YOLOX-recipe training samples with their truth boxes into a PNG grid, to check by eye.

Usage::

    python3 bench/draw_modern.py yolov8|yolox [--data data/raccoon/raccoon.data] [--out aug.png]
                                 [--size 320] [--count 8] [--seed 0] [--closed 2]

The last ``--closed`` tiles are built as in the close-mosaic epochs (no mosaic, no mixup).
Boxes are green, with the class id.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from darknetpy.data.datafile import DataConfig, read_image_list  # noqa: E402
from darknetpy.data.dataset import Events, TrainSource, slot_generator  # noqa: E402
from darknetpy.data.modern import ModernAugment, Stage, build_modern_sample  # noqa: E402


def tile(image: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """RGB image + truth rows -> BGR tile with the boxes drawn."""
    out = np.ascontiguousarray(image[:, :, ::-1])
    h, w = out.shape[:2]
    for x, y, bw, bh, cls in truth:
        if x == 0:
            break
        p0 = (int(round((x - bw / 2) * w)), int(round((y - bh / 2) * h)))
        p1 = (int(round((x + bw / 2) * w)) - 1, int(round((y + bh / 2) * h)) - 1)
        cv2.rectangle(out, p0, p1, (0, 255, 0), 2)
        cv2.putText(out, str(int(cls)), (p0[0] + 3, p0[1] + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (0, 255, 0), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["yolov8", "yolox"])
    parser.add_argument("--data", type=Path, default=Path("data/raccoon/raccoon.data"))
    parser.add_argument("--out", type=Path, default=Path("aug.png"))
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--closed", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = DataConfig.from_file(args.data)
    images = read_image_list(data.train, base=args.data.parent)
    source = TrainSource(images, data.classes)
    aug = ModernAugment.for_kind(args.kind)
    tiles = []
    for slot in range(args.count):
        closed = slot >= args.count - args.closed
        stage = Stage(mosaic=not closed, mixup=not closed)
        index = slot % len(images)
        image, truth = build_modern_sample(source, index, (args.size, args.size), stage,
                                           slot_generator(args.seed, 1, slot), aug, Events())
        tiles.append(tile(image, truth))
    columns = 4
    rows = [np.concatenate(tiles[i : i + columns], 1) for i in range(0, len(tiles), columns)]
    cv2.imwrite(str(args.out), np.concatenate(rows, 0))
    print(f"{args.out}: {len(tiles)} {args.kind} samples at {args.size} (last {args.closed} closed)")


if __name__ == "__main__":
    main()
