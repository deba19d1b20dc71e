"""Benchmark rules on a tiny end-to-end pipeline: synth → train → export → bench → select."""
import json

import pytest

from lunarseg.benchmarks.bench import BASELINE, COLUMNS, bench
from lunarseg.benchmarks.limits import Limits
from lunarseg.benchmarks.select import select
from lunarseg.cli import main
from lunarseg.runtime.backends import available
from lunarseg.runtime.errors import ConfigError, GateError

FORMATS = "onnx-fp32,tflite-int8"
# The engines that measure the .onnx: the optional openvino one only where it is installed.
ONNX_ENGINES = ["onnxruntime"] + (["openvino"] if available("openvino") else [])
ARTIFACT_ENGINES = [("onnx-fp32", e) for e in ONNX_ENGINES] + [("tflite-int8", "litert")]  # (format, engine), sorted


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A tiny trained, exported and benchmarked run (what `lunarseg demo --quick` does, smaller)."""
    from lunarseg.data.synth import write_dataset
    from lunarseg.export.exporter import export_model
    from lunarseg.train.config import TrainConfig
    from lunarseg.train.fit import train

    root = tmp_path_factory.mktemp("bench")
    data, run = root / "data", root / "run"
    write_dataset(data, 24, size=(96, 64), seed=3, workers=1, progress=False)
    train(TrainConfig(width=48, height=32, depth=2, filters=4, epochs=1, batch_size=8), data, run, verbose=0)
    export_model(run, FORMATS, data_dir=data, calib_frames=8, max_iou_drop=1.0)
    results = bench(run, data=data, frames=3, runs=5, min_seconds=0.1, profile="rover", progress=False)
    return run, data, results


def test_results_json_has_one_row_per_artifact_plus_the_keras_baseline(pipeline):
    run, _, results = pipeline
    saved = json.loads((run / "bench/results.json").read_text())
    assert saved["rows"] == results["rows"]
    pairs = [(r["format"], r["engine"]) for r in saved["rows"]]
    assert pairs[0] == (BASELINE, "tensorflow")
    assert sorted(pairs[1:]) == ARTIFACT_ENGINES
    for row in saved["rows"]:
        assert row["status"] == "ok", row.get("error")
        for col in ("bytes", "gzip_bytes", "iou", "dice", "iou_drop", "p50_ms", "p95_ms", "p99_ms", "fps",
                    "cold_start_ms", "peak_rss_mb", "gmacs", "gmac_per_s", "speedup"):
            assert isinstance(row[col], (int, float)), (row["format"], col)
        timed_s = row["latency_runs"] * row["mean_ms"] / 1e3  # runs=5, min_seconds=0.1 in the fixture
        assert row["latency_runs"] >= 5 and (row["latency_runs"] == 100 or timed_s >= 0.09), row
    assert saved["cpu"]["model"] and saved["batch"] == 1


def test_with_tensorflow_every_row_of_a_run_is_against_its_keras_baseline_and_records_its_input_size(pipeline):
    _, _, results = pipeline
    base = results["rows"][0]
    for row in results["rows"]:
        assert row["input_size"] == "48x32" and row["reference"] == BASELINE
        assert row["iou_drop"] == pytest.approx(base["iou"] - row["iou"], abs=1e-5)
    assert "label's own resolution" in results["iou_rule"] and results["notes"] == []


def test_markdown_table_has_every_column_and_the_pareto_plot_exists(pipeline):
    run, _, _ = pipeline
    md = (run / "bench/results.md").read_text()
    assert "| " + " | ".join(COLUMNS) + " |" in md
    assert (run / "bench/pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_only_the_keras_baseline_loads_tensorflow(pipeline):
    _, _, results = pipeline
    loaded = {(r["format"], r["engine"]): r["tensorflow_loaded"] for r in results["rows"]}
    assert all(r["training_modules"] == [] for r in results["rows"] if r["format"] != BASELINE)
    assert loaded == {(BASELINE, "tensorflow"): True, **{pair: False for pair in ARTIFACT_ENGINES}}


def test_rover_profile_runs_each_measurement_pinned_to_one_cpu(pipeline):
    _, _, results = pipeline
    assert all(len(r["affinity"]) == 1 for r in results["rows"])
    assert results["pinned_cpu"] == results["rows"][0]["affinity"][0]


def test_latency_measurement_uses_the_thread_count_it_claims(pipeline):
    run, data, _ = pipeline
    from lunarseg.benchmarks.bench import run_child

    onnx = run / "export/onnx-fp32.onnx"
    for engine in ONNX_ENGINES:
        for threads in (1, 2):
            m = run_child(onnx, data, threads, -1, frames=1, runs=3, min_seconds=0.0, backend=engine)
            assert m["threads"] == threads and m["engine_threads"] == threads, engine


def test_engines_option_restricts_the_rows_and_unknown_engines_are_refused(pipeline, tmp_path):
    run, data, _ = pipeline
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    results = bench(copy, data=data, frames=1, runs=2, min_seconds=0.0, engines=["onnxruntime"], progress=False,
                    formats=["onnx-fp32"])
    assert [(r["format"], r["engine"]) for r in results["rows"]] == [(BASELINE, "tensorflow"), ("onnx-fp32", "onnxruntime")]
    with pytest.raises(ConfigError, match=r"unknown engine 'tensorrt'; valid: litert, onnxruntime, openvino"):
        bench(copy, data=data, engines=["tensorrt"], progress=False)


def test_rounds_report_the_median_of_each_rows_rounds_and_keep_the_first_rounds_accuracy(pipeline, tmp_path):
    run, data, first = pipeline
    import shutil
    import statistics

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    results = bench(copy, data=data, frames=3, runs=3, min_seconds=0.0, engines=["onnxruntime"], progress=False,
                    formats=["onnx-fp32"], rounds=3)
    assert results["rounds"] == 3
    assert "medians of 3 round-robin rounds" in (copy / "bench/results.md").read_text()
    before = {(r["format"], r["engine"]): r for r in first["rows"]}
    for row in results["rows"]:
        assert row["status"] == "ok", row.get("error")
        assert len(row["p50_rounds_ms"]) == 3
        assert row["p50_ms"] == pytest.approx(statistics.median(row["p50_rounds_ms"]), abs=1e-3)
        same = before[(row["format"], row["engine"])]
        assert row["iou"] == same["iou"] and row["frames"] == same["frames"]
    with pytest.raises(ConfigError, match="rounds must be at least 1, got 0"):
        bench(copy, data=data, rounds=0, progress=False)


def test_a_failed_round_makes_the_row_an_error():
    from lunarseg.benchmarks.bench import combine_rounds

    ok = {"status": "ok", "p50_ms": 2.0, "p95_ms": 3.0, "iou": 0.5}
    assert combine_rounds([ok, {"status": "error", "error": "boom"}]) == {"status": "error", "error": "boom"}
    assert combine_rounds([ok, {**ok, "p50_ms": 4.0}, {**ok, "p50_ms": 1.0}])["p50_ms"] == 2.0


def test_an_impossible_latency_limit_makes_bench_exit_1_naming_artifact_figure_and_limit(pipeline, capsys):
    run, data, _ = pipeline
    code = main(["bench", str(run), "--data", str(data), "--frames", "2", "--runs", "3",
                 "--max-latency-ms", "0.0001", "--formats", "onnx-fp32"])
    assert code == 1
    err = capsys.readouterr().err
    assert "LIMIT base/onnx-fp32 on onnxruntime (threads=1): latency p50" in err and "> limit 0.0001 ms" in err


def test_select_for_board_engines_never_picks_an_openvino_row(pipeline):
    from lunarseg.benchmarks.select import BOARD_ENGINES

    run, data, _ = pipeline
    bench(run, data=data, frames=3, runs=5, min_seconds=0.1, progress=False)
    rows = json.loads((run / "bench/results.json").read_text())["rows"]
    fastest_any = min((r for r in rows if r["deployable"] and r["status"] == "ok"), key=lambda r: r["p50_ms"])
    choice = select(run, max_iou_drop=1.0, objective="latency", engines=BOARD_ENGINES)
    assert choice["engine"] in BOARD_ENGINES and choice["engines_considered"] == list(BOARD_ENGINES)
    if fastest_any["engine"] not in BOARD_ENGINES:  # the restriction changed the choice
        assert (choice["variant"], choice["format"], choice["engine"]) != (
            fastest_any["variant"], fastest_any["format"], fastest_any["engine"])
    with pytest.raises(ConfigError, match="unknown engine 'tvm'"):
        select(run, max_iou_drop=1.0, engines=("tvm",))


def test_limits_within_reach_pass_the_gate(pipeline, capsys):
    run, data, _ = pipeline
    assert main(["bench", str(run), "--data", str(data), "--frames", "2", "--runs", "3",
                 "--max-latency-ms", "10000", "--max-iou-drop", "1", "--formats", "onnx-fp32"]) == 0


def test_select_respects_the_iou_budget_and_says_why(pipeline):
    run, data, _ = pipeline
    bench(run, data=data, frames=3, runs=5, min_seconds=0.1, progress=False)  # restore the full table
    choice = select(run, max_iou_drop=1.0, objective="size")
    rows = json.loads((run / "bench/results.json").read_text())["rows"]
    deployable = [r for r in rows if r["deployable"]]
    smallest = min(deployable, key=lambda r: r["gzip_bytes"])
    assert choice["format"] == smallest["format"] and "lowest size" in choice["reason"]
    assert (run / "deploy" / choice["artifact"].split("/")[-1]).exists()
    assert json.loads((run / "deploy/selection.json").read_text())["format"] == choice["format"]


def test_select_refuses_when_nothing_fits_the_budget(pipeline, tmp_path):
    run, _, _ = pipeline
    results = json.loads((run / "bench/results.json").read_text())
    for row in results["rows"]:
        row["iou_drop"] = 0.5
    fake = tmp_path / "run"
    (fake / "bench").mkdir(parents=True)
    (fake / "bench/results.json").write_text(json.dumps(results))
    with pytest.raises(GateError, match=r"no artifact keeps the IoU drop within 0.01; the smallest drop is 0.5000"):
        select(fake, max_iou_drop=0.01)


def test_limits_file_with_an_unknown_key_lists_the_valid_ones(tmp_path):
    f = tmp_path / "limits.toml"
    f.write_text("[limits]\nmax_latency = 5\n")
    with pytest.raises(ConfigError, match=r"unknown limit\(s\) max_latency; valid: max_bytes, max_iou_drop, max_latency_ms, min_iou"):
        Limits.load(f)


def test_limits_file_values_are_read_and_overridden_by_options(tmp_path):
    f = tmp_path / "limits.toml"
    f.write_text("[limits]\nmax_iou_drop = 0.01\nmax_latency_ms = 50\n")
    lim = Limits.load(f, max_latency_ms=20.0)
    assert lim.max_iou_drop == 0.01 and lim.max_latency_ms == 20.0
    row = {"variant": "base", "format": "onnx-int8", "threads": 1, "iou_drop": 0.02, "p50_ms": 25.0, "iou": 0.8, "bytes": 1}
    assert lim.violations(row) == ["LIMIT base/onnx-int8 (threads=1): IoU drop 0.0200 > limit 0.01",
                                   "LIMIT base/onnx-int8 (threads=1): latency p50 25.00 ms > limit 20.0 ms"]
    row.update(iou_drop_ci=[0.0123, 0.041], frames=20)
    assert lim.violations(row)[0] == ("LIMIT base/onnx-int8 (threads=1): IoU drop 0.0200 > limit 0.01 "
                                      "(95 % interval 0.0123 to 0.0410 over 20 frames)")


def test_a_limit_checked_against_a_value_that_is_not_a_number_fails_the_gate():
    row = {"variant": "base", "format": "onnx-int8", "threads": 1, "iou_drop": float("nan"), "p50_ms": float("inf")}
    assert Limits(max_iou_drop=0.02, max_latency_ms=50.0).violations(row) == [
        "LIMIT base/onnx-int8 (threads=1): max_iou_drop is checked against nan, not a number",
        "LIMIT base/onnx-int8 (threads=1): max_latency_ms is checked against inf, not a number"]


def test_a_violation_names_the_engine_so_one_file_on_two_engines_gives_two_different_lines():
    lim = Limits(max_latency_ms=10.0)
    row = {"variant": "base", "format": "onnx-int8", "threads": 1, "p50_ms": 25.0}
    lines = lim.violations({**row, "engine": "onnxruntime"}) + lim.violations({**row, "engine": "openvino"})
    assert lines == ["LIMIT base/onnx-int8 on onnxruntime (threads=1): latency p50 25.00 ms > limit 10.0 ms",
                     "LIMIT base/onnx-int8 on openvino (threads=1): latency p50 25.00 ms > limit 10.0 ms"]


def test_bench_on_a_directory_without_a_model_is_a_one_line_error(tmp_path, capsys):
    assert main(["bench", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


# ---- the gate fails closed ----------------------------------------------------------------------

def _row(fmt, status="ok", variant="base", engine="onnxruntime", **kw):
    return {"variant": variant, "format": fmt, "engine": engine, "status": status, "threads": 1, **kw}


def test_gate_fails_on_an_errored_or_timed_out_artifact_naming_it():
    from lunarseg.benchmarks.bench import gate_failures

    rows = [_row(BASELINE, engine="tensorflow"), _row("onnx-int8"),
            _row("tflite-int8", "timeout", variant="slim40", engine="litert", error="still running after 5 s")]
    assert gate_failures(rows) == ["artifact slim40/tflite-int8 on litert: timeout: still running after 5 s"]


def test_gate_fails_on_a_failed_baseline_because_no_drop_can_be_checked():
    from lunarseg.benchmarks.bench import gate_failures

    failures = gate_failures([_row(BASELINE, "error", engine="tensorflow", error="exited 1"), _row("onnx-int8")])
    assert len(failures) == 1 and failures[0].startswith("baseline base/keras-fp32") and "no IoU drop" in failures[0]


def test_gate_fails_when_no_deployable_row_was_measured():
    from lunarseg.benchmarks.bench import gate_failures

    assert gate_failures([_row(BASELINE, engine="tensorflow")]) == [
        "no deployable artifact was measured (nothing exported, or --formats/--engines left none)"]


def test_missing_artifact_file_fails_the_bench_exit_code(pipeline, tmp_path):
    import shutil

    run, data, _ = pipeline
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    manifest = json.loads((copy / "export/manifest.json").read_text())
    (copy / manifest["artifacts"][0]["path"]).unlink()
    code = main(["bench", str(copy), "--data", str(data), "--frames", "2", "--runs", "3", "--formats",
                 manifest["artifacts"][0]["format"], "--engines", "onnxruntime,litert"])
    assert code == 1
    results = json.loads((copy / "bench/results.json").read_text())
    assert any("file missing" in v for v in results["violations"])


def test_unknown_format_name_is_refused_before_measuring(pipeline, capsys):
    run, data, _ = pipeline
    assert main(["bench", str(run), "--data", str(data), "--formats", "onnx-int9"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown format 'onnx-int9'; valid:" in err and len(err.splitlines()) == 1


def test_a_measurement_past_its_timeout_is_killed_and_reported(pipeline):
    from lunarseg.benchmarks.bench import run_child

    run, data, _ = pipeline
    result = run_child(run / "model.keras", data, 1, -1, frames=2, runs=3, timeout=0.5)
    assert result["status"] == "timeout" and "killed" in result["error"]
