"""`lunarseg data check`: list every problem in a dataset root, one line per file, plus a short summary."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lunarseg.data import layout
from lunarseg.data.loader import DatasetIndex, FramePair, read_flagged_ids, unmatched_real
from lunarseg.runtime.errors import DatasetError, LunarsegError
from lunarseg.runtime.imageio import read_image
from lunarseg.runtime.masks import CLASS_NAMES, decode_colour_mask
from lunarseg.runtime.progress import track

FOUR_CLASSES = CLASS_NAMES["4class"]


@dataclass
class CheckReport:
    """Problems found (one line each, naming the file) and what the readable frames contain."""

    root: Path
    frames: int = 0
    real: int = 0
    excluded: int = 0
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    class_pixels: np.ndarray = field(default_factory=lambda: np.zeros(len(FOUR_CLASSES), np.int64))

    def summary(self) -> str:
        total = max(int(self.class_pixels.sum()), 1)
        fractions = ", ".join(f"{name} {100 * n / total:.1f}%" for name, n in zip(FOUR_CLASSES, self.class_pixels))
        verdict = f"{len(self.problems)} problem(s)" if self.problems else "no problems"
        return (f"{self.root}: {self.frames} frame pairs, {self.real} real pairs, {self.excluded} flagged IDs "
                f"excluded, {self.checked} pairs decoded; class pixels: {fractions}; {verdict}")


def check_dataset(root: str | Path, mask_kind: str = "clean", sample: int = 0,
                  progress: bool = True) -> CheckReport:
    """Scan `root` without stopping at the first problem; decode every pair (or `sample` evenly spaced ones)."""
    root = Path(root)
    id_problems = []
    try:  # a bad line in a bad-frame ID list is one problem among the others, not the end of the check
        read_flagged_ids(root)
    except DatasetError as exc:
        id_problems.append(f"{exc} (the frames it lists are not excluded in this check)")
    index = DatasetIndex.scan(root, mask_kind=mask_kind, strict=False, exclude_flagged=not id_problems)
    report = CheckReport(root, frames=len(index.frames), real=len(index.real), excluded=len(index.excluded))
    report.problems += id_problems
    report.problems += [f"{p}: render has no mask in {layout.MASK_DIRS[index.mask_kind]}/"
                        for p in index.orphans.renders]
    report.problems += [f"{p}: mask has no render in {layout.RENDER_DIR}/" for p in index.orphans.masks]
    report.problems += unmatched_real(root)
    pairs = _sample(index.frames, sample) + index.real
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = track(pool.map(_check_pair, pairs), total=len(pairs), desc="check", unit="pairs",
                        enabled=progress)
        for problems, counts in results:
            report.problems += problems
            if counts is not None:
                report.class_pixels += counts
                report.checked += 1
    return report


def _sample(frames: list[FramePair], count: int) -> list[FramePair]:
    if count <= 0 or count >= len(frames):
        return frames
    picks = np.linspace(0, len(frames) - 1, count).round().astype(int)
    return [frames[i] for i in sorted(set(picks))]


def _check_pair(pair: FramePair) -> tuple[list[str], np.ndarray | None]:
    """Problems of one pair (unreadable file, size mismatch) and its 4-class pixel counts when usable."""
    problems, decoded = [], []
    for path in (pair.image_path, pair.mask_path):
        try:
            decoded.append(read_image(path))
        except LunarsegError as exc:
            problems.append(str(exc))
    if problems:
        return problems, None
    image, mask = decoded
    if image.shape[:2] != mask.shape[:2]:
        return [f"{pair.mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its frame "
                f"{pair.image_path.name} is {image.shape[1]}x{image.shape[0]}"], None
    task = "4class" if mask.ndim == 3 else "binary"
    classes = decode_colour_mask(mask, task, name=str(pair.mask_path))
    if task == "binary":
        classes = classes * 2  # rock → small_rock in the 4-class counts
    return [], np.bincount(classes.ravel(), minlength=len(FOUR_CLASSES))
