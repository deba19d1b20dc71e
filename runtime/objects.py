"""Object-level rock figures a rover acts on: how many true rocks were found and how many predicted
rock blobs are real, by size (8-connected components, numpy only).

A true rock counts as found when at least half of its pixels are predicted rock; a predicted blob
counts as right when it overlaps a true rock. Sizes are shares of the frame, so the figures mean the
same at every model input size.
"""
from __future__ import annotations

import numpy as np

from lunarseg.runtime.metrics import interval_text, pooled_ratio_interval
from lunarseg.runtime.stats import label_components

FOUND_SHARE = 0.5
# The rocks a planner must see: at least 0.05 % of the frame (49 px of 384×256, 173 of 720×480).
MIN_FRAME_SHARE = 0.0005
SHARE_BUCKETS = (0.0, 0.0005, 0.002, 0.01)  # lower bounds, share of the frame


class ObjectCounter:
    """Accumulates found/true rocks and right/predicted blobs per size bucket over frames."""

    def __init__(self):
        n = len(SHARE_BUCKETS)
        self.true, self.found = np.zeros(n, np.int64), np.zeros(n, np.int64)
        self.pred, self.right = np.zeros(n, np.int64), np.zeros(n, np.int64)
        self.true_big = self.found_big = self.pred_big = self.right_big = 0
        # Per frame [found, true] rocks and [right, predicted] blobs of the planner's sizes: the intervals.
        self.frame_found: list[list[int]] = []
        self.frame_right: list[list[int]] = []

    def update(self, truth_rock: np.ndarray, pred_rock: np.ndarray) -> None:
        """truth_rock, pred_rock: H×W booleans of one frame."""
        pixels = truth_rock.size
        found = right = (0, 0)
        labels, n = label_components(truth_rock)
        if n:
            area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
            hit = np.bincount(labels.ravel(), weights=pred_rock.ravel(), minlength=n + 1)[1:]
            found = self._add(self.true, self.found, area / pixels, hit >= FOUND_SHARE * area)
        labels, n = label_components(pred_rock)
        if n:
            area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
            overlap = np.bincount(labels.ravel(), weights=truth_rock.ravel(), minlength=n + 1)[1:]
            right = self._add(self.pred, self.right, area / pixels, overlap > 0, predicted=True)
        self.frame_found.append(list(found))
        self.frame_right.append(list(right))

    def _add(self, total, good, share, ok, predicted: bool = False) -> tuple[int, int]:
        """Count one frame's objects by size bucket; returns (good, all) of the planner's sizes."""
        bucket = np.searchsorted(np.array(SHARE_BUCKETS[1:]), share, side="right")
        np.add.at(total, bucket, 1)
        np.add.at(good, bucket, ok.astype(np.int64))
        big = share >= MIN_FRAME_SHARE
        n_big, n_good = int(big.sum()), int((ok & big).sum())
        if predicted:
            self.pred_big += n_big; self.right_big += n_good  # noqa: E702
        else:
            self.true_big += n_big; self.found_big += n_good  # noqa: E702
        return n_good, n_big

    def result(self) -> dict:
        ratio = lambda a, b: float(a / b) if b else None  # noqa: E731
        bounds = [*SHARE_BUCKETS, None]
        buckets = [{"min_share": lo, "max_share": hi, "rocks": int(self.true[i]), "recall": ratio(self.found[i], self.true[i]),
                    "blobs": int(self.pred[i]), "precision": ratio(self.right[i], self.pred[i])}
                   for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]))]
        return {"min_frame_share": MIN_FRAME_SHARE, "rocks": self.true_big, "blobs": self.pred_big,
                "recall": ratio(self.found_big, self.true_big), "precision": ratio(self.right_big, self.pred_big),
                # 95 % intervals by a bootstrap over frames: how much the figures depend on the frames
                "recall_interval": _interval(self.frame_found, self.true_big),
                "precision_interval": _interval(self.frame_right, self.pred_big),
                "by_size": buckets}


def _interval(frame_counts: list[list[int]], total: int) -> list[float] | None:
    interval = pooled_ratio_interval(frame_counts) if total else None
    return None if interval is None else [round(v, 4) for v in interval]


def describe_objects(result: dict) -> str:
    """One line: rocks >= 0.05 % of the frame found, blobs right (each with its interval), and the per-size figures."""
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    parts = ", ".join(f">={b['min_share']:.2%}: recall {fmt(b['recall'])} ({b['rocks']}) precision "
                      f"{fmt(b['precision'])} ({b['blobs']})" for b in result["by_size"])
    found, right = (fmt(result[k]) + interval_text(result.get(f"{k}_interval")) for k in ("recall", "precision"))
    note = "; [lo, hi]: 95 % interval over the frames" if result.get("recall_interval") else ""
    return (f"rocks >= {result['min_frame_share']:.2%} of the frame: {found} found ({result['rocks']}), {right} of "
            f"blobs right ({result['blobs']}); by size {parts}{note}")
