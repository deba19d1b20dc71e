"""What each bench row's IoU drop, speed-up and size ratio are measured against: a float version of the
trained model the row descends from, measured in the same bench on the same frames — its Keras
baseline, else the fp32 artifact exported from it (same input size, file type and engine preferred).
Rows are paired by the trained model's sha256 in their metadata (`trained_hash`), never by name or
folder, so loose files of other models never stand for each other; a row with no such reference has
no drop (a validation IoU in a file is another split's figure, not a reference)."""
from __future__ import annotations

from pathlib import Path

from lunarseg.benchmarks.inputs import BASELINE, is_fp32
from lunarseg.runtime.metadata import CONTROL_VARIANT
from lunarseg.runtime.metrics import drop_interval_between, drop_with_interval

# Each drop and the key of its interval (set when both rows kept their per-frame counts).
INTERVAL_OF = {"iou_drop": "iou_drop_ci", "drop_vs_control": "drop_vs_control_ci"}
INTERVAL_NOTE = ("[lo, hi] after a drop: its 95 % interval, a paired bootstrap over the test frames "
                 "(runtime.metrics.iou_drop_interval): how much the drop depends on which frames the split holds")
NO_REFERENCE = ("no float version of its trained model was measured (its Keras baseline, or an fp32 file "
                "exported from it)")


def drop_text(row: dict, key: str, fmt: str = ".4f") -> str | None:
    """A row's drop (`key` of INTERVAL_OF) as text, followed by its interval when there is one."""
    value = row.get(key)
    return None if value is None else drop_with_interval(value, row.get(INTERVAL_OF[key]), fmt)


def _peers(row: dict, rows: list[dict]) -> list[dict]:
    """Measured rows at the row's thread count that descend from the same trained model."""
    trained = row.get("trained_hash")
    return [r for r in rows if r["status"] == "ok" and r["threads"] == row["threads"] and trained
            and r.get("trained_hash") == trained]


def reference_for(row: dict, rows: list[dict]) -> tuple[str, float, dict] | None:
    """(label, IoU, reference row) of one measured row, or None when no float version of its trained
    model was measured."""
    peers = [r for r in _peers(row, rows) if r.get("model_hash") == row.get("trained_hash")]  # the trained model itself
    base = next((r for r in peers if r["format"] == BASELINE), None)
    if base is not None:
        return BASELINE, base["iou"], base
    fp32 = [r for r in peers if is_fp32(r)]
    fp32.sort(key=lambda r: (r.get("input_size") != row.get("input_size"),
                             Path(r["path"]).suffix != Path(row["path"]).suffix, r.get("engine") != row.get("engine")))
    if fp32:
        ref = fp32[0]
        size = f" {ref['input_size']}" if ref.get("input_size") else ""
        return f"{ref['variant']}/{ref['format']}{size} on {ref.get('engine')}", ref["iou"], ref
    return None


def relate_to_reference(rows: list[dict]) -> None:
    """Set reference, reference_iou, iou_drop (and speedup, size_ratio against a measured reference) on each ok row."""
    for r in rows:
        found = reference_for(r, rows) if r["status"] == "ok" else None
        if found is None:
            continue
        label, ref_iou, ref = found
        r.update(reference=label, reference_iou=round(ref_iou, 5), iou_drop=round(ref_iou - r["iou"], 5))
        r["speedup"] = round(ref["p50_ms"] / r["p50_ms"], 2)
        r["size_ratio"] = round(r["gzip_bytes"] / ref["gzip_bytes"], 4)
        _set_interval(r, "iou_drop_ci", ref)
    relate_to_control(rows)


def _set_interval(row: dict, key: str, ref: dict) -> None:
    """row[key] = the 95 % interval of ref's IoU minus row's over the frames both were measured on
    (metrics.iou_drop_interval), when both kept their per-frame counts."""
    interval = None if row is ref else drop_interval_between(ref, row)
    if interval is not None:
        row[key] = interval


def relate_to_control(rows: list[dict]) -> None:
    """A variant's IoU drop against the dense control (train/compress.py CONTROL) in the same format,
    input size and engine: what compression costs once extra fine-tuning is accounted for."""
    key = lambda r: (r.get("trained_hash"), r["format"], r.get("input_size"), r.get("engine"), r["threads"])  # noqa: E731
    controls = {key(r): r for r in rows if r["variant"] == CONTROL_VARIANT and r["status"] == "ok"}
    for r in rows:
        c = controls.get(key(r))
        if c is not None and r["status"] == "ok" and r.get("trained_hash") and r["variant"] not in ("base", CONTROL_VARIANT):
            r["drop_vs_control"] = round(c["iou"] - r["iou"], 5)
            _set_interval(r, "drop_vs_control_ci", c)
