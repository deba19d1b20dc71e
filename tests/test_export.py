"""Export rules on a tiny trained model (32 px, 4 filters, depth 2): every format exports, reloads
through the runtime and passes its gate; metadata travels inside the file; the manifest; bad input."""
import dataclasses
import gzip
import hashlib
import json
import shutil
import warnings

import numpy as np
import pytest

import lunarseg.export  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from lunarseg.export import FORMAT_NAMES, FORMATS, export_model, export_run
from lunarseg.export.frames import ExportWarning, calibration_frames
from lunarseg.export.parity import IoUDropError, ParityError, check_gate, compare
from lunarseg.runtime.errors import ConfigError, DatasetError, ModelFileError
from lunarseg.runtime.metadata import ModelMeta, read_onnx_metadata_map, read_tflite_metadata
from lunarseg.train.checkpoint import file_sha256

from test_train import blobs  # the shared tiny "bright squares" data

LOOSE = 0.15  # tiny models are noisy: the int8 gate here only proves the drop is measured and gated


CALIB = blobs(24, seed=5).x
VAL = blobs(16, seed=9)


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    from lunarseg.train.config import TrainConfig
    from lunarseg.train.fit import train

    run = tmp_path_factory.mktemp("export") / "run"
    cfg = TrainConfig(width=32, height=32, depth=2, filters=4, epochs=4, batch_size=16, learning_rate=5e-3,
                      lr_schedule="constant", patience=10)
    train(cfg, None, run, verbose=0, train_arrays=blobs(64), val_arrays=blobs(16, seed=1))
    return run


@pytest.fixture(scope="session")
def exported(run_dir):
    """Every format, exported once into RUN/export."""
    records = export_model(run_dir, "all", calib=CALIB, calib_frames=len(CALIB), val=VAL, max_iou_drop=LOOSE)
    return {r.format: r for r in records}


def _meta_from_file(path) -> ModelMeta:
    path = str(path)
    if path.endswith(".tflite"):
        return read_tflite_metadata(open(path, "rb").read(), path)
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return read_onnx_metadata_map(sess.get_modelmeta().custom_metadata_map, path)


def test_every_format_exports_reloads_through_the_runtime_and_passes_its_gate(exported):
    assert list(exported) == list(FORMAT_NAMES)
    for name, rec in exported.items():
        assert rec.ok, f"{name}: {rec.error}"
        p = rec.parity
        assert p["frames"] == len(VAL.x) and p["labels"] == "truth" and p["latency_ms"] > 0
        assert {"max_abs_diff", "mask_iou", "keras_iou", "artifact_iou", "iou_drop"} <= set(p)
    for name in ("tflite-fp32", "onnx-fp32"):
        assert exported[name].parity["max_abs_diff"] <= 1e-4 and exported[name].parity["mask_iou"] >= 0.999
    assert exported["tflite-fp16"].parity["max_abs_diff"] <= 1e-2
    for name in ("tflite-dynamic", "tflite-int8", "onnx-int8", "onnx-int8-tflite"):
        assert exported[name].parity["gate"] == {"max_iou_drop": LOOSE}
        assert exported[name].parity["iou_drop"] <= LOOSE


def test_full_integer_tflite_takes_uint8_and_its_scales_are_in_the_metadata(exported):
    from ai_edge_litert.interpreter import Interpreter

    path = exported["tflite-int8"].file
    interp = Interpreter(model_path=path)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    assert inp["dtype"] == np.uint8 and out["dtype"] == np.uint8
    q = _meta_from_file(path).quantization
    assert q["mode"] == "int8" and q["input"]["dtype"] == "uint8"
    assert q["input"]["scale"] == pytest.approx(inp["quantization"][0])
    assert q["output"]["zero_point"] == out["quantization"][1]


def test_metadata_round_trips_from_the_file_alone(exported, run_dir):
    source = ModelMeta.from_json((run_dir / "meta.json").read_text())
    model_hash = file_sha256(run_dir / "model.keras")
    for name, rec in exported.items():
        meta = _meta_from_file(rec.file)
        assert meta.format == name
        assert meta.quantization["mode"] == FORMATS[name].quantization
        assert meta.parent_hash == model_hash
        assert meta.sparsity == source.sparsity
        assert meta.input_shape == source.input_shape and meta.threshold == source.threshold
        assert meta.class_names == source.class_names and meta.normalisation == source.normalisation
        assert meta.created


def test_manifest_lists_every_artifact_with_hash_size_gzip_and_parity(exported, run_dir):
    manifest = json.loads((run_dir / "export/manifest.json").read_text())
    entries = {e["format"]: e for e in manifest["artifacts"] if e["variant"] == "base"}
    assert set(entries) == set(FORMAT_NAMES)
    for name, e in entries.items():
        data = (run_dir / e["path"]).read_bytes()
        assert e["path"] == f"export/{name}{FORMATS[name].suffix}"
        assert e["sha256"] == hashlib.sha256(data).hexdigest() and e["bytes"] == len(data)
        assert e["gzip_bytes"] == len(gzip.compress(data, 9, mtime=0))
        assert e["status"] == "ok" and e["error"] == ""
        assert e["quantization"]["mode"] == FORMATS[name].quantization and e["sparsity"] == 0.0
        assert e["source"] == {"variant": "base", "path": "model.keras",
                               "sha256": file_sha256(run_dir / "model.keras")}
        assert "max_abs_diff" in e["parity"] and "iou_drop" in e["parity"]


def test_reexporting_the_same_model_gives_identical_fp32_bytes(exported, run_dir, tmp_path):
    again = {r.format: r for r in export_model(run_dir, "tflite-fp32,onnx-fp32", val=VAL, out_dir=tmp_path)}
    for name in ("tflite-fp32", "onnx-fp32"):
        assert again[name].sha256 == exported[name].sha256, name


def test_a_strided_stem_model_exports_to_int8_onnx_and_tflite_and_passes_parity(tmp_path):
    """The stem's transposed-convolution head converts (tf2onnx ConvTranspose, TFLite TRANSPOSE_CONV),
    quantizes and runs through the runtime like the plain U-Net."""
    from lunarseg.runtime.segmenter import Segmenter
    from lunarseg.train.config import TrainConfig
    from lunarseg.train.fit import train

    cfg = TrainConfig(width=32, height=32, depth=1, filters=8, stem_stride=2, epochs=4, batch_size=16,
                      learning_rate=5e-3, lr_schedule="constant", patience=10)
    run = tmp_path / "stem"
    train(cfg, None, run, verbose=0, train_arrays=blobs(64), val_arrays=blobs(16, seed=1))
    records = export_model(run, "onnx-int8,tflite-int8", calib=CALIB, calib_frames=len(CALIB), val=VAL,
                           max_iou_drop=LOOSE)
    assert [r.status for r in records] == ["ok", "ok"], [r.error for r in records]
    for r in records:
        seg = Segmenter.from_file(run / r.path)
        assert seg.meta.train_config["stem_stride"] == 2
        assert seg.segment(VAL.x[0, :, :, 0]).classes.shape == (32, 32)


def test_unknown_format_error_lists_the_valid_names(run_dir):
    with pytest.raises(ConfigError) as info:
        export_model(run_dir, ["tflite-fp32", "coreml"])
    msg = str(info.value)
    assert "unknown export format 'coreml'" in msg and "\n" not in msg
    for name in (*FORMAT_NAMES, "all"):
        assert name in msg


def test_too_few_calibration_frames_is_a_one_line_error(run_dir):
    with pytest.raises(DatasetError, match=r"only 5 usable calibration frames .* at least 8"):
        export_model(run_dir, "tflite-int8", calib=CALIB[:5], val=VAL)
    with pytest.raises(DatasetError, match=r"--calib-frames 4 is too few"):
        export_model(run_dir, "onnx-int8", calib=CALIB, calib_frames=4, val=VAL)


def test_int8_without_any_calibration_source_says_where_frames_come_from(run_dir):
    with pytest.raises(DatasetError, match=r"needs calibration frames: pass --data DIR"):
        export_model(run_dir, "tflite-int8", val=VAL)


def test_fewer_calibration_frames_than_asked_is_a_warning():
    meta = ModelMeta(input_shape=[1, 32, 32, 1])
    with pytest.warns(ExportWarning, match=r"using 10 calibration frames .* fewer than the 100 asked for"):
        x = calibration_frames(meta, calib=CALIB[:10])
    assert x.shape == (10, 32, 32, 1)


def test_calibration_frames_of_another_size_are_resized_with_a_warning():
    meta = ModelMeta(input_shape=[1, 32, 32, 1])
    big = blobs(12, size=48).x
    with pytest.warns(ExportWarning, match=r"resized calibration frames of size 48x48 to the model input 32x32"):
        x = calibration_frames(meta, calib=big, count=12)
    assert x.shape == (12, 32, 32, 1) and x.dtype == np.uint8


def test_unreadable_calibration_frames_are_skipped_counted_and_fail_when_too_few_remain(tmp_path):
    meta = ModelMeta(input_shape=[1, 32, 32, 1])
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    frames = [junk, tmp_path / "missing.png", np.zeros((0, 5), np.uint8)] + list(CALIB[:9])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExportWarning)
        assert len(calibration_frames(meta, calib=frames, count=9)) == 9
    with pytest.raises(DatasetError, match=r"only 6 usable calibration frames .*\(3 unreadable skipped\)"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExportWarning)
            calibration_frames(meta, calib=frames[:9])


def test_a_converter_that_throws_is_recorded_while_the_others_export(run_dir, tmp_path, monkeypatch):
    def boom(ctx):
        raise RuntimeError("converter exploded\nwith a second line")

    monkeypatch.setitem(FORMATS, "tflite-fp32", dataclasses.replace(FORMATS["tflite-fp32"], builder=boom))
    records = {r.format: r for r in export_model(run_dir, "tflite-fp32,onnx-fp32", val=VAL, out_dir=tmp_path)}
    assert records["onnx-fp32"].ok and (tmp_path / "onnx-fp32.onnx").exists()
    bad = records["tflite-fp32"]
    assert bad.status == "failed" and not (tmp_path / "tflite-fp32.tflite").exists()
    assert bad.error == "ConversionError: RuntimeError: converter exploded with a second line"
    manifest = {e["format"]: e for e in json.loads((tmp_path / "manifest.json").read_text())["artifacts"]}
    assert manifest["tflite-fp32"]["status"] == "failed" and "converter exploded" in manifest["tflite-fp32"]["error"]
    assert manifest["onnx-fp32"]["status"] == "ok"


def test_a_parity_failure_marks_the_artifact_failed_with_a_named_error_and_exits_1(run_dir, tmp_path, monkeypatch,
                                                                                 capsys):
    from lunarseg.cli import main
    from lunarseg.runtime.segmenter import Segmenter

    real = Segmenter.predict
    monkeypatch.setattr(Segmenter, "predict", lambda self, x: real(self, x) + np.float32(3e-3))
    val_dir = tmp_path / "out"
    monkeypatch.setattr("lunarseg.export.frames.synthetic_frames",
                        lambda meta, n=16, seed=0: VAL.x)  # no --data: parity runs on these frames
    code = main(["export", str(run_dir), "--formats", "onnx-fp32", "--out", str(val_dir)])
    out = capsys.readouterr()
    assert code == 1
    assert "FAILED  onnx-fp32" in out.out and "ParityError: max abs diff 0.003 > 0.0001" in out.out
    entry = json.loads((val_dir / "manifest.json").read_text())["artifacts"][0]
    assert entry["status"] == "failed" and entry["error"].startswith("ParityError: max abs diff 0.003 > 0.0001")
    assert entry["parity"]["labels"] == "keras"


def test_a_quantized_artifact_losing_more_iou_than_allowed_fails_the_gate():
    spec = FORMATS["tflite-int8"]
    figures = {"max_abs_diff": 0.2, "mask_iou": 0.9, "keras_iou": 0.80, "artifact_iou": 0.75,
               "iou_drop": 0.05, "frames": 16, "labels": "truth"}
    with pytest.raises(IoUDropError, match=r"rock IoU drop 0.0500 > 0.02 \(Keras 0.8000, artifact 0.7500"):
        check_gate(spec, dict(figures), 0.02)
    assert check_gate(spec, dict(figures), 0.06)["gate"] == {"max_iou_drop": 0.06}
    with pytest.raises(ParityError, match=r"mask IoU vs Keras 0.9900 < 0.999"):
        check_gate(FORMATS["onnx-fp32"], dict(figures, max_abs_diff=5e-5, mask_iou=0.99), 0.02)


def test_cli_exports_and_prints_the_manifest_path(run_dir, tmp_path, monkeypatch, capsys):
    from lunarseg.cli import main

    monkeypatch.setattr("lunarseg.export.frames.synthetic_frames", lambda meta, n=16, seed=0: VAL.x)
    assert main(["export", str(run_dir), "--formats", "onnx-fp32", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ok      onnx-fp32" in out and f"manifest: {tmp_path / 'manifest.json'}" in out
    assert main(["export", str(run_dir), "--formats", "tflite-fp32,onnx-fp8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lunarseg export: error: unknown export format 'onnx-fp8'; valid: ") and "\n" not in err
    assert main(["export", str(run_dir), "--formats", "onnx-fp32", "--data", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip() == f"lunarseg export: error: --data {tmp_path / 'nowhere'}: no such dataset directory"


def test_variants_export_under_export_variant_and_share_the_runs_manifest(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("export", "logs", "checkpoints"))
    variant = run / "compressed/pruned50"
    variant.mkdir(parents=True)
    shutil.copy(run / "model.keras", variant / "model.keras")
    meta = json.loads((run / "meta.json").read_text())
    meta["sparsity"] = 0.5
    (variant / "meta.json").write_text(json.dumps(meta))
    records = export_run(run, "onnx-fp32", val=VAL)
    assert [(r.variant, r.path, r.ok) for r in records] == [
        ("base", "export/onnx-fp32.onnx", True), ("pruned50", "export/pruned50/onnx-fp32.onnx", True)]
    assert _meta_from_file(records[1].file).sparsity == 0.5
    entries = json.loads((run / "export/manifest.json").read_text())["artifacts"]
    assert [(e["variant"], e["format"], e["sparsity"]) for e in entries] == [
        ("base", "onnx-fp32", 0.0), ("pruned50", "onnx-fp32", 0.5)]
    assert entries[1]["source"]["path"] == "compressed/pruned50/model.keras"
    export_model(variant, "onnx-fp32", val=VAL)  # re-export one variant: merged, not duplicated
    assert len(json.loads((run / "export/manifest.json").read_text())["artifacts"]) == 2


def test_a_folder_without_meta_json_is_not_a_lunarseg_model(tmp_path, run_dir):
    folder = tmp_path / "plain"
    folder.mkdir()
    shutil.copy(run_dir / "model.keras", folder / "model.keras")
    with pytest.raises(ModelFileError, match=r"no meta.json beside it; not a lunarseg model"):
        export_model(folder, "onnx-fp32")
    with pytest.raises(ModelFileError, match=r"no lunarseg model here"):
        export_model(tmp_path / "nowhere", "onnx-fp32")


def test_a_model_file_that_does_not_load_is_refused(tmp_path, run_dir):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "model.keras").write_bytes(b"not a zip")
    shutil.copy(run_dir / "meta.json", folder / "meta.json")
    with pytest.raises(ModelFileError, match=r"not a loadable Keras model"):
        export_model(folder, "onnx-fp32")


def test_unwritable_output_is_a_one_line_error(run_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"output directory is not writable"):
        export_model(run_dir, "onnx-fp32", out_dir=blocker / "out")


def test_a_qat_model_converts_to_full_integer_from_its_fake_quant_ranges_without_calibration(run_dir, tmp_path):
    import tensorflow_model_optimization as tfmot

    from lunarseg.export.context import BuildContext
    from lunarseg.export.exporter import embed_metadata
    from lunarseg.runtime.segmenter import Segmenter
    from lunarseg.train.checkpoint import load_model
    from lunarseg.train.tf_input import normalise

    qat = tfmot.quantization.keras.quantize_model(load_model(run_dir / "model.keras"))
    qat.compile("adam", "binary_crossentropy")
    tr = blobs(32, seed=3)
    qat.fit(normalise(tr.x), tr.y[..., None].astype("float32"), epochs=1, batch_size=16, verbose=0)
    meta = ModelMeta.from_json((run_dir / "meta.json").read_text())
    ctx = BuildContext(model=qat, meta=meta, calib=None, qat=True, workdir=tmp_path)
    built = FORMATS["tflite-int8"].builder(ctx)
    assert built.quantization["source"] == "qat" and built.quantization["input"]["dtype"] == "uint8"
    path = tmp_path / "qat.tflite"
    path.write_bytes(embed_metadata(built.data, ".tflite", meta.replace(quantization=built.quantization)))
    x = normalise(VAL.x)
    figures = compare(qat.predict(x, verbose=0), Segmenter.from_file(path).predict(x), meta, VAL.y)
    check_gate(FORMATS["tflite-int8"], figures, LOOSE, qat=True)
    assert figures["gate"] == {"max_iou_drop": LOOSE}


def test_without_data_the_dataset_recorded_at_training_is_used_and_said(run_dir, tmp_path):
    import json
    import shutil
    import warnings

    from lunarseg.data.synth import write_dataset
    from lunarseg.export.frames import ExportWarning

    data = tmp_path / "data"
    write_dataset(data, 12, size=(96, 64), seed=2, workers=1, progress=False)
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("export"))
    meta = json.loads((run / "meta.json").read_text())
    meta["extra"]["data_dir"] = str(data)
    (run / "meta.json").write_text(json.dumps(meta))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = export_model(run, "tflite-int8", calib_frames=8, max_iou_drop=LOOSE)
    assert records[0].ok, records[0].error
    said = [str(w.message) for w in caught if issubclass(w.category, ExportWarning)]
    assert any(f"the dataset recorded at training, {data}" in m for m in said)
