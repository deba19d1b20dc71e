"""Score a model on a labelled split with the runtime's numpy metrics; pick the binarisation
threshold on validation data; draw the best and worst frames."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from lunarseg.runtime import atomic
from lunarseg.runtime.errors import unknown_key
from lunarseg.runtime.masks import class_names, overlay, rock_mask
from lunarseg.runtime.metrics import MetricAccumulator, iou
from lunarseg.runtime.preprocess import probs_to_classes

THRESHOLDS = tuple(np.round(np.arange(0.2, 0.81, 0.05), 2))
EVAL_BATCH = 16  # frames per engine call (the runtime splits a fixed-batch file's calls itself)
SIZE_BUCKETS = (0, 16, 64, 256)  # true-rock component area in model-input pixels: lower bounds


def to_classes(probs: np.ndarray, task: str, threshold: float) -> np.ndarray:
    """N×H×W×K probabilities → N×H×W class indices, by the runtime's one post-processing rule
    (threshold for sigmoid heads, argmax for softmax) at any threshold (for the sweep)."""
    rule = SimpleNamespace(output_activation="sigmoid" if probs.shape[-1] == 1 else "softmax", threshold=threshold)
    return np.stack([probs_to_classes(p, rule) for p in probs]) if len(probs) else np.zeros(probs.shape[:-1], np.uint8)


def score_classes(pred: np.ndarray, y: np.ndarray, task: str, names=None) -> dict:
    """Pixel scores of N×H×W class maps against the labels; per-class figures under `names` (the
    model's own class names), else the task's defaults."""
    acc = MetricAccumulator(tuple(names) if names else class_names(task))
    for t, p in zip(y, pred):
        acc.update(t, p)
    return acc.result()


def score_arrays(probs: np.ndarray, y: np.ndarray, task: str, threshold: float) -> dict:
    return score_classes(to_classes(probs, task, threshold), y, task)


def f_beta(recall: float | None, precision: float | None, beta: float) -> float:
    """F-beta of recall and precision (recall weighs beta² times as much); 0 when either is 0 or unknown."""
    if not recall or not precision:
        return 0.0
    return (1 + beta ** 2) * precision * recall / (beta ** 2 * precision + recall)


def _best_iou_threshold(probs: np.ndarray, y: np.ndarray, task: str) -> float:
    return max(THRESHOLDS, key=lambda t: (score_arrays(probs, y, task, t)["iou"], -abs(t - 0.5)))


def _best_rocks_f2_threshold(probs: np.ndarray, y: np.ndarray, task: str) -> float:
    points = operating_points(probs, y, task)
    if all(p["found"] is None for p in points):  # no rock big enough to count: fall back to pixels
        return _best_iou_threshold(probs, y, task)
    return max(points, key=lambda p: (round(f_beta(p["found"], p["right"], 2.0), 12), round(p["iou"], 12),
                                      -abs(p["threshold"] - 0.5)))["threshold"]


# How the binarisation threshold is chosen on the validation frames (TrainConfig.threshold_rule).
# "rocks-f2" is a rover's operating point: object-level F2 of rocks found and blobs right (a missed
# rock weighs 4× a false blob, as a rover that drives into a rock loses more than one that steers
# around a shadow), ties to the better pixel IoU.
THRESHOLD_RULES = {"iou": _best_iou_threshold, "rocks-f2": _best_rocks_f2_threshold}


def choose_threshold(probs: np.ndarray, y: np.ndarray, task: str, rule: str = "iou") -> float:
    """The threshold in THRESHOLDS that `rule` (THRESHOLD_RULES) picks on validation frames; 0.5 for
    softmax heads."""
    if rule not in THRESHOLD_RULES:
        raise unknown_key("threshold rule", rule, THRESHOLD_RULES)
    if probs.shape[-1] != 1:
        return 0.5
    return float(THRESHOLD_RULES[rule](probs, y, task))


def recall_by_rock_size(pred: np.ndarray, y: np.ndarray, task: str) -> list[dict]:
    """Where the rock pixels are missed: true rocks (8-connected components at the model's input
    size) bucketed by area, with each bucket's share of all rock pixels and the share found."""
    from lunarseg.runtime.stats import label_components

    is_rock = lambda a: rock_mask(a, task)  # noqa: E731
    edges = np.array(SIZE_BUCKETS[1:])
    total, found = np.zeros(len(SIZE_BUCKETS), np.int64), np.zeros(len(SIZE_BUCKETS), np.int64)
    for t, p in zip(y, pred):
        labels, n = label_components(is_rock(t))
        if not n:
            continue
        area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        hit = np.bincount(labels.ravel(), weights=is_rock(p).ravel(), minlength=n + 1)[1:]
        bucket = np.searchsorted(edges, area, side="right")
        np.add.at(total, bucket, area)
        np.add.at(found, bucket, hit.astype(np.int64))
    bounds = [*SIZE_BUCKETS, None]
    return [{"min_px": lo, "max_px": hi, "rock_pixel_share": float(total[i] / max(total.sum(), 1)),
             "recall": float(found[i] / total[i]) if total[i] else None}
            for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]))]


def object_scores(pred: np.ndarray, y: np.ndarray, task: str) -> dict:
    """Rocks found and blobs right by size (lunarseg.runtime.objects) over the frames."""
    from lunarseg.runtime.objects import ObjectCounter

    counter = ObjectCounter()
    for t, p in zip(y, pred):
        counter.update(rock_mask(t, task), rock_mask(p, task))
    return counter.result()


def operating_points(probs: np.ndarray, y: np.ndarray, task: str) -> list[dict]:
    """Rock IoU, rocks found and blobs right at each threshold in THRESHOLDS (sigmoid heads; [] for
    softmax): the recall a rover buys with a lower threshold, and what it costs in IoU and false blobs."""
    if probs.shape[-1] != 1:
        return []
    points = []
    for t in THRESHOLDS:
        pred = to_classes(probs, task, float(t))
        objects = object_scores(pred, y, task)
        points.append({"threshold": float(t), "iou": score_classes(pred, y, task)["iou"],
                       "found": objects["recall"], "right": objects["precision"]})
    return points


def describe_operating_points(points: list[dict]) -> str:
    """One line: 'threshold: rock IoU / found / right' at each threshold."""
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    return "threshold: rock IoU / rocks found / blobs right: " + ", ".join(
        f"{p['threshold']:.2f}: {fmt(p['iou'])} / {fmt(p['found'])} / {fmt(p['right'])}" for p in points)


def describe_recall_by_size(buckets: list[dict]) -> str:
    """One line: 'rock recall by true-rock size: 0-16 px 0.12 (30% of rock), ...'."""
    return "rock recall by true-rock size: " + ", ".join(
        f"{b['min_px']}-{b['max_px'] or ''} px {b['recall']:.2f} ({b['rock_pixel_share']:.0%} of rock)"
        for b in buckets if b["recall"] is not None)


def per_frame_iou(pred: np.ndarray, y: np.ndarray, task: str) -> np.ndarray:
    return np.array([iou(rock_mask(t, task), rock_mask(p, task)) for t, p in zip(y, pred)])


def _grid_picks(scores: np.ndarray, per_side: int) -> list[int]:
    """The `per_side` best frames by IoU, then the `per_side` worst not already shown."""
    order = np.argsort(scores, kind="stable")
    best = [int(i) for i in order[::-1][:per_side]]
    return best + [int(i) for i in order[:per_side] if int(i) not in best]


def panel_title(frame_id: str, side: str, score: float) -> str:
    """A grid panel's title: which frame, truth or prediction, and the frame's rock IoU."""
    return f"{frame_id} {side} IoU {score:.3f}"


def overlay_grid(x: np.ndarray, y: np.ndarray, pred: np.ndarray, scores: np.ndarray, task: str,
                 path: Path, per_side: int = 4, ids: list[str] | None = None) -> Path:
    """Rows of (truth overlay | prediction overlay) for the best and the worst frames by IoU, each
    panel titled with its frame id, which side it is and the frame's rock IoU."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = _grid_picks(scores, per_side)
    ids = list(ids) if ids is not None else [str(i) for i in range(len(x))]
    h, w = x.shape[1:3]
    fig, axes = plt.subplots(len(picks), 2, figsize=(2 * max(2.0, w / 64), len(picks) * max(2.0, h / 64) + 0.3),
                             squeeze=False)
    for row, i in enumerate(picks):
        frame = x[i][..., 0] if x.shape[-1] == 1 else x[i]
        for col, (label, classes) in enumerate((("truth", y[i]), ("prediction", pred[i]))):
            ax = axes[row][col]
            ax.imshow(overlay(frame, classes, task=task))
            ax.set_title(panel_title(ids[i], label, scores[i]), fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic.write_bytes(path, buf.getvalue())
    return path


def evaluate(model_path: str | Path, data_dir: str | Path, *, split: str = "test", out_dir: str | Path | None = None,
             max_frames: int = 0) -> dict:
    """IoU/Dice/precision/recall (per class for 4-class) on `split`, at the model's input size, of any
    form train.open_model opens (a run, a .keras with meta.json, an .onnx or .tflite artifact); only a
    Keras model loads TensorFlow."""
    from lunarseg.runtime.preprocess import normalise
    from lunarseg.train.data import load_split
    from lunarseg.train.open_model import open_model

    model = open_model(model_path)
    meta = model.meta
    arrays = load_split(data_dir, split, width=meta.width, height=meta.height, task=meta.task,
                        colour_mode=meta.colour_mode, max_frames=max_frames)
    x = normalise(np.asarray(arrays.x), meta)
    probs = np.concatenate([model.predict(x[i:i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)], axis=0)
    pred = to_classes(probs, meta.task, meta.threshold)
    report = score_classes(pred, arrays.y, meta.task, meta.class_names)
    report.update({"model": str(model_path), "split": split, "threshold": meta.threshold, "task": meta.task})
    report["recall_by_rock_size"] = recall_by_rock_size(pred, arrays.y, meta.task)
    report["objects"] = object_scores(pred, arrays.y, meta.task)
    report["operating_points"] = operating_points(probs, arrays.y, meta.task)
    if out_dir:
        out = Path(out_dir)
        scores = per_frame_iou(pred, arrays.y, meta.task)
        report["per_frame_iou"] = {i: float(s) for i, s in zip(arrays.ids, scores)}
        report["grid"] = str(overlay_grid(arrays.x, arrays.y, pred, scores, meta.task, out / f"eval_{split}_grid.png",
                                          ids=arrays.ids))
        report["report"] = str(out / f"eval_{split}.json")
        atomic.write_json(out / f"eval_{split}.json", report)
    return report
