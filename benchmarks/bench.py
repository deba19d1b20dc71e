"""`lunarseg bench`: one row per exported artifact plus the Keras float baseline — accuracy, size,
latency, cold start, memory, MACs — each measured in its own process; a gate on the limits."""
from __future__ import annotations

import gzip
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lunarseg.runtime import atomic
from lunarseg.runtime.errors import ConfigError, ModelFileError
from lunarseg.benchmarks.boards import board_estimates, estimates_markdown
from lunarseg.benchmarks.limits import Limits

BASELINE = "keras-fp32"
PROFILES = {
    # 1 thread pinned to one core, batch 1, frame size from the metadata, cold start included
    "rover": {"threads": [1], "pin_cpu": True},
    "default": {"threads": [1], "pin_cpu": False},
}
COLUMNS = ("variant", "format", "engine", "status", "threads", "bytes", "gzip_bytes", "iou", "dice", "iou_drop",
           "drop_vs_control", "p50_ms",
           "p95_ms", "p99_ms", "fps", "cold_start_ms", "peak_rss_mb", "gmacs", "gmac_per_s", "speedup")


def cpu_info() -> dict:
    """CPU model and the SIMD/matrix flags that decide which kernels engines can use."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            if line.startswith(("flags", "Features")) and ":" in line:
                flags = line.split(":", 1)[1].split()
                break
    except OSError:
        pass
    keep = [f for f in flags if f.startswith(("avx", "amx", "fma", "sse4", "neon", "asimd", "sve", "dotprod", "i8mm"))]
    return {"model": model, "machine": platform.machine(), "cores": os.cpu_count(), "flags": sorted(set(keep))}


def artifacts(run: Path) -> list[dict]:
    """The baseline Keras model, then every artifact in RUN/export/manifest.json."""
    from lunarseg.runtime.metadata import read_keras_meta

    model = run / "model.keras"
    if not model.exists():
        raise ModelFileError(f"{run}: no model.keras; not a lunarseg run directory")
    meta = read_keras_meta(model)
    rows = [{"variant": "base", "format": BASELINE, "path": str(model), "status": "ok", "deployable": False,
             "macs": meta.extra.get("macs")}]
    manifest = run / "export" / "manifest.json"
    if manifest.exists():
        for entry in json.loads(manifest.read_text()).get("artifacts", []):
            path = run / entry["path"] if not Path(entry["path"]).is_absolute() else Path(entry["path"])
            rows.append({"variant": entry.get("variant", "base"), "format": entry["format"], "path": str(path),
                         "status": entry.get("status", "ok"), "error": entry.get("error"), "deployable": True,
                         "macs": meta.extra.get("macs"), "quantization": entry.get("quantization"),
                         "sparsity": entry.get("sparsity")})
    return rows


def run_child(path: Path, data: Path, threads: int, pin_cpu: int, frames: int, runs: int, min_seconds: float = 1.0,
              timeout: float = 900, backend: str = "auto") -> dict:
    """Measure one model in a fresh interpreter; cold start = launch → first mask, seen from here.
    The child's stderr goes to a file (a chatty child cannot block on a full pipe) and a child still
    running after `timeout` seconds is killed and reported."""
    import tempfile
    import threading

    cmd = [sys.executable, "-m", "lunarseg.benchmarks.measure", "--model", str(path), "--data", str(data),
           "--threads", str(threads), "--frames", str(frames), "--runs", str(runs), "--pin-cpu", str(pin_cpu),
           "--min-seconds", str(min_seconds), "--backend", backend]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        killed = threading.Event()
        timer = threading.Timer(timeout, lambda: (killed.set(), proc.kill()))
        timer.start()
        cold_ms, last = None, ""
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("FIRST_MASK") and cold_ms is None:
                    cold_ms = (time.perf_counter() - t0) * 1e3
                elif line.strip():
                    last = line.strip()
            proc.wait()
        finally:
            timer.cancel()
        err.seek(0)
        err_text = err.read()
    if killed.is_set():
        return {"status": "timeout", "error": f"measurement still running after {timeout:.0f} s; killed (--timeout-s)"}
    if proc.returncode != 0:
        tail = [l for l in err_text.strip().splitlines() if l.strip()][-1:] or ["no output"]
        return {"status": "error", "error": f"measurement exited {proc.returncode}: {tail[0][:200]}"}
    try:
        result = json.loads(last)
    except ValueError:
        return {"status": "error", "error": f"measurement printed no result (last line {last[:80]!r})"}
    result["cold_start_ms"] = round(cold_ms, 1) if cold_ms is not None else None
    return result


def gate_failures(rows: list[dict]) -> list[str]:
    """Why the gate cannot pass whatever the limits say: it fails closed on a failed or timed-out
    measurement, a missing file, a failed baseline, and on no deployable row at all."""
    failures = []
    for r in rows:
        if r["status"] == "ok":
            continue
        what = "baseline" if r["format"] == BASELINE else "artifact"
        tail = "; no IoU drop or speed-up can be checked" if r["format"] == BASELINE else ""
        failures.append(f"{what} {r['variant']}/{r['format']} on {r.get('engine')}: {r['status']}: "
                        f"{r.get('error') or 'no detail'}{tail}")
    first = rows[0]["threads"] if rows else None
    if not any(r["status"] == "ok" and r["format"] != BASELINE and r["threads"] == first for r in rows):
        failures.append("no deployable artifact was measured (nothing exported, or --formats/--engines left none)")
    if not any(r["format"] == BASELINE for r in rows):
        failures.append("no keras-fp32 baseline row: no IoU drop can be checked")
    return failures


ROUND_FIGURES = ("p50_ms", "p95_ms", "p99_ms", "mean_ms", "cold_start_ms", "peak_rss_mb")


def combine_rounds(measurements: list[dict]) -> dict:
    """One row from several rounds of the same artifact: accuracy from the first (all its frames),
    timing and memory figures as the median over the rounds, each round's p50 kept."""
    first = dict(measurements[0])
    bad = next((m for m in measurements if m.get("status", "ok") != "ok"), None)
    if bad is not None:
        return dict(bad)
    if len(measurements) > 1:
        for key in ROUND_FIGURES:
            values = [m[key] for m in measurements if m.get(key) is not None]
            if values:
                first[key] = round(float(np.median(values)), 3)
        first["p50_rounds_ms"] = [round(m["p50_ms"], 3) for m in measurements]
    return first


def file_sizes(path: Path) -> dict:
    data = path.read_bytes()
    return {"bytes": len(data), "gzip_bytes": len(gzip.compress(data, 9))}


def bench(run: str | Path, *, data: str | Path | None = None, threads: list[int] | None = None, frames: int = 50,
          runs: int = 30, min_seconds: float = 1.0, profile: str = "default", limits: Limits | None = None,
          formats: list[str] | None = None, engines: list[str] | None = None, progress: bool = True,
          rounds: int = 1, timeout_s: float = 900) -> dict:
    """Measure every artifact of a run with every installed engine that reads it (or only `engines`),
    `rounds` times round-robin; returns the results dict (also written to RUN/bench/)."""
    from lunarseg.runtime.backends import BACKENDS, engines_for
    from lunarseg.runtime.metadata import read_keras_meta

    run = Path(run)
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; valid: {', '.join(sorted(PROFILES))}")
    prof = PROFILES[profile]
    if rounds < 1:
        raise ConfigError(f"rounds must be at least 1, got {rounds}")
    threads = threads or prof["threads"]
    limits = limits or Limits()
    rows_in = artifacts(run)
    meta = read_keras_meta(run / "model.keras")
    data = Path(data or meta.extra.get("data_dir") or "")
    if not data or not (data / "images").exists():
        raise ConfigError(f"labelled data not found ({data or 'none recorded'}); pass --data DIR")
    if formats:
        from lunarseg.export.formats import FORMATS

        unknown = [f for f in formats if f not in FORMATS]
        if unknown:
            raise ConfigError(f"unknown format {unknown[0]!r}; valid: {', '.join(sorted(FORMATS))}")
        rows_in = [r for r in rows_in if r["format"] == BASELINE or r["format"] in formats]
    if engines:
        unknown = [e for e in engines if e not in BACKENDS]
        if unknown:
            raise ConfigError(f"unknown engine {unknown[0]!r}; valid: {', '.join(sorted(BACKENDS))}")
    expanded = []
    for art in rows_in:
        if art["format"] == BASELINE:
            expanded.append({**art, "engine": "tensorflow"})
            continue
        names = [e for e in engines_for(art["path"]) if not engines or e in engines]
        expanded += [{**art, "engine": e} for e in names or engines_for(art["path"])[:1]]
    rows_in = expanded
    pin = (sorted(os.sched_getaffinity(0))[-1]) if prof["pin_cpu"] else -1
    jobs = [(t, art) for t in threads for art in rows_in]
    measured: dict[int, list[dict]] = {i: [] for i in range(len(jobs))}
    for rnd in range(1, rounds + 1):
        # Round-robin over the artifacts: a slow spell of a shared machine hits every row of a round
        # alike, and each row's median over the rounds leaves it out of the speed-ups.
        for i, (t, art) in enumerate(jobs):
            if art["status"] != "ok" or not Path(art["path"]).exists():
                continue
            if measured[i] and measured[i][0].get("status", "ok") != "ok":
                continue  # failed in an earlier round: no point measuring again
            if progress:
                label = f"round {rnd}/{rounds} " if rounds > 1 else ""
                print(f"bench {label}[{i + 1}/{len(jobs)}] {art['variant']}/{art['format']} on {art['engine']} "
                      f"threads={t}", file=sys.stderr, flush=True)
            # IoU and Dice are deterministic: later rounds score one frame and only time the engine.
            measured[i].append(run_child(Path(art["path"]), data, t, pin, frames if rnd == 1 else 1, runs, min_seconds,
                                         timeout=timeout_s, backend="auto" if art["format"] == BASELINE else art["engine"]))
    rows = []
    for i, (t, art) in enumerate(jobs):
        row = {k: art.get(k) for k in ("variant", "format", "engine", "status", "error", "deployable", "quantization",
                                        "sparsity")}
        row.update({"threads": t, "path": art["path"]})
        if measured[i]:
            row.update(file_sizes(Path(art["path"])))
            m = combine_rounds(measured[i])
            m.pop("engine", None)
            row.update(m)
            row["status"] = m.get("status", "ok")
            macs = m.get("macs") or art.get("macs")  # the artifact's own (a slimmed variant has fewer)
            if row["status"] == "ok" and macs:
                row["gmacs"] = round(macs / 1e9, 3)
                row["gmac_per_s"] = round(macs / 1e9 / (row["p50_ms"] / 1e3), 2)
            if row["status"] == "ok":
                row["fps"] = round(1000.0 / row["p50_ms"], 1)
        elif art["status"] == "ok":
            row.update(status="error", error=f"{art['path']}: file missing")
        rows.append(row)
    _relate_to_baseline(rows)
    violations = gate_failures(rows) + [v for r in rows if r.get("deployable") and r["status"] == "ok"
                                        and r["threads"] == threads[0] for v in limits.violations(r)]
    results = {"run": str(run), "data": str(data), "profile": profile, "threads": threads, "frames": frames,
               "rounds": rounds,
               "cpu": cpu_info(), "pinned_cpu": pin if pin >= 0 else None, "batch": 1,
               "input_shape": meta.input_shape, "limits": limits.__dict__, "violations": violations,
               "rows": rows, "board_estimates": board_estimates(rows),
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = run / "bench"
    atomic.write_json(out / "results.json", results)
    atomic.write_text(out / "results.md", to_markdown(results))
    plot_pareto(results, out / "pareto.png")
    return results


def _relate_to_baseline(rows: list[dict]) -> None:
    for t in {r["threads"] for r in rows}:
        base = next((r for r in rows if r["format"] == BASELINE and r["threads"] == t and r["status"] == "ok"), None)
        for r in rows:
            if r["threads"] != t or r["status"] != "ok" or base is None:
                continue
            r["iou_drop"] = round(base["iou"] - r["iou"], 5)
            r["speedup"] = round(base["p50_ms"] / r["p50_ms"], 2)
            r["size_ratio"] = round(r["gzip_bytes"] / base["gzip_bytes"], 4)
    _relate_to_control(rows)


def _relate_to_control(rows: list[dict]) -> None:
    """A variant's IoU drop against the dense control (train/compress.py CONTROL) in the same format
    on the same engine: what compression costs once extra fine-tuning is accounted for."""
    from lunarseg.runtime.metadata import CONTROL_VARIANT as CONTROL

    key = lambda r: (r["format"], r.get("engine"), r["threads"])  # noqa: E731
    controls = {key(r): r for r in rows if r["variant"] == CONTROL and r["status"] == "ok"}
    for r in rows:
        c = controls.get(key(r))
        if c is not None and r["status"] == "ok" and r["variant"] not in ("base", CONTROL):
            r["drop_vs_control"] = round(c["iou"] - r["iou"], 5)


def _fmt(value, col: str) -> str:
    if value is None:
        return ""
    if col in ("bytes", "gzip_bytes"):
        return f"{value:,}"
    if col in ("iou", "dice", "iou_drop", "drop_vs_control"):
        return f"{value:.4f}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def to_markdown(results: dict) -> str:
    cpu = results["cpu"]
    rounds = results.get("rounds", 1)
    timings = f"; timings are medians of {rounds} round-robin rounds." if rounds > 1 else "."
    lines = [f"# lunarseg bench: {results['run']}", "",
             f"CPU: {cpu['model']} ({cpu['machine']}, {cpu['cores']} cores; flags: {' '.join(cpu['flags'])}); "
             f"profile {results['profile']}, batch 1, input {results['input_shape']}, pinned CPU {results['pinned_cpu']}; "
             f"IoU on {results['frames']} labelled test frames at model resolution{timings}", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in results["rows"]:
        lines.append("| " + " | ".join(_fmt(r.get(c), c) for c in COLUMNS) + " |")
        if r["status"] != "ok" and r.get("error"):
            lines.append(f"| | ↳ {r['error']} |" + " |" * (len(COLUMNS) - 2))
    lines += estimates_markdown(results.get("board_estimates", []))
    if results["violations"]:
        lines += ["", "## Limit violations", ""] + [f"- {v}" for v in results["violations"]]
    return "\n".join(lines) + "\n"


def plot_pareto(results: dict, path: Path) -> None:
    """IoU vs p50 latency, point area ∝ gzip size, one colour per format."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if r["status"] == "ok" and r["threads"] == results["threads"][0]]
    fig, ax = plt.subplots(figsize=(8, 5))
    biggest = max((r["gzip_bytes"] for r in rows), default=1)
    for r in rows:
        ax.scatter(r["p50_ms"], r["iou"], s=30 + 600 * r["gzip_bytes"] / biggest, alpha=0.6)
        ax.annotate(f"{r['variant']}/{r['format']}@{r.get('engine', '')}", (r["p50_ms"], r["iou"]), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel(f"p50 latency, ms ({results['threads'][0]} thread(s), log scale)")
    ax.set_ylabel("rock IoU (test)")
    ax.set_title("lunarseg: accuracy vs speed (point area = gzip size)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic.write_bytes(path, buf.getvalue())
