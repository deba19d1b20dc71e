"""Deterministic train/val/test assignment by frame ID: a hash of the ID picks the bucket."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from lunarseg.runtime.errors import ConfigError, unknown_key

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class SplitFractions:
    """Share of frames per split; must be positive and sum to 1."""

    train: float = 0.8
    val: float = 0.1
    test: float = 0.1

    def __post_init__(self):
        values = (self.train, self.val, self.test)
        if min(values) <= 0 or abs(sum(values) - 1.0) > 1e-6:
            raise ConfigError(f"split fractions must be positive and sum to 1, got {values}")

    def bounds(self) -> dict[str, tuple[float, float]]:
        return {"train": (0.0, self.train), "val": (self.train, self.train + self.val),
                "test": (self.train + self.val, 1.0)}


def id_position(frame_id: int | str) -> float:
    """Where an ID falls in [0, 1): a stable hash, independent of every other frame."""
    digest = hashlib.sha256(f"lunarseg-split:{frame_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(ids: list[int], fractions: SplitFractions = SplitFractions()) -> dict[int, str]:
    """Split name per ID by hash bucket; with ≥ 3 IDs no split is left empty.

    Only when a bucket would be empty (tiny datasets) is the frame whose hash lies nearest that
    bucket moved into it, taken from a split that keeps at least one frame.
    """
    bounds = fractions.bounds()
    position = {i: id_position(i) for i in ids}
    chosen = {i: next(name for name, (lo, hi) in bounds.items() if p < hi or name == "test")
              for i, p in position.items()}
    if len(ids) < len(SPLIT_NAMES):
        return chosen
    for name in SPLIT_NAMES:
        members = {n: [i for i in ids if chosen[i] == n] for n in SPLIT_NAMES}
        if members[name]:
            continue
        lo, hi = bounds[name]
        donors = [i for i in ids if len(members[chosen[i]]) > 1]
        nearest = min(donors, key=lambda i: (min(abs(position[i] - lo), abs(position[i] - hi)), str(i)))
        chosen[nearest] = name
    return chosen


def check_split_name(name: str, extra: tuple[str, ...] = ()) -> None:
    if name not in SPLIT_NAMES + extra:
        raise unknown_key("split", name, SPLIT_NAMES + extra)
