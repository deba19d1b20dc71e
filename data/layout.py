"""File names of the Kaggle Artificial Lunar Rocky Landscape layout, shared by generator, loader and checker."""
from __future__ import annotations

import re
from pathlib import Path

RENDER_DIR = Path("images") / "render"
MASK_DIRS = {"clean": Path("images") / "clean", "ground": Path("images") / "ground"}
REAL_DIR = Path("real_moon_images")
REAL_MASK_PREFIX = "g_"
BOXES_CSV = "bounding_boxes.csv"
BOXES_HEADER = "Frame,TopLeftCornerX,TopLeftCornerY,Length,Height"
FLAG_LISTS = ("mismatch_IDs.txt", "cam_anomaly_IDs.txt", "shadow_IDs.txt", "ground_facing_IDs.txt")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def render_path(root: Path, frame: int) -> Path:
    return Path(root) / RENDER_DIR / f"render{frame:04d}.png"


def mask_path(root: Path, kind: str, frame: int) -> Path:
    return Path(root) / MASK_DIRS[kind] / f"{kind}{frame:04d}.png"


def frame_number(name: str, prefix: str) -> int | None:
    """The number in `<prefix>NNNN.png` (case-insensitive suffix), or None for any other name."""
    match = re.fullmatch(rf"{re.escape(prefix)}(\d+)\.png", name, flags=re.IGNORECASE)
    return int(match.group(1)) if match else None


def numbered_files(folder: Path, prefix: str) -> dict[int, Path]:
    """Frame number → file for every `<prefix>NNNN.png` in `folder` (empty if the folder is absent)."""
    if not folder.is_dir():
        return {}
    found = {}
    for path in sorted(folder.iterdir()):
        number = frame_number(path.name, prefix)
        if number is not None and path.is_file():
            found[number] = path
    return found
