"""This process's memory figures from /proc/self/status (Linux), in MiB: VmRSS (resident now) and
VmHWM (the peak resident set, its high-water mark). The one reader for the benchmarks' RSS figures."""
from __future__ import annotations

STATUS = "/proc/self/status"

__all__ = ["status_mb", "STATUS"]


def status_mb(key: str, text: str | None = None) -> float:
    """Field `key` (VmRSS, VmHWM, …: kB in the file) in MiB, from /proc/self/status or from `text`
    (the file's contents); NaN when the field is absent."""
    if text is None:
        with open(STATUS) as fh:
            text = fh.read()
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")
