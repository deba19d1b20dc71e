"""Architectures, crop training, the small-object losses and object-level figures (tiny models)."""
import json

import numpy as np
import pytest

import lunarseg.train  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

from lunarseg.runtime.errors import ConfigError
from lunarseg.runtime.objects import ObjectCounter
from lunarseg.train import losses
from lunarseg.train.config import ARCHITECTURES
from lunarseg.train.fit import train
from lunarseg.train.model import build_unet, count_macs
from lunarseg.train.slim import slim_unet
from lunarseg.train.tf_input import make_dataset
from test_train import blobs, tiny_cfg


@pytest.mark.parametrize("stem_stride", [1, 2])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_keeps_the_input_size_and_runs_at_any_size(arch, stem_stride):
    cfg = tiny_cfg(arch=arch, width=64, height=32, stem_stride=stem_stride)
    assert build_unet(cfg).output_shape == (None, 32, 64, 1)
    anywhere = build_unet(cfg, any_size=True)
    assert anywhere.predict(np.zeros((1, 48, 40, 1), np.float32), verbose=0).shape == (1, 48, 40, 1)


def test_separable_unet_has_fewer_macs_than_the_unet_at_the_same_width():
    cfg = tiny_cfg(width=64, height=64, filters=16, depth=3)
    plain, separable = build_unet(cfg), build_unet(tiny_cfg(width=64, height=64, filters=16, depth=3, arch="ds-unet"))
    assert count_macs(separable) < 0.6 * count_macs(plain)
    assert any(isinstance(l, keras.layers.DepthwiseConv2D) for l in separable.layers)


def test_count_macs_counts_a_depthwise_layer_once_per_channel():
    x = keras.Input((8, 8, 4))
    model = keras.Model(x, keras.layers.DepthwiseConv2D(3, padding="same")(x))
    assert count_macs(model) == 8 * 8 * 4 * 9


def test_count_macs_counts_a_transposed_conv_once_per_input_position():
    x = keras.Input((8, 8, 3))
    model = keras.Model(x, keras.layers.Conv2DTranspose(2, 4, strides=2, padding="same")(x))
    assert count_macs(model) == 8 * 8 * 3 * 4 * 4 * 2


def test_a_strided_stem_leaves_no_layer_at_full_resolution_but_paints_full_size_masks():
    cfg = tiny_cfg(width=64, height=64, filters=8, depth=2, stem_stride=4)
    model = build_unet(cfg)
    assert model.output_shape == (None, 64, 64, 1)
    inner = [layer for layer in model.layers if layer.name not in ("image", "mask")]
    assert max(layer.output_shape[1] for layer in inner) == 16
    assert count_macs(model) < 0.25 * count_macs(build_unet(tiny_cfg(width=64, height=64, filters=8, depth=2)))


def test_input_sides_must_divide_by_the_stem_stride_times_two_to_the_depth():
    tiny_cfg(width=32, height=16, stem_stride=4, depth=2).validate()
    with pytest.raises(ConfigError, match="does not fit a depth-2 U-Net with a stride-4 stem: sides must be multiples of 16"):
        tiny_cfg(width=32, height=24, stem_stride=4, depth=2).validate()
    with pytest.raises(ConfigError, match="stem_stride must be at least 1"):
        tiny_cfg(stem_stride=0).validate()


def test_unknown_architecture_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown architecture 'resnet'.*ds-unet, unet"):
        tiny_cfg(arch="resnet").validate()


def test_crop_larger_than_the_input_or_off_the_depth_grid_is_refused():
    with pytest.raises(ConfigError, match="crop 64x16 must .*fit the model input 32x32"):
        tiny_cfg(crop_width=64, crop_height=16).validate()
    with pytest.raises(ConfigError, match="input size 18x16 does not fit a depth-2"):
        tiny_cfg(crop_width=18, crop_height=16).validate()


def test_crop_training_batches_are_crops_with_their_masks_aligned():
    data = blobs(8)
    cfg = tiny_cfg(crop_width=16, crop_height=8, augment=False)
    x, y = next(iter(make_dataset(data.x, data.y, cfg, training=True)))
    assert x.shape[1:3] == (8, 16) and y.shape[1:3] == (8, 16)
    # rock pixels are the bright ones in blobs(): the crop must keep image and mask together
    bright = x.numpy()[..., 0] > 150 / 255
    np.testing.assert_array_equal(bright, y.numpy()[..., 0] == 1)


def test_sensor_noise_augmentation_is_as_strong_as_noise_max_says():
    data = blobs(8)
    first = lambda **kw: next(iter(make_dataset(data.x, data.y, tiny_cfg(seed=3, **kw), training=True)))[0].numpy()  # noqa: E731
    quiet, barely, loud = first(noise_max=0.0), first(noise_max=1e-6), first(noise_max=0.3)
    assert np.abs(barely - quiet).max() < 1e-4  # the same draws apart from the noise
    assert np.abs(loud - quiet).mean() > 10 * np.abs(barely - quiet).mean() + 0.01
    with pytest.raises(ConfigError, match="noise_max"):
        tiny_cfg(noise_max=1.5).validate()


@pytest.mark.parametrize("bad,message", [
    (dict(learning_rate=0.0), "learning rate must be a finite number > 0, got 0.0"),
    (dict(learning_rate=float("inf")), "learning rate must be a finite number > 0, got inf"),
    (dict(patience=-1), "patience must be at least 0, got -1"),
    (dict(max_frames=-1), "max-frames must be at least 0, got -1"),
    (dict(seed=-1), "seed must be at least 0, got -1"),
])
def test_training_values_that_mean_nothing_are_refused(bad, message):
    with pytest.raises(ConfigError, match=message):
        tiny_cfg(**bad).validate()


def test_crop_trained_run_is_saved_at_the_model_input_size(tmp_path):
    cfg = tiny_cfg(crop_width=16, crop_height=16, epochs=2)
    train(cfg, None, tmp_path / "run", verbose=0, train_arrays=blobs(16), val_arrays=blobs(8, seed=1))
    from lunarseg.train.checkpoint import load_model

    model = load_model(tmp_path / "run/model.keras")
    assert model.input_shape == (None, 32, 32, 1)
    meta = json.loads((tmp_path / "run/meta.json").read_text())
    assert meta["input_shape"] == [1, 32, 32, 1] and meta["train_config"]["crop_width"] == 16


def test_slimming_understands_the_separable_unet():
    cfg = tiny_cfg(arch="ds-unet", filters=8, depth=2)
    model = build_unet(cfg)
    slim, slim_cfg = slim_unet(model, cfg, 0.5)
    assert slim_cfg.filters == 4 and count_macs(slim) < count_macs(model)
    x = np.random.default_rng(0).random((1, 32, 32, 1), dtype=np.float32)
    assert np.isfinite(slim.predict(x, verbose=0)).all()


def test_slimming_a_stem_model_slices_the_transposed_head_and_keeps_its_classes():
    cfg = tiny_cfg(filters=8, depth=2, stem_stride=2)
    model = build_unet(cfg)
    x = np.random.default_rng(0).random((2, 32, 32, 1), dtype=np.float32)
    same, _ = slim_unet(model, cfg, 1.0)
    np.testing.assert_allclose(same.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    slim, slim_cfg = slim_unet(model, cfg, 0.5)
    assert slim_cfg.filters == 4 and slim.get_layer("mask").filters == 1
    assert slim.get_layer("mask").kernel.shape[-1] == 4  # (kh, kw, out, in): the kept input channels
    assert count_macs(slim) < 0.4 * count_macs(model)


def _loss(name, truth, pred):
    return float(tf.reduce_mean(losses.get_loss(name)(tf.constant(truth), tf.constant(pred))))


@pytest.mark.parametrize("name", ["focal-dice", "bce-tversky", "bce-tversky-small", "bce-tversky-recall"])
def test_small_object_losses_are_lower_for_the_right_mask(name):
    truth = np.zeros((1, 8, 8, 1), np.float32)
    truth[0, 2:4, 2:4] = 1
    right = np.where(truth > 0, 0.9, 0.1).astype(np.float32)
    wrong = (1.0 - right).astype(np.float32)
    assert _loss(name, truth, right) < _loss(name, truth, wrong)


def test_tversky_punishes_a_missed_rock_more_than_a_false_alarm_of_the_same_size():
    truth = np.zeros((1, 8, 8, 1), np.float32)
    truth[0, :4] = 1  # half the frame is rock
    missed = truth * 0.5  # rock half-found
    false_alarm = truth + (1 - truth) * 0.5  # background half-called rock
    assert losses.tversky_loss(truth, missed).numpy()[0] > losses.tversky_loss(truth, false_alarm).numpy()[0]


def test_the_recall_loss_punishes_a_miss_against_a_false_alarm_more_than_bce_tversky_does():
    truth = np.zeros((1, 8, 8, 1), np.float32)
    truth[0, :4] = 1
    missed, false_alarm = truth * 0.5, truth + (1 - truth) * 0.5
    gap = {name: _loss(name, truth, missed) - _loss(name, truth, false_alarm)
           for name in ("bce-tversky", "bce-tversky-recall")}
    assert gap["bce-tversky-recall"] > gap["bce-tversky"] > 0, gap


def test_a_run_trained_with_the_recall_loss_saves_and_reloads(tmp_path):
    from lunarseg.train.checkpoint import load_model

    train(tiny_cfg(epochs=1, loss="bce-tversky-recall"), None, tmp_path / "run", verbose=0,
          train_arrays=blobs(16), val_arrays=blobs(8, seed=1))
    assert load_model(tmp_path / "run/model.keras").output_shape == (None, 32, 32, 1)
    assert json.loads((tmp_path / "run/meta.json").read_text())["train_config"]["loss"] == "bce-tversky-recall"


def _small_and_big_rock():
    truth = np.zeros((1, 64, 64), np.float32)
    truth[0, 5:12, 5:12] = 1  # 49 px
    truth[0, 20:60, 20:60] = 1  # 1,600 px
    return truth


def test_small_rock_weights_count_rocks_rather_than_pixels():
    truth = _small_and_big_rock()
    w = losses.small_rock_weight(tf.constant(truth)).numpy()
    assert (w[truth == 0] == 1).all() and w.min() >= 1 and w.max() <= losses.SMALL_ROCK_MAX_WEIGHT
    small, big = w[0, 5:12, 5:12].sum(), w[0, 20:60, 20:60].sum()
    assert small / big > 3 * (49 / 1600)  # the small rock weighs > 3x its pixel share


def test_small_rock_loss_punishes_missing_a_small_rock_more_than_as_many_pixels_of_a_big_one():
    truth = _small_and_big_rock()
    miss_small, miss_big = truth.copy(), truth.copy()
    miss_small[0, 5:12, 5:12] = 0
    miss_big[0, 36:43, 36:43] = 0  # 49 px inside the big rock
    y = truth[..., None]
    soft = lambda m: np.clip(m * 0.9 + 0.05, 0, 1)[..., None].astype(np.float32)  # noqa: E731
    weighted = [_loss("bce-tversky-small", y, soft(m)) for m in (miss_small, miss_big)]
    plain = [_loss("bce-tversky", y, soft(m)) for m in (miss_small, miss_big)]
    assert plain[0] == pytest.approx(plain[1], rel=1e-6)  # the plain loss counts pixels alike
    assert weighted[0] > 1.5 * weighted[1]


def test_focal_loss_fades_easy_pixels_more_than_cross_entropy():
    truth = np.zeros((1, 4, 4, 1), np.float32)
    easy, hard = np.full_like(truth, 0.05), np.full_like(truth, 0.6)
    ratio_focal = losses.focal_loss(truth, hard).numpy()[0] / losses.focal_loss(truth, easy).numpy()[0]
    ratio_bce = losses.bce_loss(truth, hard).numpy()[0] / losses.bce_loss(truth, easy).numpy()[0]
    assert ratio_focal > 5 * ratio_bce


def test_a_rock_counts_as_found_only_when_half_of_its_pixels_are_predicted():
    truth = np.zeros((100, 100), bool)
    truth[10:20, 10:20] = True  # 100 px = 1 % of the frame
    pred = np.zeros_like(truth)
    pred[10:15, 10:20] = True  # exactly half
    counter = ObjectCounter()
    counter.update(truth, pred)
    pred2 = np.zeros_like(truth)
    pred2[10:14, 10:20] = True  # 40 %
    counter.update(truth, pred2)
    r = counter.result()
    assert (r["rocks"], r["recall"]) == (2, 0.5)


def test_a_blob_counts_as_right_when_it_overlaps_a_true_rock():
    truth = np.zeros((100, 100), bool)
    truth[10:20, 10:20] = True
    pred = np.zeros_like(truth)
    pred[19:30, 19:30] = True  # touches the rock at one pixel
    pred[60:70, 60:70] = True  # nothing there
    counter = ObjectCounter()
    counter.update(truth, pred)
    r = counter.result()
    assert (r["blobs"], r["precision"]) == (2, 0.5)


def test_rocks_below_the_frame_share_are_left_out_of_the_headline_but_kept_by_size():
    truth = np.zeros((100, 100), bool)
    truth[50, 50] = True  # 1 px = 0.01 % of the frame
    counter = ObjectCounter()
    counter.update(truth, np.zeros_like(truth))
    r = counter.result()
    assert r["rocks"] == 0 and r["recall"] is None
    assert r["by_size"][0]["rocks"] == 1 and r["by_size"][0]["recall"] == 0.0


def test_found_and_right_carry_a_bootstrap_interval_over_the_frames():
    from lunarseg.runtime.objects import describe_objects

    truth = np.zeros((100, 100), bool)
    truth[10:20, 10:20] = True
    counter = ObjectCounter()
    for _ in range(3):
        counter.update(truth, truth)  # found, and its blob right
    counter.update(truth, np.zeros_like(truth))  # missed
    r = counter.result()
    lo, hi = r["recall_interval"]
    assert r["recall"] == 0.75 and lo < 0.75 < hi <= 1.0
    assert r["precision_interval"] == [1.0, 1.0]  # every blob of every frame was right
    assert "0.75 [" in describe_objects(r) and "95 % interval over the frames" in describe_objects(r)
    assert ObjectCounter().result()["recall_interval"] is None  # no rock, no interval


def test_operating_points_show_a_faint_rock_found_only_below_its_probability():
    from lunarseg.train.evaluate import THRESHOLDS, operating_points

    y = np.zeros((1, 100, 100), np.uint8)
    y[0, 10:20, 10:20] = 1  # a rock of 1 % of the frame, predicted at 0.32
    y[0, 60:70, 60:70] = 1  # one predicted at 0.9
    probs = np.zeros((1, 100, 100, 1), np.float32)
    probs[0, 10:20, 10:20] = 0.32
    probs[0, 60:70, 60:70] = 0.9
    probs[0, 40:45, 80:85] = 0.27  # a false blob between 0.25 and 0.3
    points = {p["threshold"]: p for p in operating_points(probs, y, "binary")}
    assert tuple(points) == tuple(float(t) for t in THRESHOLDS)
    assert (points[0.2]["found"], points[0.2]["right"]) == (1.0, 2 / 3)
    assert (points[0.3]["found"], points[0.3]["right"], points[0.3]["iou"]) == (1.0, 1.0, 1.0)
    assert (points[0.35]["found"], points[0.35]["iou"]) == (0.5, 0.5)
    assert operating_points(np.zeros((1, 4, 4, 4), np.float32), np.zeros((1, 4, 4), np.uint8), "4class") == []


def _faint_rock_and_halo():
    """A strong rock with a faint halo of background around it, and a small faint rock: including
    the faint probabilities finds every rock but costs pixel IoU."""
    y = np.zeros((1, 100, 100), np.uint8)
    y[0, 20:40, 20:40] = 1  # strong rock, predicted at 0.9
    y[0, 70:78, 70:78] = 1  # faint rock (0.64 % of the frame), predicted at 0.32
    probs = np.zeros((1, 100, 100, 1), np.float32)
    probs[0, 17:43, 17:43] = 0.31  # halo
    probs[0, 20:40, 20:40] = 0.9
    probs[0, 70:78, 70:78] = 0.32
    return probs, y


def test_rocks_f2_threshold_rule_finds_the_faint_rock_the_iou_rule_drops():
    from lunarseg.train.evaluate import choose_threshold

    probs, y = _faint_rock_and_halo()
    assert choose_threshold(probs, y, "binary", "iou") == 0.5  # 0.35..0.8 tie on IoU: nearest 0.5
    assert choose_threshold(probs, y, "binary", "rocks-f2") == 0.3  # 0.2..0.3 find both: nearest 0.5


def test_an_unknown_threshold_rule_is_a_one_line_error_listing_the_rules():
    from lunarseg.runtime.errors import ConfigError
    from lunarseg.train.config import TrainConfig
    from lunarseg.train.evaluate import THRESHOLD_RULES, choose_threshold

    probs, y = _faint_rock_and_halo()
    for call in (lambda: choose_threshold(probs, y, "binary", "f1"), lambda: TrainConfig(threshold_rule="f1").validate()):
        with pytest.raises(ConfigError) as err:
            call()
        assert "\n" not in str(err.value) and all(k in str(err.value) for k in THRESHOLD_RULES)


def test_config_lists_the_threshold_rules_and_losses_that_exist():
    from lunarseg.train import config, evaluate

    assert tuple(config.THRESHOLD_RULES) == tuple(evaluate.THRESHOLD_RULES)
    assert tuple(config.LOSSES) == tuple(losses.LOSS_FUNCTIONS)


def test_one_cycle_warms_up_from_a_tenth_of_the_rate_over_a_tenth_of_the_steps_then_decays():
    from lunarseg.train.fit import learning_rate_schedule

    lr = learning_rate_schedule(tiny_cfg(learning_rate=0.02, lr_schedule="one-cycle"), 1000)
    rate = lambda step: float(lr(step))  # noqa: E731
    assert rate(0) == pytest.approx(0.002) and rate(50) == pytest.approx(0.011) and rate(100) == pytest.approx(0.02)
    assert rate(100) > rate(500) > rate(999) and rate(1000) == pytest.approx(0.001)  # cosine down to 5 %
    cosine = learning_rate_schedule(tiny_cfg(learning_rate=0.02, lr_schedule="cosine"), 1000)
    assert float(cosine(0)) == pytest.approx(0.02) and float(cosine(1000)) == pytest.approx(0.001)


def test_an_unknown_learning_rate_schedule_is_a_one_line_error_listing_the_schedules():
    from lunarseg.train.config import TrainConfig
    from lunarseg.train.fit import learning_rate_schedule
    from lunarseg.train.schedules import LR_SCHEDULES

    cfg = TrainConfig(lr_schedule="step")
    for call in (cfg.validate, lambda: learning_rate_schedule(cfg, 10)):
        with pytest.raises(ConfigError) as err:
            call()
        assert "\n" not in str(err.value) and all(k in str(err.value) for k in LR_SCHEDULES)


def test_config_lists_the_learning_rate_schedules_that_exist():
    from lunarseg.train import config, schedules

    assert tuple(config.LR_SCHEDULES) == tuple(schedules.LR_SCHEDULES)


def test_the_train_command_line_passes_the_stem_stride_into_the_config():
    import argparse

    from lunarseg.train.cli import config_from_args, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["train", "--data", "d", "--out", "o", "--size", "64x32", "--depth", "2",
                              "--stem-stride", "2"])
    assert config_from_args(args).stem_stride == 2
    with pytest.raises(ConfigError, match="with a stride-4 stem"):
        config_from_args(parser.parse_args(["train", "--data", "d", "--out", "o", "--size", "64x40", "--depth", "2",
                                            "--stem-stride", "4"]))
