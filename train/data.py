"""Load a dataset split as uint8 arrays at the model's input size, through the shared loader."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lunarseg.runtime.errors import DatasetError


@dataclass
class SplitArrays:
    x: np.ndarray  # uint8 N×H×W×C
    y: np.ndarray  # uint8 N×H×W class indices
    ids: list[str]


def load_split(data_dir: str | Path, split: str, *, width: int, height: int, task: str,
               colour_mode: str, max_frames: int = 0) -> SplitArrays:
    from lunarseg.data.loader import DatasetIndex, load_arrays

    index = DatasetIndex.scan(data_dir)
    pairs = index.split(split)
    if max_frames:
        pairs = pairs[:max_frames]
    if not pairs:
        raise DatasetError(f"{data_dir}: the {split!r} split is empty ({len(index.frames)} frames in all); "
                           "add frames or check the ID lists")
    x, y = load_arrays(pairs, (height, width), task, colour_mode=colour_mode)
    if x.ndim == 3:
        x = x[..., None]
    return SplitArrays(x, y, [str(p.id) for p in pairs])


def dataset_fingerprint(data_dir: str | Path) -> str:
    """sha256 over the relative paths and sizes of the dataset's images: changes when frames do."""
    root = Path(data_dir)
    h = hashlib.sha256()
    for path in sorted(p for p in (root / "images").rglob("*.png")):
        h.update(f"{path.relative_to(root)}:{path.stat().st_size}\n".encode())
    return h.hexdigest()[:16]
