"""`manifest.json`: one per run, listing every exported artifact of every variant.

Entries are keyed by (variant, format, path) — the path carries the input size when an artifact
is exported at a size other than the model's own (`onnx-int8-192x128.onnx`), so each (format,
size) is its own row; a new export replaces its own entries and keeps the rest. Each entry records
its `input_size` ("WxH"; entries written before sizes existed have none: the model's own size).
Written atomically.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from lunarseg.export.sizes import size_pixels
from lunarseg.runtime import atomic
from lunarseg.runtime.errors import ModelFileError

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        return {"schema_version": SCHEMA_VERSION, "artifacts": []}
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: manifest is not valid JSON ({exc}); delete it to start afresh") from None
    if not isinstance(data, dict) or not isinstance(data.get("artifacts"), list):
        raise ModelFileError(f"{path}: not a lunarseg export manifest (no 'artifacts' list)")
    return data


def _order(entry: dict) -> tuple:
    from lunarseg.export.formats import FORMAT_NAMES

    fmt = entry.get("format", "")
    rank = FORMAT_NAMES.index(fmt) if fmt in FORMAT_NAMES else len(FORMAT_NAMES)
    variant = entry.get("variant", "base")
    return (variant != "base", variant, rank, fmt, size_pixels(entry.get("input_size", "")), entry.get("path", ""))


def _key(entry: dict) -> tuple:
    return (entry.get("variant", "base"), entry.get("format"), entry.get("path"))


def merge_manifest(path: str | Path, entries: list[dict], run_dir: str | Path) -> dict:
    """Replace the (variant, format, path) entries of `entries` in the manifest at `path`; write it."""
    data = read_manifest(path)
    new = {_key(e) for e in entries}
    kept = [e for e in data["artifacts"] if _key(e) not in new]
    data.update({
        "schema_version": SCHEMA_VERSION,
        "run": str(run_dir),
        "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "artifacts": sorted(kept + list(entries), key=_order),
    })
    atomic.write_json(path, data)
    return data
