"""Training rules on tiny models (32 px, 4 filters, depth 2, a few steps)."""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import lunarseg.train  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

from lunarseg.runtime import metrics
from lunarseg.runtime.errors import ConfigError, DatasetError, ModelFileError
from lunarseg.train import checkpoint, losses
from lunarseg.train.config import TrainConfig, check_input_size
from lunarseg.train.data import SplitArrays
from lunarseg.train.fit import TrainingDiverged, train
from lunarseg.train.model import build_unet


def tiny_cfg(**kw):
    base = dict(width=32, height=32, depth=2, filters=4, epochs=2, batch_size=8, patience=10, lr_schedule="constant")
    base.update(kw)
    return TrainConfig(**base)


def blobs(n, seed=0, size=32):
    """Frames with bright squares as 'rocks': learnable in a few steps."""
    rng = np.random.default_rng(seed)
    x = rng.integers(40, 90, (n, size, size, 1), dtype=np.uint8)
    y = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        for _ in range(3):
            r, c, s = rng.integers(0, size - 8, 2).tolist() + [int(rng.integers(3, 8))]
            y[i, r:r + s, c:c + s] = 1
    x[..., 0][y == 1] += 120
    return SplitArrays(x, y, [str(i) for i in range(n)])


ALLOWED = [(d, (w, h)) for d in (1, 2, 3) for w, h in ((32, 32), (64, 32), (48, 64), (40, 24))
           if w % 2**d == 0 and h % 2**d == 0]


@pytest.mark.parametrize("depth,size", ALLOWED)
def test_output_keeps_input_spatial_shape_for_every_allowed_size(depth, size):
    w, h = size
    model = build_unet(tiny_cfg(width=w, height=h, depth=depth))
    assert model.output_shape == (None, h, w, 1)


def test_four_class_head_is_softmax_over_four_channels():
    model = build_unet(tiny_cfg(task="4class"))
    out = model.predict(np.random.rand(2, 32, 32, 1).astype(np.float32), verbose=0)
    assert out.shape == (2, 32, 32, 4)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)


def test_input_size_not_divisible_by_two_to_the_depth_names_sizes_that_work():
    with pytest.raises(ConfigError, match=r"multiples of 16 .*width=100.*nearest that work: width: 96 or 112"):
        check_input_size(100, 64, 4)


@pytest.mark.slow
def test_tiny_model_lowers_its_loss_in_a_few_steps(tmp_path):
    summary = train(tiny_cfg(epochs=4, learning_rate=5e-3), None, tmp_path / "run", verbose=0,
                    train_arrays=blobs(32), val_arrays=blobs(8, seed=1))
    hist = json.loads((tmp_path / "run/checkpoints/state.json").read_text())["history"]
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert summary["epochs"] == 4
    meta = json.loads((tmp_path / "run/meta.json").read_text())
    assert meta["input_shape"] == [1, 32, 32, 1] and meta["task"] == "binary"
    assert meta["threshold"] == best_threshold(tmp_path / "run", blobs(8, seed=1))
    for name in ("model.keras", "history.csv", "curves.png"):
        assert (tmp_path / "run" / name).stat().st_size > 0


def test_a_run_records_the_threshold_its_configured_rule_picks_on_val(tmp_path, monkeypatch):
    from lunarseg.train import evaluate

    seen = []
    monkeypatch.setitem(evaluate.THRESHOLD_RULES, "rocks-f2", lambda probs, y, task: seen.append(len(y)) or 0.45)
    train(tiny_cfg(epochs=2, learning_rate=5e-3, loss="bce-tversky-small", threshold_rule="rocks-f2"), None,
          tmp_path / "run", verbose=0, train_arrays=blobs(32), val_arrays=blobs(8, seed=1))
    meta = json.loads((tmp_path / "run/meta.json").read_text())
    assert (meta["threshold"], meta["train_config"]["threshold_rule"], seen) == (0.45, "rocks-f2", [8])


def best_threshold(run, val):
    """The swept threshold with the best validation rock IoU, recomputed from the saved model (ties: nearest 0.5)."""
    from lunarseg.train.evaluate import THRESHOLDS, score_arrays
    from lunarseg.train.tf_input import normalise

    probs = checkpoint.load_model(run / "model.keras").predict(normalise(val.x), verbose=0)
    return max(THRESHOLDS, key=lambda t: (score_arrays(probs, val.y, "binary", t)["iou"], -abs(t - 0.5)))


def test_threshold_is_the_one_that_separates_rock_from_background_probabilities():
    from lunarseg.train.evaluate import choose_threshold

    y = np.zeros((2, 4, 4), np.uint8)
    y[:, :2] = 1
    probs = np.where(y == 1, 0.62, 0.58)[..., None].astype(np.float32)  # only 0.6 of the sweep splits them
    assert choose_threshold(probs, y, "binary") == 0.6
    clear = np.where(y == 1, 0.95, 0.05)[..., None].astype(np.float32)  # every swept threshold is perfect
    assert choose_threshold(clear, y, "binary") == 0.5


def test_save_load_round_trip_keeps_predictions(tmp_path):
    model = build_unet(tiny_cfg())
    x = np.random.default_rng(0).random((2, 32, 32, 1), dtype=np.float32)
    checkpoint.save_model(model, tmp_path / "m.keras")
    again = checkpoint.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(model.predict(x, verbose=0), again.predict(x, verbose=0), atol=1e-6)


class StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt


@pytest.mark.slow
def test_resume_after_interruption_continues_from_the_next_epoch(tmp_path):
    cfg = tiny_cfg(epochs=3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, None, tmp_path / "run", verbose=0, train_arrays=blobs(16), val_arrays=blobs(8, 1),
              callbacks=[StopAfterFirstEpoch()])
    state = json.loads((tmp_path / "run/checkpoints/state.json").read_text())
    assert state["epoch"] == 1
    summary = train(cfg, None, tmp_path / "run", resume=True, verbose=0, train_arrays=blobs(16), val_arrays=blobs(8, 1))
    hist = json.loads((tmp_path / "run/checkpoints/state.json").read_text())["history"]
    assert [r["epoch"] for r in hist] == [1, 2, 3] and summary["epochs"] == 3


@pytest.mark.slow
def test_a_run_resumed_with_other_epochs_decays_its_rate_over_the_new_length(tmp_path):
    from lunarseg.train import schedules

    data = dict(verbose=0, train_arrays=blobs(16), val_arrays=blobs(8, 1))
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg(epochs=40, lr_schedule="cosine"), None, tmp_path / "run", callbacks=[StopAfterFirstEpoch()],
              **data)

    class Length(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.steps = float(schedules.rate_schedule(self.model.optimizer).decay_steps.numpy())

    seen = Length()
    train(tiny_cfg(epochs=3, lr_schedule="cosine"), None, tmp_path / "run", resume=True, callbacks=[seen], **data)
    assert seen.steps == 3 * 2  # 3 epochs of 16 frames in batches of 8, not the 40 it was started with


@pytest.mark.slow
def test_resume_with_a_changed_config_is_refused_naming_the_difference(tmp_path):
    train(tiny_cfg(epochs=1), None, tmp_path / "run", verbose=0, train_arrays=blobs(8), val_arrays=blobs(8, 1))
    with pytest.raises(ConfigError, match=r"changed config: filters: 4 -> 8"):
        train(tiny_cfg(epochs=2, filters=8), None, tmp_path / "run", resume=True, verbose=0,
              train_arrays=blobs(8), val_arrays=blobs(8, 1))


def test_a_resumed_run_may_change_its_threshold_rule_since_the_rule_acts_after_training():
    assert TrainConfig().differences(TrainConfig(threshold_rule="rocks-f2")) == []
    assert TrainConfig().differences(TrainConfig(noise_max=0.01)) == ["noise_max: 0.03 -> 0.01"]


@pytest.mark.slow
def test_training_into_an_existing_run_without_resume_is_refused(tmp_path):
    train(tiny_cfg(epochs=1), None, tmp_path / "run", verbose=0, train_arrays=blobs(8), val_arrays=blobs(8, 1))
    with pytest.raises(ConfigError, match="already holds a training run; pass --resume"):
        train(tiny_cfg(epochs=1), None, tmp_path / "run", verbose=0, train_arrays=blobs(8), val_arrays=blobs(8, 1))


class PoisonWeights(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            self.model.set_weights([np.full_like(w, np.nan) for w in self.model.get_weights()])


@pytest.mark.slow
def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from lunarseg.train import fit

    monkeypatch.setattr(fit, "CHECKPOINT_EVERY_S", 0.0)  # a checkpoint every epoch
    with pytest.raises(TrainingDiverged, match=r"NaN/Inf in epoch 2.*last good checkpoint \(epoch 1\)"):
        train(tiny_cfg(epochs=3), None, tmp_path / "run", verbose=0, train_arrays=blobs(8), val_arrays=blobs(8, 1),
              callbacks=[PoisonWeights()])
    good = checkpoint.load_model(tmp_path / "run/model.keras")
    assert all(np.isfinite(w).all() for w in good.get_weights())


@pytest.mark.slow
def test_between_checkpoints_a_nan_keeps_the_best_model_and_says_no_checkpoint_was_saved(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"NaN/Inf in epoch 2.*\(epoch 0\) is kept at nowhere"):
        train(tiny_cfg(epochs=3), None, tmp_path / "run", verbose=0, train_arrays=blobs(8), val_arrays=blobs(8, 1),
              callbacks=[PoisonWeights()])
    good = checkpoint.load_model(tmp_path / "run/model.keras")
    assert all(np.isfinite(w).all() for w in good.get_weights())
    assert not (tmp_path / "run/checkpoints/last.keras").exists()


@pytest.mark.slow
def test_checkpoints_wait_for_their_interval_but_the_last_epoch_is_always_written(tmp_path, monkeypatch):
    from lunarseg.train import checkpoint as ckpt, fit

    saves = []
    real = ckpt.save_model
    monkeypatch.setattr(fit.checkpoint, "save_model", lambda m, p, **kw: (saves.append(p.name), real(m, p, **kw)))
    train(tiny_cfg(epochs=4), None, tmp_path / "run", verbose=0, train_arrays=blobs(8), val_arrays=blobs(8, 1))
    assert saves.count("last.keras") == 1  # 4 epochs in far less than CHECKPOINT_EVERY_S: written once, at the end
    state = json.loads((tmp_path / "run/checkpoints/state.json").read_text())
    assert state["epoch"] == 4 and len(state["history"]) == 4


def test_unwritable_output_directory_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="output directory is not writable"):
        train(tiny_cfg(), None, blocker / "run", verbose=0, train_arrays=blobs(8), val_arrays=blobs(8, 1))


def test_interrupted_save_leaves_the_previous_model_intact(tmp_path, monkeypatch):
    model = build_unet(tiny_cfg())
    path = checkpoint.save_model(model, tmp_path / "m.keras")
    before = path.read_bytes()

    def crash(self, filepath, *a, **k):
        open(filepath, "wb").write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(keras.Model, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_model(model, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]


def test_model_file_that_is_not_keras_is_refused(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="not a loadable Keras model"):
        checkpoint.load_model(bad)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.05, 0.95))
def test_training_iou_metric_equals_the_numpy_definition(seed, rock_rate):
    rng = np.random.default_rng(seed)
    y = (rng.random((2, 8, 8)) < rock_rate).astype(np.uint8)
    p = rng.random((2, 8, 8, 1)).astype(np.float32)
    for score in ("iou", "dice", "precision", "recall"):
        m = losses.RockScore(score)
        m.update_state(tf.constant(y[..., None]), tf.constant(p))
        acc = metrics.MetricAccumulator()
        acc.update(y, (p[..., 0] > 0.5).astype(np.uint8))
        assert float(m.result()) == pytest.approx(acc.result()[score], abs=1e-6)


def test_four_class_training_metric_counts_small_and_large_rocks_as_rock():
    y = np.array([[[0, 1, 2, 3]]], np.uint8)
    probs = np.eye(4, dtype=np.float32)[[[[0, 1, 3, 2]]]][0]  # small/large swapped
    m = losses.RockScore("iou")
    m.update_state(tf.constant(y[..., None]), tf.constant(probs))
    assert float(m.result()) == pytest.approx(1.0)


def test_bce_dice_loss_is_lower_for_the_right_answer():
    y = tf.constant(np.array([[[[1], [0]]]], np.uint8))
    good = tf.constant([[[[0.9], [0.1]]]])
    bad = tf.constant([[[[0.1], [0.9]]]])
    assert float(losses.bce_dice_loss(y, good)[0]) < float(losses.bce_dice_loss(y, bad)[0])


def test_empty_split_is_a_one_line_dataset_error(tmp_path):
    from lunarseg.train.data import load_split

    (tmp_path / "images/render").mkdir(parents=True)
    with pytest.raises((DatasetError,)) as info:
        load_split(tmp_path, "train", width=32, height=32, task="binary", colour_mode="gray")
    assert "\n" not in str(info.value)


def test_pipeline_normalises_by_the_metadata_through_the_runtime_definition():
    from lunarseg.runtime import preprocess
    from lunarseg.runtime.metadata import ModelMeta
    from lunarseg.train.tf_input import NORMALISATION, make_dataset, normalise

    meta = ModelMeta(normalisation={"scale": 1 / (255 * 0.2), "offset": -0.45 / 0.2})
    b = blobs(4)
    assert np.array_equal(normalise(b.x, meta), preprocess.normalise(b.x, meta))
    assert np.allclose(normalise(b.x), b.x * NORMALISATION["scale"])
    x, _ = next(iter(make_dataset(b.x, b.y, tiny_cfg(), training=False, meta=meta)))
    assert np.allclose(x.numpy(), (b.x / 255.0 - 0.45) / 0.2, atol=1e-5)


def test_evaluation_grid_panels_are_titled_with_frame_side_and_iou(tmp_path):
    from lunarseg.train.evaluate import _grid_picks, overlay_grid, panel_title

    assert panel_title("render0004", "prediction", 0.51234) == "render0004 prediction IoU 0.512"
    scores = np.array([0.1, 0.9, 0.5, 0.3])
    assert _grid_picks(scores, 2) == [1, 2, 0, 3]
    b = blobs(4)
    path = overlay_grid(b.x, b.y, b.y, scores, "binary", tmp_path / "grid.png", per_side=2, ids=b.ids)
    assert path.stat().st_size > 0
