"""`lunarseg bench` and `lunarseg select` (heavy imports inside the handlers)."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    """Add this layer's subcommands to the top-level parser."""
    from lunarseg.benchmarks.select import BOARD_ENGINES, OBJECTIVES
    b = sub.add_parser("bench", help="accuracy/speed/size table of every exported artifact, with a limit gate "
                       "(TensorFlow only for a run's Keras baseline)", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    b.add_argument("paths", nargs="+", metavar="PATH", help="run directories (model.keras + export/manifest.json), "
                   "folders of models (RUN/deploy, a bundle) or .onnx/.tflite files")
    b.add_argument("--data", help="labelled dataset root (default: the one recorded at training by the run)")
    b.add_argument("--out", help="where results.json/.md and pareto.png go (default: RUN/bench of the first run "
                   "directory; required without one)")
    b.add_argument("--threads", default="1", help="comma-separated thread counts, e.g. 1,2")
    b.add_argument("--frames", type=int, default=50, help="labelled test frames for IoU/Dice")
    b.add_argument("--runs", type=int, default=30, help="timed engine calls per artifact (at least 1 s)")
    b.add_argument("--min-seconds", type=float, default=1.0, help="time each artifact's engine for at least this long")
    b.add_argument("--timeout-s", type=float, default=900, help="kill a measurement still running after this many "
                   "seconds (the row fails, and so does the gate)")
    b.add_argument("--rounds", type=int, default=1, help="measure every artifact this many times, round-robin, and "
                   "report the median of the rounds (steadier speed-ups on a shared machine)")
    b.add_argument("--limits", help="TOML file with [limits] max_iou_drop, max_latency_ms, min_iou, max_bytes")
    b.add_argument("--max-iou-drop", type=float, help="fail when a deployable artifact's IoU drop (against a float "
                   "version of its trained model) exceeds this; an artifact with no such reference fails too")
    b.add_argument("--max-latency-ms", type=float, help="fail when a deployable artifact's p50 engine latency exceeds "
                   "this; limits are checked at the first --threads count (the deployment's)")
    b.add_argument("--profile", default="default", help="default | rover (1 thread pinned to one core)")
    b.add_argument("--formats", help="only these formats (comma-separated); the Keras baseline always runs")
    b.add_argument("--engines", help="only these engines (comma-separated: onnxruntime, litert, openvino); "
                   "default: every installed engine that reads each file")
    b.set_defaults(func=_bench)

    s = sub.add_parser("select", help="pick the best benchmarked artifact within an IoU budget; copy it to RUN/deploy/")
    s.add_argument("run")
    s.add_argument("--max-iou-drop", type=float, required=True,
                   help="largest IoU drop allowed (against a float version of the run's trained model)")
    s.add_argument("--objective", default="latency", help=" | ".join(OBJECTIVES))
    s.add_argument("--engines", help="choose among rows measured on these engines (comma-separated), or 'board' "
                   f"for the ones an aarch64 board installs ({', '.join(BOARD_ENGINES)}); default: any")
    s.set_defaults(func=_select)


def _threads(text: str) -> list[int]:
    from lunarseg.runtime.errors import ConfigError

    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ConfigError(f"--threads {text!r} must be positive integers separated by commas, e.g. 1,2")
    return values


def _check_numbers(args) -> None:
    """Refuse bench's counts and durations that would measure nothing or never stop, before measuring."""
    import math

    from lunarseg.runtime.errors import ConfigError, require_at_least

    for flag, value in (("--frames", args.frames), ("--runs", args.runs), ("--rounds", args.rounds)):
        require_at_least(flag, value, 1)
    if not math.isfinite(args.min_seconds) or args.min_seconds < 0:
        raise ConfigError(f"--min-seconds must be a finite number >= 0, got {args.min_seconds}")
    if not math.isfinite(args.timeout_s) or args.timeout_s <= 0:
        raise ConfigError(f"--timeout-s must be a finite number > 0, got {args.timeout_s}")


def _bench(args) -> int:
    from lunarseg.benchmarks.bench import bench, to_markdown
    from lunarseg.benchmarks.limits import Limits

    _check_numbers(args)
    limits = Limits.load(args.limits, max_iou_drop=args.max_iou_drop, max_latency_ms=args.max_latency_ms)
    formats = [f.strip() for f in args.formats.split(",")] if args.formats else None
    engines = [e.strip() for e in args.engines.split(",")] if args.engines else None
    results = bench(args.paths, data=args.data, out=args.out, threads=_threads(args.threads), frames=args.frames,
                    runs=args.runs, min_seconds=args.min_seconds, profile=args.profile, limits=limits,
                    formats=formats, engines=engines, rounds=args.rounds, timeout_s=args.timeout_s)
    print(to_markdown(results))
    out = results["out"]
    plot = f", {results['plot']}" if results.get("plot") else ""
    print(f"results: {out}/results.json, {out}/results.md{plot}")
    import sys

    for note in results["notes"]:
        print(note, file=sys.stderr)
    for line in results["violations"]:
        print(line, file=sys.stderr)
    return 1 if results["violations"] else 0


def _select(args) -> int:
    from lunarseg.benchmarks.select import select

    from lunarseg.benchmarks.select import BOARD_ENGINES

    engines = None
    if args.engines:
        engines = BOARD_ENGINES if args.engines == "board" else tuple(e.strip() for e in args.engines.split(","))
    choice = select(args.run, max_iou_drop=args.max_iou_drop, objective=args.objective, engines=engines)
    print(f"selected {choice['artifact']}\nwhy: {choice['reason']}")
    if choice.get("removed"):
        print(f"removed from {Path(choice['artifact']).parent}: {', '.join(choice['removed'])} (earlier selections)")
    return 0
