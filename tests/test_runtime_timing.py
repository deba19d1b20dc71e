"""runtime.timing: the one latency loop (warm-up, then per-call perf_counter times) of bench and parity."""
import types

import numpy as np
import pytest

from lunarseg.runtime import timing


def _fake_clock(monkeypatch):
    """Call k (warm-up included) takes k ms on a fake perf_counter."""
    clock = {"s": 0.0, "calls": 0}

    def call():
        clock["calls"] += 1
        clock["s"] += clock["calls"] / 1e3

    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=lambda: clock["s"]))
    return clock, call


def test_latency_times_each_call_after_warm_up_for_the_runs_and_the_minimum_seconds(monkeypatch):
    clock, call = _fake_clock(monkeypatch)
    times = timing.latency_ms(call, runs=3, min_seconds=0.0, warmup=2)
    np.testing.assert_allclose(times, [3.0, 4.0, 5.0])  # warm-up calls 1 and 2 are not timed
    clock.update(s=0.0, calls=0)
    longer = timing.latency_ms(call, runs=3, min_seconds=0.05, warmup=2)
    assert len(longer) == 8 and longer.sum() >= 50.0  # 3+4+...+10 ms: the first sum past 50 ms
    clock.update(s=0.0, calls=0)
    capped = timing.latency_ms(call, runs=2, min_seconds=100.0, warmup=0)
    assert len(capped) == 40  # never more than 20 x runs calls


def test_one_call_is_timed_in_ms_and_parity_reports_the_median_of_its_loop(monkeypatch):
    from lunarseg.export.parity import latency_ms as parity_latency_ms

    clock, call = _fake_clock(monkeypatch)
    assert timing.call_ms(call) == 1.0
    clock.update(s=0.0, calls=0)
    seen = []
    # 3 warm-up calls (1-3 ms), then 5 timed ones of 4..8 ms: median 6 ms; predict gets the batch each time
    assert parity_latency_ms(lambda x: (seen.append(x), call()), "x1", runs=5, warmup=3) == pytest.approx(6.0)
    assert seen == ["x1"] * 8
