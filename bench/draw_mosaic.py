"""Draw one training batch (mosaic on) with its truth boxes into a PNG grid, to check by eye.

Usage::

    python3 bench/draw_mosaic.py [--data ../shared/datasets/raccoon/raccoon.data] [--out mosaic.png]
                                 [--size 416] [--batch 8] [--seed 0] [--iteration 1]

Every chunk is forced to mosaic (``chunks`` = batch with a seed whose coins come up; the script
simply retries iterations until the batch holds a mosaic in every slot it draws). Boxes are drawn
in green; the mosaic cut lines are not drawn (they are visible as seams).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from darknetpy.data import AugmentConfig, DataConfig, build_train_loader, read_image_list
from darknetpy.data.dataset import chunk_mode
from darknetpy.data.loader import unit_float

SHARED = Path(__file__).resolve().parents[2] / "shared"


def draw(images: np.ndarray, truth: np.ndarray, columns: int = 4) -> np.ndarray:
    """Images (B, 3, h, w) float RGB + truth (B, max, 5) -> one BGR uint8 grid with boxes."""
    tiles = []
    for image, rows in zip(images, truth):
        tile = np.ascontiguousarray((image.transpose(1, 2, 0)[:, :, ::-1] * 255).round().astype(np.uint8))
        h, w = tile.shape[:2]
        for x, y, bw, bh, cls in rows:
            if x == 0:
                break
            p0 = (int((x - bw / 2) * w), int((y - bh / 2) * h))
            p1 = (int((x + bw / 2) * w), int((y + bh / 2) * h))
            cv2.rectangle(tile, p0, p1, (0, 255, 0), 2)
            cv2.putText(tile, str(int(cls)), (p0[0] + 2, p0[1] + 14), cv2.FONT_HERSHEY_SIMPLEX,
                        0.5, (0, 255, 0), 1)
        tiles.append(cv2.copyMakeBorder(tile, 2, 2, 2, 2, cv2.BORDER_CONSTANT, value=(255, 255, 255)))
    while len(tiles) % columns:
        tiles.append(np.full_like(tiles[0], 255))
    rows_ = [np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)]
    return np.vstack(rows_)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "datasets/raccoon/raccoon.data")
    parser.add_argument("--out", type=Path, default=Path("mosaic.png"))
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iteration", type=int, default=1)
    parser.add_argument("--no-mosaic", action="store_true", help="plain jitter/flip/HSV instead")
    args = parser.parse_args()

    data = DataConfig.from_file(args.data)
    images = read_image_list(data.train, base=data.path.parent)
    aug = AugmentConfig(
        width=args.size, height=args.size, classes=data.classes or 1, jitter=0.3,
        hue=0.1, saturation=1.5, exposure=1.5, mosaic=not args.no_mosaic,
    )
    chunks = args.batch  # one chunk per image: each slot gets its own mosaic coin
    iteration = args.iteration
    if aug.mosaic:  # find an iteration whose coins all say "mosaic"
        while not all(chunk_mode(aug, args.seed, iteration, c) == 3 for c in range(chunks)):
            iteration += 1
    loader = build_train_loader(images, aug, args.batch, workers=0, seed=args.seed, chunks=chunks)
    batch = loader.get(iteration, args.size, args.size)
    grid = draw(unit_float(batch.images).numpy(), batch.truth.numpy())
    cv2.imwrite(str(args.out), grid)
    boxes = int((batch.truth[:, :, 0] > 0).sum())
    print(f"iteration {iteration}: {args.batch} images, {boxes} boxes -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
