"""`export --sizes`: the fully convolutional model re-instantiated at each input size (same weights),
its size in the file's metadata, the file name and the manifest, parity and calibration at each size,
and one-line errors for sizes the flag refuses (tiny 32 px depth-2 model from test_export)."""
import json
import shutil
import warnings

import numpy as np
import pytest

import lunarseg.export  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from lunarseg.export import export_model, export_run
from lunarseg.export import sizes as sizes_mod
from lunarseg.export.frames import calibration_frames, resized_frames
from lunarseg.runtime.errors import ConfigError
from lunarseg.runtime.metadata import ModelMeta
from lunarseg.runtime.segmenter import Segmenter

from test_export import CALIB, LOOSE, VAL, _meta_from_file, run_dir  # noqa: F401  (run_dir: the fixture)


def _copy(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("export", "logs", "checkpoints"))
    return run


def _meta(run):
    return ModelMeta.from_json((run / "meta.json").read_text())


@pytest.fixture(scope="module")
def sized_export(run_dir, tmp_path_factory):  # noqa: F811
    run = _copy(run_dir, tmp_path_factory.mktemp("sizes"))
    records = export_model(run, "onnx-fp32,tflite-int8", sizes="64x48,32x32", calib=CALIB,
                           calib_frames=len(CALIB), val=VAL, max_iou_drop=LOOSE)
    return run, records


def test_each_size_is_exported_and_passes_parity_at_that_size(sized_export):
    run, records = sized_export
    assert [(r.format, r.input_size, r.ok) for r in records] == [
        ("tflite-int8", "64x48", True), ("onnx-fp32", "64x48", True),
        ("tflite-int8", "32x32", True), ("onnx-fp32", "32x32", True)], [r.error for r in records]
    for r in records:
        h, w = (48, 64) if r.input_size == "64x48" else (32, 32)
        assert r.parity["frames"] == len(VAL.x) and r.parity["labels"] == "truth"
        assert r.parity["mask_iou"] > 0.9 or r.format == "tflite-int8"
        assert r.parity["max_abs_diff"] < 1e-4 or r.format == "tflite-int8"
        assert Segmenter.from_file(r.file).predict(np.zeros((1, h, w, 1), np.float32)).shape == (1, h, w, 1)


def test_the_files_metadata_records_its_input_size_and_the_models_own(sized_export):
    run, records = sized_export
    for r in records:
        meta = _meta_from_file(r.file)
        assert f"{meta.width}x{meta.height}" == r.input_size
    other = _meta_from_file(records[0].file)
    assert other.extra["model_input_size"] == "32x32" and other.train_config["width"] == 32


def test_other_sizes_carry_the_size_in_the_file_name_and_the_models_own_size_keeps_its_name(sized_export):
    run, records = sized_export
    assert [r.path for r in records] == ["export/tflite-int8-64x48.tflite", "export/onnx-fp32-64x48.onnx",
                                         "export/tflite-int8.tflite", "export/onnx-fp32.onnx"]


def test_the_manifest_lists_each_format_and_size_and_a_reexport_replaces_only_its_own_rows(sized_export):
    run, _ = sized_export
    manifest = run / "export/manifest.json"
    rows = [(e["format"], e["input_size"]) for e in json.loads(manifest.read_text())["artifacts"]]
    assert rows == [("tflite-int8", "32x32"), ("tflite-int8", "64x48"), ("onnx-fp32", "32x32"), ("onnx-fp32", "64x48")]
    export_model(run, "onnx-fp32", sizes="64x48", val=VAL)
    again = [(e["format"], e["input_size"]) for e in json.loads(manifest.read_text())["artifacts"]]
    assert again == rows


def test_a_manifest_row_written_before_sizes_is_replaced_by_the_same_file(run_dir, tmp_path):  # noqa: F811
    run = _copy(run_dir, tmp_path)
    old = {"variant": "base", "format": "onnx-fp32", "path": "export/onnx-fp32.onnx", "status": "failed"}
    (run / "export").mkdir()
    (run / "export/manifest.json").write_text(json.dumps({"schema_version": 1, "artifacts": [old]}))
    export_model(run, "onnx-fp32", val=VAL)
    entries = json.loads((run / "export/manifest.json").read_text())["artifacts"]
    assert [(e["path"], e["status"], e["input_size"]) for e in entries] == [("export/onnx-fp32.onnx", "ok", "32x32")]


def test_the_rebuilt_model_has_the_same_weights_by_either_route(run_dir):  # noqa: F811
    from lunarseg.train.checkpoint import load_model

    from lunarseg.train.config import TrainConfig
    from lunarseg.train.model import build_unet

    model, meta = load_model(run_dir / "model.keras"), _meta(run_dir)
    x = np.random.default_rng(0).random((1, 64, 48, 1), np.float32)
    reference = build_unet(TrainConfig.from_dict(meta.train_config), any_size=True)  # the U-Net built afresh
    reference.set_weights(model.get_weights())
    for route_meta in (meta, meta.replace(train_config={})):  # training config, then the model's own config
        sized = sizes_mod.model_at_size(model, route_meta, 48, 64)
        assert sized.input_shape == (None, 64, 48, 1) and sized.output_shape == (None, 64, 48, 1)
        assert len(sized.get_weights()) == len(model.get_weights())
        assert all(np.array_equal(a, b) for a, b in zip(sized.get_weights(), model.get_weights()))
        np.testing.assert_allclose(sized.predict(x, verbose=0), reference.predict(x, verbose=0), atol=1e-6)


def test_a_model_that_is_not_fully_convolutional_is_refused_in_one_line():
    import tf_keras as keras

    inp = keras.Input((32, 32, 1), name="image")
    out = keras.layers.Reshape((32, 32, 1))(keras.layers.Dense(32 * 32)(keras.layers.Flatten()(inp)))
    model = keras.Model(inp, out, name="dense_head")
    meta = ModelMeta(input_shape=[1, 32, 32, 1], train_config={})
    with pytest.raises(ConfigError, match=r"^--sizes 64x32: dense_head cannot be re-instantiated at this size"):
        sizes_mod.model_at_size(model, meta, 64, 32)


@pytest.mark.parametrize("text, rule", [
    ("0x5", r"--sizes '0x5': width and height must be at least 16 pixels"),
    ("abc", r"--sizes 'abc': expected WIDTHxHEIGHT"),
    ("64x48,", r"--sizes '64x48,': an empty entry"),
    ("50x32", r"--sizes '50x32': input size 50x32 does not fit a depth-2 U-Net: sides must be multiples of 4"),
    ("4096x4096", r"--sizes '4096x4096': each side must be at most 2048 pixels"),
])
def test_a_bad_size_is_a_one_line_error_naming_the_flag_and_the_rule(text, rule):
    with pytest.raises(ConfigError, match=rule):
        sizes_mod.parse_sizes(text, depth=2)


def test_a_stem_models_sizes_must_divide_by_its_stride_times_two_to_the_depth():
    assert sizes_mod.parse_sizes("64x32", depth=2, stem_stride=4) == [(64, 32)]
    with pytest.raises(ConfigError, match=r"--sizes '40x32': .*with a stride-4 stem: sides must be multiples of 16"):
        sizes_mod.parse_sizes("40x32", depth=2, stem_stride=4)


def test_the_cli_refuses_a_bad_size_in_one_line_before_exporting(run_dir, tmp_path, capsys):  # noqa: F811
    from lunarseg.cli import main

    for text, code in (("abc", 2), ("34x32", 2)):
        assert main(["export", str(run_dir), "--formats", "onnx-fp32", "--sizes", text, "--out", str(tmp_path)]) == code
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"lunarseg export: error: --sizes '{text}': ") and "\n" not in err
    assert not list(tmp_path.iterdir())


def test_calibration_frames_are_prepared_at_each_size_without_a_warning_for_the_models_own_size(run_dir):  # noqa: F811
    meta = sizes_mod.meta_at_size(_meta(run_dir), 64, 48)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = calibration_frames(meta, calib=CALIB, count=len(CALIB), expected_hw=(32, 32))
    assert x.shape == (len(CALIB), 48, 64, 1)
    val = resized_frames(VAL, 64, 48)
    assert val.x.shape == (len(VAL.x), 48, 64, 1) and val.y.shape == (len(VAL.x), 48, 64)
    assert set(np.unique(val.y)) <= set(np.unique(VAL.y))  # labels resized by nearest: no new classes


def test_variants_follow_the_sizes(run_dir, tmp_path):  # noqa: F811
    run = _copy(run_dir, tmp_path)
    variant = run / "compressed/pruned50"
    variant.mkdir(parents=True)
    shutil.copy(run / "model.keras", variant / "model.keras")
    shutil.copy(run / "meta.json", variant / "meta.json")
    records = export_run(run, "onnx-fp32", val=VAL, sizes="64x32")
    assert [(r.variant, r.path, r.ok) for r in records] == [
        ("base", "export/onnx-fp32-64x32.onnx", True), ("pruned50", "export/pruned50/onnx-fp32-64x32.onnx", True)]


def test_a_quantize_aware_model_is_rebuilt_at_another_size_with_its_fake_quant_ranges(run_dir):  # noqa: F811
    import tensorflow_model_optimization as tfmot

    from lunarseg.train.checkpoint import load_model

    qat = tfmot.quantization.keras.quantize_model(load_model(run_dir / "model.keras"))
    meta = _meta(run_dir)
    meta = meta.replace(extra={**meta.extra, "qat": True})
    sized = sizes_mod.model_at_size(qat, meta, 64, 32)
    assert sized.input_shape == (None, 32, 64, 1) and sized.output_shape == (None, 32, 64, 1)
    x = np.random.default_rng(1).random((2, 32, 32, 1), np.float32)
    with tfmot.quantization.keras.quantize_scope():  # the same route at the model's own size: same outputs
        same = sizes_mod._from_model_config(qat, 32, 32)
    np.testing.assert_allclose(same.predict(x, verbose=0), qat.predict(x, verbose=0), atol=1e-6)
