"""Learning-rate schedules by name, shared by training (train/fit.py) and fine-tuning (train/compress.py)."""
from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras

from lunarseg.runtime.errors import unknown_key

# Where a decay ends, as a share of the peak rate.
FINAL_SHARE = 0.05
# one-cycle: the warm-up's share of the steps and its starting rate's share of the peak
WARMUP_SHARE, WARMUP_START = 0.1, 0.1


@keras.saving.register_keras_serializable(package="lunarseg")
class StretchableCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Keras' CosineDecay (the same rates), with its length in a variable: `stretch(steps)` re-plans the run
    while it trains (the compiled step reads the variable), e.g. once the first epochs have shown how fast
    this machine trains (core/demo.py). Saved with its current length, so a resumed run keeps the plan."""

    def __init__(self, initial_learning_rate: float, decay_steps: float, alpha: float = FINAL_SHARE, name=None):
        super().__init__()
        self.initial_learning_rate, self.alpha, self.name = float(initial_learning_rate), float(alpha), name
        self.decay_steps = tf.Variable(float(decay_steps), trainable=False, dtype=tf.float32, name="lr_decay_steps")

    def stretch(self, steps: int) -> None:
        self.decay_steps.assign(float(max(1, steps)))

    def __call__(self, step):
        done = tf.minimum(tf.cast(step, tf.float32), self.decay_steps) / self.decay_steps
        cosine = 0.5 * (1.0 + tf.cos(math.pi * done))
        return self.initial_learning_rate * ((1.0 - self.alpha) * cosine + self.alpha)

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": float(self.decay_steps.numpy()),
                "alpha": self.alpha, "name": self.name}


def _cosine(rate: float, steps: int):
    return StretchableCosine(rate, decay_steps=steps, alpha=FINAL_SHARE)


def _one_cycle(rate: float, steps: int):
    warmup = max(1, round(WARMUP_SHARE * steps))
    return keras.optimizers.schedules.CosineDecay(WARMUP_START * rate, decay_steps=max(1, steps - warmup),
                                                  alpha=FINAL_SHARE, warmup_target=rate, warmup_steps=warmup)


# (peak rate, optimizer steps of the run) -> the rate Adam takes; train/config.py mirrors the keys.
LR_SCHEDULES = {"cosine": _cosine, "constant": lambda rate, steps: rate, "one-cycle": _one_cycle}


def schedule(name: str, rate: float, steps: int):
    """Schedule `name` peaking at `rate` over `steps` optimizer steps (a float when constant)."""
    if name not in LR_SCHEDULES:
        raise unknown_key("learning-rate schedule", name, LR_SCHEDULES)
    return LR_SCHEDULES[name](rate, max(1, steps))


def rate_schedule(optimizer):
    """The schedule an optimizer follows, or None for a fixed rate. tf_keras keeps it in `_learning_rate`:
    the public `learning_rate` of a scheduled optimizer is a variable holding the current rate."""
    lr = getattr(optimizer, "_learning_rate", None)
    return lr if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule) else None
