"""Learning-rate schedules by name, shared by training (train/fit.py) and fine-tuning (train/compress.py)."""
from __future__ import annotations

import tf_keras as keras

from lunarseg.runtime.errors import unknown_key

# Where a decay ends, as a share of the peak rate.
FINAL_SHARE = 0.05
# one-cycle: the warm-up's share of the steps and its starting rate's share of the peak
WARMUP_SHARE, WARMUP_START = 0.1, 0.1


def _cosine(rate: float, steps: int):
    return keras.optimizers.schedules.CosineDecay(rate, decay_steps=steps, alpha=FINAL_SHARE)


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
