"""Limits the benchmark gate enforces, from a TOML file and/or command-line options."""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from lunarseg.runtime.errors import ConfigError


@dataclass
class Limits:
    """None = no limit. Latency is the p50 engine time at the benchmark's first thread count."""

    max_iou_drop: float | None = None
    max_latency_ms: float | None = None
    min_iou: float | None = None
    max_bytes: int | None = None

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides) -> "Limits":
        data: dict = {}
        if path:
            try:
                raw = tomllib.loads(Path(path).read_text())
            except FileNotFoundError:
                raise ConfigError(f"{path}: limits file not found") from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: not valid TOML ({exc})") from None
            data = raw.get("limits", raw)
            if not isinstance(data, dict):
                raise ConfigError(f"{path}: [limits] must be a table of limits, got {data!r}")
            valid = {f.name for f in fields(cls)}
            unknown = sorted(set(data) - valid)
            if unknown:
                raise ConfigError(f"{path}: unknown limit(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        limits = cls(**data)
        for f in fields(limits):
            value = getattr(limits, f.name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value < 0):
                raise ConfigError(f"limit {f.name} must be a finite non-negative number, got {value!r}")
        return limits

    def violations(self, row: dict) -> list[str]:
        """One line per broken limit for a deployable row, naming its engine: one file can pass on one
        engine and fail on another."""
        name = row_name(row)
        out = []
        checks = (
            ("max_iou_drop", row.get("iou_drop"), lambda v, lim: v > lim, "IoU drop {v:.4f} > limit {lim}"),
            ("min_iou", row.get("iou"), lambda v, lim: v < lim, "IoU {v:.4f} < limit {lim}"),
            ("max_latency_ms", row.get("p50_ms"), lambda v, lim: v > lim, "latency p50 {v:.2f} ms > limit {lim} ms"),
            ("max_bytes", row.get("bytes"), lambda v, lim: v > lim, "size {v:,} bytes > limit {lim:,}"),
        )
        for key, value, broken, text in checks:
            lim = getattr(self, key)
            if lim is None or value is None:  # a missing IoU drop fails the gate in bench.gate_failures
                continue
            if not math.isfinite(value):  # NaN compares false with any limit: fail closed
                out.append(f"LIMIT {name} (threads={row['threads']}): {key} is checked against {value}, not a number")
            elif broken(value, lim):
                note = _interval_note(row) if key == "max_iou_drop" else ""
                out.append(f"LIMIT {name} (threads={row['threads']}): " + text.format(v=value, lim=lim) + note)
        return out


def row_name(row: dict) -> str:
    """'variant/format on engine' (engine left out when the row has none): how gate lines name a bench row."""
    return f"{row['variant']}/{row['format']}" + (f" on {row['engine']}" if row.get("engine") else "")


def _interval_note(row: dict) -> str:
    """' (95 % interval 0.0123 to 0.0410 over 20 frames)' for a drop with an interval, else ''."""
    interval = row.get("iou_drop_ci")
    if not interval:
        return ""
    return f" (95 % interval {interval[0]:.4f} to {interval[1]:.4f} over {row.get('frames', '?')} frames)"
