"""`lunarseg bench` without TensorFlow: exported files, model folders and run directories are benched
on a runtime-only install (TensorFlow hidden in a subprocess), no training framework is loaded by the
bench or its measuring children, and IoU follows one rule whatever the model's input size."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from data_fixtures import make_tree
from runtime_models import models as build_models

from lunarseg.benchmarks.plots import PLOT_SKIPPED
from lunarseg.benchmarks.inputs import NO_TENSORFLOW_NOTE
from lunarseg.cli import main

TRAINING = ("tensorflow", "tf_keras", "keras")
# Makes these packages fail to import in the child, as they do where they are not installed.
HIDDEN_BENCH = """
import json, sys, importlib.abc
HIDE = tuple(sys.argv[1].split(","))
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in HIDE:
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)
sys.meta_path.insert(0, Hide())
from lunarseg.cli import main
code = main(sys.argv[2:])
heavy = sorted({n.split('.')[0] for n in sys.modules} & {'tensorflow', 'tf_keras', 'keras'})
print(json.dumps({"code": code, "heavy": heavy}))
"""
FAST = ["--frames", "3", "--runs", "2", "--min-seconds", "0", "--engines", "onnxruntime,litert"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny binary model as one variant's onnx-fp32 and tflite-int8 (32x32), and labelled 64x48 frames."""
    from lunarseg.runtime.metadata import embed_tflite_metadata, read_tflite_metadata
    import onnx

    src = build_models()
    root = tmp_path_factory.mktemp("tiny")
    models = root / "models"
    models.mkdir()
    proto = onnx.load(src["bin.onnx"])
    prop = next(p for p in proto.metadata_props if p.key == "lunarseg")
    meta = json.loads(prop.value)
    meta.update(format="onnx-fp32", extra={"variant": "tiny"})
    prop.value = json.dumps(meta)
    onnx.save(proto, str(models / "onnx-fp32.onnx"))
    raw = open(src["bin_int8.tflite"], "rb").read()
    tfl = read_tflite_metadata(raw).replace(format="tflite-int8", extra={"variant": "tiny"})
    (models / "tflite-int8.tflite").write_bytes(embed_tflite_metadata(raw, tfl))
    data = make_tree(root / "data", numbers=range(1, 21))
    return models, data


def _bench_hiding(hidden: str, argv: list[str]) -> tuple[dict, str]:
    done = subprocess.run([sys.executable, "-c", HIDDEN_BENCH, hidden, *argv], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_bench_of_exported_files_without_tensorflow_loads_no_training_framework(tiny, tmp_path):
    models, data = tiny
    out = tmp_path / "bench"
    res, _ = _bench_hiding("tensorflow,tf_keras,keras", ["bench", str(models / "onnx-fp32.onnx"),
                           str(models / "tflite-int8.tflite"), "--data", str(data), "--out", str(out), *FAST])
    assert res == {"code": 0, "heavy": []}
    results = json.loads((out / "results.json").read_text())
    rows = {(r["format"], r["engine"]): r for r in results["rows"]}
    assert set(rows) == {("onnx-fp32", "onnxruntime"), ("tflite-int8", "litert")}
    for r in rows.values():
        assert r["status"] == "ok", r.get("error")
        assert r["training_modules"] == [] and r["input_size"] == "32x32" and r["variant"] == "tiny"
        for col in ("iou", "dice", "p50_ms", "p95_ms", "cold_start_ms", "peak_rss_mb", "bytes"):
            assert isinstance(r[col], (int, float)), col
    fp32, int8 = rows[("onnx-fp32", "onnxruntime")], rows[("tflite-int8", "litert")]
    assert int8["reference"] == "tiny/onnx-fp32 32x32 on onnxruntime"
    assert int8["iou_drop"] == pytest.approx(fp32["iou"] - int8["iou"], abs=1e-5)
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert "IoU: rock IoU/Dice of the runtime's mask resized back to the label's own resolution" in (
        out / "results.md").read_text()


def test_run_directory_without_tensorflow_or_matplotlib_benches_its_artifacts_and_says_what_it_skipped(tiny, tmp_path):
    models, data = tiny
    run = tmp_path / "run"
    shutil.copytree(models, run / "export")
    (run / "model.keras").write_bytes(b"not loaded without TensorFlow")
    (run / "meta.json").write_text(_keras_meta(data))
    (run / "export/manifest.json").write_text(json.dumps({"schema_version": 1, "artifacts": [
        {"variant": "base", "format": "onnx-fp32", "path": "export/onnx-fp32.onnx"},
        {"variant": "base", "format": "tflite-int8", "path": "export/tflite-int8.tflite"}]}))
    res, err = _bench_hiding("tensorflow,tf_keras,keras,matplotlib", ["bench", str(run), *FAST])
    assert res == {"code": 0, "heavy": []}
    lines = err.strip().splitlines()
    assert NO_TENSORFLOW_NOTE in lines and PLOT_SKIPPED in lines
    results = json.loads((run / "bench/results.json").read_text())
    assert [r["format"] for r in results["rows"]] == ["onnx-fp32", "tflite-int8"]  # no keras-fp32 row
    assert results["rows"][1]["reference"] == "base/onnx-fp32 32x32 on onnxruntime"
    assert results["plot"] is None and not (run / "bench/pareto.png").exists()
    assert (run / "bench/results.md").exists() and results["data"] == str(data)


def _keras_meta(data) -> str:
    from lunarseg.runtime.metadata import ModelMeta

    return ModelMeta(input_shape=[1, 32, 32, 1], extra={"data_dir": str(data)}).to_json()


def test_bench_iou_is_the_runtimes_frame_size_mask_against_the_label_at_its_own_resolution(tiny):
    """A 32x32 model on 64x48 labels: the figure bench reports is segment()'s mask scored at 64x48."""
    from lunarseg.benchmarks.measure import measure
    from lunarseg.data.loader import DatasetIndex, load_pair
    from lunarseg.runtime.metrics import MetricAccumulator
    from lunarseg.runtime.segmenter import Segmenter

    models, data = tiny
    model = models / "onnx-fp32.onnx"
    got = measure(model, data, split="test", frames=0, runs=1, min_seconds=0.0, threads=1)
    seg, acc = Segmenter.from_file(model), MetricAccumulator()
    for pair in DatasetIndex.scan(data).split("test"):
        frame, truth = load_pair(pair)
        assert truth.shape == (48, 64)
        acc.update(truth, seg.segment(frame).classes)
    want = acc.result()
    assert got["frames"] == want["frames"] >= 1 and got["input_size"] == "32x32"
    assert got["iou"] == pytest.approx(want["iou"], abs=1e-12) and got["dice"] == pytest.approx(want["dice"], abs=1e-12)
    assert 0.0 < got["iou"] < 1.0 and np.isfinite(got["p50_ms"])


def test_bench_of_files_without_an_out_folder_is_a_one_line_error(tiny, capsys):
    models, data = tiny
    assert main(["bench", str(models / "onnx-fp32.onnx"), "--data", str(data)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "lunarseg bench: error: pass --out DIR: no run directory among the inputs to write bench/ into"


def test_bench_of_a_file_it_cannot_read_names_the_suffixes_it_takes(tmp_path, capsys):
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"torch")
    assert main(["bench", str(weights), "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == (f"lunarseg bench: error: {weights}: bench takes run directories, "
                                               "folders of models or .onnx/.tflite files, not '.pt'")


def test_a_model_folder_is_benched_file_by_file_named_from_each_files_metadata(tiny, tmp_path):
    from lunarseg.benchmarks.inputs import collect

    models, _ = tiny
    rows, runs = collect([models], with_keras=False)
    assert runs == []
    assert sorted((r["variant"], r["format"], r["status"]) for r in rows) == [
        ("tiny", "onnx-fp32", "ok"), ("tiny", "tflite-int8", "ok")]


def test_a_folder_with_no_models_is_refused_in_one_line(tmp_path):
    from lunarseg.benchmarks.inputs import collect
    from lunarseg.runtime.errors import ConfigError

    with pytest.raises(ConfigError, match=r"not a run directory .* and holds no .onnx/.tflite models"):
        collect([tmp_path], with_keras=False)
