"""Train the U-Net on a dataset root: best checkpoint by validation IoU, early stopping, resume,
NaN guard, TensorBoard logs, history.csv, curves.png, a threshold chosen on validation data."""
from __future__ import annotations

import io
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf
import tf_keras as keras

from lunarseg.runtime import atomic
from lunarseg.runtime.errors import ConfigError, LunarsegError, require_folder_or_absent
from lunarseg.runtime.masks import class_names
from lunarseg.runtime.metadata import ModelMeta
from lunarseg.train import checkpoint, forward, losses, schedules
from lunarseg.train.config import TrainConfig
from lunarseg.train.data import SplitArrays, dataset_fingerprint, load_split
from lunarseg.train.evaluate import choose_threshold, score_arrays
from lunarseg.train.history import HISTORY_FILE, write_history
from lunarseg.train.model import at_input_size, build_unet, count_macs
from lunarseg.train.tf_input import NORMALISATION, make_dataset, normalise, steps_for


class TrainingDiverged(LunarsegError):
    """The loss became NaN or Inf."""

    exit_code = 1


@dataclass
class RunPaths:
    root: Path

    @property
    def model(self) -> Path: return self.root / "model.keras"
    @property
    def last(self) -> Path: return self.root / "checkpoints" / "last.keras"
    @property
    def state(self) -> Path: return self.root / "checkpoints" / "state.json"
    @property
    def history(self) -> Path: return self.root / HISTORY_FILE
    @property
    def curves(self) -> Path: return self.root / "curves.png"
    @property
    def logs(self) -> Path: return self.root / "logs"


def _strategy(cfg: TrainConfig) -> tf.distribute.Strategy:
    if cfg.strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if cfg.strategy == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _is_chief() -> bool:
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = tf_config.get("task", {})
    return task.get("type", "chief") == "chief" or (task.get("type") == "worker" and task.get("index", 0) == 0
                                                   and "chief" not in tf_config.get("cluster", {}))


def _worker_label() -> str:
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    n = sum(len(v) for v in tf_config.get("cluster", {}).values())
    return f"worker {tf_config.get('task', {}).get('index', 0)} of {n}"


# Checkpoints (last model + optimizer, state, history, the best model) are written when this many
# seconds have passed since the previous ones, at the last epoch, on early stopping and when training
# is interrupted: writing them took 0.7 s an epoch of 5.6 s on the demo model, and a kill loses at
# most this much work.
CHECKPOINT_EVERY_S = 30.0


class RunKeeper(keras.callbacks.Callback):
    """Per epoch: keep the state (for --resume) and, when val IoU improves, the best weights; write
    them every CHECKPOINT_EVERY_S (see `flush`).

    Stops on NaN/Inf loss before anything bad is saved, and does early stopping on val IoU.
    """

    def __init__(self, paths: RunPaths, cfg: TrainConfig, state: dict, write: bool, every_s: float | None = None):
        super().__init__()
        self.paths, self.cfg, self.state, self.write = paths, cfg, state, write
        self.every_s = CHECKPOINT_EVERY_S if every_s is None else every_s
        self.diverged_at: int | None = None
        self._epoch_start = 0.0
        self._best_weights = None
        self._flushed_at = time.perf_counter()
        self.flushed_epoch = state["epoch"]

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            self.diverged_at = self.state["epoch"] + 1
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.diverged_at is not None:
            return
        logs = dict(logs or {})
        row = {"epoch": epoch + 1, "seconds": round(time.perf_counter() - self._epoch_start, 2),
               "lr": float(keras.backend.get_value(self.model.optimizer.learning_rate(self.model.optimizer.iterations))
                           if callable(self.model.optimizer.learning_rate) else keras.backend.get_value(self.model.optimizer.learning_rate))}
        row.update({k: float(v) for k, v in logs.items()})
        self.state["history"].append(row)
        self.state["epoch"] = epoch + 1
        val_iou = logs.get("val_iou", -1.0)
        if val_iou > self.state["best_val_iou"]:
            self.state["best_val_iou"] = float(val_iou)
            self.state["best_epoch"] = epoch + 1
            self.state["wait"] = 0
            self._best_weights = self.model.get_weights()
        else:
            self.state["wait"] += 1
            if self.state["wait"] >= self.cfg.patience:
                self.state["stopped_early"] = True
                self.model.stop_training = True
        due = time.perf_counter() - self._flushed_at >= self.every_s
        if due or self.model.stop_training or epoch + 1 >= self.cfg.epochs:
            self.flush()

    def flush(self) -> None:
        """Write the best model (if it changed), then last + state + history, all of the same epoch.
        After a divergence only the best model is written: the current weights are not finite."""
        if not self.write:
            return
        if self._best_weights is not None:
            current = self.model.get_weights()
            self.model.set_weights(self._best_weights)
            checkpoint.save_model(self.model, self.paths.model)
            self.model.set_weights(current)
            self._best_weights = None
        if self.diverged_at is None and self.state["epoch"] > self.flushed_epoch:
            checkpoint.save_model(self.model, self.paths.last, include_optimizer=True)
            atomic.write_json(self.paths.state, self.state)
            write_history(self.paths.history, self.state["history"])
            self.flushed_epoch = self.state["epoch"]
        self._flushed_at = time.perf_counter()


def plot_curves(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("loss", "val_loss"):
        a.plot(epochs, [r.get(key, np.nan) for r in rows], label=key)
    for key in ("iou", "val_iou", "val_dice"):
        b.plot(epochs, [r.get(key, np.nan) for r in rows], label=key)
    a.set_xlabel("epoch"); a.set_title("loss"); a.legend()
    b.set_xlabel("epoch"); b.set_title("rock IoU / Dice"); b.legend(); b.set_ylim(0, 1)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic.write_bytes(path, buf.getvalue())


def learning_rate_schedule(cfg: TrainConfig, steps: int):
    """The rate of `cfg.lr_schedule` over a run of `steps` optimizer steps (a float when constant)."""
    return schedules.schedule(cfg.lr_schedule, cfg.learning_rate, steps)


def _compile(model: keras.Model, cfg: TrainConfig, steps_per_epoch: int, schedule_epochs: int | None = None) -> None:
    lr = learning_rate_schedule(cfg, (schedule_epochs or cfg.epochs) * steps_per_epoch)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=losses.get_loss(cfg.loss), metrics=losses.training_metrics())
    # Adam's slots built now, not in the first train step: TensorFlow traces a step that creates
    # variables twice, so every fresh model's step was traced twice (the second 2-7 s on the demo model).
    model.optimizer.build(model.trainable_variables)


def _check_writable(root: Path) -> None:
    require_folder_or_absent(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write_probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{root}: output directory is not writable ({exc.strerror})") from None


def train(cfg: TrainConfig, data_dir: str | Path, out: str | Path, *, resume: bool = False,
          verbose: int = 1, train_arrays: SplitArrays | None = None, val_arrays: SplitArrays | None = None,
          callbacks: list | None = None, schedule_epochs: int | None = None) -> dict:
    """Fit `cfg` on `data_dir` into run directory `out`; returns a summary dict. The rate schedule spans
    `schedule_epochs` (default cfg.epochs, the most it trains): a ScheduleReplan callback may stretch it."""
    cfg.validate()
    if resume and cfg.strategy == "multi-worker":
        # Non-chief replicas write into scratch directories that are gone after the run: nothing to resume from.
        raise ConfigError("--resume is not supported with --strategy multi-worker (only the chief keeps "
                          "checkpoints); start the workers again without --resume")
    chief = _is_chief()
    # Every multi-worker replica must run the same saves (they hold collective ops); the others
    # write into a scratch directory that is removed at the end, as tf.distribute recommends.
    paths = RunPaths(Path(out) if chief else Path(tempfile.mkdtemp(prefix="lunarseg-worker-")))
    _check_writable(paths.root)
    started_for = _planned_epochs(paths) if resume else None
    state = _start_state(paths, cfg, resume)
    tr, va = _training_arrays(cfg, data_dir, train_arrays, val_arrays)
    keras.utils.set_random_seed(cfg.seed)
    steps_per_epoch = math.ceil(len(tr.x) / cfg.batch_size)
    model = _model_to_fit(cfg, paths, resume, steps_per_epoch=steps_per_epoch, schedule_epochs=schedule_epochs)
    if resume and started_for != cfg.epochs and schedule_epochs is None:
        _follow_new_epochs(model, cfg.epochs * steps_per_epoch)
    keeper = RunKeeper(paths, cfg, state, write=True)
    t0, start_epoch = time.perf_counter(), state["epoch"]
    _fit_epochs(model, tr, va, cfg, keeper, [*_logging_callbacks(paths, chief), *(callbacks or [])], verbose)
    seconds = time.perf_counter() - t0
    if keeper.diverged_at is not None:
        raise TrainingDiverged(
            f"loss became NaN/Inf in epoch {keeper.diverged_at}; training stopped. The last good checkpoint "
            f"(epoch {keeper.flushed_epoch}) is kept at {paths.last if keeper.flushed_epoch else 'nowhere (no epoch saved)'}; "
            "lower --lr or check the data")
    if not chief:
        shutil.rmtree(paths.root, ignore_errors=True)
        return {"chief": False, "epochs": state["epoch"], "worker": _worker_label()}
    epochs_run = state["epoch"] - start_epoch
    images_per_s = epochs_run * len(tr.x) / seconds if epochs_run else 0.0
    best, threshold, val_scores = _best_model_on_val(cfg, paths, va)
    checkpoint.save_meta(paths.model, _run_meta(cfg, data_dir, state, best, threshold, val_scores, images_per_s))
    if state["history"]:
        plot_curves(state["history"], paths.curves)
    return {"run": str(paths.root), "model": str(paths.model), "best_epoch": state["best_epoch"],
            "epochs": state["epoch"], "threshold": threshold, "val": val_scores,
            "train_images_per_s": round(images_per_s, 2), "seconds": round(seconds, 1)}


def _planned_epochs(paths: RunPaths) -> int | None:
    """The --epochs an interrupted run was started (or last resumed) with, from its state."""
    try:
        return int(json.loads(paths.state.read_text())["config"]["epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _follow_new_epochs(model: keras.Model, steps: int) -> None:
    """A run resumed with another --epochs: its cosine decays over the new length (a schedule that
    cannot stretch, one-cycle, keeps its own)."""
    lr = schedules.rate_schedule(model.optimizer)
    if hasattr(lr, "stretch"):
        lr.stretch(steps)


def _start_state(paths: RunPaths, cfg: TrainConfig, resume: bool) -> dict:
    """The run's state (epoch, best val IoU, patience, history): fresh, or an interrupted run's checked
    against `cfg`; refuses to overwrite a run unless resuming it."""
    if paths.state.exists() and not resume:
        raise ConfigError(f"{paths.root} already holds a training run; pass --resume to continue it or choose another --out")
    if not resume:
        return {"epoch": 0, "best_val_iou": -1.0, "best_epoch": 0, "wait": 0, "history": [], "stopped_early": False,
                "config": cfg.to_dict()}
    if not paths.state.exists():
        raise ConfigError(f"{paths.root}: nothing to resume (no checkpoints/state.json); start without --resume")
    state = json.loads(paths.state.read_text())
    diffs = TrainConfig.from_dict(state["config"]).differences(cfg)
    if diffs:
        raise ConfigError(f"--resume with a changed config: {'; '.join(diffs)}; use the original options or a new --out")
    state["config"] = cfg.to_dict()
    if state["epoch"] >= cfg.epochs:
        raise ConfigError(f"{paths.root}: already trained {state['epoch']} of {cfg.epochs} epochs; raise --epochs to continue")
    state["wait"] = 0 if state.get("stopped_early") else state["wait"]
    return state


def _training_arrays(cfg: TrainConfig, data_dir, train_arrays: SplitArrays | None,
                     val_arrays: SplitArrays | None) -> tuple[SplitArrays, SplitArrays]:
    """The given train/val frames, else `data_dir`'s at the model's size; frames of another size are refused."""
    kw = dict(width=cfg.width, height=cfg.height, task=cfg.task, colour_mode=cfg.colour_mode, max_frames=cfg.max_frames)
    tr = train_arrays or load_split(data_dir, "train", **kw)
    va = val_arrays or load_split(data_dir, "val", **kw)
    if tr.x.shape[1:3] != (cfg.height, cfg.width):
        raise ConfigError(f"training frames are {tr.x.shape[2]}x{tr.x.shape[1]} but the model expects {cfg.width}x{cfg.height}")
    return tr, va


def _model_to_fit(cfg: TrainConfig, paths: RunPaths, resume: bool, steps_per_epoch: int,
                  schedule_epochs: int | None = None) -> keras.Model:
    """A new compiled U-Net (any input size when training on crops), or the interrupted run's last
    model with its optimizer (and the schedule's length it had); inside the distribution strategy's scope."""
    with _strategy(cfg).scope():
        if resume:
            return checkpoint.load_model(paths.last, compile=True)
        model = build_unet(cfg, any_size=cfg.crops)
        _compile(model, cfg, steps_per_epoch, schedule_epochs)
        return model


class ScheduleReplan(keras.callbacks.Callback):
    """After `after` epochs (the first, with its tracing, left out of the timing), ask
    `replan(median_epoch_seconds, epochs_done)` how many epochs the run should have in all, stretch the
    rate schedule to that length and stop the run there: the epochs follow the time the real epochs
    take, not a short probe's reading. Without a stretchable schedule it only stops the run."""

    def __init__(self, replan: Callable[[float, int], int] | None, after: int = 4):
        super().__init__()
        self.replan, self.after = replan, max(2, after) if replan else 1
        self.total: int | None = None
        self._seconds: list[float] = []
        self._start = 0.0

    @classmethod
    def keeping_the_plan(cls) -> "ScheduleReplan":
        """For a resumed run: stop where its schedule, saved with the length last planned, ends."""
        return cls(None)

    def _planned_total(self, done: int) -> int | None:
        if self.replan is not None:
            return max(done, int(self.replan(float(np.median(self._seconds[1:])), done)))
        lr = schedules.rate_schedule(self.model.optimizer)
        return round(float(lr.decay_steps.numpy()) / self.params["steps"]) if hasattr(lr, "stretch") else None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self._seconds.append(time.perf_counter() - self._start)
        done = epoch + 1
        if self.total is None and len(self._seconds) >= self.after:
            self.total = self._planned_total(done)
            lr = schedules.rate_schedule(self.model.optimizer)
            if self.total is not None and hasattr(lr, "stretch"):
                lr.stretch(self.total * self.params["steps"])  # fit's steps per epoch
        if self.total is not None and done >= self.total:
            self.model.stop_training = True


def _logging_callbacks(paths: RunPaths, chief: bool) -> list:
    """TensorBoard logs, written by the chief only."""
    return [keras.callbacks.TensorBoard(log_dir=str(paths.logs), profile_batch=0, write_graph=False)] if chief else []


def _fit_epochs(model, tr: SplitArrays, va: SplitArrays, cfg: TrainConfig, keeper: RunKeeper, callbacks: list,
                verbose: int) -> None:
    """model.fit from the state's epoch on the repeated training stream; whatever happens, the
    finished epochs are flushed to disk."""
    train_ds = make_dataset(tr.x, tr.y, cfg, training=True, repeat=True)
    val_ds = make_dataset(va.x, va.y, cfg, training=False)
    try:
        model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, initial_epoch=keeper.state["epoch"],
                  steps_per_epoch=steps_for(len(tr.x), cfg, repeated=True), validation_steps=steps_for(len(va.x), cfg),
                  callbacks=[keeper, *callbacks], verbose=verbose)
    finally:  # interrupted or not: what the finished epochs learned is on disk
        keeper.flush()


def _best_model_on_val(cfg: TrainConfig, paths: RunPaths, va: SplitArrays):
    """(best model at the input size, threshold chosen on the validation frames, its scores there)."""
    best = checkpoint.load_model(paths.model)
    if cfg.crops:  # trained on crops at any size: the run keeps the model at its input size
        best = at_input_size(best, cfg)
        checkpoint.save_model(best, paths.model)
    probs = forward.predict(best, normalise(va.x), cfg.batch_size)
    threshold = choose_threshold(probs, va.y, cfg.task, cfg.threshold_rule)
    return best, threshold, score_arrays(probs, va.y, cfg.task, threshold)


def _run_meta(cfg: TrainConfig, data_dir, state: dict, best, threshold: float, val_scores: dict,
              images_per_s: float) -> ModelMeta:
    """meta.json of the run: what the runtime needs (task, input, normalisation, threshold) and what the
    training measured (validation scores, epochs, MACs, speed, the dataset's fingerprint)."""
    return ModelMeta(
        task=cfg.task, class_names=list(class_names(cfg.task)),
        input_shape=[1, cfg.height, cfg.width, cfg.channels], colour_mode=cfg.colour_mode,
        normalisation=dict(NORMALISATION), output_activation="sigmoid" if cfg.task == "binary" else "softmax",
        threshold=threshold, train_config=cfg.to_dict(),
        val_metrics={k: v for k, v in val_scores.items() if isinstance(v, (int, float, dict))},
        format="keras",
        extra={"dataset_fingerprint": dataset_fingerprint(data_dir) if data_dir else "",
               "data_dir": str(Path(data_dir).resolve()) if data_dir else "", "best_epoch": state["best_epoch"],
               "epochs_trained": state["epoch"], "macs": count_macs(best), "params": int(best.count_params()),
               "train_images_per_s": round(images_per_s, 2)},
    )


class _BatchClock(keras.callbacks.Callback):
    """Seconds between consecutive batch ends of a fit: step, input pipeline and callbacks together."""

    def __init__(self):
        super().__init__()
        self.ends: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())

    def seconds(self, skip: int) -> list[float]:
        return list(np.diff(self.ends))[skip:]


def measure_training_speed(cfg: TrainConfig, batches: int = 4, warmup: int = 2) -> float:
    """Training samples (crops, with `cfg.crops`) per second of `cfg`'s model on this machine: the
    median of a few timed batches of model.fit on the training input stream (cropping and
    augmentation running beside the steps, as in training) of random frames, after `warmup` untimed
    ones (graph tracing, first allocations); what `lunarseg demo` plans its epochs from. (Timing
    train_on_batch on one batch read 0.97-1.50x the rate training then ran at, by the day.)"""
    cfg.validate()
    keras.utils.set_random_seed(cfg.seed)
    model = build_unet(cfg, any_size=cfg.crops)
    _compile(model, cfg, steps_per_epoch=max(1, batches))
    rng = np.random.default_rng(cfg.seed)
    n = 2 * cfg.batch_size
    x = rng.integers(0, 256, (n, cfg.height, cfg.width, cfg.channels), dtype=np.uint8)
    y = rng.integers(0, len(class_names(cfg.task)), (n, cfg.height, cfg.width), dtype=np.uint8)
    clock = _BatchClock()
    model.fit(make_dataset(x, y, cfg, training=True, repeat=True), epochs=1, steps_per_epoch=warmup + 1 + batches,
              callbacks=[clock], verbose=0)
    return cfg.batch_size / float(np.median(clock.seconds(skip=warmup)))
