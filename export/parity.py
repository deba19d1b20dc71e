"""Parity of an exported artifact with its Keras model, measured through the runtime.

Both models see the same float inputs (`normalise` of the same uint8 frames) and their
probabilities become masks the same way (`runtime.preprocess.probs_to_classes` at the metadata
threshold). Figures: max / mean abs probability difference, mask agreement IoU (rock pixels of the
artifact vs the Keras model), rock IoU of each against the labels and the drop between them.
"""
from __future__ import annotations

import numpy as np

from lunarseg.runtime import preprocess, timing
from lunarseg.runtime.errors import GateError
from lunarseg.runtime.metadata import ModelMeta
from lunarseg.runtime.metrics import MetricAccumulator

__all__ = ["ParityError", "IoUDropError", "compare", "check_gate", "latency_ms"]


class ParityError(GateError):
    """A float artifact's outputs differ from the Keras model's beyond the tolerance."""


class IoUDropError(GateError):
    """A quantized artifact loses more rock IoU than allowed."""


def _classes(probs: np.ndarray, meta: ModelMeta) -> np.ndarray:
    return np.stack([preprocess.probs_to_classes(p, meta) for p in probs])


def _rock_iou(truth: np.ndarray, pred: np.ndarray, meta: ModelMeta) -> float:
    acc = MetricAccumulator(tuple(meta.class_names))
    for t, p in zip(truth, pred):
        acc.update(t, p)
    return float(acc.result()["iou"])


def compare(keras_probs: np.ndarray, art_probs: np.ndarray, meta: ModelMeta, y: np.ndarray | None) -> dict:
    """The parity figures (labels `y` N×H×W class indices, or None to score against Keras masks)."""
    if keras_probs.shape != art_probs.shape:
        raise ParityError(f"output shape {art_probs.shape} differs from the Keras model's {keras_probs.shape}")
    diff = np.abs(keras_probs.astype(np.float64) - art_probs.astype(np.float64))
    k_cls, a_cls = _classes(keras_probs, meta), _classes(art_probs, meta)
    truth = k_cls if y is None else y
    keras_iou, art_iou = _rock_iou(truth, k_cls, meta), _rock_iou(truth, a_cls, meta)
    return {
        "frames": int(len(keras_probs)),
        "labels": "keras" if y is None else "truth",
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "mask_iou": _rock_iou(k_cls, a_cls, meta),
        "mask_pixel_agreement": float((k_cls == a_cls).mean()) if k_cls.size else 1.0,
        "keras_iou": keras_iou,
        "artifact_iou": art_iou,
        "iou_drop": keras_iou - art_iou,
        "finite": bool(np.isfinite(art_probs).all()),
    }


def check_gate(spec, figures: dict, max_iou_drop: float, *, qat: bool = False) -> dict:
    """Add the gate to `figures`; raise ParityError / IoUDropError when it fails.

    Float formats of a float model: max abs diff ≤ spec.atol and mask IoU ≥ spec.min_mask_iou.
    Quantized formats (and every format of a QAT model, whose fake-quant rounding makes exact
    parity meaningless): rock-IoU drop ≤ max_iou_drop.
    """
    if not figures.get("finite", True):
        figures["gate"] = "finite"
        raise ParityError("artifact output holds NaN or Inf")
    if spec.float_gate and not qat:
        figures["gate"] = {"max_abs_diff": spec.atol, "min_mask_iou": spec.min_mask_iou}
        if figures["max_abs_diff"] > spec.atol:
            raise ParityError(f"max abs diff {figures['max_abs_diff']:.3g} > {spec.atol:g} "
                              f"(mask IoU {figures['mask_iou']:.4f}, {figures['frames']} frames)")
        if figures["mask_iou"] < spec.min_mask_iou:
            raise ParityError(f"mask IoU vs Keras {figures['mask_iou']:.4f} < {spec.min_mask_iou:g} "
                              f"(max abs diff {figures['max_abs_diff']:.3g})")
    else:
        figures["gate"] = {"max_iou_drop": max_iou_drop}
        if figures["iou_drop"] > max_iou_drop:
            raise IoUDropError(f"rock IoU drop {figures['iou_drop']:.4f} > {max_iou_drop:g} (Keras "
                               f"{figures['keras_iou']:.4f}, artifact {figures['artifact_iou']:.4f} vs "
                               f"{figures['labels']}, {figures['frames']} frames)")
    return figures


def latency_ms(predict, x1: np.ndarray, runs: int = 30, warmup: int = 3) -> float:
    """Median wall time of one batch-1 `predict` call, in ms."""
    return float(np.median(timing.latency_ms(lambda: predict(x1), runs, warmup=warmup)))
