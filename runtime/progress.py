"""A dependency-free progress bar on stderr: redraws in place on a terminal, prints a few lines otherwise."""
from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
RATE_AFTER_S = 0.5


class Progress:
    """Count items towards `total`, showing rate and ETA; `unit` names what is counted."""

    def __init__(self, total: int | None, desc: str = "", unit: str = "it", stream=None, enabled: bool = True):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.n = 0
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._next_pct = 25

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def rate(self) -> float:
        """Items per second; 0 (shown as '-') until RATE_AFTER_S have passed, when one fast first
        item (a frame that failed at once) would claim thousands per second."""
        return self.n / self.elapsed if self.elapsed >= RATE_AFTER_S else 0.0

    def update(self, n: int = 1, **postfix) -> None:
        self.n += n
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.tty:
            if now - self._last_draw > 0.1 or (self.total and self.n >= self.total):
                self._draw(postfix, end="\r")
                self._last_draw = now
        elif self.total:
            pct = 100 * self.n // self.total
            if pct >= self._next_pct:
                self._draw(postfix, end="\n")
                self._next_pct = (pct // 25 + 1) * 25

    def _draw(self, postfix: dict, end: str) -> None:
        extra = " ".join(f"{k}={v}" for k, v in postfix.items())
        if self.total:
            frac = self.n / self.total
            bar = "#" * int(24 * frac) + "-" * (24 - int(24 * frac))
            eta = f"{(self.total - self.n) / self.rate:.0f}s" if self.rate > 0 else "-"
            line = f"{self.desc} [{bar}] {self.n}/{self.total} {self._rate_text()} eta {eta} {extra}"
        else:
            line = f"{self.desc} {self.n} {self.unit} {self._rate_text()} {extra}"
        self.stream.write(line.rstrip() + end)
        self.stream.flush()

    def _rate_text(self) -> str:
        return f"{self.rate:.1f} {self.unit}/s" if self.rate > 0 else f"- {self.unit}/s"

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def track(items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it",
          enabled: bool = True) -> Iterator[T]:
    """Iterate with a progress bar."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    bar = Progress(total, desc, unit, enabled=enabled)
    try:
        for item in items:
            yield item
            bar.update()
    finally:
        bar.close()
