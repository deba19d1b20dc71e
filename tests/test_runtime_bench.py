"""The runtime benchmark (issue targets: overhead, cold start, RSS, soak) runs and reports every figure."""
import json

import pytest

from runtime_models import models as build_models
from lunarseg.benchmarks import runtime_bench


@pytest.fixture(scope="module")
def models():
    return build_models()


@pytest.mark.parametrize("name,backend", [("bin_int8.tflite", "auto"), ("bin.onnx", "auto"), ("bin.onnx", "openvino")])
def test_runtime_bench_reports_overhead_cold_start_rss_and_soak_for_each_engine(models, tmp_path, name, backend):
    res = runtime_bench.run(models[name], frames=5, soak=30, out=str(tmp_path), cold_runs=1, backend=backend)
    o, c, s = res["overhead"], res["cold_start"], res["soak"]
    assert o["engine_ms_median"] > 0 and o["segment_ms_median"] >= o["preprocess_ms_median"]
    assert o["overhead_pct"] == pytest.approx(100 * o["overhead_ms"] / o["engine_ms_median"])
    assert c["cold_start_s"] > 0 and c["peak_rss_mb"] > 0 and c["heavy_modules"] == []
    assert s["frames"] == 30 and s["failed"] == 0
    assert set(res["pass"]) == {"overhead_pct", "cold_start_s", "cold_peak_rss_mb", "soak_rss_growth_mb", "soak_failed"}
    stem = f"runtime_bench_{name.rsplit('.', 1)[0]}_{res['backend']}"
    assert json.loads((tmp_path / f"{stem}.json").read_text())["backend"] == res["backend"]
    assert "pre+post overhead" in (tmp_path / f"{stem}.md").read_text()
