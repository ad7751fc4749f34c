"""Synthetic images for the data tests: flat background, boxes painted in unique colours."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

BACKGROUND = (40, 40, 40)
PALETTE = np.array(
    [
        (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0),
        (255, 0, 255), (0, 255, 255), (255, 255, 255), (255, 128, 0),
        (128, 0, 255), (0, 128, 255), (255, 0, 128), (128, 255, 0),
    ],
    np.uint8,
)


def make_scene(
    rng: np.random.Generator, width: int, height: int, classes: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image with one filled rectangle per class id (colour PALETTE[class]), no overlaps.

    Returns (image uint8 HxWx3, labels float32 (N, 5) rows class, x, y, w, h).
    """
    image = np.empty((height, width, 3), np.uint8)
    image[:] = BACKGROUND
    cols = int(np.ceil(np.sqrt(len(classes))))
    rows = int(np.ceil(len(classes) / cols))
    cell_w, cell_h = width // cols, height // rows
    labels = []
    for k, cls in enumerate(classes):
        cx, cy = (k % cols) * cell_w, (k // cols) * cell_h
        bw = int(rng.integers(cell_w // 3, cell_w - 2))
        bh = int(rng.integers(cell_h // 3, cell_h - 2))
        x0 = cx + 1 + int(rng.integers(0, cell_w - bw - 1))
        y0 = cy + 1 + int(rng.integers(0, cell_h - bh - 1))
        image[y0 : y0 + bh, x0 : x0 + bw] = PALETTE[cls]
        labels.append((cls, (x0 + bw / 2) / width, (y0 + bh / 2) / height, bw / width, bh / height))
    return image, np.array(labels, np.float32).reshape(-1, 5)


def write_dataset(
    folder: Path, rng: np.random.Generator, count: int, classes_per_image: int = 2,
    size: tuple[int, int] = (96, 72),
) -> list[Path]:
    """``count`` PNG scenes with YOLO label files beside them; image i uses classes 2i, 2i+1 (mod)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        cls = [(classes_per_image * i + k) % len(PALETTE) for k in range(classes_per_image)]
        w = size[0] + int(rng.integers(0, 40))
        h = size[1] + int(rng.integers(0, 30))
        image, labels = make_scene(rng, w, h, cls)
        path = folder / f"scene{i}.png"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        path.with_suffix(".txt").write_text(
            "".join(f"{int(c)} {x:.6f} {y:.6f} {bw:.6f} {bh:.6f}\n" for c, x, y, bw, bh in labels)
        )
        paths.append(path)
    return paths


def colour_mask(image: np.ndarray, cls: int, tol: int = 6) -> np.ndarray:
    """Pixels of ``image`` (HxWx3 uint8) within ``tol`` of PALETTE[cls] on every channel."""
    diff = np.abs(image.astype(np.int16) - PALETTE[cls].astype(np.int16))
    return (diff <= tol).all(axis=2)


def box_pixels(row: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) in pixels of a truth row (x, y, w, h, class)."""
    x, y, w, h = (float(v) for v in row[:4])
    return (x - w / 2) * width, (y - h / 2) * height, (x + w / 2) * width, (y + h / 2) * height


def check_boxes_cover_colours(
    image: np.ndarray, truth: np.ndarray, classes: int, margin: float = 1.5,
    interior: float | None = 0.85,
) -> None:
    """Assert the truth rows agree with the painted pixels.

    * every pixel of colour k lies inside (a ``margin``-pixel expansion of) some box of class k;
    * with ``interior``, each box's interior (shrunk by ``margin``) is at least that fraction
      colour k;
    * every colour with a solid 3x3 patch in the image has a box.
    """
    height, width = image.shape[:2]
    count = int(np.argmax(truth[:, 0] == 0)) if (truth[:, 0] == 0).any() else len(truth)
    rows = truth[:count]
    assert (truth[count:] == 0).all(), "rows after the first x == 0 must be zero"
    assert ((rows[:, :4] > 0) & (rows[:, :4] <= 1)).all(), rows
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    for cls in range(classes):
        mask = colour_mask(image, cls)
        mine = rows[rows[:, 4] == cls]
        covered = np.zeros_like(mask)
        for row in mine:
            left, top, right, bottom = box_pixels(row, width, height)
            covered |= (xs > left - margin) & (xs < right + margin) & (ys > top - margin) & (
                ys < bottom + margin
            )
            if interior is not None:
                inner = (xs > left + margin) & (xs < right - margin) & (ys > top + margin) & (
                    ys < bottom - margin
                )
                if inner.sum() >= 4:
                    frac = mask[inner].mean()
                    assert frac >= interior, f"class {cls} box {row} is only {frac:.2f} its colour"
        stray = mask & ~covered
        assert stray.sum() == 0, f"{stray.sum()} pixels of class {cls} outside its boxes {mine}"
        solid = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).any()
        assert not solid or len(mine), f"class {cls} is visible but has no box"
