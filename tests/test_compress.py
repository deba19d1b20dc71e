"""Compression rules on a tiny trained model: sparsity reached (the frequency trap), no wrappers left,
QAT/PQAT convert to TFLite, PQAT keeps the zeros, the report lists every variant, bad inputs."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import lunarseg.train  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from lunarseg.runtime.errors import ConfigError, DatasetError, ModelFileError
from lunarseg.train.compress import (CompressConfig, apply_qat, compress, format_report, load_variant, report_rows)
from lunarseg.train.fit import train
from lunarseg.train.sparsity import kernel_sparsity
from test_train import blobs, tiny_cfg

TR, VA = blobs(16), blobs(8, seed=1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("compress") / "run"
    train(tiny_cfg(epochs=3, learning_rate=5e-3), None, root, verbose=0, train_arrays=TR, val_arrays=VA)
    return root


def make(run, reuse=False, **kw):
    """One variant; by default it runs every phase itself, whatever other tests made before it."""
    cfg = CompressConfig(epochs=2, qat_epochs=1, batch_size=8, **kw)
    return cfg, compress(run, cfg, train_arrays=TR, val_arrays=VA, verbose=0, reuse=reuse)


@pytest.mark.parametrize("target,schedule", [(0.5, "polynomial"), (0.75, "constant")])
def test_requested_sparsity_is_reached_within_one_percent_on_a_short_run(run, target, schedule):
    cfg, summary = make(run, sparsity=target, schedule=schedule, name=f"s{target}{schedule}")
    assert summary["sparsity"] == pytest.approx(target, abs=0.01)
    model = load_variant(run / "compressed" / cfg.variant)
    assert kernel_sparsity(model)["overall"] == pytest.approx(target, abs=0.01)


def test_strip_pruning_leaves_no_pruning_wrappers(run):
    cfg, _ = make(run, sparsity=0.5, name="stripped")
    model = load_variant(run / "compressed/stripped")
    assert not [layer.name for layer in model.layers if "prune" in type(layer).__name__.lower()]


@pytest.fixture(scope="module")
def pqat(run):
    cfg, summary = make(run, sparsity=0.5, qat=True, preserve_sparsity=True)
    return run / "compressed" / cfg.variant, summary


def test_pqat_keeps_at_least_99_percent_of_the_zeros(pqat):
    _, summary = pqat
    assert summary["sparsity_before_qat"] == pytest.approx(0.5, abs=0.01)
    assert summary["sparsity"] >= 0.99 * summary["sparsity_before_qat"]


def _to_tflite(model):
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    return conv.convert()


def test_qat_and_pqat_models_convert_to_tflite(run, pqat):
    cfg, _ = make(run, sparsity=0.0, qat=True)
    for path in (run / "compressed" / cfg.variant, pqat[0]):
        model = load_variant(path)
        assert len(_to_tflite(model)) > 1000


def test_report_table_lists_every_variant(run, pqat):
    rows = report_rows(run)
    names = [r["variant"] for r in rows]
    assert names[0] == "(trained)" and "pruned50-pqat" in names
    table = format_report(rows)
    assert table.splitlines()[0].startswith("| variant | sparsity | GMAC | bytes | gzip bytes |")
    for name in names:
        assert f"| {name} |" in table
    assert all(r["macs"] and r["macs"] > 0 for r in rows), [(r["variant"], r["macs"]) for r in rows]


def test_report_names_damaged_variants_instead_of_failing_and_compares_gzip_with_the_trained_model(run, pqat,
                                                                                                    tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("checkpoints"))
    (copy / "compressed/broken").mkdir()
    from lunarseg.train import checkpoint

    shutil.copy(checkpoint.model_file(copy / "compressed/pruned50-pqat"), copy / "compressed/broken")
    (copy / "compressed/broken/meta.json").write_text("{bad")
    (copy / "compressed/half").mkdir()
    (copy / "compressed/half/meta.json").write_text("{}")
    from lunarseg.train.compress import skipped_variants

    rows = report_rows(copy)
    assert "broken" not in [r["variant"] for r in rows]
    assert skipped_variants(copy) == [
        "broken: not listed (meta.json is not readable; an interrupted fine-tune resumes with --resume)",
        "half: not listed (no model file; an interrupted fine-tune resumes with --resume)"]
    table = format_report(rows)
    trained_row = next(line for line in table.splitlines() if line.startswith("| (trained) |"))
    assert "| 1.00 |" in trained_row and "nan" not in table


@pytest.mark.parametrize("bad,message", [
    (dict(sparsity=1.2), r"sparsity must be in \[0, 0.99\], got 1.2"),
    (dict(sparsity=-0.1), r"sparsity must be in \[0, 0.99\]"),
    (dict(schedule="cubic"), r"unknown schedule 'cubic'; valid: constant, polynomial"),
    (dict(preserve_sparsity=True, sparsity=0.5), r"--preserve-sparsity is a QAT scheme; add --qat"),
    (dict(learning_rate=float("nan")), r"learning rate must be a finite number > 0, got nan"),
    (dict(learning_rate=-1.0), r"learning rate must be a finite number > 0, got -1.0"),
    (dict(distill=float("nan")), r"distillation weight must be a finite number >= 0, got nan"),
    (dict(batch_size=0), r"batch-size must be at least 1, got 0"),
    (dict(qat_epochs=-1), r"qat-epochs must be at least 0, got -1"),
    (dict(name="../../escape"), r"--name '../../escape': a variant name is a folder under RUN/compressed"),
])
def test_bad_compress_options_are_refused_with_a_reason(bad, message):
    with pytest.raises(ConfigError, match=message):
        CompressConfig(**bad).validate()


def test_report_refuses_options_that_would_make_a_variant(tmp_path, capsys):
    from lunarseg.cli import main

    assert main(["compress", str(tmp_path), "--report", "--sparsity", "0.7", "--no-reuse"]) == 2
    assert capsys.readouterr().err.strip() == ("lunarseg compress: error: --report only prints the table; it makes no "
                                               "variant, so --sparsity, --no-reuse would be ignored: drop them, or "
                                               "drop --report")


def test_run_directory_without_a_model_is_refused(tmp_path):
    with pytest.raises(ModelFileError, match="no lunarseg model here"):
        compress(tmp_path, CompressConfig(), train_arrays=TR, val_arrays=VA)


def test_missing_fine_tuning_data_is_refused(run):
    with pytest.raises(DatasetError, match="fine-tuning data not found"):
        compress(run, CompressConfig(), data_dir=run / "nowhere")


def test_model_without_prunable_layers_is_refused():
    from lunarseg.train.compress import apply_pruning

    inp = keras.Input((8, 8, 1))
    model = keras.Model(inp, keras.layers.MaxPooling2D()(inp))
    with pytest.raises(ConfigError, match="has no prunable layer"):
        apply_pruning(model, CompressConfig(), 10)


def test_qat_on_a_layer_tfmot_cannot_quantize_names_it():
    inp = keras.Input((8, 8, 1))
    out = keras.layers.Lambda(lambda t: t * 2.0, name="odd_op")(keras.layers.Conv2D(2, 3)(inp))
    with pytest.raises(ConfigError, match=r"QAT cannot quantize layer 'odd_op' \(Lambda\).*or compress without --qat"):
        apply_qat(keras.Model(inp, out), preserve_sparsity=False)


def test_cli_rejects_bad_sparsity_in_one_line(run, capsys):
    from lunarseg.cli import main

    assert main(["compress", str(run), "--sparsity", "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lunarseg compress: error: sparsity must be in [0, 0.99], got 1.5"]


class StopAfterEpochs(keras.callbacks.Callback):
    """Simulates a kill after `n` epochs of the phase it is attached to."""

    def __init__(self, n):
        super().__init__()
        self.n, self.seen = n, 0

    def on_epoch_end(self, epoch, logs=None):
        self.seen += 1
        if self.seen >= self.n:
            raise KeyboardInterrupt


def _state(run, variant):
    import json

    return json.loads((run / "compressed" / variant / "checkpoints" / "state.json").read_text())


def test_interrupted_pruning_resumes_from_the_next_epoch_and_still_reaches_the_sparsity(run):
    cfg = CompressConfig(sparsity=0.5, epochs=3, batch_size=8, name="resume-prune")
    with pytest.raises(KeyboardInterrupt):
        compress(run, cfg, train_arrays=TR, val_arrays=VA, verbose=0, callbacks=[StopAfterEpochs(1)])
    assert (_state(run, "resume-prune")["phase"], _state(run, "resume-prune")["epoch"]) == ("prune", 1)
    with pytest.raises(ConfigError, match=r"interrupted fine-tune is there \(prune epoch 1\); pass --resume"):
        compress(run, cfg, train_arrays=TR, val_arrays=VA, verbose=0)
    with pytest.raises(ConfigError, match=r"changed config: epochs: 3 -> 4"):
        compress(run, dataclasses.replace(cfg, epochs=4), train_arrays=TR, val_arrays=VA, verbose=0, resume=True)
    summary = compress(run, cfg, train_arrays=TR, val_arrays=VA, verbose=0, resume=True)
    assert [e["epoch"] for e in summary["epochs_run"]] == [1, 2, 3]
    assert abs(summary["sparsity"] - 0.5) <= 0.01
    assert not (run / "compressed" / "resume-prune" / "checkpoints").exists()


def test_interrupted_pqat_resumes_inside_qat_and_keeps_the_zeros(run):
    cfg = CompressConfig(sparsity=0.5, epochs=1, qat=True, preserve_sparsity=True, qat_epochs=2, batch_size=8,
                         name="resume-pqat")
    stop = StopAfterEpochs(2)  # one pruning epoch, then one QAT epoch
    with pytest.raises(KeyboardInterrupt):
        compress(run, cfg, train_arrays=TR, val_arrays=VA, verbose=0, callbacks=[stop])
    assert (_state(run, "resume-pqat")["phase"], _state(run, "resume-pqat")["epoch"]) == ("qat", 1)
    summary = compress(run, cfg, train_arrays=TR, val_arrays=VA, verbose=0, resume=True)
    assert [(e["phase"], e["epoch"]) for e in summary["epochs_run"]] == [("prune", 1), ("qat", 1), ("qat", 2)]
    assert summary["sparsity"] >= 0.99 * summary["sparsity_before_qat"] > 0.45


def test_resume_without_an_interrupted_fine_tune_is_refused(run):
    with pytest.raises(ConfigError, match="nothing to resume"):
        compress(run, CompressConfig(sparsity=0.5, epochs=1, name="never-started"), train_arrays=TR, val_arrays=VA,
                 verbose=0, resume=True)


# ---- structured channel pruning (slimming) --------------------------------------------------

def test_slimming_at_full_width_is_the_identity(run):
    from lunarseg.train.checkpoint import resolve_model, load_model
    from lunarseg.train.config import TrainConfig
    from lunarseg.train.slim import slim_unet

    path, meta = resolve_model(run)
    parent = load_model(path)
    same, cfg = slim_unet(parent, TrainConfig.from_dict(meta.train_config), 1.0)
    np.testing.assert_allclose(same.predict(VA.x / 255.0, verbose=0), parent.predict(VA.x / 255.0, verbose=0), atol=1e-5)


def test_slimming_keeps_the_channels_with_the_largest_batchnorm_scale_and_quarters_the_macs(run):
    from lunarseg.train.checkpoint import resolve_model, load_model
    from lunarseg.train.config import TrainConfig
    from lunarseg.train.model import count_macs
    from lunarseg.train.slim import slim_unet

    path, meta = resolve_model(run)
    parent = load_model(path)
    slim, cfg = slim_unet(parent, TrainConfig.from_dict(meta.train_config), 0.5)
    assert cfg.filters == 2 and slim.get_layer("enc0_conv1").filters == 2 and slim.get_layer("mask").filters == 1
    gamma = np.abs(parent.get_layer("enc0_bn1").gamma.numpy())
    kept = np.sort(np.argsort(-gamma)[:2])
    np.testing.assert_array_equal(slim.get_layer("enc0_bn1").gamma.numpy(), parent.get_layer("enc0_bn1").gamma.numpy()[kept])
    np.testing.assert_array_equal(slim.get_layer("enc0_conv1").kernel.numpy(),
                                  parent.get_layer("enc0_conv1").kernel.numpy()[..., kept])
    assert count_macs(slim) / count_macs(parent) == pytest.approx(0.25, abs=0.03)
    assert slim.predict(VA.x / 255.0, verbose=0).shape == parent.predict(VA.x / 255.0, verbose=0).shape


def test_slim_variant_fine_tunes_records_its_width_and_converts_to_tflite(run):
    cfg, summary = make(run, sparsity=0.0, width=0.5)
    assert cfg.variant == "slim50" and summary["filters"] == 2
    assert summary["macs"] / summary["macs_before"] == pytest.approx(0.25, abs=0.03)
    model = load_variant(run / "compressed" / "slim50")
    assert model.get_layer("enc0_conv1").filters == 2
    meta = __import__("json").loads((run / "compressed" / "slim50" / "meta.json").read_text())
    assert meta["train_config"]["filters"] == 2
    assert len(tf.lite.TFLiteConverter.from_keras_model(model).convert()) > 0


def test_batchnorm_recalibration_sets_moving_statistics_to_the_mean_of_the_batch_statistics(run):
    from lunarseg.train.checkpoint import load_model, resolve_model
    from lunarseg.train.slim import recalibrate_batchnorm

    model = load_model(resolve_model(run)[0])
    bn = model.get_layer("enc0_bn1")
    momentum = bn.momentum
    x = np.random.default_rng(3).random((12, 32, 32, 1), dtype=np.float32)
    assert recalibrate_batchnorm(model, x, batch_size=4) == 3
    conv = keras.Model(model.input, model.get_layer("enc0_conv1").output).predict(x, verbose=0)
    batches = conv.reshape(3, 4, 32, 32, -1)
    np.testing.assert_allclose(bn.moving_mean.numpy(), batches.mean(axis=(1, 2, 3)).mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), batches.var(axis=(1, 2, 3)).mean(axis=0), rtol=1e-3, atol=1e-5)
    assert bn.momentum == momentum


@pytest.mark.parametrize("width", [0.0, 1.5])
def test_width_outside_zero_to_one_is_refused(width):
    with pytest.raises(ConfigError, match=r"width must be in \(0, 1\]"):
        CompressConfig(width=width).validate()


def test_the_input_convolution_and_the_head_stay_dense_while_the_rest_is_pruned(run):
    from lunarseg.train.checkpoint import load_model, resolve_model
    from lunarseg.train.compress import apply_pruning, kept_dense

    parent = load_model(resolve_model(run)[0])
    assert kept_dense(parent) == {"enc0_conv1", "mask"}
    wrapped = {layer.name for layer in apply_pruning(parent, CompressConfig(sparsity=0.5), 10).layers
               if type(layer).__name__ == "PruneLowMagnitude"}
    assert "prune_low_magnitude_enc0_conv2" in wrapped and not any(n.endswith(("enc0_conv1", "mask")) for n in wrapped)
    _, summary = make(run, sparsity=0.5, name="dense-ends")
    layers = summary["sparsity_layers"]
    assert layers["enc0_conv1"] == 0.0 and layers["mask"] == 0.0
    assert all(abs(v - 0.5) <= 0.02 for k, v in layers.items() if k not in ("enc0_conv1", "mask"))


def test_distillation_target_is_the_labels_then_the_teachers_probabilities_on_the_same_pixels(run):
    from lunarseg.train.checkpoint import load_model, resolve_model
    from lunarseg.train.distill import with_teacher
    from lunarseg.train.tf_input import make_dataset

    teacher = load_model(resolve_model(run)[0])
    x, target = next(iter(with_teacher(make_dataset(VA.x, VA.y, tiny_cfg(batch_size=4), training=False), teacher)))
    assert target.shape[-1] == 2 and target.dtype == tf.float32
    np.testing.assert_array_equal(target[..., 0].numpy(), VA.y[:4].astype(np.float32))
    np.testing.assert_allclose(target[..., 1:].numpy(), teacher.predict(x, verbose=0), atol=1e-5)


def test_distillation_weight_zero_is_the_task_loss_and_a_confident_wrong_teacher_raises_it():
    from lunarseg.train.distill import distill_loss
    from lunarseg.train.losses import bce_dice_loss

    labels = tf.constant([[0, 1, 0, 1], [1, 1, 0, 0]], tf.float32)[None, ..., None]
    pred = 0.2 + 0.6 * labels  # leaning the labels' way
    agree, disagree = tf.concat([labels, labels], -1), tf.concat([labels, 1.0 - labels], -1)
    np.testing.assert_allclose(distill_loss(bce_dice_loss, 0.0)(agree, pred), bce_dice_loss(labels, pred), rtol=1e-6)
    assert float(distill_loss(bce_dice_loss, 1.0)(disagree, pred)[0]) > float(distill_loss(bce_dice_loss, 1.0)(agree, pred)[0])


def test_distilled_slim_variant_fine_tunes_and_records_the_weight(run):
    cfg, summary = make(run, sparsity=0.0, width=0.5, distill=1.0, name="slim50-kd")
    assert summary["config"]["distill"] == 1.0 and summary["filters"] == 2
    model = load_variant(run / "compressed" / "slim50-kd")
    assert summary["val_iou_after"] == pytest.approx(own_val_iou(run / "compressed" / "slim50-kd"), abs=1e-6)
    assert model.output_shape == (None, *VA.x.shape[1:3], 1)


def test_distilled_dense_fine_tune_learns_from_the_trained_model_not_from_itself(run, monkeypatch):
    """The finetune phase trains the parent itself when not distilling; distilled, the teacher must
    stay the trained model: same weights as the run's model file after the fine-tune, and not the student."""
    import lunarseg.train.distill as distill_module
    from lunarseg.train.checkpoint import load_model, resolve_model

    teachers, real = [], distill_module.with_teacher
    monkeypatch.setattr(distill_module, "with_teacher", lambda ds, teacher: teachers.append(teacher) or real(ds, teacher))
    make(run, sparsity=0.0, distill=1.0, name="dense-kd")
    student = load_variant(run / "compressed" / "dense-kd")
    trained = load_model(resolve_model(run)[0])
    assert teachers, "the fine-tune did not read a teacher"
    for teacher in teachers:
        for got, want in zip(teacher.get_weights(), trained.get_weights()):
            np.testing.assert_array_equal(got, want)
    assert any(not np.array_equal(a, b) for a, b in zip(student.get_weights(), trained.get_weights()))


def test_the_dense_control_continues_at_the_rate_the_parents_weights_were_trained_at(run, monkeypatch):
    """continue_rate: the fine-tune's optimizer gets the `lr` of the parent's best epoch (meta.json) in
    its history.csv, constant, and the summary records that rate instead of the config's default."""
    import csv

    import lunarseg.train.compress as compress_module

    best = json.loads((run / "meta.json").read_text())["extra"]["best_epoch"]
    last = float(next(r for r in csv.DictReader((run / "history.csv").open()) if int(r["epoch"]) == best)["lr"])
    rates, real = [], compress_module._compile
    monkeypatch.setattr(compress_module, "_compile", lambda model, tcfg, lr, distill=0.0: rates.append(lr) or real(model, tcfg, lr, distill))
    _, summary = make(run, sparsity=0.0, continue_rate=True, name="dense-continued")
    assert last != CompressConfig().learning_rate
    assert rates == [pytest.approx(last)], rates
    assert (summary["config"]["learning_rate"], summary["config"]["lr_schedule"]) == (pytest.approx(last), "constant")


def test_a_run_without_a_training_history_fine_tunes_at_the_configured_rate(tmp_path):
    from lunarseg.train.compress import continued

    cfg = CompressConfig(sparsity=0.0, continue_rate=True, learning_rate=2e-3, lr_schedule="cosine")
    assert continued(cfg, tmp_path / "model.keras") == cfg
    (tmp_path / "history.csv").write_text("epoch,lr,val_iou\n1,0.01,0.3\n2,0.0004,0.5\n")
    assert (continued(cfg, tmp_path / "model.keras").learning_rate, continued(cfg, tmp_path / "model.keras").lr_schedule) == (0.0004, "constant")
    assert continued(dataclasses.replace(cfg, continue_rate=False), tmp_path / "model.keras") == dataclasses.replace(cfg, continue_rate=False)
    for bad in ("abc", "0", "inf", ""):  # an unreadable last rate: the configured one
        (tmp_path / "history.csv").write_text(f"epoch,lr\n1,0.01\n2,{bad}\n")
        assert continued(cfg, tmp_path / "model.keras") == cfg, bad


def test_the_control_continues_at_the_rate_of_the_epoch_whose_weights_the_parent_keeps(tmp_path):
    """model.keras holds the best epoch's weights, so the rate of that epoch, not of the last one; an
    epoch the history does not have falls back to the last row."""
    from lunarseg.train.compress import continued

    cfg = CompressConfig(sparsity=0.0, continue_rate=True, learning_rate=2e-3)
    (tmp_path / "history.csv").write_text("epoch,lr,val_iou\n1,0.01,0.3\n2,0.005,0.6\n3,0.0004,0.5\n")
    assert continued(cfg, tmp_path / "model.keras", best_epoch=2).learning_rate == 0.005
    assert continued(cfg, tmp_path / "model.keras", best_epoch=9).learning_rate == 0.0004
    assert continued(cfg, tmp_path / "model.keras", best_epoch=None).learning_rate == 0.0004


def test_compress_all_continues_the_control_at_the_parents_rate_unless_a_rate_is_given(tmp_path):
    from lunarseg.cli import build_parser
    from lunarseg.runtime.metadata import CONTROL_VARIANT
    from lunarseg.train.cli import compress_configs

    parse = build_parser().parse_args
    control = {c.variant: c for c in compress_configs(parse(["compress", str(tmp_path), "--all"]))}[CONTROL_VARIANT]
    assert control.continue_rate
    given = {c.variant: c for c in compress_configs(parse(["compress", str(tmp_path), "--all", "--lr", "2e-3"]))}
    assert (given[CONTROL_VARIANT].continue_rate, given[CONTROL_VARIANT].learning_rate) == (False, 2e-3)
    [single] = compress_configs(parse(["compress", str(tmp_path), "--sparsity", "0", "--continue-rate"]))
    assert single.continue_rate


def own_val_iou(variant_dir):
    """A variant's validation rock IoU at its own threshold, from its saved model (not the teacher's or parent's)."""
    from lunarseg.train.checkpoint import resolve_model
    from lunarseg.train.evaluate import score_arrays
    from lunarseg.train.tf_input import normalise

    path, meta = resolve_model(variant_dir)
    probs = load_variant(path).predict(normalise(VA.x, meta), verbose=0)
    return score_arrays(probs, VA.y, meta.task, meta.threshold)["iou"]


def test_negative_distillation_weight_is_refused():
    with pytest.raises(ConfigError, match="distillation weight must be >= 0"):
        CompressConfig(distill=-0.5).validate()


# ---- weight clustering (prune → cluster → PCQAT) ---------------------------------------------

def _int8_kernels(tflite_bytes):
    """{tensor name: int8 array} of the per-channel quantized 4-D int8 tensors: the convolution kernels."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=tflite_bytes)
    interp.allocate_tensors()
    out = {}
    for d in interp.get_tensor_details():
        if d["dtype"] == np.int8 and len(d["shape"]) == 4 and len(d["quantization_parameters"]["scales"]) > 1:
            out[d["name"]] = interp.get_tensor(d["index"])
    return out


@pytest.fixture(scope="module")
def clustered(run):
    return make(run, sparsity=0.5, clusters=4, cluster_epochs=1)


def test_clustering_after_pruning_leaves_at_most_n_values_per_channel_and_keeps_the_zeros(run, clustered):
    from lunarseg.train.cluster import max_distinct_per_channel

    cfg, summary = clustered
    assert cfg.variant == "pruned50-c4"
    assert summary["clustered_layers"] and summary["max_distinct_per_channel"] <= 4
    assert summary["sparsity"] == pytest.approx(0.5, abs=0.01)
    model = load_variant(run / "compressed" / cfg.variant)
    assert not [layer.name for layer in model.layers if "cluster" in type(layer).__name__.lower()]
    assert max_distinct_per_channel(model, summary["clustered_layers"]) <= 4
    assert max_distinct_per_channel(load_variant(run / "model.keras"), summary["clustered_layers"]) > 4  # the parent


def test_int8_export_of_a_clustered_variant_keeps_the_clusters_and_the_zeros(run, clustered, tmp_path):
    from lunarseg.export.exporter import export_model

    cfg, summary = clustered
    [record] = export_model(run / "compressed" / cfg.variant, "tflite-int8", calib=TR.x, calib_frames=len(TR.x),
                            val=VA, out_dir=tmp_path, max_iou_drop=1.0)
    assert record.status == "ok", record
    kernels = _int8_kernels(Path(record.file).read_bytes())
    clustered = [k for k in kernels.values() if (k == 0).mean() > 0.4]  # the pruned and clustered convolutions
    assert len(clustered) >= len(summary["clustered_layers"]) - 1, {n: float((k == 0).mean()) for n, k in kernels.items()}
    for k in clustered:  # TFLite conv kernels are [out, kh, kw, in]: one row per output channel
        per_channel = [len(np.unique(c[c != 0])) for c in k.reshape(k.shape[0], -1)]
        assert max(per_channel) <= 4, per_channel


def test_interrupted_clustering_resumes_inside_the_cluster_phase(run):
    cfg = CompressConfig(sparsity=0.5, epochs=1, clusters=4, cluster_epochs=2, batch_size=8, name="resume-cluster")
    with pytest.raises(KeyboardInterrupt):
        compress(run, cfg, train_arrays=TR, val_arrays=VA, verbose=0, callbacks=[StopAfterEpochs(2)])
    assert (_state(run, "resume-cluster")["phase"], _state(run, "resume-cluster")["epoch"]) == ("cluster", 1)
    summary = compress(run, cfg, train_arrays=TR, val_arrays=VA, verbose=0, resume=True)
    assert [(e["phase"], e["epoch"]) for e in summary["epochs_run"]] == [("prune", 1), ("cluster", 1), ("cluster", 2)]
    assert summary["max_distinct_per_channel"] <= 4 and summary["sparsity"] == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("bad,message", [
    (dict(clusters=1), r"clusters must be 0 \(off\) or in \[2, 256\], got 1"),
    (dict(clusters=300), r"clusters must be 0 \(off\) or in \[2, 256\], got 300"),
    (dict(clusters=8, cluster_epochs=0), r"clustering needs at least one fine-tuning epoch"),
    (dict(sparsity=0.5, clusters=8, qat=True), r"QAT after clustering is not offered: .* drop --qat"),
    (dict(lr_schedule="step"), r"unknown learning-rate schedule 'step'; valid: constant, cosine"),
])
def test_bad_clustering_options_are_refused_with_a_reason(bad, message):
    with pytest.raises(ConfigError, match=message):
        CompressConfig(**bad).validate()


def test_cluster_variant_names_say_what_was_done():
    assert CompressConfig(sparsity=0.5, clusters=16).variant == "pruned50-c16"
    assert CompressConfig(sparsity=0.0, width=0.5, clusters=8).variant == "slim50-c8"


def test_compress_all_keeps_each_variants_own_epochs_unless_epochs_is_given(tmp_path):
    from lunarseg.cli import build_parser
    from lunarseg.train.cli import compress_configs

    parse = build_parser().parse_args
    own = {c.variant: (c.epochs, c.learning_rate, c.lr_schedule)
           for c in compress_configs(parse(["compress", str(tmp_path), "--all"]))}
    assert own["slim50"] == (16, 3e-3, "cosine") and own["pruned75"] == (12, 3e-3, "cosine"), own
    assert own["pruned50"] == (4, 1e-3, "constant"), own
    assert own["slim40"] == (16, 1e-2, "cosine"), own
    forced = {c.variant: c.epochs for c in compress_configs(parse(["compress", str(tmp_path), "--all", "--epochs", "2"]))}
    assert set(forced.values()) == {2}, forced
    [single] = compress_configs(parse(["compress", str(tmp_path), "--sparsity", "0.5", "--clusters", "16"]))
    assert (single.variant, single.epochs, single.clusters, single.cluster_epochs) == ("pruned50-c16", 4, 16, 2)


def test_a_variant_chooses_its_threshold_by_its_parents_rule(run, monkeypatch):
    from lunarseg.train import compress as compress_module, evaluate
    from lunarseg.train.checkpoint import load_model, resolve_model

    path, meta = resolve_model(run)
    rules = []
    monkeypatch.setitem(evaluate.THRESHOLD_RULES, "rocks-f2", lambda *a: rules.append("rocks-f2") or 0.45)
    monkeypatch.setitem(evaluate.THRESHOLD_RULES, "iou", lambda *a: rules.append("iou") or 0.55)
    f2_parent = dataclasses.replace(meta, train_config={**meta.train_config, "threshold_rule": "rocks-f2"})
    model = load_model(path)
    assert compress_module._val_scores(model, VA, f2_parent)[0] == 0.45
    old_run = dataclasses.replace(meta, train_config={k: v for k, v in meta.train_config.items() if k != "threshold_rule"})
    assert compress_module._val_scores(model, VA, old_run)[0] == 0.55  # a run from before the rule: iou
    assert rules == ["rocks-f2", "iou"]


def test_report_gives_val_drops_an_interval_and_the_convergence_note_the_gains():
    from lunarseg.runtime.metadata import CONTROL_VARIANT
    from lunarseg.train.compress import convergence_note

    rows = [{"variant": "(trained)", "iou_drop": 0.0},
            {"variant": CONTROL_VARIANT, "iou_drop": -0.0115, "iou_drop_ci": [-0.02, -0.003]}]
    note = convergence_note(rows)
    assert note.startswith(f"dense control {CONTROL_VARIANT} gains +0.0115 [+0.0030, +0.0200] val IoU")
    assert "NOT converged" in note and "paired bootstrap over the validation frames" in note


def test_variants_record_their_val_frame_counts_and_the_report_shows_each_drops_interval(run, pqat):
    rows = report_rows(run)
    variant = next(r for r in rows if r["variant"] == "pruned50-pqat")
    lo, hi = variant["iou_drop_ci"]
    assert lo <= hi and len(variant["frame_rock_counts"]) == len(VA.x) == len(rows[0]["frame_rock_counts"])
    assert f"| {variant['iou_drop']:+.4f} [{lo:+.4f}, {hi:+.4f}] |" in format_report(rows)


# ---- a variant that begins with a finished variant's phases starts from its model ------------------

@pytest.mark.parametrize("cfg,other,expected", [
    (CompressConfig(sparsity=0.5, clusters=8), CompressConfig(sparsity=0.5), True),
    (CompressConfig(sparsity=0.5, qat=True, preserve_sparsity=True), CompressConfig(sparsity=0.5), True),
    (CompressConfig(width=0.4, sparsity=0.0, clusters=8), CompressConfig(width=0.4, sparsity=0.0, name="slim40"), True),
    (CompressConfig(sparsity=0.5, clusters=8, epochs=3), CompressConfig(sparsity=0.5), False),  # other epochs
    (CompressConfig(sparsity=0.5, clusters=8, learning_rate=3e-3), CompressConfig(sparsity=0.5), False),
    (CompressConfig(sparsity=0.5), CompressConfig(sparsity=0.5, clusters=8), False),  # the longer one first
    (CompressConfig(sparsity=0.5, name="b"), CompressConfig(sparsity=0.5, name="a"), False),  # the same phases
    (CompressConfig(sparsity=0.0, qat=True), CompressConfig(sparsity=0.0, name="dense-ft"), False),  # finetune is no prefix of qat
])
def test_a_variant_continues_another_only_when_it_begins_with_its_phases_at_the_same_settings(cfg, other, expected):
    from lunarseg.train.compress import continues_from

    assert continues_from(cfg, other) is expected


@pytest.fixture(scope="module")
def pruned_source(run):
    """A finished 50 % pruned variant (2 epochs) for the continuations below to start from."""
    return make(run, sparsity=0.5, name="p-source")[1]


@pytest.fixture
def no_pruning(monkeypatch):
    """A prune phase that fails when it runs: a variant that took pruning over from a finished one passes."""
    from lunarseg.train import compress as compress_module

    def boom(s):
        raise AssertionError("the prune phase ran again")

    monkeypatch.setitem(compress_module.PHASES, "prune",
                        dataclasses.replace(compress_module.PHASES["prune"], run=boom))


def test_clustering_starts_from_the_finished_pruned_variant_instead_of_pruning_again(run, pruned_source, no_pruning):
    cfg = CompressConfig(sparsity=0.5, epochs=2, qat_epochs=1, batch_size=8, clusters=4, cluster_epochs=1, name="c4-after")
    summary = compress(run, cfg, train_arrays=TR, val_arrays=VA, verbose=0)
    source = json.loads((run / "compressed" / summary["continued_from"] / "meta.json").read_text())["extra"]["compress"]
    assert (source["config"]["sparsity"], source["config"]["epochs"], source["config"]["clusters"]) == (0.5, 2, 0)
    assert [(e["phase"], e["epoch"]) for e in summary["epochs_run"]] == [("prune", 1), ("prune", 2), ("cluster", 1)]
    assert summary["max_distinct_per_channel"] <= 4 and summary["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert f"c4-after started from the finished {summary['continued_from']}" in format_report(report_rows(run))


def test_without_reuse_or_on_other_data_a_variant_runs_every_phase_itself(run, pruned_source, no_pruning):
    cfg = CompressConfig(sparsity=0.5, epochs=2, qat_epochs=1, batch_size=8, clusters=4, cluster_epochs=1, name="c4-own")
    with pytest.raises(AssertionError, match="the prune phase ran again"):
        compress(run, cfg, train_arrays=TR, val_arrays=VA, verbose=0, reuse=False)
    with pytest.raises(AssertionError, match="the prune phase ran again"):
        compress(run, cfg, train_arrays=TR, val_arrays=blobs(8, seed=2), verbose=0, force=True)


def test_a_continued_variant_interrupted_in_its_own_phase_resumes_with_the_epochs_it_took_over(run, pruned_source):
    cfg = CompressConfig(sparsity=0.5, epochs=2, batch_size=8, clusters=4, cluster_epochs=2, name="c4-resume")
    with pytest.raises(KeyboardInterrupt):
        compress(run, cfg, train_arrays=TR, val_arrays=VA, verbose=0, callbacks=[StopAfterEpochs(1)])
    assert (_state(run, "c4-resume")["phase"], _state(run, "c4-resume")["epoch"]) == ("cluster", 1)
    summary = compress(run, cfg, train_arrays=TR, val_arrays=VA, verbose=0, resume=True)
    assert summary["continued_from"]
    assert [(e["phase"], e["epoch"]) for e in summary["epochs_run"]] == [("prune", 1), ("prune", 2), ("cluster", 1), ("cluster", 2)]


def test_the_budget_demo_plans_its_clustered_variant_as_a_continuation_of_pruned50():
    from lunarseg.demo import BUDGET, _continued_variant, demo_variants

    variants = demo_variants(BUDGET)
    assert {v.variant: _continued_variant(v, variants, BUDGET) for v in variants} == {
        "pruned50": "", "pruned50-c8": "pruned50", "dense-ft": ""}


def test_pruning_preserving_qat_starts_from_the_finished_pruned_variant_and_keeps_its_zeros(run, pruned_source, no_pruning):
    cfg, summary = make(run, reuse=True, sparsity=0.5, qat=True, preserve_sparsity=True, name="pqat-after")
    assert summary["continued_from"] and [e["phase"] for e in summary["epochs_run"]] == ["prune", "prune", "qat"]
    assert summary["sparsity"] >= 0.99 * summary["sparsity_before_qat"] > 0.45


def test_a_resume_on_other_frames_or_without_reuse_is_refused(run, pruned_source):
    cfg = CompressConfig(sparsity=0.5, epochs=2, batch_size=8, clusters=4, cluster_epochs=2, name="c4-refused")
    with pytest.raises(KeyboardInterrupt):
        compress(run, cfg, train_arrays=TR, val_arrays=VA, verbose=0, callbacks=[StopAfterEpochs(1)])
    with pytest.raises(ConfigError, match=r"--resume with other fine-tuning frames .* use the original --data or --force"):
        compress(run, cfg, train_arrays=TR, val_arrays=blobs(8, seed=2), verbose=0, resume=True)
    with pytest.raises(ConfigError, match=r"--resume --no-reuse: this fine-tune started from the finished "):
        compress(run, cfg, train_arrays=TR, val_arrays=VA, verbose=0, resume=True, reuse=False)


def test_a_finished_variant_of_another_phases_version_is_not_taken_over(run, pruned_source, no_pruning, monkeypatch):
    from lunarseg.train import compress as compress_module

    monkeypatch.setattr(compress_module, "PHASES_VERSION", compress_module.PHASES_VERSION + 1)
    cfg = CompressConfig(sparsity=0.5, epochs=2, batch_size=8, clusters=4, cluster_epochs=1, name="c4-newer")
    with pytest.raises(AssertionError, match="the prune phase ran again"):
        compress(run, cfg, train_arrays=TR, val_arrays=VA, verbose=0)


def test_a_resumed_demo_keeps_a_continuation_at_the_epochs_its_finished_source_ran(tmp_path):
    import types

    from lunarseg.demo import BUDGET, _pinned_to_finished_sources, demo_variants

    (tmp_path / "compressed/pruned50").mkdir(parents=True)
    (tmp_path / "compressed/pruned50/meta.json").write_text(json.dumps({"extra": {"compress": {"config": {"epochs": 3}}}}))
    d = types.SimpleNamespace(variants=demo_variants(BUDGET), cfg=BUDGET, run=tmp_path)
    planned = {"pruned50-c8": (4, 2), "dense-ft": (6, 0)}  # planned without pruned50, which is made
    assert _pinned_to_finished_sources(d, {"pruned50"}, planned) == {"pruned50-c8": (3, 2), "dense-ft": (6, 0)}
    assert _pinned_to_finished_sources(d, set(), planned) == planned
