"""`lunarseg data preview`: a grid of frames with their masks tinted on top, to eyeball a dataset."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lunarseg.data.loader import DatasetIndex, FramePair
from lunarseg.runtime import atomic
from lunarseg.runtime.errors import DatasetError, ImageError
from lunarseg.runtime.imageio import read_image, resize
from lunarseg.runtime.masks import decode_colour_mask, overlay

TILE_WIDTH = 360
GAP = 4


def write_preview(root: str | Path, out: str | Path, count: int = 12, columns: int = 4) -> Path:
    """Write a PNG grid of `count` evenly spaced frames (small/large rocks green/blue) to `out`."""
    index = DatasetIndex.scan(root, strict=False)
    pairs = index.frames or index.real
    if not pairs:
        raise DatasetError(f"{root}: no frame pairs to preview")
    picks = sorted(set(np.linspace(0, len(pairs) - 1, min(count, len(pairs))).round().astype(int)))
    tiles = [_tile(pairs[i]) for i in picks]
    tile_h = max(t.shape[0] for t in tiles)
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    grid = np.zeros((rows * (tile_h + GAP) - GAP, columns * (TILE_WIDTH + GAP) - GAP, 3), np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        top, left = r * (tile_h + GAP), c * (TILE_WIDTH + GAP)
        grid[top:top + tile.shape[0], left:left + TILE_WIDTH] = tile
    return atomic.write_png(out, grid)


def _tile(pair: FramePair) -> np.ndarray:
    """One frame resized to the tile width with its mask overlaid (4-class colours when the mask has them)."""
    image, mask = read_image(pair.image_path), read_image(pair.mask_path)
    if image.shape[:2] != mask.shape[:2]:
        raise ImageError(f"{pair.mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its frame "
                         f"{pair.image_path.name} is {image.shape[1]}x{image.shape[0]}")
    task = "4class" if mask.ndim == 3 else "binary"
    classes = decode_colour_mask(mask, task, name=str(pair.mask_path))
    size = (max(1, round(image.shape[0] * TILE_WIDTH / image.shape[1])), TILE_WIDTH)
    return overlay(resize(image, size), resize(classes, size, nearest=True), task=task)
