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

    def __post_init__(self):
        n = len(self.class_names)
        if self.cm is None:
            self.cm = np.zeros((n, n), dtype=np.int64)

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        self.cm += confusion_matrix(y_true, y_pred, len(self.class_names))
        self.frames += 1

    def result(self) -> dict:
        n = len(self.class_names)
        if n == 2:
            out = scores_from_confusion(self.cm, 1)
        else:
            rock = [i for i, c in enumerate(self.class_names) if "rock" in c]
            merged = np.zeros((2, 2), dtype=np.int64)
            is_rock = np.isin(np.arange(n), rock).astype(int)
            np.add.at(merged, (is_rock[:, None].repeat(n, 1), is_rock[None, :].repeat(n, 0)), self.cm)
            out = scores_from_confusion(merged, 1)
        # mIoU averages every class, background (and sky) included: the figure segmentation_models'
        # IOUScore reports, so it is not comparable with the rock IoU above, which is the headline.
        ious = per_class_iou(self.cm)
        out["per_class_iou"] = {c: float(v) for c, v in zip(self.class_names, ious)}
        out["miou"] = float(ious.mean())
        out["frames"] = self.frames
        out["pixels"] = int(self.cm.sum())
        return out
