"""The bench gate fails closed on what it cannot check: limits that are not finite numbers, counts that
would measure nothing, a dataset without test frames, an artifact whose outputs are NaN; --engines is a
filter; `select` deploys only the run's own artifacts and leaves one model in RUN/deploy."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from data_fixtures import make_tree
from runtime_models import models as build_models

from lunarseg.benchmarks.limits import Limits
from lunarseg.benchmarks.select import select
from lunarseg.cli import main
from lunarseg.runtime.errors import ConfigError, GateError
from lunarseg.runtime.metadata import ModelMeta

FAST = ["--frames", "3", "--runs", "2", "--min-seconds", "0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("gate") / "data", numbers=range(1, 21))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, -0.1])
def test_a_limit_that_is_not_a_finite_non_negative_number_is_refused(value):
    with pytest.raises(ConfigError, match="must be a finite non-negative number"):
        Limits.load(max_iou_drop=value)


def test_a_limits_file_whose_limits_are_not_a_table_is_refused(tmp_path):
    path = tmp_path / "limits.toml"
    path.write_text("limits = 3\n")
    with pytest.raises(ConfigError, match=r"\[limits\] must be a table of limits, got 3"):
        Limits.load(path)


@pytest.mark.parametrize("flag,value,message", [
    ("--frames", "0", "--frames must be at least 1, got 0"), ("--runs", "-3", "--runs must be at least 1, got -3"),
    ("--timeout-s", "nan", "--timeout-s must be a finite number > 0, got nan"),
    ("--min-seconds", "-1", "--min-seconds must be a finite number >= 0, got -1.0"),
    ("--max-iou-drop", "nan", "limit max_iou_drop must be a finite non-negative number, got nan")])
def test_counts_and_limits_that_would_check_nothing_are_refused_before_measuring(tmp_path, data, capsys, flag,
                                                                                value, message):
    code = main(["bench", build_models()["bin.onnx"], "--data", str(data), "--out", str(tmp_path / "b"), flag, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"lunarseg bench: error: {message}"]
    assert not (tmp_path / "b").exists()


def test_a_dataset_without_test_frames_is_refused_before_measuring(tmp_path, capsys):
    tiny = make_tree(tmp_path / "tiny", numbers=[1])
    code = main(["bench", build_models()["bin.onnx"], "--data", str(tiny), "--out", str(tmp_path / "b"), *FAST])
    assert code == 2 and "its 'test' split holds no labelled frames" in capsys.readouterr().err


def test_engines_is_a_filter_files_no_listed_engine_reads_are_not_measured(tmp_path, data, capsys):
    models = build_models()
    code = main(["bench", models["bin.onnx"], models["bin.tflite"], "--data", str(data), "--out", str(tmp_path / "b"),
                 "--engines", "onnxruntime", *FAST])
    results = json.loads((tmp_path / "b/results.json").read_text())
    assert code == 0 and [(r["format"], r["engine"]) for r in results["rows"]] == [("onnx-fp32", "onnxruntime")]
    assert any("not measured: bin/tflite-fp32" in n and "--engines onnxruntime" in n for n in results["notes"])


def _nan_onnx(path: Path) -> str:
    """A 32x32 model whose every output is NaN, with lunarseg metadata."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shape = [1, 32, 32, 1]
    nan = numpy_helper.from_array(np.array([np.nan], dtype=np.float32), "nan")
    graph = helper.make_graph([helper.make_node("Add", ["image", "nan"], ["mask"])], "nan", [
        helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, shape)], initializer=[nan])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    entry = proto.metadata_props.add()
    entry.key, entry.value = "lunarseg", ModelMeta(input_shape=shape, format="onnx-fp32", parent_hash="n" * 64).to_json()
    onnx.save(proto, path)
    return str(path)


def test_an_artifact_whose_outputs_are_nan_fails_the_gate(tmp_path, data, capsys):
    code = main(["bench", _nan_onnx(tmp_path / "nan.onnx"), "--data", str(data), "--out", str(tmp_path / "b"), *FAST])
    err = capsys.readouterr().err
    assert code == 1 and "its outputs are not finite (NaN or infinity) on test frame" in err
    assert "ModelFileError" not in err  # the measuring child's message alone


def _run_with_bench(tmp_path, data) -> Path:
    """A run directory holding the tiny model's onnx-fp32 and tflite-int8, benched beside a loose file."""
    models = build_models()
    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    shutil.copy(models["bin.onnx"], run / "export/onnx-fp32.onnx")
    shutil.copy(models["bin_int8.tflite"], run / "export/tflite-int8.tflite")
    (run / "export/manifest.json").write_text(json.dumps({"schema_version": 1, "artifacts": [
        {"variant": "base", "format": "onnx-fp32", "path": "export/onnx-fp32.onnx"},
        {"variant": "base", "format": "tflite-int8", "path": "export/tflite-int8.tflite"}]}))
    loose = tmp_path / "loose.onnx"
    shutil.copy(models["bin.onnx"], loose)
    assert main(["bench", str(run), str(loose), "--data", str(data), *FAST]) == 0
    return run


def test_select_deploys_only_the_runs_own_artifacts_and_finds_them_after_the_run_moved(tmp_path, data):
    run = _run_with_bench(tmp_path, data)
    moved = tmp_path / "moved"
    shutil.move(run, moved)
    rows = json.loads((moved / "bench/results.json").read_text())["rows"]
    assert {Path(r["path"]).name for r in rows} == {"onnx-fp32.onnx", "tflite-int8.tflite", "loose.onnx"}
    choice = select(moved, max_iou_drop=1.0)
    assert Path(choice["source"]).parent == moved / "export"  # never the loose file benched beside it
    assert Path(choice["artifact"]).parent == moved / "deploy"


def test_select_leaves_only_the_chosen_model_in_deploy(tmp_path, data):
    run = _run_with_bench(tmp_path, data)
    (run / "deploy").mkdir()
    (run / "deploy/old-choice.onnx").write_bytes(b"an earlier selection")
    choice = select(run, max_iou_drop=1.0)
    models = sorted(p.name for p in (run / "deploy").iterdir() if p.suffix in (".onnx", ".tflite"))
    assert models == [Path(choice["artifact"]).name] and choice["removed"] == ["old-choice.onnx"]


def test_select_refuses_a_corrupt_results_file_and_a_nan_budget_in_one_line(tmp_path):
    (tmp_path / "run/bench").mkdir(parents=True)
    (tmp_path / "run/bench/results.json").write_text("{")
    with pytest.raises(ConfigError, match="not a bench results file"):
        select(tmp_path / "run", max_iou_drop=0.02)
    with pytest.raises(ConfigError, match="--max-iou-drop must be a finite number, got nan"):
        select(tmp_path / "run", max_iou_drop=float("nan"))
    (tmp_path / "run/bench/results.json").write_text(json.dumps({"run": "x", "threads": [1], "rows": []}))
    with pytest.raises(GateError, match="no artifact of .* was measured"):
        select(tmp_path / "run", max_iou_drop=0.02)
