"""Measure one model in this process: first mask, accuracy on labelled frames, engine latency, RSS.

Run by `lunarseg bench` as a child process per artifact (`python -m lunarseg.benchmarks.measure`)
so figures don't mix. The model is opened by lunarseg.train.open_model (the one opener `evaluate`
uses too), which imports TensorFlow only for the Keras baseline. Prints `FIRST_MASK` on
stdout the moment the first mask exists (the parent times the cold start from process launch to
that line) and the result JSON as the last line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from lunarseg.runtime.errors import LunarsegError, ModelFileError
from lunarseg.runtime.procstatus import status_mb
from lunarseg.runtime.timing import latency_ms

TRAINING_MODULES = ("tensorflow", "tf_keras", "keras")
# One rule for every artifact, whatever its input size: the runtime's own frame-size mask (the model
# output resized back, nearest) against the label at the label's resolution, pixels pooled over frames.
IOU_RULE = ("rock IoU/Dice of the runtime's mask resized back to the label's own resolution (nearest, "
            "runtime.preprocess.mask_to_frame_size) against the label, pixel counts pooled over all frames")


def training_modules_loaded() -> list[str]:
    """TensorFlow/Keras packages in this process (none for an .onnx/.tflite measurement)."""
    return sorted({n.split(".")[0] for n in sys.modules if n.split(".")[0] in TRAINING_MODULES})


def measure(model: Path, data: Path, *, split: str, frames: int, runs: int, min_seconds: float, threads: int,
            backend: str = "auto") -> dict:
    """First mask, IoU/Dice by IOU_RULE on up to `frames` labelled frames, engine latency and RSS of one model."""
    from lunarseg.data.loader import DatasetIndex, load_pair
    from lunarseg.runtime import preprocess
    from lunarseg.runtime.metrics import MetricAccumulator
    from lunarseg.train.open_model import open_model

    opened = open_model(model, threads, backend)
    meta, predict = opened.meta, opened.predict
    pairs = DatasetIndex.scan(data).split(split)[: frames or None]
    if not pairs:
        raise SystemExit(f"no labelled frames in the {split!r} split of {data}")
    first, truth = load_pair(pairs[0], meta.task)
    x = preprocess.prepare(first, meta)[None]
    preprocess.probs_to_classes(predict(x)[0], meta)
    print("FIRST_MASK", flush=True)
    cold_rss = status_mb("VmHWM")
    acc = MetricAccumulator(tuple(meta.class_names))
    for i, pair in enumerate(pairs):
        frame, classes = (first, truth) if i == 0 else load_pair(pair, meta.task)
        probs = predict(preprocess.prepare(frame, meta)[None])[0]
        if not np.isfinite(probs).all():  # NaN compares false with every threshold: it would score, not fail
            raise ModelFileError(f"{model}: its outputs are not finite (NaN or infinity) on test frame {pair.image_path.name}")
        pred = preprocess.probs_to_classes(probs, meta)
        acc.update(classes, preprocess.mask_to_frame_size(pred, classes.shape[:2]))
    times = latency_ms(lambda: predict(x), runs, min_seconds)  # the engine on a fixed batch-1 tensor
    scores = acc.result()
    return {
        "engine": opened.engine, "threads": threads, "engine_threads": opened.engine_threads, "affinity": sorted(os.sched_getaffinity(0)),
        "iou": scores["iou"], "dice": scores["dice"], "miou": scores.get("miou"), "frames": scores["frames"],
        "frame_rock_counts": scores["frame_rock_counts"],  # per frame [intersection, union]: drop intervals
        "latency_runs": int(times.size), "p50_ms": float(np.percentile(times, 50)),
        "p95_ms": float(np.percentile(times, 95)), "p99_ms": float(np.percentile(times, 99)),
        "mean_ms": float(times.mean()), "cold_rss_mb": round(cold_rss, 1), "peak_rss_mb": round(status_mb("VmHWM"), 1),
        "tensorflow_loaded": "tensorflow" in sys.modules, "training_modules": training_modules_loaded(),
        "macs": meta.extra.get("macs"), "input_size": f"{meta.width}x{meta.height}",
        "val_iou": meta.val_metrics.get("iou"), **model_identity(model, meta),
    }


def model_identity(model: Path, meta) -> dict:
    """`model_hash`: the Keras model a file was exported from (a Keras file: its own sha256);
    `trained_hash`: the trained model it descends from (benchmarks/reference.py pairs rows by it)."""
    if model.suffix.lower() in (".onnx", ".tflite"):
        return {"model_hash": meta.parent_hash, "trained_hash": meta.trained_hash}
    from lunarseg.train.checkpoint import file_sha256, model_file

    own = file_sha256(model_file(model) if model.is_dir() else model)
    return {"model_hash": own, "trained_hash": meta.replace(parent_hash=own).trained_hash}  # a variant's parent, else itself


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lunarseg.benchmarks.measure")
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--split", default="test")
    p.add_argument("--frames", type=int, default=50)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--min-seconds", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--backend", default="auto", help="engine for exported files (auto = the suffix's default)")
    p.add_argument("--pin-cpu", type=int, default=-1, help="run on this CPU only (rover profile)")
    args = p.parse_args(argv)
    if args.pin_cpu >= 0:
        os.sched_setaffinity(0, {args.pin_cpu})
    try:
        result = measure(args.model, args.data, split=args.split, frames=args.frames, runs=args.runs,
                         min_seconds=args.min_seconds, threads=args.threads, backend=args.backend)
    except LunarsegError as exc:  # the parent shows the last stderr line: the message alone
        print(exc, file=sys.stderr, flush=True)
        return exc.exit_code
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
