"""`lunarseg select`: pick the best benchmarked artifact within an IoU budget and deploy it.

Frame size is one of the axes chosen over: rows of every input size compete on the same objective
(bench scores each artifact's frame-size mask against the labels at their own resolution, so their
IoUs compare), and `selection.json` records the chosen artifact's input size and engine."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from lunarseg.runtime import atomic
from lunarseg.runtime.errors import ConfigError, GateError

OBJECTIVES = {"latency": ("p50_ms", "ms"), "size": ("gzip_bytes", "gzip bytes")}


def _label(row: dict) -> str:
    size = f" at {row['input_size']}" if row.get("input_size") else ""
    return f"{row['variant']}/{row['format']}{size} on {row.get('engine') or 'its default engine'}"


def input_size_of(row: dict) -> str:
    """The row's input size 'WxH': its `input_size` column, else (results written before bench had
    that column) the input shape in the artifact file's own metadata; '' when neither can be read."""
    if row.get("input_size"):
        return str(row["input_size"])
    from lunarseg.runtime.backends import open_backend
    from lunarseg.runtime.errors import LunarsegError

    try:
        meta = open_backend(row["path"]).meta
    except (LunarsegError, OSError, KeyError):
        return ""
    return f"{meta.width}x{meta.height}"


# The engines a rover board can install (aarch64 wheels): what `--engines board` means.
BOARD_ENGINES = ("onnxruntime", "litert")


def select(run: str | Path, *, max_iou_drop: float, objective: str = "latency",
           engines: tuple[str, ...] | None = None) -> dict:
    """Best deployable artifact with IoU drop <= budget by `objective` among the rows measured on
    `engines` (None = any); copied to RUN/deploy/, with the engine it was chosen for recorded."""
    run = Path(run)
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {objective!r}; valid: {', '.join(sorted(OBJECTIVES))}")
    results_path = run / "bench" / "results.json"
    if not results_path.exists():
        raise ConfigError(f"{results_path} not found; run `lunarseg bench {run}` first")
    results = json.loads(results_path.read_text())
    first_threads = results["threads"][0]
    rows = [r for r in results["rows"] if r.get("deployable") and r["status"] == "ok" and r["threads"] == first_threads
            and (not engines or r.get("engine") in engines)]
    if engines and not rows:
        raise GateError(f"no artifact was measured on {', '.join(engines)}; bench with those engines first")
    rows = [{**r, "input_size": input_size_of(r)} for r in rows]
    fits = [r for r in rows if r.get("iou_drop") is not None and r["iou_drop"] <= max_iou_drop]
    if not fits:
        best = min(rows, key=lambda r: r.get("iou_drop", 1e9), default=None)
        hint = f"; the smallest drop is {best['iou_drop']:.4f} ({_label(best)})" if best else ""
        raise GateError(f"no artifact keeps the IoU drop within {max_iou_drop}{hint}")
    key, unit = OBJECTIVES[objective]
    fits.sort(key=lambda r: (r[key], r["iou_drop"]))
    win = fits[0]
    src = Path(win["path"])
    deploy = run / "deploy"
    target = deploy / src.name
    with atomic.atomic_path(target) as tmp:
        shutil.copyfile(src, tmp)
    runner_up = fits[1] if len(fits) > 1 else None
    from lunarseg.export.sizes import size_pixels

    sizes = sorted({r["input_size"] for r in fits if r["input_size"]}, key=size_pixels)
    among = f" at {len(sizes)} input sizes ({', '.join(sizes)})" if len(sizes) > 1 else ""
    reason = (f"{_label(win)}: lowest {objective} ({win[key]:,.2f} {unit}) among {len(fits)} of "
              f"{len(rows)} artifacts{among} with IoU drop <= {max_iou_drop} (its drop {win['iou_drop']:+.4f}, "
              f"IoU {win['iou']:.4f})")
    if runner_up:
        reason += f"; runner-up {_label(runner_up)} at {runner_up[key]:,.2f} {unit}"
    engine = win.get("engine") or "auto"
    choice = {"artifact": str(target), "source": str(src), "variant": win["variant"], "format": win["format"],
              "input_size": win["input_size"], "input_sizes_considered": sizes, "engine": engine, "run_with": f"lunarseg segment {target} FRAMES --out DIR --backend {engine}",
              "objective": objective, "max_iou_drop": max_iou_drop, "reason": reason,
              "engines_considered": list(engines) if engines else "any",
              "figures": {k: win.get(k) for k in ("iou", "iou_drop", "p50_ms", "bytes", "gzip_bytes", "speedup")}}
    atomic.write_json(deploy / "selection.json", choice)
    return choice
