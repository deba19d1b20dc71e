"""Segmentation metrics in numpy: the single definition used by training checks, export parity,
evaluation and benchmarks.

Scores are computed from pixel counts accumulated over all frames (micro-averaged), the way
dataset IoU is usually reported. A class absent from both truth and prediction scores 1.0.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """num_classes × num_classes counts, rows = truth, columns = prediction."""
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"truth and prediction differ in size: {np.shape(y_true)} vs {np.shape(y_pred)}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _ratio(num: float, den: float) -> float:
    return 1.0 if den == 0 else float(num) / float(den)


def scores_from_confusion(cm: np.ndarray, positive: int = 1) -> dict[str, float]:
    """IoU, Dice, precision, recall of one class (default: rock in the binary task)."""
    tp = float(cm[positive, positive])
    fp = float(cm[:, positive].sum() - tp)
    fn = float(cm[positive, :].sum() - tp)
    return {
        "iou": _ratio(tp, tp + fp + fn),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
    }


def per_class_iou(cm: np.ndarray) -> np.ndarray:
    tp = np.diag(cm).astype(np.float64)
    den = cm.sum(axis=0) + cm.sum(axis=1) - np.diag(cm)
    return np.where(den == 0, 1.0, tp / np.maximum(den, 1))


def iou(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Binary IoU of the positive class (nonzero = positive)."""
    cm = confusion_matrix(np.asarray(y_true) > 0, np.asarray(y_pred) > 0, 2)
    return scores_from_confusion(cm)["iou"]


def dice(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    cm = confusion_matrix(np.asarray(y_true) > 0, np.asarray(y_pred) > 0, 2)
    return scores_from_confusion(cm)["dice"]


@dataclass
class MetricAccumulator:
    """Accumulate a confusion matrix frame by frame; `result()` gives the report dict.

    The headline figures are the rock class's (for 4-class, small and large rocks merged); per-class
    IoU and their mean (mIoU) are added for both tasks.
    """

    class_names: tuple[str, ...] = ("background", "rock")
    cm: np.ndarray = field(default=None)  # type: ignore[assignment]
    frames: int = 0
    # Per frame: rock pixels in both truth and prediction, and in either (the pooled IoU's terms), so a
    # drop between two models on the same frames can be given a confidence interval (iou_drop_interval).
    frame_rock_counts: list = field(default_factory=list)

    def __post_init__(self):
        n = len(self.class_names)
        if self.cm is None:
            self.cm = np.zeros((n, n), dtype=np.int64)

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        cm = confusion_matrix(y_true, y_pred, len(self.class_names))
        self.cm += cm
        self.frames += 1
        rock = self._rock_confusion(cm)
        self.frame_rock_counts.append([int(rock[1, 1]), int(rock.sum() - rock[0, 0])])

    def _rock_confusion(self, cm: np.ndarray) -> np.ndarray:
        """2×2 rock-vs-rest counts of a confusion matrix (4-class: small and large rocks merged)."""
        n = len(self.class_names)
        if n == 2:
            return cm
        rock = [i for i, c in enumerate(self.class_names) if "rock" in c]
        merged = np.zeros((2, 2), dtype=np.int64)
        is_rock = np.isin(np.arange(n), rock).astype(int)
        np.add.at(merged, (is_rock[:, None].repeat(n, 1), is_rock[None, :].repeat(n, 0)), cm)
        return merged

    def result(self) -> dict:
        out = scores_from_confusion(self._rock_confusion(self.cm), 1)
        # mIoU averages every class, background (and sky) included: the figure segmentation_models'
        # IOUScore reports, so it is not comparable with the rock IoU above, which is the headline.
        ious = per_class_iou(self.cm)
        out["per_class_iou"] = {c: float(v) for c, v in zip(self.class_names, ious)}
        out["miou"] = float(ious.mean())
        out["frames"] = self.frames
        out["pixels"] = int(self.cm.sum())
        out["frame_rock_counts"] = [list(c) for c in self.frame_rock_counts]
        return out


# The bootstrap behind the intervals: resamples of the frames, and the intervals' level.
BOOTSTRAP_RESAMPLES = 2000
INTERVAL_LEVEL = 0.95


def pooled_iou(frame_counts) -> float:
    """Rock IoU pooled over frames from their [intersection, union] counts (1.0 when there is no rock)."""
    counts = np.asarray(frame_counts, dtype=np.int64).reshape(-1, 2)
    return _ratio(counts[:, 0].sum(), counts[:, 1].sum())


def _resampled_ratios(frame_counts: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Pooled numerator / denominator of each resample of frames (rows of idx); 1.0 where it is 0 / 0."""
    pooled = frame_counts[idx].sum(axis=1)
    return np.where(pooled[:, 1] == 0, 1.0, pooled[:, 0] / np.maximum(pooled[:, 1], 1))


def _bootstrap(*frame_counts, statistic, level: float, resamples: int, seed: int) -> tuple[float, float] | None:
    """Percentile interval of statistic(*resampled pooled ratios) over frame resamples shared by every
    counts list (a paired bootstrap); None when the lists are empty or cover different numbers of frames."""
    arrays = [np.asarray(c, dtype=np.float64).reshape(-1, 2) for c in frame_counts]
    n = len(arrays[0])
    if n == 0 or any(len(a) != n for a in arrays):
        return None
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    values = statistic(*(_resampled_ratios(a, idx) for a in arrays))
    tail = (1.0 - level) / 2
    lo, hi = np.quantile(values, [tail, 1.0 - tail])
    return float(lo), float(hi)


def pooled_ratio_interval(frame_counts, *, level: float = INTERVAL_LEVEL, resamples: int = BOOTSTRAP_RESAMPLES,
                          seed: int = 0) -> tuple[float, float] | None:
    """Confidence interval of a ratio pooled over frames (Σ numerator / Σ denominator of [num, den] per
    frame: rock IoU, rocks found, blobs right), by a bootstrap over frames."""
    return _bootstrap(frame_counts, statistic=lambda r: r, level=level, resamples=resamples, seed=seed)


def iou_drop_interval(reference_counts, counts, *, level: float = INTERVAL_LEVEL,
                      resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float] | None:
    """Confidence interval of a pooled-IoU drop (reference − other) measured on the same frames.

    A paired bootstrap over frames: both models' counts of a resampled frame travel together, so the
    interval reflects how much the drop depends on which frames a small test split happens to hold.
    None when the two were not measured on the same number of frames (or on none).
    """
    return _bootstrap(reference_counts, counts, statistic=lambda r, o: r - o, level=level, resamples=resamples,
                      seed=seed)


def drop_interval_between(reference: dict, other: dict, key: str = "frame_rock_counts") -> list[float] | None:
    """iou_drop_interval of two records (bench rows, scores, compress summaries) from the per-frame counts
    each keeps under `key`, rounded for reports; None when either lacks them or their frames differ."""
    interval = iou_drop_interval(reference.get(key) or [], other.get(key) or [])
    return None if interval is None else [round(v, 5) for v in interval]


def interval_text(interval, fmt: str = ".3f") -> str:
    """' [0.935, 0.982]' for an interval, '' for none."""
    return f" [{format(interval[0], fmt)}, {format(interval[1], fmt)}]" if interval else ""


def drop_with_interval(value: float, interval, fmt: str = ".4f") -> str:
    """'0.0264 [0.0188, 0.0356]': a drop followed by its interval (iou_drop_interval), when it has one."""
    return format(value, fmt) + interval_text(interval, fmt)
