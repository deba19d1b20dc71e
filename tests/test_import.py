"""`lunarseg import`: models trained elsewhere (tf_keras .h5/.keras, Keras 3 .keras, SavedModel) become
runs the other commands accept; what the model says is inferred, what it contradicts is refused in
one line; Keras 3 graphs are rebuilt in tf_keras with equal outputs; compression refuses by layer name
what does not apply to a foreign graph; the metadata's normalisation reaches the exported artifact."""
import json
from pathlib import Path

import numpy as np
import pytest

import lunarseg.train  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tf_keras as keras

from lunarseg.cli import main
from lunarseg.runtime import imageio, preprocess
from lunarseg.runtime.errors import ConfigError
from lunarseg.runtime.metadata import read_keras_meta
from lunarseg.train import checkpoint
from lunarseg.train.compress import CompressConfig, applicable, compress, format_report, report_rows
from lunarseg.train.importer import ImportOptions, import_model
from test_train import blobs

SIZE = 64
L = keras.layers


def notebook_unet(channels=3, head=(1, "sigmoid"), size=SIZE, name="notebook_unet"):
    """The typical notebook U-Net: Conv2D blocks, MaxPooling, a Conv2DTranspose decoder, skip concat."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((size, size, channels), name="img")
    c1 = L.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    c2 = L.Conv2D(8, 3, padding="same", activation="relu", name="c2")(L.MaxPooling2D(name="p1")(c1))
    up = L.Conv2DTranspose(4, 2, strides=2, padding="same", name="up1")(c2)
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="d1")(L.Concatenate(name="cat1")([up, c1]))
    return keras.Model(inp, L.Conv2D(head[0], 1, activation=head[1], name="head")(x), name=name)


def keras3_unet(path: Path, extra_layer=None):
    """A Keras 3 U-Net of the layers a converter must know (separable conv, BN, ReLU, Add, padding)."""
    import keras as k3

    k3.utils.set_random_seed(0)
    K = k3.layers
    inp = k3.Input((SIZE, SIZE, 3), name="img")
    c1 = K.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    x = K.SeparableConv2D(8, 3, padding="same", name="sep")(K.MaxPooling2D(name="p1")(c1))
    x = K.ReLU(name="r1")(K.BatchNormalization(name="bn1")(x))
    x = K.Cropping2D(1, name="crop")(K.ZeroPadding2D(1, name="pad")(x))
    x = K.Conv2DTranspose(4, 2, strides=2, padding="same", name="up1")(x)
    x = K.Add(name="add")([x, K.Conv2D(4, 1, name="skip1x1")(c1)])
    x = K.Concatenate(name="cat")([K.UpSampling2D(name="up2")(K.AveragePooling2D(2, name="p2")(x)), c1])
    if extra_layer is not None:
        x = extra_layer(x)
    model = k3.Model(inp, K.Conv2D(1, 1, activation="sigmoid", name="head")(x))
    # a trained model's batch norm statistics are not 0 / 1: check they are copied too
    bn = model.get_layer("bn1")
    bn.set_weights([np.linspace(0.5, 1.5, 8, dtype=np.float32), np.linspace(-0.1, 0.1, 8, dtype=np.float32),
                    np.linspace(-0.2, 0.2, 8, dtype=np.float32), np.linspace(0.5, 2.0, 8, dtype=np.float32)])
    model.save(path)
    return model


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """The foreign model files, built once: {name: path}."""
    root = tmp_path_factory.mktemp("zoo")
    nb = notebook_unet()
    files = {"h5": root / "nb.h5", "keras": root / "nb.keras", "savedmodel": root / "nb_savedmodel"}
    nb.save(files["h5"])
    nb.save(files["keras"])
    nb.save(files["savedmodel"], save_format="tf")
    keras3_unet(root / "k3.keras")
    files["keras3"] = root / "k3.keras"
    notebook_unet(channels=1, head=(4, "softmax"), name="kaggle4").save(root / "cls4.h5")
    files["cls4"] = root / "cls4.h5"
    notebook_unet(head=(1, None), name="logits").save(root / "logits.h5")
    files["logits"] = root / "logits.h5"
    free = notebook_unet(size=None, name="free")
    free.save(root / "free.keras")
    files["free"] = root / "free.keras"
    return files


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    """A tiny synthetic dataset root at the models' size (train/val/test splits)."""
    root = tmp_path_factory.mktemp("synth") / "data"
    assert main(["data", "synth", "--out", str(root), "--count", "16", "--size", f"{SIZE}x{SIZE}"]) == 0
    return root


def _probs(model, x):
    return model(x, training=False).numpy()


def _frames(channels=3, n=2):
    return np.random.default_rng(1).random((n, SIZE, SIZE, channels), dtype=np.float32)


@pytest.mark.parametrize("kind", ["h5", "keras", "savedmodel"])
def test_notebook_unet_imports_as_a_binary_rgb_run_with_the_same_outputs(zoo, tmp_path, kind):
    s = import_model(zoo[kind], tmp_path / "run", ImportOptions())
    meta = read_keras_meta(tmp_path / "run" / "model.keras")
    assert (meta.task, meta.class_names, meta.colour_mode, meta.output_activation) == (
        "binary", ["background", "rock"], "rgb", "sigmoid")
    assert meta.input_shape == [1, SIZE, SIZE, 3] and meta.val_metrics["iou"] is None
    assert meta.normalisation == {"scale": 1 / 255, "offset": 0.0} and s["source"]["format"] == kind
    original = keras.models.load_model(zoo[kind], compile=False)
    diff = np.abs(_probs(checkpoint.load_model(tmp_path / "run"), _frames()) - _probs(original, _frames())).max()
    assert diff <= 1e-6


def test_keras3_model_is_rebuilt_in_tf_keras_with_outputs_equal_within_1e5(zoo, tmp_path):
    import keras as k3

    import_model(zoo["keras3"], tmp_path / "run", ImportOptions())
    meta = read_keras_meta(tmp_path / "run" / "model.keras")
    imported = meta.extra["imported"]
    assert imported["keras_major"] == 3 and imported["keras3_max_abs_diff"] <= 1e-5
    rebuilt = checkpoint.load_model(tmp_path / "run")
    assert isinstance(rebuilt, keras.Model) and "up1" in [layer.name for layer in rebuilt.layers]
    original = k3.saving.load_model(zoo["keras3"], compile=False)
    x = _frames()
    assert np.abs(np.asarray(original(x, training=False)) - _probs(rebuilt, x)).max() <= 1e-5


def test_keras3_layer_without_a_converter_is_refused_by_name(tmp_path):
    import keras as k3

    keras3_unet(tmp_path / "odd.keras", extra_layer=k3.layers.LayerNormalization(name="odd_norm"))
    with pytest.raises(ConfigError, match=r"Keras 3 layer 'odd_norm' \(LayerNormalization\) cannot be converted"):
        import_model(tmp_path / "odd.keras", tmp_path / "run", ImportOptions())


def test_four_class_softmax_model_takes_the_kaggle_class_order(zoo, tmp_path):
    import_model(zoo["cls4"], tmp_path / "run", ImportOptions())
    meta = read_keras_meta(tmp_path / "run" / "model.keras")
    assert meta.task == "4class" and meta.colour_mode == "gray"
    assert meta.class_names == ["background", "sky", "small_rock", "large_rock"]
    assert preprocess.rock_classes(meta) == (2, 3)


def test_evaluate_reports_per_class_figures_under_the_class_names_given_at_import(zoo, synth, tmp_path):
    from lunarseg.train.evaluate import evaluate

    import_model(zoo["cls4"], tmp_path / "run", ImportOptions(classes=["background", "sky", "small_rock", "big_rock"]))
    report = evaluate(tmp_path / "run", synth, split="test")
    assert list(report["per_class_iou"]) == ["background", "sky", "small_rock", "big_rock"]


def _one_line_error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("model,flags,message", [
    ("h5", ["--colour", "gray"], "--colour gray does not match the model's 3-channel input (rgb)"),
    ("h5", ["--task", "4class"], "--task 4class needs 4 softmax output channel(s); the model has 1 sigmoid"),
    ("h5", ["--classes", "bg,rock,sky"], "--classes gives 3 names; the binary model has 2 classes"),
    ("h5", ["--mean", "0.5"], "--std is needed with --mean"),
    ("h5", ["--mean", "0.5", "--std", "0.2", "--scale", "1"], "give either --scale/--offset or --mean/--std"),
    ("h5", ["--std", "0"], "--mean is needed with --std"),
    ("h5", ["--threshold", "1.5"], "--threshold must be in (0, 1)"),
    ("h5", ["--size", "32x32"], "--size 32x32 does not match the model's input 64x64"),
    ("cls4", ["--classes", "bg,pebble,sky,boulder"], "the rock classes must be class(es) [2, 3]"),
    ("cls4", ["--classes", "background,sky,pebble,boulder", "--rock-classes", "pebble,boulder"],
     "--rock-classes pebble,boulder: with these class names the rock class(es) are"),
    ("cls4", ["--rock-classes", "boulder"], "--rock-classes names boulder, not among --classes"),
    ("cls4", ["--threshold", "0.3"], "--threshold applies to a sigmoid head; this model's softmax head"),
    ("logits", [], "model output layer 'head' (Conv2D) is linear (logits)"),
    ("free", [], "takes any input size; give the size to run it at with --size WIDTHxHEIGHT"),
    ("free", ["--size", "31x31"], "--size 31x31: the model cannot be built at this size"),
    ("h5", ["--mean", "nan", "--std", "0.25"], "--mean must be finite and --std finite and > 0, got nan and 0.25"),
])
def test_what_the_model_contradicts_or_cannot_say_is_a_one_line_error_naming_the_flag(zoo, tmp_path, capsys, model,
                                                                                     flags, message):
    line = _one_line_error(capsys, ["import", str(zoo[model]), "--out", str(tmp_path / "run"), *flags])
    assert line.startswith("lunarseg import: error: ") and message in line
    assert not (tmp_path / "run" / "model.keras").exists()


def test_keras3_models_with_two_inputs_or_an_ops_function_are_refused_in_one_line(tmp_path, capsys):
    import keras as k3

    a, b = k3.Input((SIZE, SIZE, 3), name="a"), k3.Input((SIZE, SIZE, 3), name="b")
    head = k3.layers.Conv2D(1, 1, activation="sigmoid", name="head")
    k3.Model([a, b], head(k3.layers.Add(name="add")([a, b]))).save(tmp_path / "two.keras")
    x = k3.Input((SIZE, SIZE, 3), name="img")
    k3.Model(x, head(k3.ops.relu(x))).save(tmp_path / "ops.keras")
    two = _one_line_error(capsys, ["import", str(tmp_path / "two.keras"), "--out", str(tmp_path / "r1")])
    assert "has 2 inputs and 1 outputs; lunarseg imports one image in, one mask out" in two
    ops = _one_line_error(capsys, ["import", str(tmp_path / "ops.keras"), "--out", str(tmp_path / "r2")])
    assert "(Relu) cannot be converted to tf_keras; convertible:" in ops


def test_a_lambda_layer_is_refused_before_anything_is_written(tmp_path, capsys):
    inp = keras.Input((SIZE, SIZE, 3))
    keras.Model(inp, L.Conv2D(1, 1, activation="sigmoid")(L.Lambda(lambda t: t * 2.0, name="double")(inp))
                ).save(tmp_path / "lam.h5")
    line = _one_line_error(capsys, ["import", str(tmp_path / "lam.h5"), "--out", str(tmp_path / "run")])
    assert f"{tmp_path / 'lam.h5'}: layer 'double' is a Lambda layer" in line
    assert not (tmp_path / "run").exists()


def test_a_model_with_one_free_side_takes_a_size_that_matches_the_other(tmp_path):
    inp = keras.Input((None, SIZE, 3))
    keras.Model(inp, L.Conv2D(1, 1, activation="sigmoid")(inp)).save(tmp_path / "half.h5")
    import_model(tmp_path / "half.h5", tmp_path / "run", ImportOptions(size=(SIZE, 48)))
    assert read_keras_meta(tmp_path / "run" / "model.keras").input_shape == [1, 48, SIZE, 3]
    with pytest.raises(ConfigError, match=f"--size 32x48 does not match the model's input {SIZE}xNone"):
        import_model(tmp_path / "half.h5", tmp_path / "run2", ImportOptions(size=(32, 48)))


def test_free_size_model_is_fixed_at_the_given_size(zoo, tmp_path):
    import_model(zoo["free"], tmp_path / "run", ImportOptions(size=(32, 48)))
    assert read_keras_meta(tmp_path / "run" / "model.keras").input_shape == [1, 48, 32, 3]
    assert checkpoint.load_model(tmp_path / "run").input_shape == (None, 48, 32, 3)


def test_unimportable_files_are_refused_in_one_line(zoo, tmp_path, capsys):
    (tmp_path / "model.onnx").write_bytes(b"x")
    assert "cannot import a '.onnx' file" in _one_line_error(capsys, ["import", str(tmp_path / "model.onnx"), "--out", str(tmp_path / "a")])
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    assert "not a readable Keras keras file" in _one_line_error(capsys, ["import", str(tmp_path / "junk.keras"), "--out", str(tmp_path / "b")])
    import_model(zoo["h5"], tmp_path / "run", ImportOptions())
    assert "already holds a model" in _one_line_error(capsys, ["import", str(zoo["h5"]), "--out", str(tmp_path / "run")])


def test_mean_std_is_recorded_as_scale_and_offset_on_the_0_to_1_scale(zoo, tmp_path):
    import_model(zoo["h5"], tmp_path / "run", ImportOptions(mean=0.4, std=0.25))
    meta = read_keras_meta(tmp_path / "run" / "model.keras")
    pixels = np.array([[0, 102, 255]], np.uint8)
    assert np.allclose(preprocess.normalise(pixels, meta)[..., 0], (pixels / 255 - 0.4) / 0.25, atol=1e-6)
    assert meta.extra["imported"]["normalisation_given"]["mean"] == 0.4


# ---- compression of a foreign graph -----------------------------------------------------------

@pytest.fixture(scope="session")
def imported_run(zoo, tmp_path_factory):
    run = tmp_path_factory.mktemp("imported") / "run"
    import_model(zoo["h5"], run, ImportOptions())
    return run


def rgb_blobs(n, seed):
    b = blobs(n, seed=seed, size=SIZE)
    b.x = np.repeat(b.x, 3, axis=-1)
    return b


def test_compress_all_on_an_imported_run_skips_what_does_not_apply_and_says_why(imported_run):
    from lunarseg.train.compress import DEFAULT_VARIANTS

    keep, skipped = applicable(imported_run, list(DEFAULT_VARIANTS))
    reasons = dict(skipped)
    assert set(reasons) == {"pruned50-pqat", "slim50", "slim40"}
    assert "pruning-preserving QAT cannot quantize layer 'up1' (Conv2DTranspose)" in reasons["pruned50-pqat"]
    assert "post-training int8" in reasons["pruned50-pqat"]
    assert "channel slimming rebuilds lunarseg's own U-Net" in reasons["slim50"] and "was imported" in reasons["slim50"]
    assert {c.variant for c in keep} == {"pruned50", "pruned75", "qat", "pruned50-c8", "dense-ft"}


def test_pqat_on_a_conv2d_transpose_graph_is_refused_before_any_fine_tuning(imported_run):
    cfg = CompressConfig(sparsity=0.5, qat=True, preserve_sparsity=True, epochs=1, batch_size=8)
    with pytest.raises(ConfigError, match=r"pruned50-pqat: pruning-preserving QAT cannot quantize layer 'up1'"):
        compress(imported_run, cfg, train_arrays=rgb_blobs(8, 0), val_arrays=rgb_blobs(4, 1), verbose=0)
    assert not (imported_run / "compressed" / "pruned50-pqat" / "model.keras").exists()


def test_pruning_an_imported_run_works_and_the_report_copes_with_an_unknown_val_iou(imported_run):
    cfg = CompressConfig(sparsity=0.5, epochs=1, batch_size=8)
    s = compress(imported_run, cfg, train_arrays=rgb_blobs(8, 0), val_arrays=rgb_blobs(4, 1), verbose=0)
    assert s["sparsity"] > 0.2 and s["filters"] is None
    vmeta = json.loads((imported_run / "compressed" / "pruned50" / "meta.json").read_text())
    assert vmeta["train_config"] == {} and vmeta["normalisation"] == {"scale": 1 / 255, "offset": 0.0}
    rows = report_rows(imported_run)
    assert rows[0]["val_iou"] == pytest.approx(s["val_iou_before"])  # measured by the fine-tune
    assert "| pruned50 |" in format_report(rows)


# ---- import → evaluate → export → segment, with mean/std normalisation -------------------------

def test_imported_mean_std_model_evaluates_exports_and_segments_like_keras(zoo, synth, tmp_path, capsys):
    from lunarseg.runtime.segmenter import Segmenter

    run = tmp_path / "run"
    assert main(["import", str(zoo["h5"]), "--out", str(run), "--mean", "0.45", "--std", "0.2"]) == 0
    assert main(["evaluate", str(run), "--data", str(synth), "--out", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval" / "eval_test_grid.png").exists()
    assert main(["export", str(run), "--formats", "onnx-fp32,onnx-int8", "--data", str(synth),
                 "--calib-frames", "8", "--max-iou-drop", "1"]) == 0
    capsys.readouterr()
    rows = {r["format"]: r for r in json.loads((run / "export" / "manifest.json").read_text())["artifacts"]}
    from lunarseg.train.evaluate import evaluate

    # Parity and calibration fed Keras the metadata's mean/std inputs: its IoU there is evaluate's on val.
    parity = rows["onnx-fp32"]["parity"]
    assert parity["keras_iou"] == pytest.approx(evaluate(run, synth, split="val", max_frames=parity["frames"])["iou"], abs=1e-6)
    frame = imageio.read_image(sorted((synth / "images" / "render").glob("*.png"))[0])
    pixels = imageio.to_model_pixels(frame, (SIZE, SIZE), "rgb").astype(np.float32)
    by_hand = ((pixels / 255.0 - 0.45) / 0.2)[None]  # the user's own pre-processing
    keras_probs = _probs(checkpoint.load_model(run), by_hand)
    seg = Segmenter.from_file(run / "export" / "onnx-fp32.onnx")
    assert seg.meta.normalisation == read_keras_meta(run / "model.keras").normalisation
    runtime_probs = seg.predict(preprocess.prepare(frame, seg.meta)[None])
    assert np.abs(runtime_probs - keras_probs).max() <= 1e-4
    assert main(["segment", str(run / "export" / "onnx-int8.onnx"), str(sorted((synth / "images" / "render").glob("*.png"))[0]),
                 "--out", str(tmp_path / "seg")]) == 0


# ---- each foreign form: import → evaluate → prune → export every format → runtime equals the original ----

CHAIN = {  # name: (zoo file, import flags, how the user pre-processes a uint8 frame H×W×C for the original model)
    "notebook-h5": ("h5", [], lambda p: p / 255.0),
    "kaggle-4class": ("cls4", [], lambda p: p / 255.0),
    "keras3": ("keras3", [], lambda p: p / 255.0),
    "mean-std": ("h5", ["--mean", "0.45", "--std", "0.2"], lambda p: (p / 255.0 - 0.45) / 0.2),
}


def _original_probs(name, path, x):
    if name == "keras3":
        import keras as k3

        return np.asarray(k3.models.load_model(path)(x, training=False))
    return _probs(keras.models.load_model(path), x)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CHAIN))
def test_every_foreign_form_goes_through_the_whole_chain_and_the_runtime_equals_the_original(name, zoo, synth, tmp_path):
    from lunarseg.export.exporter import export_model
    from lunarseg.export.formats import FORMATS
    from lunarseg.runtime.segmenter import Segmenter
    from lunarseg.train.evaluate import evaluate

    key, flags, by_hand = CHAIN[name]
    run = tmp_path / "run"
    assert main(["import", str(zoo[key]), "--out", str(run), *flags]) == 0
    assert 0.0 <= evaluate(run, synth, split="test")["iou"] <= 1.0
    pruned = compress(run, CompressConfig(sparsity=0.5, epochs=1, batch_size=8), data_dir=synth, verbose=0)
    assert pruned["sparsity"] > 0.2
    records = export_model(run, "all", data_dir=synth, calib_frames=8, max_iou_drop=1.0)
    records += export_model(run / "compressed" / "pruned50", "onnx-int8,tflite-int8", data_dir=synth, calib_frames=8,
                            max_iou_drop=1.0)
    assert {r.format for r in records[:-2]} == set(FORMATS) and all(r.ok for r in records), [r.error for r in records]
    meta = read_keras_meta(run / "model.keras")
    frame = imageio.read_image(sorted((synth / "images" / "render").glob("*.png"))[0])
    pixels = imageio.to_model_pixels(frame, (SIZE, SIZE), meta.colour_mode).astype(np.float32)
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    original = _original_probs(name, zoo[key], by_hand(pixels)[None].astype(np.float32))
    for r in records:
        seg = Segmenter.from_file(r.file)
        got = seg.predict(preprocess.prepare(frame, seg.meta)[None])
        assert got.shape == original.shape and np.isfinite(got).all()
        if r.variant == "base" and r.format in ("onnx-fp32", "tflite-fp32"):
            assert np.abs(got - original).max() <= 1e-4, r.format
