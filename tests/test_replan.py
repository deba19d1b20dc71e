"""Training re-planned from its own epochs: a cosine whose length can be stretched mid-run (the same rates as
Keras' CosineDecay), a callback that stretches it and stops the run where the re-plan says, and a run that
keeps its re-planned length when saved."""
import json

import numpy as np
import pytest

import lunarseg.train  # noqa: F401
import tf_keras as keras

from lunarseg.train import checkpoint
from lunarseg.train.fit import ScheduleReplan, train
from lunarseg.train.schedules import FINAL_SHARE, StretchableCosine, rate_schedule, schedule
from test_train import blobs, tiny_cfg


def test_the_cosine_schedule_gives_keras_cosine_decays_rates():
    ours, keras_cosine = schedule("cosine", 0.01, 1000), keras.optimizers.schedules.CosineDecay(0.01, 1000, alpha=FINAL_SHARE)
    for step in (0, 1, 250, 999, 1000, 5000):
        assert float(ours(step)) == pytest.approx(float(keras_cosine(step)), rel=1e-6)


def test_stretching_the_cosine_gives_the_rest_of_the_run_the_longer_runs_rates():
    lr = StretchableCosine(0.01, 1000)
    lr.stretch(3000)
    longer = keras.optimizers.schedules.CosineDecay(0.01, 3000, alpha=FINAL_SHARE)
    for step in (1000, 2000, 3000):
        assert float(lr(step)) == pytest.approx(float(longer(step)), rel=1e-6)


def test_the_schedule_is_saved_with_its_stretched_length():
    lr = StretchableCosine(0.02, 100)
    lr.stretch(250)
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(lr))
    assert isinstance(again, StretchableCosine) and float(again(125)) == pytest.approx(float(lr(125)))


@pytest.mark.parametrize("replanned", [3, 6])
def test_the_replan_callback_stops_the_run_and_stretches_its_schedule_where_the_replan_says(tmp_path, replanned):
    seen = []

    def replan(epoch_s, done):
        seen.append((epoch_s, done))
        return replanned

    cfg = tiny_cfg(epochs=8, lr_schedule="cosine")
    tr, va = blobs(16), blobs(8, seed=1)
    summary = train(cfg, None, tmp_path / "run", verbose=0, train_arrays=tr, val_arrays=va, schedule_epochs=4,
                    callbacks=[ScheduleReplan(replan, after=2)])
    assert summary["epochs"] == replanned
    assert len(seen) == 1 and seen[0][1] == 2 and seen[0][0] > 0
    last = checkpoint.load_model(tmp_path / "run/checkpoints/last.keras", compile=True)
    steps = int(np.ceil(len(tr.x) / cfg.batch_size))
    assert float(rate_schedule(last.optimizer).decay_steps.numpy()) == replanned * steps  # a resume keeps the plan
    history = json.loads((tmp_path / "run/checkpoints/state.json").read_text())["history"]
    rate_at_3 = history[2]["lr"] / cfg.learning_rate  # the rate of epoch 3's last step (step 3·steps − 1)
    stretched, planned = (float(StretchableCosine(1.0, n * steps)(3 * steps - 1)) for n in (replanned, 4))
    assert rate_at_3 == pytest.approx(stretched, rel=1e-4) and abs(stretched - planned) > 0.1  # the step read it


class _Interrupt(keras.callbacks.Callback):
    """Stops a run after `at` epochs, as a kill between two epochs would (what finished is on disk)."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= self.at:
            self.model.stop_training = True


def test_a_resumed_run_stops_where_its_saved_re_planned_schedule_ends(tmp_path):
    cfg = tiny_cfg(epochs=8, lr_schedule="cosine")
    tr, va = blobs(16), blobs(8, seed=1)
    kw = dict(verbose=0, train_arrays=tr, val_arrays=va)
    first = train(cfg, None, tmp_path / "run", schedule_epochs=4, callbacks=[ScheduleReplan(lambda s, d: 5, after=2),
                                                                            _Interrupt(3)], **kw)
    assert first["epochs"] == 3
    resumed = train(cfg, None, tmp_path / "run", resume=True, callbacks=[ScheduleReplan.keeping_the_plan()], **kw)
    assert resumed["epochs"] == 5  # not the 8 the config allows, nor the 4 first planned
