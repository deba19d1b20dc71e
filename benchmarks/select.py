"""`lunarseg select`: pick the best benchmarked artifact within an IoU budget and deploy it.

Frame size is one of the axes chosen over: rows of every input size compete on the same objective
(bench scores each artifact's frame-size mask against the labels at their own resolution, so their
IoUs compare), and `selection.json` records the chosen artifact's input size and engine."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from lunarseg.runtime import atomic
from lunarseg.runtime.errors import ConfigError, GateError, unknown_key

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


def _candidates(results: dict, engines, run: Path) -> list[dict]:
    """The run's own deployable measured rows (found again under `run`, wherever it has moved) at the
    first thread count on `engines`, each with its input size; files benched beside the run's (loose
    files, other runs) are never deployed into it."""
    first_threads = results["threads"][0]
    rows = [{**r, "path": str(run / inside)} for r in results["rows"]
            if r.get("deployable") and r["status"] == "ok" and r["threads"] == first_threads
            and (not engines or r.get("engine") in engines) and (inside := _path_in_run(r, results, run))]
    if not rows:
        on = f" on {', '.join(engines)}" if engines else ""
        raise GateError(f"no artifact of {run} was measured{on}; run `lunarseg bench {run}` first")
    return [{**r, "input_size": input_size_of(r)} for r in rows]


def _path_in_run(row: dict, results: dict, run: Path) -> str | None:
    """The row's file relative to the run, or None for a file of another run or a loose one. Results
    written before bench recorded `run_path` give it by the row's path, when that lies in the run."""
    if row.get("run") != results.get("run"):
        return None
    if row.get("run_path"):
        return row["run_path"]
    try:
        return str(Path(row["path"]).resolve().relative_to(run.resolve()))
    except ValueError:
        return None


def _read_results(path: Path) -> dict:
    """bench's results.json, or a one-line error when it is not one."""
    try:
        results = json.loads(path.read_text())
        if not isinstance(results.get("rows"), list) or not results.get("threads"):
            raise ValueError("no rows or threads")
    except (ValueError, AttributeError) as exc:
        raise ConfigError(f"{path}: not a bench results file ({exc}); run `lunarseg bench` again") from None
    return results


def _clear_old_deployments(deploy: Path, keep: Path) -> list[str]:
    """Remove the model files an earlier `select` left in RUN/deploy (bench and bundle read every model
    there); returns their names."""
    old = [p for p in deploy.iterdir() if p.suffix.lower() in (".onnx", ".tflite") and p.name != keep.name]
    for p in old:
        p.unlink(missing_ok=True)
    return [p.name for p in old]


def charge_size_cost(rows: list[dict]) -> str | None:
    """Put rows of every input size on one scale: when the rows of one variant (of one source) were
    measured against different references (a TensorFlow-free bench takes each size's own fp32 file),
    every IoU drop becomes the drop against the best of those references, so a smaller frame is
    charged the IoU its size costs, not only its quantization's. Returns what the drops are now
    measured against, or None when nothing changed (e.g. one Keras baseline for every row)."""
    changed = None
    source_of = lambda r: r.get("trained_hash") or r.get("run")  # noqa: E731  (results written before the hashes)
    for source, variant in {(source_of(r), r.get("variant")) for r in rows}:
        group = [r for r in rows if (source_of(r), r.get("variant")) == (source, variant)
                 and r.get("reference_iou") is not None]
        refs = {r["reference_iou"] for r in group}
        if len(refs) < 2:
            continue
        best = max(group, key=lambda r: r["reference_iou"])
        for r in group:
            r["iou_drop"] = round(best["reference_iou"] - r["iou"], 5)
            r["reference"] = best.get("reference")
            r.pop("iou_drop_ci", None)  # it was against the row's old reference
        changed = f"{best.get('reference')} (IoU {best['reference_iou']:.4f}), the best reference among the sizes"
    return changed


def _figure(row: dict, objective: str) -> str:
    """The objective's figure of a row with its unit: '12.70 ms', '453,333 gzip bytes'."""
    key, unit = OBJECTIVES[objective]
    return f"{row[key]:,.0f} {unit}" if objective == "size" else f"{row[key]:,.2f} {unit}"


def _reason(win: dict, fits: list[dict], rows: list[dict], objective: str, max_iou_drop: float, sizes: list[str]) -> str:
    among = f" at {len(sizes)} input sizes ({', '.join(sizes)})" if len(sizes) > 1 else ""
    reason = (f"{_label(win)}: lowest {objective} ({_figure(win, objective)}) among {len(fits)} of "
              f"{len(rows)} artifacts{among} with IoU drop <= {max_iou_drop} (its drop {win['iou_drop']:+.4f}, "
              f"IoU {win['iou']:.4f})")
    if len(fits) > 1:
        reason += f"; runner-up {_label(fits[1])} at {_figure(fits[1], objective)}"
    return reason


def select(run: str | Path, *, max_iou_drop: float, objective: str = "latency",
           engines: tuple[str, ...] | None = None) -> dict:
    """Best deployable artifact with IoU drop <= budget by `objective` among the rows measured on
    `engines` (None = any), over every input size; copied to RUN/deploy/, with the input size and
    engine it was chosen for recorded."""
    from lunarseg.export.sizes import size_pixels

    run = Path(run)
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {objective!r}; valid: {', '.join(sorted(OBJECTIVES))}")
    if not math.isfinite(max_iou_drop):
        raise ConfigError(f"--max-iou-drop must be a finite number, got {max_iou_drop}")
    from lunarseg.runtime.backends import BACKENDS

    unknown = [e for e in engines or () if e not in BACKENDS]
    if unknown:
        raise unknown_key("engine", unknown[0], (*BACKENDS, "board"))
    results_path = run / "bench" / "results.json"
    if not results_path.exists():
        raise ConfigError(f"{results_path} not found; run `lunarseg bench {run}` first")
    rows = _candidates(_read_results(results_path), engines, run)
    common = charge_size_cost(rows)
    measured = [r for r in rows if r.get("iou_drop") is not None]
    fits = [r for r in measured if r["iou_drop"] <= max_iou_drop]
    if not fits:
        best = min(measured, key=lambda r: r["iou_drop"], default=None)
        hint = (f"; the smallest drop is {best['iou_drop']:.4f} ({_label(best)})" if best
                else "; no artifact has an IoU reference (bench measured no float version of the trained model)")
        raise GateError(f"no artifact keeps the IoU drop within {max_iou_drop}{hint}")
    key, _ = OBJECTIVES[objective]
    fits.sort(key=lambda r: (r[key], r["iou_drop"]))
    win = fits[0]
    src = Path(win["path"])
    target = run / "deploy" / src.name
    with atomic.atomic_path(target) as tmp:
        shutil.copyfile(src, tmp)
    sizes = sorted({r["input_size"] for r in rows if r["input_size"]}, key=size_pixels)
    engine = win.get("engine") or "auto"
    choice = {"artifact": str(target), "source": str(src), "variant": win["variant"], "format": win["format"],
              "input_size": win["input_size"], "engine": engine,
              "run_with": f"lunarseg segment {target} FRAMES --out DIR --backend {engine}",
              "objective": objective, "max_iou_drop": max_iou_drop,
              "reason": _reason(win, fits, rows, objective, max_iou_drop, sizes),
              "engines_considered": list(engines) if engines else "any", "input_sizes_considered": sizes,
              "drops_against": common or "each row's own reference (bench's `reference` column)",
              "figures": {k: win.get(k) for k in ("iou", "iou_drop", "p50_ms", "bytes", "gzip_bytes", "speedup")}}
    atomic.write_json(run / "deploy" / "selection.json", choice)
    choice["removed"] = _clear_old_deployments(run / "deploy", target)
    return choice
