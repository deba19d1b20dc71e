"""Board latency estimates: MACs over a published per-core rate, int8 faster, labelled as estimates."""
import pytest

from lunarseg.benchmarks.boards import BOARDS, INT8_SPEEDUP, board_estimates, estimate_ms, estimates_markdown, get_board
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
    with pytest.raises(ConfigError, match="unknown board 'jetson'; valid: pi3, pi4, pi5"):
        get_board("jetson")
