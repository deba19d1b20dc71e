"""Knowledge distillation for the compressed fine-tunes: the student learns the labels plus the
trained (parent) model's probabilities on the same augmented pixels — a dense target that says how
sure the parent was, where the labels only say yes or no.

The teacher's output rides along in the label tensor (`[labels | teacher probabilities]` on the
channel axis), so pruning wrappers, QAT wrappers, callbacks and `fit` stay exactly as they are.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from lunarseg.runtime.errors import ConfigError
from lunarseg.train.losses import RockScore


def with_teacher(ds: tf.data.Dataset, teacher: keras.Model) -> tf.data.Dataset:
    """Batches (x, labels N×H×W×1) → (x, labels ⧺ teacher(x)) as float32 on the channel axis."""

    def add(x, y):
        soft = tf.stop_gradient(teacher(x, training=False))
        return x, tf.concat([tf.cast(y, tf.float32), tf.cast(soft, tf.float32)], axis=-1)

    return ds.map(add).prefetch(tf.data.AUTOTUNE)


def soft_target_loss(soft, y_pred):
    """Cross-entropy against the teacher's probabilities, averaged over pixels (per frame)."""
    if y_pred.shape[-1] == 1:
        return tf.reduce_mean(keras.losses.binary_crossentropy(soft, y_pred), axis=[1, 2])
    return tf.reduce_mean(keras.losses.categorical_crossentropy(soft, y_pred), axis=[1, 2])


def distill_loss(base, weight: float):
    """base(labels, prediction) + weight × soft-target loss; weight 0 is the plain task loss."""
    if weight < 0:
        raise ConfigError(f"distillation weight must be >= 0, got {weight}")

    def loss(y_true, y_pred):
        labels, soft = y_true[..., :1], y_true[..., 1:]
        return base(labels, y_pred) + weight * soft_target_loss(soft, y_pred)

    loss.__name__ = f"distill_{getattr(base, '__name__', 'loss')}"
    return loss


class LabelRockScore(RockScore):
    """RockScore on the label channel of a distillation target (the teacher's channels are ignored)."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        super().update_state(y_true[..., :1], y_pred, sample_weight)
