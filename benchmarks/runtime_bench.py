"""Runtime benchmark of one exported model, at 1 thread by default (TensorFlow-free, like the runtime).

    python -m lunarseg.benchmarks.runtime_bench MODEL [--frames N] [--soak N] --out DIR
    python -m lunarseg.benchmarks.runtime_bench MODEL... --overhead-only [--all-engines] [--gray] --out DIR

(a) overhead: everything `Segmenter.segment` adds to the bare engine call (colour conversion,
    resize, normalisation, quantize/dequantize, threshold, resize back, rock statistics) as a % of
    that engine call, on in-memory 720×480 RGB frames (decoding excluded); reported as pre, post and
    engine ms and (pre+post)/engine, also for a planner's call (stats + model-size mask). Target ≤ 15 %.
    Several MODELs (or --overhead-only) give one table row per artifact, flagged when over 15 %.
(b) cold start: a new process runs `lunarseg segment MODEL frame.png` until the first mask is
    written; wall time from spawn (target ≤ 0.5 s) and that process's peak RSS, VmHWM (≤ 120 MB).
(c) soak: N frames through one Segmenter; RSS growth after warm-up (≤ 5 MB) and failed frames (0).

Writes runtime_bench_<model>.json and .md into DIR, atomically.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lunarseg.runtime import atomic, preprocess
from lunarseg.runtime.procstatus import status_mb
from lunarseg.runtime.segmenter import Segmenter
from lunarseg.runtime.timing import call_ms

TARGETS = {"overhead_pct": 15.0, "cold_start_s": 0.5, "cold_peak_rss_mb": 120.0, "soak_rss_growth_mb": 5.0}
FRAME_HW = (480, 720)


def synthetic_frames(n: int, hw=FRAME_HW, seed: int = 0, gray: bool = False) -> list[np.ndarray]:
    """Lunar-ish RGB (or gray) frames: smooth gray terrain, bright blobs for rocks, a little noise."""
    rng = np.random.default_rng(seed)
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = []
    for _ in range(n):
        img = 90 + 40 * (yy / h) + rng.normal(0, 6, (h, w)).astype(np.float32)
        for cy, cx, r in zip(rng.uniform(0, h, 25), rng.uniform(0, w, 25), rng.uniform(4, 40, 25)):
            img += 80 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        g = np.clip(img, 0, 255).astype(np.uint8)
        frames.append(g if gray else np.stack([g, g, (g * 0.95).astype(np.uint8)], axis=2))
    return frames


def measure_overhead(seg: Segmenter, frames: list[np.ndarray], n: int) -> dict:
    """Median engine, pre and post ms over n interleaved frames; post both with the frame-size mask
    (the default `segment`) and as a planner calls it (stats + model-size mask, frame_mask=False)."""
    x = preprocess.prepare(frames[0], seg.meta)[None]
    bare = seg.backend.engine_call(x)  # the engine alone, input already quantized
    for f in frames[:3]:  # warm-up
        bare()
        seg.segment(f)
        seg.segment(f, frame_mask=False)
    engine, total, pre, post, post_planner = [], [], [], [], []
    for i in range(n):  # interleave so drift hits both alike
        engine.append(call_ms(bare))
        r = seg.segment(frames[i % len(frames)])
        total.append(r.timings_ms["total"])
        pre.append(r.timings_ms["preprocess"])
        post.append(r.timings_ms["postprocess"])
        post_planner.append(seg.segment(frames[i % len(frames)], frame_mask=False).timings_ms["postprocess"])
    med = {k: statistics.median(v) for k, v in (("engine", engine), ("segment", total), ("pre", pre),
                                                 ("post", post), ("post_planner", post_planner))}
    overhead = med["segment"] - med["engine"]
    share = 100.0 * (med["pre"] + med["post"]) / med["engine"]
    return {
        "frames": n, "frame_hw": list(frames[0].shape[:2]), "frame_channels": 1 if frames[0].ndim == 2 else frames[0].shape[2],
        "engine_ms_median": med["engine"], "segment_ms_median": med["segment"],
        "preprocess_ms_median": med["pre"], "postprocess_ms_median": med["post"],
        "postprocess_planner_ms_median": med["post_planner"],
        "overhead_ms": overhead, "overhead_pct": 100.0 * overhead / med["engine"],
        "overhead_share_pct": share,
        "overhead_share_planner_pct": 100.0 * (med["pre"] + med["post_planner"]) / med["engine"],
        "over_target": share > TARGETS["overhead_pct"],
        "engine_ms_p90": float(np.percentile(engine, 90)), "segment_ms_p90": float(np.percentile(total, 90)),
        "fps_segment": 1000.0 / med["segment"],
    }


def overhead_table(models: list[str], frames: int, threads: int = 1, all_engines: bool = False,
                   gray: bool = False) -> list[dict]:
    """measure_overhead for each model (and each installed engine that reads it, when asked)."""
    from lunarseg.runtime.backends import engines_for

    pool = synthetic_frames(8, gray=gray)
    rows = []
    for model in models:
        for engine in (engines_for(model) if all_engines else ["auto"]):
            seg = Segmenter.from_file(model, threads=threads, backend=engine)
            print(f"[runtime_bench] overhead of {model} on {seg.backend_name} …", file=sys.stderr, flush=True)
            rows.append({"model": str(model), "backend": seg.backend_name, **measure_overhead(seg, pool, frames)})
    return rows


def overhead_markdown(rows: list[dict]) -> str:
    """One line per artifact × engine: pre, post, engine ms, (pre+post)/engine, flagged over the target."""
    target = TARGETS["overhead_pct"]
    lines = [f"| artifact | engine | pre ms | post ms (planner) | engine ms | (pre+post)/engine (planner) | ≤ {target:.0f} % |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['backend']} | {r['preprocess_ms_median']:.2f} | "
                     f"{r['postprocess_ms_median']:.2f} ({r['postprocess_planner_ms_median']:.2f}) | "
                     f"{r['engine_ms_median']:.2f} | {r['overhead_share_pct']:.1f} % "
                     f"({r['overhead_share_planner_pct']:.1f} %) | {'OVER' if r['over_target'] else 'ok'} |")
    if rows:
        r = rows[0]
        kind = "gray" if r["frame_channels"] == 1 else "RGB"
        lines += ["", f"{r['frames']} in-memory {r['frame_hw'][1]}×{r['frame_hw'][0]} {kind} frames per row, medians; "
                  "planner = stats and the model-size mask only (segment(frame_mask=False))."]
    return "\n".join(lines) + "\n"


COLD_CHILD = """
import sys, time, json
from lunarseg.cli import main
code = main(sys.argv[1:])
t = time.time()
from lunarseg.runtime.procstatus import status_mb
hwm, rss = status_mb("VmHWM"), status_mb("VmRSS")
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization"))
print(json.dumps({"code": code, "t_mask": t, "vmhwm_mb": hwm, "vmrss_mb": rss, "heavy": heavy}))
"""


def measure_cold_start(model: Path, frame: np.ndarray, runs: int, threads: int, backend: str = "auto") -> dict:
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="lunarseg-cold-") as tmp:
        fpath = Path(tmp) / "frame.png"
        Image.fromarray(frame).save(fpath)
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        # baseline: a bare interpreter
        t0 = time.time()
        subprocess.run([sys.executable, "-c", "pass"], check=True, env=env)
        python_s = time.time() - t0
        results = []
        for k in range(runs):
            out_dir = Path(tmp) / f"out{k}"
            argv = ["segment", str(model), str(fpath), "--out", str(out_dir), "--threads", str(threads),
                    "--no-progress", "--backend", backend]
            t0 = time.time()
            proc = subprocess.run([sys.executable, "-c", COLD_CHILD, *argv], capture_output=True, text=True,
                                  env=env)
            info = json.loads(proc.stdout.strip().splitlines()[-1])
            if info["code"] != 0 or not (out_dir / "frame_mask.png").exists():
                raise RuntimeError(f"cold-start run failed: {proc.stderr.strip()[-500:]}")
            info["cold_start_s"] = info["t_mask"] - t0
            results.append(info)
    cold = [r["cold_start_s"] for r in results]
    hwm = [r["vmhwm_mb"] for r in results]
    return {"runs": runs, "cold_start_s_each": cold, "cold_start_s": statistics.median(cold),
            "peak_rss_mb_each": hwm, "peak_rss_mb": max(hwm), "bare_python_s": python_s,
            "heavy_modules": sorted({m for r in results for m in r["heavy"]})}


def measure_soak(seg: Segmenter, frames: list[np.ndarray], n: int, warmup: int = 50) -> dict:
    for i in range(min(warmup, n)):
        seg.segment(frames[i % len(frames)])
    rss0 = status_mb("VmRSS")
    rss_max = rss0
    failed = 0
    lat = np.empty(n, dtype=np.float64)
    t0 = time.perf_counter()
    for i in range(n):
        try:
            r = seg.segment(frames[i % len(frames)])
            lat[i] = r.timings_ms["total"]
        except Exception as exc:  # count, never stop: the soak measures survival
            failed += 1
            lat[i] = np.nan
            print(f"soak frame {i}: {type(exc).__name__}: {exc}", file=sys.stderr)
        if i % 500 == 0:
            rss_max = max(rss_max, status_mb("VmRSS"))
    wall = time.perf_counter() - t0
    rss1 = status_mb("VmRSS")
    return {"frames": n, "failed": failed, "rss_start_mb": rss0, "rss_end_mb": rss1,
            "rss_max_mb": max(rss_max, rss1), "rss_growth_mb": rss1 - rss0, "wall_s": wall,
            "latency_ms_median": float(np.nanmedian(lat)) if n else None,
            "latency_ms_p99": float(np.nanpercentile(lat, 99)) if n else None}


def to_markdown(res: dict) -> str:
    o, c, s = res["overhead"], res["cold_start"], res.get("soak")
    ok = res["pass"]

    def mark(key):
        return "pass" if ok.get(key) else ("—" if ok.get(key) is None else "FAIL")

    lines = [
        f"# Runtime benchmark: `{res['model']}`",
        "",
        f"backend {res['backend']}, {res['threads']} thread(s), input {res['input_shape']}, "
        f"quantization {res['quantization']}; {res['machine']}",
        "",
        "| measure | value | target | |",
        "|---|---|---|---|",
        f"| bare engine call (median) | {o['engine_ms_median']:.2f} ms | | |",
        f"| segment() on 720×480 frame (median) | {o['segment_ms_median']:.2f} ms "
        f"(pre {o['preprocess_ms_median']:.2f}, post {o['postprocess_ms_median']:.2f}; planner post "
        f"{o['postprocess_planner_ms_median']:.2f}) | | |",
        f"| (pre+post) / engine | {o['overhead_share_pct']:.1f} % (planner {o['overhead_share_planner_pct']:.1f} %) "
        f"| ≤ {TARGETS['overhead_pct']:.0f} % | {'pass' if not o['over_target'] else 'OVER'} |",
        f"| pre+post overhead | {o['overhead_ms']:.2f} ms = {o['overhead_pct']:.1f} % | ≤ {TARGETS['overhead_pct']:.0f} % "
        f"| {mark('overhead_pct')} |",
        f"| cold start → first mask (median of {c['runs']}) | {c['cold_start_s']:.3f} s "
        f"(bare python {c['bare_python_s']:.3f} s) | ≤ {TARGETS['cold_start_s']} s | {mark('cold_start_s')} |",
        f"| cold-start peak RSS (VmHWM) | {c['peak_rss_mb']:.1f} MB | ≤ {TARGETS['cold_peak_rss_mb']:.0f} MB "
        f"| {mark('cold_peak_rss_mb')} |",
    ]
    if s:
        lines += [
            f"| soak: {s['frames']} frames, RSS growth | {s['rss_growth_mb']:+.2f} MB "
            f"({s['rss_start_mb']:.1f} → {s['rss_end_mb']:.1f}, max {s['rss_max_mb']:.1f}) "
            f"| ≤ {TARGETS['soak_rss_growth_mb']:.0f} MB | {mark('soak_rss_growth_mb')} |",
            f"| soak: failed frames | {s['failed']} | 0 | {mark('soak_failed')} |",
            f"| soak: latency median / p99 | {s['latency_ms_median']:.2f} / {s['latency_ms_p99']:.2f} ms "
            f"({s['wall_s']:.0f} s wall) | | |",
        ]
    lines += ["", "One run on a possibly noisy machine; frames are synthetic, in memory (decoding excluded "
              "from (a) and (c), included in (b)).", ""]
    return "\n".join(lines)


def run(model: str, frames: int, soak: int, out: str, threads: int = 1, cold_runs: int = 3,
        backend: str = "auto") -> dict:
    seg = Segmenter.from_file(model, threads=threads, backend=backend)
    pool = synthetic_frames(8)
    res = {
        "model": str(model), "backend": seg.backend_name, "threads": threads,
        "input_shape": seg.meta.input_shape, "quantization": seg.meta.quantization.get("mode", "none"),
        "machine": f"{platform.machine()} {os.cpu_count()} CPU(s), Python {platform.python_version()}",
        "targets": TARGETS,
    }
    print(f"[runtime_bench] overhead over {frames} frames …", file=sys.stderr, flush=True)
    res["overhead"] = measure_overhead(seg, pool, frames)
    print(f"[runtime_bench] cold start ({cold_runs} runs) …", file=sys.stderr, flush=True)
    res["cold_start"] = measure_cold_start(Path(model), pool[0], cold_runs, threads, seg.backend_name)
    if soak > 0:
        print(f"[runtime_bench] soak of {soak} frames …", file=sys.stderr, flush=True)
        res["soak"] = measure_soak(seg, pool, soak)
    s = res.get("soak")
    res["pass"] = {
        "overhead_pct": res["overhead"]["overhead_pct"] <= TARGETS["overhead_pct"],
        "cold_start_s": res["cold_start"]["cold_start_s"] <= TARGETS["cold_start_s"],
        "cold_peak_rss_mb": res["cold_start"]["peak_rss_mb"] <= TARGETS["cold_peak_rss_mb"],
        "soak_rss_growth_mb": None if not s else s["rss_growth_mb"] <= TARGETS["soak_rss_growth_mb"],
        "soak_failed": None if not s else s["failed"] == 0,
    }
    out_dir = Path(out)
    stem = f"runtime_bench_{Path(model).stem}_{seg.backend_name}"
    atomic.write_json(out_dir / f"{stem}.json", res)
    atomic.write_text(out_dir / f"{stem}.md", to_markdown(res))
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lunarseg.benchmarks.runtime_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", metavar="MODEL", help=".onnx or .tflite lunarseg model(s)")
    p.add_argument("--frames", type=int, default=200, help="frames for the overhead measure (default 200)")
    p.add_argument("--soak", type=int, default=10_000, help="soak frames (default 10000; 0 skips)")
    p.add_argument("--cold-runs", type=int, default=3, help="cold-start processes (default 3)")
    p.add_argument("--threads", type=int, default=1, help="engine threads (default 1)")
    p.add_argument("--backend", default="auto", help="engine (default: the file suffix's default)")
    p.add_argument("--overhead-only", action="store_true",
                   help="only the overhead table, one row per MODEL (implied by several MODELs)")
    p.add_argument("--all-engines", action="store_true", help="overhead table: every installed engine per MODEL")
    p.add_argument("--gray", action="store_true", help="overhead table: gray frames instead of RGB")
    p.add_argument("--out", required=True, metavar="DIR")
    args = p.parse_args(argv)
    from lunarseg.runtime.errors import LunarsegError, require_at_least

    try:
        for flag, value, least in (("--frames", args.frames, 1), ("--soak", args.soak, 0),
                                   ("--cold-runs", args.cold_runs, 1), ("--threads", args.threads, 1)):
            require_at_least(flag, value, least)
        if args.overhead_only or len(args.models) > 1 or args.all_engines:
            rows = overhead_table(args.models, args.frames, args.threads, args.all_engines, args.gray)
            atomic.write_json(Path(args.out) / "runtime_overhead.json", {"targets": TARGETS, "rows": rows})
            atomic.write_text(Path(args.out) / "runtime_overhead.md", overhead_markdown(rows))
            print(overhead_markdown(rows))
            return 0
        res = run(args.models[0], args.frames, args.soak, args.out, args.threads, args.cold_runs, args.backend)
    except LunarsegError as exc:
        print(f"runtime_bench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(to_markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
