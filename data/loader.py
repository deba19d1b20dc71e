"""Index and load a dataset root in the Kaggle layout: frame pairs, flagged-frame lists, splits, arrays.

Decoding stays in lunarseg.runtime (TF-free); this module only pairs files and stacks arrays.
"""
from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lunarseg.data import layout
from lunarseg.data.splits import SplitFractions, assign_splits, check_split_name
from lunarseg.runtime.errors import DatasetError, ImageError, unknown_key
from lunarseg.runtime.imageio import read_image, resize, to_model_pixels
from lunarseg.runtime.masks import class_names, decode_colour_mask

MASK_KINDS = ("clean", "ground")
COLOUR_MODES = ("gray", "rgb")


@dataclass(frozen=True)
class FramePair:
    """A camera frame and its mask; `id` is the 4-digit frame number, or the photo's name in the real split."""

    id: int | str
    image_path: Path
    mask_path: Path


@dataclass
class Orphans:
    """Files that have no partner: renders without a mask, masks without a render."""

    renders: list[Path] = field(default_factory=list)
    masks: list[Path] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.renders or self.masks)


@dataclass
class DatasetIndex:
    """Every usable frame pair under a root, plus the optional real-photo pairs."""

    root: Path
    frames: list[FramePair]
    real: list[FramePair]
    excluded: set[int]
    orphans: Orphans
    mask_kind: str
    fractions: SplitFractions = SplitFractions()

    @classmethod
    def scan(cls, root: str | os.PathLike, mask_kind: str = "clean", exclude_flagged: bool = True,
             strict: bool = True, fractions: SplitFractions = SplitFractions()) -> "DatasetIndex":
        """Pair renders with masks by frame number.

        `mask_kind="clean"` uses images/clean/, or images/ground/ when the clean folder is absent;
        `"ground"` uses images/ground/ only. Frames listed in the bad-frame ID files are dropped
        when `exclude_flagged`. With `strict`, a render without mask (or the reverse) is an error.
        """
        root = Path(root)
        require_root(root)
        renders = layout.numbered_files(root / layout.RENDER_DIR, "render")
        kind = resolve_mask_kind(root, mask_kind)
        masks = layout.numbered_files(root / layout.MASK_DIRS[kind], kind)
        real = real_pairs(root)
        if not renders and not masks and not real:
            raise DatasetError(f"{root}: no frames found; expected {layout.RENDER_DIR}/renderNNNN.png with "
                               f"{layout.MASK_DIRS['clean']}/cleanNNNN.png (the Kaggle layout)")
        excluded = read_flagged_ids(root) if exclude_flagged else set()
        keep = lambda number: number not in excluded  # noqa: E731
        orphans = Orphans(renders=[p for n, p in renders.items() if n not in masks and keep(n)],
                          masks=[p for n, p in masks.items() if n not in renders and keep(n)])
        if strict and orphans:
            raise DatasetError(_orphan_message(orphans, kind, root))
        frames = [FramePair(n, renders[n], masks[n]) for n in sorted(renders) if n in masks and keep(n)]
        return cls(root, frames, real, excluded, orphans, kind, fractions)

    def split(self, name: str) -> list[FramePair]:
        """Frames of "train", "val", "test" (by hash of the frame ID), "all", or the "real" photos."""
        check_split_name(name, ("all", "real"))
        if name == "all":
            return list(self.frames)
        if name == "real":
            return list(self.real)
        chosen = assign_splits([f.id for f in self.frames], self.fractions)
        return [f for f in self.frames if chosen[f.id] == name]


def require_root(root: Path) -> None:
    if not root.exists():
        raise DatasetError(f"{root}: no such dataset directory")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory")


def resolve_mask_kind(root: Path, mask_kind: str) -> str:
    """The mask folder to use: clean falls back to ground only when images/clean/ does not exist."""
    if mask_kind not in MASK_KINDS:
        raise unknown_key("mask kind", mask_kind, MASK_KINDS)
    if mask_kind == "clean" and not (root / layout.MASK_DIRS["clean"]).is_dir() \
            and (root / layout.MASK_DIRS["ground"]).is_dir():
        return "ground"
    return mask_kind


def _orphan_message(orphans: Orphans, kind: str, root: Path) -> str:
    if orphans.renders:
        first = orphans.renders[0]
        number = layout.frame_number(first.name, "render")
        problem = f"{first}: render has no mask (expected {layout.mask_path(root, kind, number)})"
    else:
        first = orphans.masks[0]
        number = layout.frame_number(first.name, kind)
        problem = f"{first}: mask has no render (expected {layout.render_path(root, number)})"
    more = len(orphans.renders) + len(orphans.masks) - 1
    suffix = f"; {more} more unpaired file(s), run `lunarseg data check {root}` to list them" if more else ""
    return problem + suffix


def read_flagged_ids(root: Path) -> set[int]:
    """Frame IDs listed in the bad-frame files present in `root` (one per line or comma separated)."""
    flagged: set[int] = set()
    for name in layout.FLAG_LISTS:
        path = root / name
        if path.is_file():
            flagged |= parse_id_list(path)
    return flagged


def parse_id_list(path: Path) -> set[int]:
    """Integers separated by newlines, commas or spaces; anything else is a DatasetError naming the line."""
    ids = set()
    for line_no, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        for token in filter(None, re.split(r"[\s,;]+", line.strip())):
            if not token.isdigit():
                raise DatasetError(f"{path}: line {line_no}: {token!r} is not a frame ID (expected integers)")
            ids.add(int(token))
    return ids


def real_pairs(root: Path) -> list[FramePair]:
    """Real photos in real_moon_images/ paired with their hand-drawn `g_` masks."""
    folder = root / layout.REAL_DIR
    if not folder.is_dir():
        return []
    files = {p.name: p for p in folder.iterdir()
             if p.is_file() and p.suffix.lower() in layout.IMAGE_SUFFIXES}
    pairs = []
    for name in sorted(files):
        if name.startswith(layout.REAL_MASK_PREFIX):
            continue
        mask = files.get(layout.REAL_MASK_PREFIX + name)
        if mask is not None:
            pairs.append(FramePair(Path(name).stem, files[name], mask))
    return pairs


def unmatched_real(root: Path) -> list[str]:
    """Real photos without their `g_` mask and masks without their photo (real_pairs leaves both out)."""
    folder = root / layout.REAL_DIR
    if not folder.is_dir():
        return []
    names = {p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in layout.IMAGE_SUFFIXES}
    prefix = layout.REAL_MASK_PREFIX
    photos = {n for n in names if not n.startswith(prefix)}
    masks = {n[len(prefix):] for n in names if n.startswith(prefix)}
    return ([f"{folder / n}: real photo has no mask {prefix}{n}" for n in sorted(photos - masks)]
            + [f"{folder / (prefix + n)}: mask has no real photo {n}" for n in sorted(masks - photos)])


def load_pair(pair: FramePair, task: str = "binary") -> tuple[np.ndarray, np.ndarray]:
    """Decoded frame (uint8 H×W×3 or H×W) and its class map (uint8 H×W) for `task`."""
    class_names(task)
    image = read_image(pair.image_path)
    mask = read_image(pair.mask_path)
    if image.shape[:2] != mask.shape[:2]:
        raise ImageError(f"{pair.mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its frame "
                         f"{pair.image_path.name} is {image.shape[1]}x{image.shape[0]}")
    return image, decode_colour_mask(mask, task, name=str(pair.mask_path))


def load_arrays(pairs: list[FramePair], size_hw: tuple[int, int], task: str = "binary",
                colour_mode: str = "gray", workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stack pairs resized to `size_hw`: x uint8 N×H×W×C (bilinear), y uint8 N×H×W (nearest).

    Files are decoded on a thread pool (Pillow releases the GIL while decoding); order follows `pairs`.
    """
    if colour_mode not in COLOUR_MODES:
        raise unknown_key("colour mode", colour_mode, COLOUR_MODES)
    class_names(task)
    h, w = size_hw
    channels = 1 if colour_mode == "gray" else 3
    x = np.empty((len(pairs), h, w, channels), np.uint8)
    y = np.empty((len(pairs), h, w), np.uint8)

    def fill(i: int) -> None:
        image, classes = load_pair(pairs[i], task)
        image = to_model_pixels(image, size_hw, colour_mode)  # the runtime's own pre-processing
        x[i] = image[..., None] if channels == 1 else image
        y[i] = resize(classes, size_hw, nearest=True)

    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(fill, range(len(pairs))))
    return x, y
