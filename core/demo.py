"""`lunarseg demo`: the whole pipeline on the built-in synthetic data —
synth → train → evaluate → compress → export → bench → select → segment sample frames."""
from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from lunarseg.runtime import atomic, interrupts
from lunarseg.runtime.errors import ConfigError, require_at_least, require_folder_or_absent


@dataclass
class DemoConfig:
    """Sizes chosen by measurement on a 2-core CPU (benchmarks/RESULTS.md). `BUDGET` (the default)
    fits a wall-clock budget; `FULL` trains longer on more scenes; `QUICK` is the CI smoke run. The
    field defaults are the earlier 192×128 16-filter model."""

    frames: int = 300
    frame_size: tuple[int, int] = (720, 480)
    # 192×128 with 16 filters, chosen by measurement against 384×256 with 8 filters (same 1.28 GMAC):
    # test IoU 0.558 vs 0.546, and int8 runs 3.2× faster than Keras instead of 1.4× (8-channel
    # convolutions starve int8 kernels), and 75 % pruning keeps enough channels.
    model_size: tuple[int, int] = (192, 128)
    filters: int = 16
    depth: int = 4
    arch: str = "unet"
    crop: tuple[int, int] = (0, 0)  # train on random crops of this size (0, 0 = whole frames)
    learning_rate: float = 2e-3
    loss: str = "bce-dice"
    threshold_rule: str = "iou"  # how the deployed threshold is chosen on val (train/evaluate.py THRESHOLD_RULES)
    epochs: int = 16  # with a budget: the most it may train
    batch_size: int = 16
    compress_epochs: int = 0  # 0: each default variant's own (train/compress.py DEFAULT_VARIANTS)
    qat_epochs: int = 1
    cluster_epochs: int = 2
    calib_frames: int = 100
    bench_frames: int = 20
    sample_frames: int = 8
    formats: str = "all"
    # Compressed variants are exported to their int8 artifacts only (the float ones of a variant are
    # never the deployable choice): with every variant, 31 artifacts instead of 63 (7 base formats + 8 variants × 3).
    # onnx-int8-tflite is the int8 ONNX route for QAT variants, whose own onnx-int8 stays float.
    variant_formats: str = "tflite-int8,onnx-int8,onnx-int8-tflite"
    variants: tuple[str, ...] = ()  # names from DEFAULT_VARIANTS; () = all of them
    # With a budget: the fewest fine-tune epochs a variant gets (default 1), before training takes its share.
    min_variant_epochs: dict[str, int] = field(default_factory=dict)
    # > 0: minutes the demo may take (install excluded); training and fine-tuning epochs are then
    # chosen from this machine's measured training speed (core/budget.py).
    budget_min: float = 0.0
    max_iou_drop: float = 0.02
    seed: int = 1


# The recipe, measured on the demo's scenes (benchmarks/RESULTS.md, 2026-12-01): 8 filters at 384×256
# trained on random 192×128 crops at 1e-2 — 100 epochs reached test rock IoU 0.677 in 9 min (0.689
# with BCE + Tversky, which found 93 % of the rocks >= 0.05 % of the frame against 90 %; val IoU
# 0.658 vs 0.668, so the two are within noise), where the 16-filter model at 192×128 reached 0.40 in
# 16 epochs (3 min) and the same 8 filters on whole 192×128 frames 0.611 in 100 epochs; 8-channel
# layers run twice as fast as 6-channel ones on oneDNN.
# `--profile full` (`make demo-full`): twice the scenes, 250 epochs, the variants that carry the
# targets plus plain 50 % pruning, and the dense control (73 min of pipeline on a quiet 2-core Xeon, 2026-12-01;
# 51 min 48 s with the install on a 2-core AMD EPYC, 2026-12-04; <= 75).
# Both profiles deploy a rover's operating point ("rocks-f2": the val threshold with the best object-level
# F2 of rocks found and blobs right). Read off val: on demo 4's model it picks 0.35 instead of the IoU
# rule's 0.7 (test: found 0.924 -> 0.950, IoU 0.674 -> 0.663, right 0.989 -> 0.978); on the full
# profile's model 0.2 instead of 0.8 (test: found 0.950 -> 0.972, IoU 0.725 -> 0.702).
FULL = replace(DemoConfig(), frames=400, frame_size=(384, 256), model_size=(384, 256), crop=(192, 128), filters=8,
               learning_rate=1e-2, loss="bce-tversky", threshold_rule="rocks-f2", epochs=250,
               variants=("pruned50", "slim40", "pruned50-c8", "dense-ft"),
               formats="tflite-int8,onnx-fp32,onnx-int8", variant_formats="tflite-int8,onnx-int8",
               calib_frames=64, bench_frames=40)
# `make demo`: <= 20 minutes on a 2-core CPU with the install (~3 min): epochs from the measured
# training speed; int8 + 50 % sparsity (the IoU target), the same with ≤ 8 weights per kernel (size:
# clustering cost the budget parent +0.005 to +0.027 test IoU in three demos, the full profile's 0.020
# more than pruning alone) and the dense control fine-tuned as long. slim40 is left to the full
# profile: on this 8-filter model it keeps 3 channels, and the 8 fine-tune epochs the budget allowed
# lost 0.18 val IoU (2026-12-01 demo run).
# Floor measured on a 16-epoch budget model (val IoU drop): 50 % pruning lost 0.03 after 1 epoch,
# 0.010 after 3.
BUDGET = replace(FULL, frames=200, epochs=150, budget_min=16.0, variants=("pruned50", "pruned50-c8", "dense-ft"),
                 min_variant_epochs={"pruned50": 3, "pruned50-c8": 3, "dense-ft": 4},
                 calib_frames=32, bench_frames=20, sample_frames=4)
QUICK = DemoConfig(frames=24, frame_size=(240, 160), model_size=(48, 32), crop=(32, 16), filters=4, depth=2, epochs=2,
                   batch_size=8, compress_epochs=1, qat_epochs=1, cluster_epochs=1, calib_frames=8, bench_frames=4, sample_frames=2,
                   formats="tflite-int8,onnx-fp32,onnx-int8", variant_formats="onnx-int8")
# QUICK keeps the default 0.02 IoU-drop limit. Its end-to-end test checks the gate on the rows it measured,
# at that limit and at half their largest drop, so it does not rest on a row happening to cross 0.02
# (after 1-epoch fine-tunes, which rows do depends on TensorFlow's thread count).
# Timed batches of the budget probe (fit on the training stream, ~5 s on the demo model). The earlier
# probe (4 train_on_batch calls) read 1.43-1.50x the crops/s training then ran at in three demos and
# 0.97-1.01x in two more (56 and 60 epochs planned where ~80 fitted); the fit probe read 39.9 crops/s
# inside a demo where training had run at 38 (33.4 with validation).
PROBE_BATCHES = 12
# Base-training epochs after which the demo re-plans its training from their measured time (the first,
# with its tracing, not counted): the probe alone read 0.77-1.05x the rate the epochs then ran at.
REPLAN_AFTER_EPOCHS = 4
PROFILES = {"budget": BUDGET, "full": FULL, "quick": QUICK}


def register(sub) -> None:
    """Add the `demo` subcommand."""
    p = sub.add_parser("demo", help="run the whole pipeline on built-in synthetic data",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="demo_out", help="output directory")
    p.add_argument("--profile", default="budget", help=" | ".join(PROFILES) + ": budget fits --budget-min (`make "
                   "demo`), full trains longest (`make demo-full`), quick is the CI smoke run")
    p.add_argument("--quick", action="store_true", help="same as --profile quick")
    p.add_argument("--budget-min", type=float, help="minutes the demo may take (install excluded); 0 = the "
                   "profile's fixed epochs (default: the profile's, 16 for budget)")
    p.add_argument("--frames", type=int, help="synthetic frames to generate")
    p.add_argument("--epochs", type=int, help="training epochs (with a budget: the most it may train)")
    p.add_argument("--workers", type=int, default=2, help="processes for scene generation")
    p.set_defaults(func=_demo)


class StageClock:
    """Prints each stage's header with the elapsed time and keeps every stage's duration (seconds)."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def step(self, number: int, total: int, key: str, title: str) -> None:
        self.stop()
        print(f"\n== {number}/{total} {title} (t+{self.elapsed():.0f} s)", flush=True)
        self._current = (key, time.perf_counter())

    def stop(self) -> None:
        if self._current:
            key, start = self._current
            self.seconds[key] = round(time.perf_counter() - start, 1)
            self._current = None


@dataclass
class DemoRun:
    """What the stages share: the inputs, and each stage's outputs for the ones after it."""
    out: Path
    cfg: DemoConfig
    workers: int
    clock: StageClock
    tcfg: object = None  # the TrainConfig
    variants: list = field(default_factory=list)
    paths: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    choice: dict | None = None

    @property
    def data(self) -> Path:
        return self.out / "data"

    @property
    def run(self) -> Path:
        return self.out / "run"


def _synth(d: DemoRun) -> None:
    from lunarseg.data.preview import write_preview
    from lunarseg.data.synth import write_dataset

    if not (d.data / "bounding_boxes.csv").exists():
        write_dataset(d.data, d.cfg.frames, size=d.cfg.frame_size, seed=d.cfg.seed, workers=d.workers)
    d.paths.update(data=d.data, preview=write_preview(d.data, d.out / "preview.png", count=12))


def _train(d: DemoRun) -> None:
    """Train the base model (epochs from the budget plan), or resume an interrupted one with its plan."""
    from lunarseg.train.config import TrainConfig
    from lunarseg.train.fit import ScheduleReplan, train

    cfg, run = d.cfg, d.run
    if (run / "meta.json").exists():
        return
    resume = (run / "checkpoints/state.json").exists()
    schedule_epochs, callbacks = None, []
    if resume:  # the interrupted run's epochs, and with a budget the end of its saved (re-planned) schedule
        d.tcfg = replace(d.tcfg, epochs=TrainConfig.from_dict(_read_json(run / "checkpoints/state.json")["config"]).epochs)
        callbacks = [ScheduleReplan.keeping_the_plan()] if cfg.budget_min else []
    elif cfg.budget_min:
        plan = _plan(cfg, d.tcfg, d.data, d.variants, d.clock)
        print(f"budget {cfg.budget_min:g} min: {plan.describe()}; re-planned after {REPLAN_AFTER_EPOCHS} epochs")
        # The probe's plan sets the schedule's length; the profile's epochs stay the most it may train, so
        # the re-plan from the real epochs' time can lengthen the run as well as shorten it.
        schedule_epochs = plan.train_epochs
        callbacks = [ScheduleReplan(_replanner(d), after=REPLAN_AFTER_EPOCHS)]
    summary = train(d.tcfg, d.data, run, resume=resume, verbose=2, schedule_epochs=schedule_epochs, callbacks=callbacks)
    print(f"val IoU {summary['val']['iou']:.4f} at threshold {summary['threshold']:.2f} (rule {d.tcfg.threshold_rule}), "
          f"{summary['train_images_per_s']} images/s")


def _replanner(d: DemoRun):
    """replan(median epoch seconds, epochs done) -> the epochs the whole run fits into the budget, from the
    time the real epochs take (the probe read 10.5 images/s in one demo where the epochs ran at 13.0)."""
    def replan(epoch_s: float, done: int) -> int:
        plan = _plan(d.cfg, replace(d.tcfg, epochs=max(1, d.tcfg.epochs - done)), d.data, d.variants, d.clock,
                     measured_epoch_s=epoch_s)
        print(f"\nre-planned after {done} epochs of {epoch_s:.2f} s: {done} + {plan.describe()}", flush=True)
        return done + plan.train_epochs
    return replan


def _evaluate(d: DemoRun) -> None:
    from lunarseg.runtime.objects import describe_objects
    from lunarseg.train.evaluate import describe_operating_points, describe_recall_by_size, evaluate

    d.report = report = evaluate(d.run, d.data, split="test", out_dir=d.run)
    print(f"test IoU {report['iou']:.4f} Dice {report['dice']:.4f} (mIoU with background {report['miou']:.4f}) "
          f"on {report['frames']} frames at threshold {report['threshold']:.2f}")
    print(describe_recall_by_size(report["recall_by_rock_size"]))
    print(describe_objects(report["objects"]))
    if report["operating_points"]:
        print(describe_operating_points(report["operating_points"]))
    d.paths.update(run=d.run, curves=d.run / "curves.png", eval_grid=report.get("grid"))


def _compress(d: DemoRun) -> None:
    """Fine-tune each variant not made yet; with a budget, its epochs from the plan (the control as long as the longest)."""
    from lunarseg.train.checkpoint import variant_dirs
    from lunarseg.train.compress import compress, format_report, report_rows

    cfg = d.cfg
    done = {v.name for v in variant_dirs(d.run)}
    epochs = {}
    if cfg.budget_min:
        plan = _plan(cfg, d.tcfg, d.data, [v for v in d.variants if v.variant not in done], d.clock,
                     trained=True, measured_epoch_s=_median_epoch_s(d.run))
        epochs = control_matches_longest(_pinned_to_finished_sources(d, done, plan.variant_epochs))
        print(f"budget {cfg.budget_min:g} min: {plan.describe()}")
    for v in d.variants:
        e, c = epochs.get(v.variant, (cfg.compress_epochs or v.epochs, cfg.cluster_epochs))
        v = replace(v, epochs=e, qat_epochs=cfg.qat_epochs, cluster_epochs=c or cfg.cluster_epochs, batch_size=cfg.batch_size)
        if v.variant not in done:
            compress(d.run, v, data_dir=d.data, verbose=2)
    print(format_report(report_rows(d.run)))


def _pinned_to_finished_sources(d: DemoRun, done: set, planned: dict) -> dict:
    """Planned (epochs, cluster epochs) with each variant whose source is already made (a resumed demo)
    at that source's recorded epochs, so that compress takes the finished model over instead of
    fine-tuning the same phases again at other epochs."""
    pinned = dict(planned)
    for v in d.variants:
        source = _continued_variant(v, d.variants, d.cfg)
        if v.variant in pinned and source in done:
            made = _read_json(d.run / "compressed" / source / "meta.json")["extra"].get("compress", {})
            pinned[v.variant] = (made.get("config", {}).get("epochs", pinned[v.variant][0]), pinned[v.variant][1])
    return pinned


def _export(d: DemoRun) -> None:
    """The base model in every profile format; the variants in their deployable (int8) formats."""
    from lunarseg.export.exporter import export_model
    from lunarseg.train.checkpoint import variant_dirs

    cfg = d.cfg
    kw = dict(data_dir=d.data, calib_frames=cfg.calib_frames, max_iou_drop=cfg.max_iou_drop)
    records = export_model(d.run, cfg.formats, **kw)
    for vdir in variant_dirs(d.run):
        records += export_model(vdir, cfg.variant_formats, **kw)
    failed = [r for r in records if getattr(r, "status", "ok") != "ok"]
    print(f"{len(records)} artifacts, {len(failed)} failed")


def _bench(d: DemoRun) -> None:
    from lunarseg.benchmarks.bench import bench
    from lunarseg.benchmarks.limits import Limits

    d.results = bench(d.run, data=d.data, frames=d.cfg.bench_frames, profile="rover",
                      limits=Limits(max_iou_drop=d.cfg.max_iou_drop))
    d.paths.update(bench=d.run / "bench" / "results.md", pareto=d.run / "bench" / "pareto.png")


def _select(d: DemoRun) -> None:
    from lunarseg.benchmarks.select import BOARD_ENGINES, select
    from lunarseg.runtime.errors import GateError

    try:
        d.choice = select(d.run, max_iou_drop=d.cfg.max_iou_drop, objective="latency", engines=BOARD_ENGINES)
        print(f"selected {d.choice['artifact']}: {d.choice['reason']}")
        d.paths["deployed"] = d.choice["artifact"]
    except GateError as exc:
        print(f"nothing deployable: {exc}")


def _segment(d: DemoRun) -> None:
    """Segment a few test frames with the deployed artifact, on the engine it was chosen for."""
    segments = d.out / "segments"
    d.paths["segments"] = segments
    if not d.choice:
        return
    from lunarseg.cli import main as cli_main
    from lunarseg.data.loader import DatasetIndex

    frames = [str(p.image_path) for p in DatasetIndex.scan(d.data).split("test")[: d.cfg.sample_frames]]
    shutil.rmtree(segments, ignore_errors=True)  # the demo's own folder: a rerun starts it afresh
    code = cli_main(["segment", d.choice["artifact"], *frames, "--out", str(segments), "--overlay",
                     "--backend", d.choice.get("engine", "auto")])
    if code in (interrupts.EXIT_INTERRUPTED, interrupts.EXIT_TERMINATED):  # the stop reached segment: pass it on
        raise interrupts.Terminated() if code == interrupts.EXIT_TERMINATED else KeyboardInterrupt()
    if code not in (0, 3):  # 3: a sample frame failed, said on stderr; anything else is the stage failing
        raise ConfigError(f"segmenting the sample frames failed (lunarseg segment exited {code})")


@dataclass(frozen=True)
class Stage:
    key: str  # its name in timings.json
    title: str  # "{variants}" is replaced by the variants' names
    run: object  # DemoRun -> None


STAGES = (
    Stage("synth", "synthetic scenes", _synth),
    Stage("train", "train", _train),
    Stage("evaluate", "evaluate on the held-out test split", _evaluate),
    Stage("compress", "compress ({variants})", _compress),
    Stage("export", "export TFLite + ONNX (parity-checked through the runtime)", _export),
    Stage("bench", "benchmark (rover profile: 1 thread pinned to one core)", _bench),
    Stage("select", "select the fastest artifact within the IoU budget that a board can run", _select),
    Stage("segment", "segment sample test frames with the deployed model", _segment),
)


# The fewest scenes whose hash split gives train, val and test frames to every stage.
MIN_FRAMES = 12
OPTIONS_FILE = "demo_options.json"


def _same_options(out: Path, cfg: DemoConfig) -> None:
    """A rerun into the same --out continues that demo: with other options it would silently keep the
    finished stages' data and model, so it is refused, naming what differs."""
    import json

    path = out / OPTIONS_FILE
    now = json.loads(json.dumps(asdict(cfg)))  # tuples as lists, as read back
    if path.exists():
        before = _read_json(path)
        differs = sorted(k for k in set(now) & set(before) if now[k] != before[k])  # options both versions know
        if differs:
            shown = ", ".join(f"{k} {before.get(k)} -> {now.get(k)}" for k in differs[:4])
            raise ConfigError(f"{out} holds a demo made with other options ({shown}); rerun it with its own options "
                              "to continue it, or choose a new --out")
    elif any(out.iterdir()):
        return  # a demo made before options were recorded: continued as it is
    atomic.write_json(path, now)


def run_demo(out: Path, cfg: DemoConfig, workers: int = 2) -> dict:
    """Run every stage in order, then print the bench table, the limit violations and the outputs."""
    from lunarseg.train.config import TrainConfig

    out.mkdir(parents=True, exist_ok=True)
    _same_options(out, cfg)
    d = DemoRun(out, cfg, workers, StageClock(), variants=demo_variants(cfg))
    d.tcfg = TrainConfig(width=cfg.model_size[0], height=cfg.model_size[1], depth=cfg.depth, filters=cfg.filters,
                         arch=cfg.arch, crop_width=cfg.crop[0], crop_height=cfg.crop[1], learning_rate=cfg.learning_rate,
                         loss=cfg.loss, threshold_rule=cfg.threshold_rule, epochs=cfg.epochs,
                         batch_size=cfg.batch_size, seed=cfg.seed, patience=max(4, cfg.epochs // 3))
    names = ", ".join(v.variant for v in d.variants)
    for number, stage in enumerate(STAGES, 1):
        d.clock.step(number, len(STAGES), stage.key, stage.title.format(variants=names))
        stage.run(d)
    d.clock.stop()
    _summarise(d)
    return {"paths": {k: str(v) for k, v in d.paths.items()}, "results": d.results, "choice": d.choice}


def _summarise(d: DemoRun) -> None:
    """The bench table, the violations, timings.json and the output paths."""
    from lunarseg.benchmarks.bench import to_markdown

    clock, cfg = d.clock, d.cfg
    print("\n" + to_markdown(d.results))
    if d.results.get("violations"):
        print("limit violations (the demo reports them; `lunarseg bench` exits 1 on them):")
        for v in d.results["violations"]:
            print("  " + v)
    atomic.write_json(d.out / "timings.json", {"total_s": round(clock.elapsed(), 1), "stages_s": clock.seconds,
                                               "budget_min": cfg.budget_min})
    print(f"\ndemo finished in {clock.elapsed():.0f} s (" + ", ".join(f"{k} {v:.0f}" for k, v in clock.seconds.items())
          + (f"; budget {cfg.budget_min * 60:.0f} s" if cfg.budget_min else "") + "); outputs:")
    order = ("data", "preview", "run", "curves", "eval_grid", "bench", "pareto", "deployed", "segments")
    for k in order:
        if d.paths.get(k):
            print(f"  {k:10s} {d.paths[k]}")


def control_matches_longest(epochs: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """The dense control fine-tunes as many epochs as the longest variant (its clustering included),
    so a variant's drop against it is compression, not a difference in training."""
    from lunarseg.runtime.metadata import CONTROL_VARIANT

    others = [e + c for name, (e, c) in epochs.items() if name != CONTROL_VARIANT]
    if CONTROL_VARIANT not in epochs or not others:
        return dict(epochs)
    return {**epochs, CONTROL_VARIANT: (max(others), 0)}


def _as_long_as_the_longest(work, all_work: list):
    """The control's planned work: that of the longest other variant, its clustering epochs included
    (it will run as many epochs: control_matches_longest), so its time is budgeted as it will be spent."""
    from lunarseg.budget import VariantWork
    from lunarseg.runtime.metadata import CONTROL_VARIANT

    others = [w for w in all_work if w.name != CONTROL_VARIANT]
    if work.name != CONTROL_VARIANT or not others:
        return work
    longest = max(others, key=lambda w: w.epochs + w.cluster_epochs)
    return VariantWork(work.name, longest.epochs + longest.cluster_epochs, cost=1.0,
                       min_epochs=longest.min_epochs + (1 if longest.cluster_epochs else 0))


def _continued_variant(v, variants: list, cfg: DemoConfig) -> str:
    """The earlier variant in `variants` whose finished model `v` will start from (compress's own rule,
    at the epochs the demo gives both), else ""."""
    from lunarseg.train.compress import continues_from

    def as_run(c):
        return replace(c, epochs=cfg.compress_epochs or c.epochs, batch_size=cfg.batch_size)

    earlier = variants[:variants.index(v)]
    return next((o.variant for o in earlier if continues_from(as_run(v), as_run(o))), "")


def demo_variants(cfg: DemoConfig) -> list:
    """The compression variants the profile makes, in DEFAULT_VARIANTS order; unknown names are refused."""
    from lunarseg.runtime.errors import unknown_key
    from lunarseg.train.compress import DEFAULT_VARIANTS

    by_name = {v.variant: v for v in DEFAULT_VARIANTS}
    for name in cfg.variants:
        if name not in by_name:
            raise unknown_key("demo variant", name, tuple(by_name))
    return [v for v in DEFAULT_VARIANTS if not cfg.variants or v.variant in cfg.variants]


def _read_json(path: Path) -> dict:
    import json

    return json.loads(path.read_text())


def _median_epoch_s(run: Path) -> float | None:
    """Median seconds of the base model's training epochs (validation included), from history.csv."""
    import statistics

    from lunarseg.train.history import positive_number, read_history

    seconds = [s for s in (positive_number(r.get("seconds")) for r in read_history(run)) if s]
    return statistics.median(seconds) if seconds else None


def _plan(cfg: DemoConfig, tcfg, data: Path, variants: list, clock: StageClock, *, trained: bool = False,
          measured_epoch_s: float | None = None):
    """Plan the epochs that fit the budget: from a measured training epoch when there is one, else from
    a few timed training batches of the demo model (the probe)."""
    from lunarseg.budget import StageCosts, VariantWork, plan_demo
    from lunarseg.data.loader import DatasetIndex
    from lunarseg.export.formats import resolve_formats

    index = DatasetIndex.scan(data)
    n_train, n_val = len(index.split("train")), len(index.split("val"))
    costs = StageCosts()
    share = tcfg.train_pixels_share
    if measured_epoch_s:  # whole model-size frames per second, from a training epoch of crops
        rate = costs.rate_from_training_epoch(measured_epoch_s, n_train, n_val, share)
    else:
        from lunarseg.train.fit import measure_training_speed

        rate = measure_training_speed(tcfg, batches=PROBE_BATCHES) * share
    # Per-epoch cost relative to a base training epoch, measured on the demo model: pruning and
    # clustering ~1.0 (same MACs, mask updates); half width 0.5 (12 s vs 23 s: a quarter of the MACs,
    # the same data pipeline), and no less below it (width 0.4: 13 s vs 28 s; the data pipeline and
    # validation are the floor), so a slimmed variant is costed at its width, at least 0.5.
    work = []
    for v in variants:
        epochs = cfg.compress_epochs or v.epochs
        work.append(VariantWork(v.variant, epochs, cost=min(1.0, max(0.5, v.width)),
                                cluster_epochs=cfg.cluster_epochs if v.clusters else 0,
                                min_epochs=min(epochs, cfg.min_variant_epochs.get(v.variant, 1)),
                                continues=_continued_variant(v, variants, cfg)))
    work = [_as_long_as_the_longest(w, work) for w in work]
    artifacts = len(resolve_formats(cfg.formats)) + len(variants) * len(resolve_formats(cfg.variant_formats))
    # The elapsed time is read after the probe: its seconds count against the budget too.
    return plan_demo(budget_s=cfg.budget_min * 60, elapsed_s=clock.elapsed(), images_per_s=rate, train_frames=n_train,
                     val_frames=n_val, variants=work, artifacts=artifacts, max_train_epochs=0 if trained else tcfg.epochs,
                     costs=costs, train_share=share)


def _demo(args) -> int:
    from lunarseg.runtime.errors import unknown_key

    import math

    name = "quick" if args.quick else args.profile
    if name not in PROFILES:
        raise unknown_key("demo profile", name, tuple(PROFILES))
    cfg = PROFILES[name]
    if args.budget_min is not None:
        if not math.isfinite(args.budget_min) or args.budget_min < 0:
            raise ConfigError(f"--budget-min must be a finite number >= 0 (0 = the profile's fixed epochs), "
                              f"got {args.budget_min:g}")
        cfg = replace(cfg, budget_min=args.budget_min)
    for flag, value, least in (("--frames", args.frames, MIN_FRAMES), ("--epochs", args.epochs, 1),
                               ("--workers", args.workers, 1)):
        require_at_least(flag, value, least)
    if args.frames:
        cfg = replace(cfg, frames=args.frames)
    if args.epochs:
        cfg = replace(cfg, epochs=args.epochs)
    out = Path(args.out)
    require_folder_or_absent(out)
    run_demo(out, cfg, workers=args.workers)
    return 0
