"""Losses and training-time metrics. The metrics match lunarseg.runtime.metrics (tested): they
accumulate rock TP/FP/FN over the epoch and score at the end, like the numpy accumulator."""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from lunarseg.runtime.errors import unknown_key
from lunarseg.runtime.masks import SMALL_ROCK  # the rock rule (runtime.masks.rock_mask): 4-class index >= SMALL_ROCK

SMOOTH = 1.0


def _rock_probability(y_true, y_pred):
    """(truth, rock probability) as float tensors N×H×W for binary and 4-class heads."""
    if y_pred.shape[-1] == 1:
        return tf.cast(tf.reshape(y_true, tf.shape(y_pred)[:-1]), tf.float32), y_pred[..., 0]
    rock_true = tf.cast(tf.cast(y_true, tf.int32) >= SMALL_ROCK, tf.float32)
    rock_true = tf.reshape(rock_true, tf.shape(y_pred)[:-1])
    return rock_true, tf.reduce_sum(y_pred[..., SMALL_ROCK:], axis=-1)


@keras.saving.register_keras_serializable(package="lunarseg")
def soft_dice_loss(y_true, y_pred):
    t, p = _rock_probability(y_true, y_pred)
    inter = tf.reduce_sum(t * p, axis=[1, 2])
    denom = tf.reduce_sum(t, axis=[1, 2]) + tf.reduce_sum(p, axis=[1, 2])
    return 1.0 - (2.0 * inter + SMOOTH) / (denom + SMOOTH)


def _pixel_cross_entropy(y_true, y_pred):
    """N×H×W cross-entropy (binary or sparse categorical)."""
    if y_pred.shape[-1] == 1:
        t = tf.cast(tf.reshape(y_true, tf.shape(y_pred)), tf.float32)
        return keras.losses.binary_crossentropy(t, y_pred)
    t = tf.reshape(tf.cast(y_true, tf.int32), tf.shape(y_pred)[:-1])
    return keras.losses.sparse_categorical_crossentropy(t, y_pred)


@keras.saving.register_keras_serializable(package="lunarseg")
def bce_loss(y_true, y_pred):
    return tf.reduce_mean(_pixel_cross_entropy(y_true, y_pred), axis=[1, 2])


@keras.saving.register_keras_serializable(package="lunarseg")
def bce_dice_loss(y_true, y_pred):
    return bce_loss(y_true, y_pred) + soft_dice_loss(y_true, y_pred)


FOCAL_GAMMA = 2.0
# Tversky weights of false positives and false negatives: missing a rock costs a rover more than a
# false alarm, so misses weigh 0.7 (Salehi et al. 2017).
TVERSKY_FP, TVERSKY_FN = 0.3, 0.7
# bce-tversky-recall: misses weigh 0.85. On the budget demo's data, two seeds, 143 epochs each
# (benchmarks/RESULTS.md, 2026-12-06): at the same test IoU it finds 0.7-0.8 points more rocks, and at its
# rocks-f2 threshold it finds 0.8-1.1 points more for 0.023-0.027 less IoU. An option, not the default.
RECALL_TVERSKY_FP, RECALL_TVERSKY_FN = 0.15, 0.85


@keras.saving.register_keras_serializable(package="lunarseg")
def focal_loss(y_true, y_pred):
    """Cross-entropy down-weighted by (1 - p_true)**gamma: easy background pixels fade, small rocks
    keep their gradient (Lin et al. 2017)."""
    eps = keras.backend.epsilon()
    if y_pred.shape[-1] == 1:
        t = tf.cast(tf.reshape(y_true, tf.shape(y_pred)), tf.float32)
        p = tf.clip_by_value(y_pred, eps, 1.0 - eps)
        p_true = t * p + (1.0 - t) * (1.0 - p)
    else:
        t = tf.reshape(tf.cast(y_true, tf.int32), tf.shape(y_pred)[:-1])
        p_true = tf.clip_by_value(tf.reduce_sum(tf.one_hot(t, y_pred.shape[-1]) * y_pred, axis=-1, keepdims=True),
                                  eps, 1.0)
    return tf.reduce_mean(-((1.0 - p_true) ** FOCAL_GAMMA) * tf.math.log(p_true), axis=[1, 2, 3])


def _tversky(t, p, rock_weight=None, weights=None):
    """Tversky loss per frame; `rock_weight` (N×H×W) scales the rock pixels' TP and FN terms; `weights`:
    (false-positive, false-negative) weights, default (TVERSKY_FP, TVERSKY_FN)."""
    w_fp, w_fn = weights or (TVERSKY_FP, TVERSKY_FN)
    wt = t if rock_weight is None else t * rock_weight
    tp = tf.reduce_sum(wt * p, axis=[1, 2])
    fp, fn = tf.reduce_sum((1.0 - t) * p, axis=[1, 2]), tf.reduce_sum(wt * (1.0 - p), axis=[1, 2])
    return 1.0 - (tp + SMOOTH) / (tp + w_fp * fp + w_fn * fn + SMOOTH)


@keras.saving.register_keras_serializable(package="lunarseg")
def tversky_loss(y_true, y_pred):
    return _tversky(*_rock_probability(y_true, y_pred))


# Small-rock weighting: a rock pixel weighs 1 / (the rock share of the WINDOW×WINDOW window around it),
# clipped to [1, MAX]. A rock much smaller than the window then weighs about as much as one that fills
# it, so the loss counts rocks rather than pixels, the way "rocks found" does (cf. Kofler et al. 2022,
# "blob loss"); no labelling pass is needed, since the weights come from the crop's own mask.
SMALL_ROCK_WINDOW = 15  # model-input pixels: 225 px, about 4× the smallest rock "found" counts at 384×256
SMALL_ROCK_MAX_WEIGHT = 8.0


def small_rock_weight(t):
    """N×H×W weights from the N×H×W 0/1 rock truth: 1 on background, 1..MAX on rock (see above)."""
    share = tf.nn.avg_pool2d(t[..., None], SMALL_ROCK_WINDOW, 1, "SAME")[..., 0]
    rock = tf.clip_by_value(1.0 / tf.maximum(share, 1.0 / SMALL_ROCK_MAX_WEIGHT), 1.0, SMALL_ROCK_MAX_WEIGHT)
    return 1.0 + t * (rock - 1.0)


@keras.saving.register_keras_serializable(package="lunarseg")
def small_rock_bce_tversky_loss(y_true, y_pred):
    """BCE + Tversky with small-rock weights on the rock pixels of both terms (weighted mean BCE)."""
    t, p = _rock_probability(y_true, y_pred)
    w = small_rock_weight(t)
    ce = tf.reduce_sum(w * _pixel_cross_entropy(y_true, y_pred), axis=[1, 2]) / tf.reduce_sum(w, axis=[1, 2])
    return ce + _tversky(t, p, w)


@keras.saving.register_keras_serializable(package="lunarseg")
def focal_dice_loss(y_true, y_pred):
    return focal_loss(y_true, y_pred) + soft_dice_loss(y_true, y_pred)


@keras.saving.register_keras_serializable(package="lunarseg")
def bce_tversky_loss(y_true, y_pred):
    return bce_loss(y_true, y_pred) + tversky_loss(y_true, y_pred)


@keras.saving.register_keras_serializable(package="lunarseg")
def recall_bce_tversky_loss(y_true, y_pred):
    """BCE + Tversky with misses weighing RECALL_TVERSKY_FN: more rocks found, less pixel IoU."""
    return bce_loss(y_true, y_pred) + _tversky(*_rock_probability(y_true, y_pred),
                                               weights=(RECALL_TVERSKY_FP, RECALL_TVERSKY_FN))


LOSS_FUNCTIONS = {"bce": bce_loss, "bce-dice": bce_dice_loss, "focal-dice": focal_dice_loss,
                  "bce-tversky": bce_tversky_loss, "bce-tversky-small": small_rock_bce_tversky_loss,
                  "bce-tversky-recall": recall_bce_tversky_loss}


def get_loss(name: str):
    if name not in LOSS_FUNCTIONS:
        raise unknown_key("loss", name, LOSS_FUNCTIONS)
    return LOSS_FUNCTIONS[name]


@keras.saving.register_keras_serializable(package="lunarseg")
class RockScore(keras.metrics.Metric):
    """Rock IoU / Dice / precision / recall from TP, FP, FN counted over all pixels seen.

    Binary heads threshold the probability at `threshold`; 4-class heads take the argmax and count
    small ∪ large rock as rock, as lunarseg.runtime.metrics does.
    """

    def __init__(self, score: str = "iou", threshold: float = 0.5, name: str | None = None, **kwargs):
        super().__init__(name=name or score, **kwargs)
        self.score, self.threshold = score, threshold
        self.tp = self.add_weight(name="tp", initializer="zeros", dtype=tf.float64)
        self.fp = self.add_weight(name="fp", initializer="zeros", dtype=tf.float64)
        self.fn = self.add_weight(name="fn", initializer="zeros", dtype=tf.float64)

    def update_state(self, y_true, y_pred, sample_weight=None):
        if y_pred.shape[-1] == 1:
            t = tf.reshape(tf.cast(y_true, tf.float32), tf.shape(y_pred)[:-1]) > 0.5
            p = y_pred[..., 0] > self.threshold
        else:
            t = tf.reshape(tf.cast(y_true, tf.int32), tf.shape(y_pred)[:-1]) >= SMALL_ROCK
            p = tf.argmax(y_pred, axis=-1, output_type=tf.int32) >= SMALL_ROCK
        count = lambda m: tf.reduce_sum(tf.cast(m, tf.float64))  # noqa: E731
        self.tp.assign_add(count(t & p))
        self.fp.assign_add(count(~t & p))
        self.fn.assign_add(count(t & ~p))

    def result(self):
        tp, fp, fn = self.tp, self.fp, self.fn
        num, den = {
            "iou": (tp, tp + fp + fn),
            "dice": (2 * tp, 2 * tp + fp + fn),
            "precision": (tp, tp + fp),
            "recall": (tp, tp + fn),
        }[self.score]
        return tf.cast(tf.where(den > 0, num / tf.maximum(den, 1.0), 1.0), tf.float32)

    def reset_state(self):
        for v in (self.tp, self.fp, self.fn):
            v.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "score": self.score, "threshold": self.threshold}


def training_metrics():
    return [RockScore(s) for s in ("iou", "dice", "precision", "recall")]
