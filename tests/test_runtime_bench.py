"""The runtime benchmark (issue targets: overhead, cold start, RSS, soak) runs and reports every figure."""
import json

import pytest

from engines import on_engine
from runtime_models import models as build_models
from lunarseg.benchmarks import runtime_bench


@pytest.fixture(scope="module")
def models():
    return build_models()


@pytest.mark.parametrize("name,backend", [("bin_int8.tflite", "auto"), ("bin.onnx", "auto"),
                                          on_engine("bin.onnx", "openvino", engine="openvino")])
def test_runtime_bench_reports_overhead_cold_start_rss_and_soak_for_each_engine(models, tmp_path, name, backend):
    res = runtime_bench.run(models[name], frames=5, soak=30, out=str(tmp_path), cold_runs=1, backend=backend)
    o, c, s = res["overhead"], res["cold_start"], res["soak"]
    assert o["engine_ms_median"] > 0 and o["segment_ms_median"] >= o["preprocess_ms_median"]
    assert c["cold_start_s"] > 0 and c["peak_rss_mb"] > 0 and c["heavy_modules"] == []
    assert s["frames"] == 30 and s["failed"] == 0
    assert set(res["pass"]) == {"overhead_pct", "cold_start_s", "cold_peak_rss_mb", "soak_rss_growth_mb", "soak_failed"}
    stem = f"runtime_bench_{name.rsplit('.', 1)[0]}_{res['backend']}"
    assert json.loads((tmp_path / f"{stem}.json").read_text())["backend"] == res["backend"]
    assert "pre+post overhead" in (tmp_path / f"{stem}.md").read_text()


def test_overhead_table_reports_pre_post_engine_and_share_per_artifact_and_flags_over_target(models, tmp_path, capsys):
    code = runtime_bench.main([models["bin_int8.tflite"], models["bin.onnx"], "--frames", "3", "--out", str(tmp_path)])
    assert code == 0
    rows = json.loads((tmp_path / "runtime_overhead.json").read_text())["rows"]
    assert [r["backend"] for r in rows] == ["litert", "onnxruntime"]
    assert all(r["over_target"] == (r["overhead_share_pct"] > runtime_bench.TARGETS["overhead_pct"]) for r in rows)
    text = (tmp_path / "runtime_overhead.md").read_text()
    assert text.count("\n| ") == 2 and ("OVER" in text or "| ok |" in text)


def test_overhead_markdown_flags_a_row_over_fifteen_percent():
    row = {"model": "m.onnx", "backend": "onnxruntime", "preprocess_ms_median": 1.0, "postprocess_ms_median": 0.6,
           "postprocess_planner_ms_median": 0.2, "engine_ms_median": 8.0, "overhead_share_pct": 20.0,
           "overhead_share_planner_pct": 15.0, "over_target": True, "frames": 5, "frame_hw": [480, 720],
           "frame_channels": 3}
    assert "| 20.0 % (15.0 %) | OVER |" in runtime_bench.overhead_markdown([row])
    assert "| ok |" in runtime_bench.overhead_markdown([{**row, "overhead_share_pct": 9.0, "over_target": False}])


class _FakeSegmenter:
    """Known timings: each segment() reports pre 1.0 ms, post 0.5 ms (0.25 without the frame mask), total 12 ms."""

    def __init__(self):
        from types import SimpleNamespace

        from lunarseg.runtime.metadata import ModelMeta

        self.meta = ModelMeta(input_shape=[1, 32, 48, 1])
        self.backend = SimpleNamespace(engine_call=lambda x: (lambda: None))

    def segment(self, frame, frame_mask=True):
        from types import SimpleNamespace

        return SimpleNamespace(timings_ms={"total": 12.0, "preprocess": 1.0, "postprocess": 0.5 if frame_mask else 0.25})


def test_overhead_is_segment_minus_engine_and_the_share_is_pre_plus_post_over_engine(monkeypatch):
    import numpy as np

    monkeypatch.setattr(runtime_bench, "call_ms", lambda f: 10.0)  # the engine call: 10 ms
    o = runtime_bench.measure_overhead(_FakeSegmenter(), [np.zeros((48, 72), np.uint8)] * 2, n=5)
    assert (o["engine_ms_median"], o["overhead_ms"], o["overhead_pct"]) == (10.0, 2.0, 20.0)
    assert (o["overhead_share_pct"], o["overhead_share_planner_pct"]) == (15.0, 12.5)
    assert o["over_target"] is False  # 15 % is the target itself, not over it
    assert o["frame_hw"] == [48, 72] and o["frame_channels"] == 1 and o["frames"] == 5


@pytest.mark.parametrize("flag,value", [("--frames", "0"), ("--soak", "-1"), ("--cold-runs", "0"), ("--threads", "0")])
def test_counts_that_would_measure_nothing_are_refused_in_one_line(models, tmp_path, capsys, flag, value):
    from lunarseg.benchmarks.runtime_bench import main

    assert main([models["bin.onnx"], "--out", str(tmp_path), flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"runtime_bench: error: {flag} must be at least")
