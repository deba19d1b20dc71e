"""Board latency estimates: MACs over a published per-core rate, int8 faster, labelled as estimates."""
import pytest

from lunarseg.benchmarks.boards import (BOARDS, INT8_SPEEDUP, RK3288_MOBILENET_V2_1T_MS, board_estimates, estimate_ms,
                                        estimates_markdown, get_board)
from lunarseg.runtime.errors import ConfigError


def test_mobilenet_v2_on_four_pi4_cores_gives_back_the_published_44_ms():
    assert estimate_ms(300e6, BOARDS["pi4"], int8=False, threads=4) == pytest.approx(44.0)


def test_int8_is_estimated_faster_by_the_int8_factor_and_faster_boards_are_faster():
    f32, i8 = (estimate_ms(1e9, BOARDS["pi4"], int8=q) for q in (False, True))
    assert f32 / i8 == pytest.approx(INT8_SPEEDUP)
    assert estimate_ms(1e9, BOARDS["pi3"], False) > f32 > estimate_ms(1e9, BOARDS["pi5"], False)


def test_estimates_skip_the_keras_baseline_and_rows_without_macs_and_say_they_are_estimates():
    rows = [{"variant": "base", "format": "keras-fp32", "status": "ok", "gmacs": 1.0},
            {"variant": "base", "format": "onnx-int8", "status": "ok", "gmacs": 1.0, "quantization": {"mode": "int8"}},
            {"variant": "slim40", "format": "onnx-fp32", "status": "ok", "gmacs": None},
            {"variant": "x", "format": "onnx-fp32", "status": "error", "gmacs": 1.0}]
    est = board_estimates(rows)
    assert [(e["format"], e["int8"]) for e in est] == [("onnx-int8", True)]
    text = "\n".join(estimates_markdown(est))
    assert "not measurements" in text and "XNNPACK README" in text


def test_unknown_board_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown board 'jetson'; valid: pi3, pi4, pi5, sd801"):
        get_board("jetson")


def test_snapdragon_801_rate_is_the_cited_cortex_a17_mobilenet_v2_time_scaled_from_1_8_to_2_26_ghz():
    assert RK3288_MOBILENET_V2_1T_MS == 179.24  # ncnn benchmark README, RK3288, benchncnn 8 1 0, mobilenet_v2 avg
    assert BOARDS["sd801"].gmac_per_s_per_core == pytest.approx(0.300 / 0.17924 * 2.26 / 1.8)
    assert estimate_ms(300e6, BOARDS["sd801"], int8=False) == pytest.approx(179.24 * 1.8 / 2.26)


def test_snapdragon_801_appears_in_the_bench_markdown_as_an_estimate_naming_its_stand_in():
    est = board_estimates([{"variant": "base", "format": "tflite-int8", "status": "ok", "gmacs": 2.0,
                            "quantization": {"mode": "int8"}}])
    lines = estimates_markdown(est)
    head = next(line for line in lines if line.startswith("| variant"))
    assert "sd801 ms (est.)" in head
    text = "\n".join(lines)
    assert "estimates" in text and "Snapdragon 801" in text and "Cortex-A17" in text and "ncnn" in text
    row = next(line for line in lines if line.startswith("| base"))
    want = 1e3 * 2e9 / (BOARDS["sd801"].gmac_per_s_per_core * 1e9 * INT8_SPEEDUP)
    assert row.rstrip(" |").split("|")[-1].strip() == f"{want:.1f}"
