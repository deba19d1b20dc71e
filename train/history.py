"""A run's training history (history.csv, one row per epoch): written by the trainer, read by the
fine-tunes (the rate the parent was trained at) and the demo's planner (seconds per epoch).
TensorFlow-free, so the demo can read it without loading TensorFlow."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from lunarseg.runtime import atomic

HISTORY_FILE = "history.csv"


def write_history(path: Path, rows: list[dict]) -> None:
    """All epochs' rows as CSV, `epoch` first, written atomically."""
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "epoch", k))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(path, buf.getvalue())


def read_history(run_dir: Path) -> list[dict[str, str]]:
    """The rows of RUN/history.csv as strings; [] when the run has none (an imported model)."""
    path = Path(run_dir) / HISTORY_FILE
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def positive_number(text) -> float | None:
    """A finite value > 0 from a history cell, else None (empty, unreadable, 0, inf, nan)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def rate_at_epoch(rows: list[dict[str, str]], epoch: int | None) -> float | None:
    """The learning rate of epoch `epoch` (1-based, as the rows number them), else of the last row;
    None when that rate is missing or not a positive number."""
    if not rows:
        return None
    row = next((r for r in rows if epoch and str(r.get("epoch")) == str(epoch)), rows[-1])
    return positive_number(row.get("lr"))
