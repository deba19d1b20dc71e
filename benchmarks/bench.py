"""`lunarseg bench`: one row per exported artifact (of run directories, model folders or single
.onnx/.tflite files) plus the Keras float baseline when TensorFlow is installed — accuracy, size,
latency, cold start, memory, MACs — each measured in its own process; a gate on the limits.
TensorFlow is imported only by the child that measures a Keras model."""
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
from lunarseg.runtime.errors import ConfigError, require_folder_or_absent
from lunarseg.benchmarks.boards import board_estimates, estimates_markdown
from lunarseg.benchmarks.inputs import BASELINE, NO_TENSORFLOW_NOTE, collect, tensorflow_installed
from lunarseg.benchmarks.limits import Limits, row_name
from lunarseg.benchmarks.measure import IOU_RULE

TEST_SPLIT = "test"  # the labelled frames every row is scored on (measure.py --split)
from lunarseg.benchmarks.reference import INTERVAL_NOTE, INTERVAL_OF, NO_REFERENCE, drop_text, relate_to_reference
PROFILES = {
    # 1 thread pinned to one core, batch 1, frame size from the metadata, cold start included
    "rover": {"threads": [1], "pin_cpu": True},
    "default": {"threads": [1], "pin_cpu": False},
}
COLUMNS = ("variant", "format", "input_size", "engine", "status", "threads", "bytes", "gzip_bytes", "iou", "dice",
           "iou_drop", "reference", "drop_vs_control", "p50_ms", "p95_ms", "p99_ms", "fps", "cold_start_ms",
           "peak_rss_mb", "gmacs", "gmac_per_s", "speedup")


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
        except BaseException:  # Ctrl-C or SIGTERM here: the measuring child goes too
            proc.kill()
            proc.wait()
            raise
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


def gate_failures(rows: list[dict], limits: Limits | None = None) -> list[str]:
    """Why the gate cannot pass whatever the limits say: it fails closed on a failed or timed-out
    measurement, a missing file, a failed baseline and on no deployable row at all; and, with an
    IoU-drop limit, on a deployable row with no IoU reference (the limit cannot be checked)."""
    failures = []
    for r in rows:
        if r["status"] == "ok":
            continue
        what = "baseline" if r["format"] == BASELINE else "artifact"
        tail = "; no IoU drop or speed-up can be checked" if r["format"] == BASELINE else ""
        failures.append(f"{what} {row_name(r)}: {r['status']}: "
                        f"{r.get('error') or 'no detail'}{tail}")
    first = rows[0]["threads"] if rows else None
    if limits is not None and limits.max_iou_drop is not None:
        for r in rows:
            if r.get("deployable") and r["status"] == "ok" and r["threads"] == first and r.get("iou_drop") is None:
                failures.append(f"artifact {row_name(r)}: no IoU reference ({NO_REFERENCE}): the IoU-drop limit "
                                "cannot be checked")
    if not any(r["status"] == "ok" and r["format"] != BASELINE and r["threads"] == first for r in rows):
        failures.append("no deployable artifact was measured (nothing exported, or --formats/--engines left none)")
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


def _paths(paths) -> list[Path]:
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not items:
        raise ConfigError("bench needs at least one run directory, model folder or .onnx/.tflite file")
    return [Path(p) for p in items]


def _data_dir(data, runs: list[Path]) -> Path:
    """--data, else the dataset recorded at training by the first run directory that has one."""
    from lunarseg.runtime.metadata import read_keras_meta

    recorded = next((read_keras_meta(r / "model.keras").extra.get("data_dir") for r in runs
                     if (r / "model.keras").exists()), None)
    path = Path(data or recorded or "")
    if not (data or recorded) or not (path / "images").exists():
        raise ConfigError(f"labelled data not found ({data or recorded or 'none recorded'}); pass --data DIR")
    from lunarseg.data.loader import DatasetIndex  # numpy + Pillow only

    if not DatasetIndex.scan(path).split(TEST_SPLIT):
        raise ConfigError(f"{path}: its {TEST_SPLIT!r} split holds no labelled frames to score IoU on "
                          "(the split takes a share of the frames by name: the dataset is too small)")
    return path


def _out_dir(out, runs: list[Path]) -> Path:
    """--out, else RUN/bench of the first run directory; refused before anything is measured when it
    cannot be a directory."""
    if not out and not runs:
        raise ConfigError("pass --out DIR: no run directory among the inputs to write bench/ into")
    path = Path(out) if out else runs[0] / "bench"
    require_folder_or_absent(path)
    return path


def _filter(rows_in: list[dict], formats, engines) -> list[dict]:
    """Rows kept by --formats, expanded to one per engine (every installed engine, or --engines)."""
    from lunarseg.runtime.backends import BACKENDS, engines_for

    if formats:
        from lunarseg.export.formats import FORMATS  # the format table: TF-free

        unknown = [f for f in formats if f not in FORMATS]
        if unknown:
            raise ConfigError(f"unknown format {unknown[0]!r}; valid: {', '.join(sorted(FORMATS))}")
        rows_in = [r for r in rows_in if r["format"] == BASELINE or r["format"] in formats]
    if engines:
        unknown = [e for e in engines if e not in BACKENDS]
        if unknown:
            raise ConfigError(f"unknown engine {unknown[0]!r}; valid: {', '.join(sorted(BACKENDS))}")
    expanded, left_out = [], []
    for art in rows_in:
        if art["format"] == BASELINE:
            expanded.append({**art, "engine": "tensorflow"})
            continue
        readers = engines_for(art["path"])
        names = [e for e in readers if not engines or e in engines]
        if engines and readers and not names:  # only the engines asked for: this file is not measured
            left_out.append(f"{art['variant']}/{art['format']}")
            continue
        expanded += [{**art, "engine": e} for e in names or [None]]
    notes = [f"not measured: {', '.join(left_out)} (no engine of --engines {','.join(engines)} reads them)"] \
        if left_out else []
    return expanded, notes


def bench(paths, *, data: str | Path | None = None, out: str | Path | None = None, threads: list[int] | None = None,
          frames: int = 50, runs: int = 30, min_seconds: float = 1.0, profile: str = "default",
          limits: Limits | None = None, formats: list[str] | None = None, engines: list[str] | None = None,
          progress: bool = True, rounds: int = 1, timeout_s: float = 900) -> dict:
    """Measure every artifact of `paths` (run directories, model folders, .onnx/.tflite files) with every
    installed engine that reads it (or only `engines`), `rounds` times round-robin; the Keras baseline
    of a run only when TensorFlow is installed. Returns the results dict, also written to `out`
    (default RUN/bench of the first run directory)."""
    prof, threads = _profile(profile, rounds, threads)
    limits = limits or Limits()
    rows_in, run_dirs, data, out, notes = _inputs(paths, data, out, formats, engines)
    pin = (sorted(os.sched_getaffinity(0))[-1]) if prof["pin_cpu"] else -1
    jobs = [(t, art) for t in threads for art in rows_in]
    measured = _measure_jobs(jobs, data, pin, frames=frames, runs=runs, min_seconds=min_seconds, rounds=rounds,
                             timeout_s=timeout_s, progress=progress)
    rows = [_row(t, art, measured[i]) for i, (t, art) in enumerate(jobs)]
    relate_to_reference(rows)
    first_run = run_dirs[0] if run_dirs else None
    results = {"run": str(first_run) if first_run else None, "inputs": [str(p) for p in _paths(paths)],
               "data": str(data), "profile": profile, "threads": threads, "frames": frames, "rounds": rounds,
               "cpu": cpu_info(), "pinned_cpu": pin if pin >= 0 else None, "batch": 1,
               "input_shape": _input_shape(first_run), "iou_rule": IOU_RULE, "notes": notes,
               "limits": limits.__dict__, "violations": _violations(rows, limits, threads[0]),
               "rows": rows, "board_estimates": board_estimates(rows),
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_outputs(results, out)
    return results


def _profile(profile: str, rounds: int, threads: list[int] | None) -> tuple[dict, list[int]]:
    """The PROFILES entry and the thread counts to measure (the profile's unless given); checks rounds."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; valid: {', '.join(sorted(PROFILES))}")
    prof = PROFILES[profile]
    if rounds < 1:
        raise ConfigError(f"rounds must be at least 1, got {rounds}")
    return prof, threads or prof["threads"]


def _inputs(paths, data, out, formats, engines) -> tuple[list[dict], list[Path], Path, Path, list[str]]:
    """The rows to measure (one per artifact and engine, kept by --formats/--engines), the run
    directories among `paths`, the labelled data, the output folder and the notes for the report."""
    with_keras = tensorflow_installed()
    rows_in, run_dirs = collect(_paths(paths), with_keras)
    data = _data_dir(data, run_dirs)
    out = _out_dir(out, run_dirs)
    notes = [NO_TENSORFLOW_NOTE] if not with_keras and any((r / "model.keras").exists() for r in run_dirs) else []
    rows, left_out = _filter(rows_in, formats, engines)
    return rows, run_dirs, data, out, notes + left_out


def _violations(rows: list[dict], limits: Limits, threads: int) -> list[str]:
    """The gate's findings: what fails it whatever the limits (gate_failures), then the limits broken by
    each deployable row measured at `threads` (the first thread count)."""
    return gate_failures(rows, limits) + [v for r in rows if r.get("deployable") and r["status"] == "ok"
                                  and r["threads"] == threads for v in limits.violations(r)]


def _input_shape(run: Path | None):
    from lunarseg.runtime.metadata import read_keras_meta

    return read_keras_meta(run / "model.keras").input_shape if run and (run / "model.keras").exists() else None


def _measure_jobs(jobs, data: Path, pin: int, *, frames, runs, min_seconds, rounds, timeout_s, progress) -> dict:
    """Each job's measurements, one per round, round-robin over the jobs."""
    measured: dict[int, list[dict]] = {i: [] for i in range(len(jobs))}
    for rnd in range(1, rounds + 1):
        # Round-robin over the artifacts: a slow spell of a shared machine hits every row of a round
        # alike, and each row's median over the rounds leaves it out of the speed-ups.
        for i, (t, art) in enumerate(jobs):
            if art["status"] != "ok" or not Path(art["path"]).exists() or art.get("engine") is None:
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
    return measured


def _row(threads: int, art: dict, measurements: list[dict]) -> dict:
    """One table row from an artifact and its rounds of measurement."""
    row = {k: art.get(k) for k in ("variant", "format", "engine", "status", "error", "deployable", "quantization",
                                    "sparsity", "run", "run_path", "input_size")}
    row.update({"threads": threads, "path": art["path"]})
    if measurements:
        row.update(file_sizes(Path(art["path"])))
        m = combine_rounds(measurements)
        m.pop("engine", None)
        row.update(m)
        row["status"] = m.get("status", "ok")
        macs = m.get("macs") or art.get("macs")  # the artifact's own (a slimmed variant has fewer)
        if row["status"] == "ok" and macs:
            row["gmacs"] = round(macs / 1e9, 3)
            row["gmac_per_s"] = round(macs / 1e9 / (row["p50_ms"] / 1e3), 2)
        if row["status"] == "ok":
            row["fps"] = round(1000.0 / row["p50_ms"], 1)
    elif art["status"] == "ok" and art.get("engine") is None:
        row.update(status="error", error=f"{art['path']}: no installed engine reads {Path(art['path']).suffix} files")
    elif art["status"] == "ok":
        row.update(status="error", error=f"{art['path']}: file missing")
    return row


def write_outputs(results: dict, out: Path) -> None:
    """results.json, results.md and the Pareto plot (skipped, and said so, without matplotlib)."""
    from lunarseg.benchmarks.plots import plot_pareto

    out.mkdir(parents=True, exist_ok=True)
    results["out"] = str(out)
    plot = out / "pareto.png"
    skipped = plot_pareto(results, plot)
    results["plot"] = None if skipped else str(plot)
    if skipped:
        results["notes"].append(skipped)
    atomic.write_json(out / "results.json", results)
    atomic.write_text(out / "results.md", to_markdown(results))


def _cell(row: dict, col: str) -> str:
    if col in INTERVAL_OF:
        return drop_text(row, col) or ""
    return _fmt(row.get(col), col)


def _fmt(value, col: str) -> str:
    if value is None:
        return ""
    if col in ("bytes", "gzip_bytes"):
        return f"{value:,}"
    if col in ("iou", "dice"):
        return f"{value:.4f}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def to_markdown(results: dict) -> str:
    cpu = results["cpu"]
    rounds = results.get("rounds", 1)
    timings = f"; timings are medians of {rounds} round-robin rounds." if rounds > 1 else "."
    source = results.get("run") or ", ".join(results.get("inputs", []))
    shape = f", model input {results['input_shape']}" if results.get("input_shape") else ""
    lines = [f"# lunarseg bench: {source}", "",
             f"CPU: {cpu['model']} ({cpu['machine']}, {cpu['cores']} cores; flags: {' '.join(cpu['flags'])}); "
             f"profile {results['profile']}, batch 1{shape}, pinned CPU {results['pinned_cpu']}; "
             f"{results['frames']} labelled test frames{timings}", "",
             f"IoU: {results.get('iou_rule', IOU_RULE)}. IoU drop, speed-up: against the row's reference, a float "
             "version of the trained model it descends from measured here (its Keras baseline, else the fp32 file "
             "exported from it; rows are paired by the trained model's sha256 in their metadata); blank when "
             f"there is none; {INTERVAL_NOTE}.", ""]
    lines += [f"Note: {n}" for n in results.get("notes", [])] + ([""] if results.get("notes") else [])
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in results["rows"]:
        lines.append("| " + " | ".join(_cell(r, c) for c in COLUMNS) + " |")
        if r["status"] != "ok" and r.get("error"):
            lines.append(f"| | ↳ {r['error']} |" + " |" * (len(COLUMNS) - 2))
    lines += estimates_markdown(results.get("board_estimates", []))
    if results["violations"]:
        lines += ["", "## Limit violations", ""] + [f"- {v}" for v in results["violations"]]
    return "\n".join(lines) + "\n"
