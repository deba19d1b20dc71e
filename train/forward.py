"""Scoring a Keras model on a few frames: one graph function per model, traced once for every batch size.

The end of training, every fine-tuned variant (its parent and itself) and every export score a
freshly built model on a handful of frames. `model.predict` builds a Keras predict function per
model, and all of them share one piece of Python code, which is what TensorFlow counts tracing by:
each new model's first trace counted as a retrace of that one function, and the demo printed
"triggered tf.function retracing" warnings. `predict` traces one function of the model's own, with a
batch-agnostic input signature (the last, partial batch does not retrace), and gives model.predict's
figures: the same graph on the same batches.
"""
from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

BATCH = 16  # frames per call, as the model.predict(batch_size=16) calls this replaces


def predict(model, x: np.ndarray, batch_size: int = BATCH) -> np.ndarray:
    """Probabilities of model-ready float32 N×H×W×C `x`, `batch_size` frames per call."""
    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
    # A callable without Python code of its own (a partial): TensorFlow counts this function's
    # tracing by the function itself, not together with every other model's.
    forward = tf.function(functools.partial(model, training=False), input_signature=[spec])
    x = np.asarray(x, np.float32)
    return np.concatenate([forward(x[i:i + batch_size]).numpy() for i in range(0, len(x), batch_size)], axis=0)
