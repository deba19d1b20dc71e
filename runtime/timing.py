"""Wall-clock latency of a zero-argument call, in ms: one call, and the timing loop after warm-up that
the benchmarks and export parity report (their percentiles / median are taken over its array)."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

__all__ = ["call_ms", "latency_ms"]


def call_ms(call: Callable[[], object]) -> float:
    """The wall time of one `call()`, in ms (perf_counter)."""
    t = time.perf_counter()
    call()
    return (time.perf_counter() - t) * 1e3


def latency_ms(call: Callable[[], object], runs: int, min_seconds: float = 0.0, warmup: int = 5) -> np.ndarray:
    """Per-call wall times of `call()` in ms after `warmup` untimed calls: at least `runs` calls, more
    until `min_seconds` have passed since the first timed one, but never more than 20 × runs."""
    for _ in range(warmup):
        call()
    times, start = [], time.perf_counter()
    while len(times) < runs or (time.perf_counter() - start < min_seconds and len(times) < 20 * runs):
        times.append(call_ms(call))
    return np.array(times)
