"""Fine-tune a trained U-Net into compressed variants: magnitude pruning (tfmot), channel slimming,
weight clustering, quantization-aware training and its pruning-preserving form. Post-training
quantization happens at export."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from lunarseg.runtime import atomic
from lunarseg.runtime.errors import ConfigError, DatasetError, unknown_key
from lunarseg.runtime.metadata import CONTROL_VARIANT, ModelMeta
from lunarseg.runtime.metrics import drop_interval_between, drop_with_interval
from lunarseg.train import checkpoint, forward, losses
from lunarseg.train import cluster as clustering
from lunarseg.train import distill as distillation
from lunarseg.train.config import TrainConfig
from lunarseg.train.data import SplitArrays, load_split
from lunarseg.train.evaluate import choose_threshold, score_arrays
from lunarseg.train.history import rate_at_epoch, read_history
from lunarseg.train.model import count_macs
from lunarseg.train.schedules import schedule
from lunarseg.train.slim import recalibrate_batchnorm, slim_check, slim_unet
from lunarseg.train.sparsity import kernel_sparsity
from lunarseg.train.tf_input import make_dataset, normalise

MIN_CLUSTERS, MAX_CLUSTERS = clustering.MIN_CLUSTERS, clustering.MAX_CLUSTERS
# The clustering fine-tune moves centroids that many weights share, so it runs at a tenth of the
# pruning learning rate (tfmot's guide fine-tunes clustered models at a small rate too).
CLUSTER_LR_SHARE = 0.1

CONTROL = CONTROL_VARIANT
CONVERGED_GAIN = 0.01
INTERVAL_TEXT = "95 % interval of the difference, a paired bootstrap over the validation frames"
SCHEDULES = ("polynomial", "constant")
LR_SCHEDULES = ("constant", "cosine")
STRUCTURES = ("unstructured", "2:4")


# A variant's name is its folder under RUN/compressed: no path separators, no hidden or parent folder.
VARIANT_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


@dataclass
class CompressConfig:
    """One variant: slim to `width`, prune to `sparsity` (0 = no pruning), then cluster to `clusters`
    values per kernel (0 = off) or QAT / PQAT (pruning-preserving QAT)."""

    sparsity: float = 0.5
    schedule: str = "polynomial"
    structure: str = "unstructured"  # or "2:4" (m-by-n structured sparsity, fixed at 50 %)
    width: float = 1.0  # < 1: structured channel pruning first (train/slim.py), keeping this share of channels
    epochs: int = 4
    qat: bool = False
    preserve_sparsity: bool = False
    qat_epochs: int = 2
    # > 0: weight clustering after pruning/slimming (train/cluster.py): at most this many distinct
    # values per kernel, the zeros kept. int8 comes from post-training quantization at export, which
    # maps each channel's values one to one and so keeps the clusters.
    clusters: int = 0
    cluster_epochs: int = 2
    # Constant 1e-3, measured on a 60-epoch 192×128 model (val IoU 0.628): 50 % over 4 epochs lost
    # 0.008, 75 % lost 0.045 (4 epochs) / 0.034 (8). A cosine decay to 5 % lost more (0.050 / 0.042);
    # 2e-4 recovered less. (Before the input conv and head were kept dense, 75 % collapsed to 0.09.)
    learning_rate: float = 1e-3
    # Of the slim / prune / finetune phase: "cosine" decays to 5 % over its epochs.
    lr_schedule: str = "constant"
    # True: fine-tune at the constant rate the trained model's weights were trained at (the lr of its best
    # epoch in its history, else the last; learning_rate when the run has none, e.g. an imported model):
    # training continued, not restarted.
    continue_rate: bool = False
    # > 0: knowledge distillation from the trained model (train/distill.py), this weight on its soft targets.
    # Off by default: at 1.0 over 4 epochs on the demo model it lost more val IoU than plain fine-tuning
    # (slim50 0.091 vs 0.073, pruned75 0.047 vs 0.033).
    distill: float = 0.0
    batch_size: int = 16
    name: str = ""
    max_frames: int = 0

    def validate(self) -> "CompressConfig":
        if not 0.0 <= self.sparsity <= 0.99:
            raise ConfigError(f"sparsity must be in [0, 0.99], got {self.sparsity}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"learning rate must be a finite number > 0, got {self.learning_rate}")
        if not math.isfinite(self.distill):
            raise ConfigError(f"distillation weight must be a finite number >= 0, got {self.distill}")
        for name, least in (("epochs", 0), ("batch_size", 1), ("qat_epochs", 0), ("cluster_epochs", 0),
                            ("max_frames", 0)):
            if getattr(self, name) < least:
                raise ConfigError(f"{name.replace('_', '-')} must be at least {least}, got {getattr(self, name)}")
        if self.name and not VARIANT_NAME.fullmatch(self.name):
            raise ConfigError(f"--name {self.name!r}: a variant name is a folder under RUN/compressed: letters, digits, "
                              "'.', '_' and '-', not starting with '.'")
        if self.lr_schedule not in LR_SCHEDULES:
            raise unknown_key("learning-rate schedule", self.lr_schedule, LR_SCHEDULES)
        if self.schedule not in SCHEDULES:
            raise unknown_key("schedule", self.schedule, SCHEDULES)
        if self.structure not in STRUCTURES:
            raise unknown_key("sparsity structure", self.structure, STRUCTURES)
        if self.structure == "2:4" and self.sparsity not in (0.0, 0.5):
            raise ConfigError("2:4 structured sparsity is 50 % by construction; use --sparsity 0.5")
        if self.preserve_sparsity and not self.qat:
            raise ConfigError("--preserve-sparsity is a QAT scheme; add --qat")
        if self.preserve_sparsity and self.sparsity == 0:
            raise ConfigError("--preserve-sparsity needs a pruned model; give --sparsity > 0")
        if not 0.0 < self.width <= 1.0:
            raise ConfigError(f"width must be in (0, 1] (the share of channels kept), got {self.width}")
        if self.epochs < 1 and (self.sparsity > 0 or self.width < 1):
            raise ConfigError("pruning needs at least one fine-tuning epoch (--epochs)")
        if self.clusters and not MIN_CLUSTERS <= self.clusters <= MAX_CLUSTERS:
            raise ConfigError(f"clusters must be 0 (off) or in [{MIN_CLUSTERS}, {MAX_CLUSTERS}], got {self.clusters}")
        if self.clusters and self.cluster_epochs < 1:
            raise ConfigError("clustering needs at least one fine-tuning epoch (--cluster-epochs)")
        if self.clusters and self.qat:
            raise ConfigError("QAT after clustering is not offered: tfmot's cluster-preserving QAT model cannot be "
                              "reloaded from a file (its weight count depends on the weight values); drop --qat, the "
                              "int8 export of a clustered variant keeps its clusters")
        if self.distill < 0:
            raise ConfigError(f"distillation weight must be >= 0, got {self.distill}")
        return self

    @property
    def variant(self) -> str:
        if self.name:
            return self.name
        parts = [f"slim{round(self.width * 100)}"] if self.width < 1 else []
        if self.sparsity:
            parts.append(f"pruned{round(self.sparsity * 100)}" + ("-2of4" if self.structure == "2:4" else ""))
        if self.clusters:
            parts.append(f"c{self.clusters}")
        if self.qat:
            parts.append("pqat" if self.preserve_sparsity else "qat")
        return "-".join(parts) or "finetuned"


# The default set made by `lunarseg compress --all`.
DEFAULT_VARIANTS = (
    CompressConfig(sparsity=0.5),
    # 75 % needs more recovery than 50 %: on the demo model, 4 epochs at a constant 1e-3 lost 0.033 val
    # IoU (0.029 test); at 3e-3 with a cosine decay, 8 epochs lost 0.021 (0.023 test), 12 gain 0.007
    # (0.010 test) — extra training as much as recovery: the dense model gains 0.073 in 16 such epochs.
    CompressConfig(sparsity=0.75, epochs=12, learning_rate=3e-3, lr_schedule="cosine"),
    CompressConfig(sparsity=0.0, qat=True),
    CompressConfig(sparsity=0.5, qat=True, preserve_sparsity=True),
    # A quarter of the MACs: the one that runs faster. Half the channels need a longer fine-tune than
    # pruning does (measured on the demo model, val IoU drop: 0.073 after 4 epochs at 1e-3; -0.008 after
    # 16, but with logits so close to 0 that int8 TFLite lost every rock; 3e-3 constant recovered 3×
    # faster but ended on a noisy epoch, 0.097), hence 3e-3 decayed by a cosine.
    CompressConfig(sparsity=0.0, width=0.5, epochs=16, learning_rate=3e-3, lr_schedule="cosine"),
    # 40 % of the channels (6 of 16 filters, 0.18 GMAC, 1/7 of the MACs): the one that reaches 10× over
    # Keras on an AVX2 CPU without VNNI (OpenVINO int8, 1 thread: 4.2 ms vs 59.5, 14.3×; slim50 5.2 ms).
    # The narrower network needs the higher rate: on the full-profile model 3e-3 lost 0.026 val IoU,
    # 1e-2 gained 0.005 (test drop −0.010); on a 16-epoch model 10 epochs lost 0.059 vs 0.003.
    CompressConfig(sparsity=0.0, width=0.4, epochs=16, learning_rate=1e-2, lr_schedule="cosine"),
    # ≤ 8 distinct weights per kernel on top of 50 % sparsity: the int8 file gzips to ~1/11 of the
    # Keras model (measured on the demo model: 733 KB vs 8.0 MB, val IoU +0.016; 16 clusters gave
    # 903 KB, 4 clusters lost 0.024 IoU).
    CompressConfig(sparsity=0.5, clusters=8),
    # The dense control: the trained model fine-tuned as long as the longest variant, nothing removed.
    # A variant's drop against it is what compression costs; its gain over the trained model says
    # whether that parent had converged (<= 0.01 val IoU: CONVERGED_GAIN). It continues at the rate the
    # parent's training ended at: restarted at 3e-3 (cosine) it knocked the converged budget-demo parent
    # off its minimum (6 epochs: -0.017 and -0.007 val IoU in two runs), so "drop vs control" flattered
    # every variant; at the parent's last rate (5e-4) it gained +0.005 (benchmarks/RESULTS.md, 2026-12-04).
    CompressConfig(sparsity=0.0, epochs=16, continue_rate=True, name=CONTROL),
)


def pruning_schedule(cfg: CompressConfig, total_steps: int):
    """A schedule that reaches the target within the run: tfmot's default frequency of 100 steps
    would prune nothing on a short fine-tune, so the frequency follows the real step count."""
    end_step = max(1, int(total_steps * 0.6))
    frequency = max(1, end_step // 10)
    end_step = frequency * max(1, end_step // frequency)  # last pruning step lands on end_step
    if cfg.schedule == "constant":
        return tfmot.sparsity.keras.ConstantSparsity(cfg.sparsity, begin_step=0, frequency=frequency)
    return tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=cfg.sparsity,
                                                begin_step=0, end_step=end_step, frequency=frequency)


def _prunable_layers(model) -> list[str]:
    """The layers tfmot's magnitude pruning wraps here: convolutions and dense layers."""
    return [layer.name for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]


def kept_dense(model) -> set[str]:
    """Layers left unpruned: the convolutions that read the input image and the output head.

    They hold a few hundred of the ~2 M weights, but pruning 75 % of a 16-weight 1×1 head (or of the
    144 weights that see the gray pixels) collapsed the model to predicting no rock at all within
    two epochs (measured: val IoU 0.59 → 0.00, loss rising); the usual practice of keeping the first
    and last layers dense avoids it at no cost in size.
    """
    inputs = {t.name for t in model.inputs}
    first = {layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)
             and any(getattr(n, "name", None) in inputs for n in _input_tensors(layer))}
    heads = {layer.name for layer in model.layers if any(layer.output is o for o in model.outputs)}
    return first | heads


def _input_tensors(layer) -> list:
    """A layer's inputs as a list (Keras gives one tensor or a list)."""
    inp = layer.input
    return list(inp) if isinstance(inp, (list, tuple)) else [inp]


def apply_pruning(model, cfg: CompressConfig, total_steps: int):
    """A copy of `model` with every prunable layer but the kept-dense ones wrapped for magnitude pruning
    (2:4 structured, or on `pruning_schedule` over `total_steps`)."""
    prunable = [n for n in _prunable_layers(model) if n not in kept_dense(model)] or _prunable_layers(model)
    if not prunable:
        raise ConfigError(f"model {model.name!r} has no prunable layer (Conv2D or Dense); nothing to prune")
    kwargs = {"sparsity_m_by_n": (2, 4)} if cfg.structure == "2:4" else {"pruning_schedule": pruning_schedule(cfg, total_steps)}

    def wrap(layer):
        return tfmot.sparsity.keras.prune_low_magnitude(layer, **kwargs) if layer.name in prunable else layer

    return keras.models.clone_model(model, clone_function=wrap)


POST_TRAINING_INT8 = "post-training int8 at export (`lunarseg export --formats tflite-int8,onnx-int8`) needs no QAT"
# Layers tfmot's pruning-preserving QAT scheme has no quantize config for (tfmot 0.8.1; plain QAT has).
PQAT_UNSUPPORTED = ("Conv2DTranspose",)


def _named_culprit(model, message: str):
    """The layer a tfmot error names ("Layer NAME:<class ...>"), else the first whose name or type appears."""
    import re

    found = re.search(r"Layer ([^\s:]+):<class", message)
    names = [found.group(1)] if found else []
    names += [layer.name for layer in model.layers if re.search(rf"\b{re.escape(layer.name)}\b", message)]
    names += [layer.name for layer in model.layers if re.search(rf"\b{type(layer).__name__}\b", message)
              and not isinstance(layer, keras.layers.InputLayer)]
    return next((model.get_layer(n) for n in names if n in {layer.name for layer in model.layers}), None)


def apply_qat(model, preserve_sparsity: bool):
    """Wrap for quantization-aware training; name the layer tfmot cannot quantize if it fails."""
    q = tfmot.quantization.keras
    if preserve_sparsity:
        blocker = next((layer for layer in model.layers if type(layer).__name__ in PQAT_UNSUPPORTED), None)
        if blocker is not None:
            raise ConfigError(f"pruning-preserving QAT cannot quantize layer {blocker.name!r} ({type(blocker).__name__}): "
                              f"tfmot's scheme has no {type(blocker).__name__} support; plain --qat (zeros not kept) "
                              f"handles it, or compress without --qat: {POST_TRAINING_INT8}")
    try:
        annotated = q.quantize_annotate_model(model)
        if preserve_sparsity:
            return q.quantize_apply(annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
        return q.quantize_apply(annotated)
    except (RuntimeError, ValueError) as exc:
        culprit = _named_culprit(model, str(exc))
        where = f"layer {culprit.name!r} ({type(culprit).__name__})" if culprit else f"model {model.name!r}"
        raise ConfigError(f"QAT cannot quantize {where}: {str(exc).splitlines()[0][:160]}; replace it with layers tfmot "
                          f"supports (e.g. UpSampling2D + Conv2D), give it a QuantizeConfig, or compress without --qat: "
                          f"{POST_TRAINING_INT8}") from None


def _copy(model):
    """A fresh model with the same graph and weights: tfmot's wrappers take over the layers they wrap."""
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    return twin


def refusal(model, meta, cfg: CompressConfig) -> str | None:
    """Why variant `cfg` cannot be made from `model` (None: it can), naming the layer in the way.

    Checked before any fine-tuning, so that `compress --all` skips what does not apply to a graph
    (an imported model's, say) instead of failing after the pruning phase.
    """
    own_graph = bool(meta.train_config)  # a lunarseg U-Net: pruning and clustering are known to apply
    try:
        if cfg.width < 1:
            slim_check(model, TrainConfig.from_dict(meta.train_config) if own_graph else None)
        if cfg.sparsity > 0 and not own_graph:
            apply_pruning(_copy(model), cfg, 10)
        if cfg.clusters and not own_graph:
            trial = _copy(model)
            clustering.apply_clustering(trial, cfg.clusters, cfg.sparsity > 0, kept_dense(trial))
        if cfg.qat:
            apply_qat(_copy(model), cfg.preserve_sparsity)
    except ConfigError as exc:
        return str(exc)
    return None


class PhaseKeeper(keras.callbacks.Callback):
    """After every fine-tuning epoch: all variables of the wrapped model and its optimizer (a TF
    checkpoint: kernels, pruning masks and step, quantizer ranges, Adam moments) and then
    checkpoints/state.json, so `--resume` continues from the next epoch.

    The wrappers are rebuilt on resume rather than deserialised: pruning-preserving QAT derives its
    sparsity mask from the weights it wraps, and a reloaded H5 would rebuild it from random ones.
    """

    def __init__(self, ckpt: Path, state: dict, phase: str, t0: float):
        super().__init__()
        self.ckpt, self.state, self.phase, self.t0 = ckpt, state, phase, t0
        self.manager = None

    def on_epoch_end(self, epoch, logs=None):
        if self.manager is None:  # keep two: state.json may still name the older one if we die in between
            track = tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer)
            self.manager = tf.train.CheckpointManager(track, str(self.ckpt / self.phase), max_to_keep=2)
        saved = self.manager.save(checkpoint_number=epoch + 1)
        self.state.update(phase=self.phase, epoch=epoch + 1, checkpoint=Path(saved).name,
                          seconds=round(time.perf_counter() - self.t0, 1))
        self.state["history"].append({"phase": self.phase, "epoch": epoch + 1,
                                      **{k: float(v) for k, v in (logs or {}).items()}})
        atomic.write_json(self.ckpt / "state.json", self.state)


def _compile(model, tcfg: TrainConfig, lr: float, distill: float = 0.0):
    """Adam at `lr` on the run's loss, scored by rock IoU; with distillation, the loss and score that
    read the labels and the teacher's probabilities out of one target."""
    loss, metric = losses.get_loss(tcfg.loss), losses.RockScore("iou")
    if distill:
        loss, metric = distillation.distill_loss(loss, distill), distillation.LabelRockScore("iou")
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss, metrics=[metric])
    # Adam's slots built now, not in the first train step: TensorFlow traces a step that creates
    # variables twice, so every fresh model's step was traced twice (the second 2-7 s on the demo model).
    model.optimizer.build(model.trainable_variables)
    return model


def _fit(model, tr: SplitArrays, va: SplitArrays, tcfg: TrainConfig, epochs: int, callbacks, verbose, initial_epoch=0,
         teacher=None, meta=None):
    """model.fit on the train/val frames normalised as `meta` says, the teacher's outputs added to the
    targets when distilling."""
    train_ds = make_dataset(tr.x, tr.y, tcfg, training=True, meta=meta)
    val_ds = make_dataset(va.x, va.y, tcfg, training=False, meta=meta)
    if teacher is not None:
        train_ds, val_ds = distillation.with_teacher(train_ds, teacher), distillation.with_teacher(val_ds, teacher)
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks,
              verbose=verbose)
    return model


def _val_scores(model, va: SplitArrays, meta, threshold: float | None = None):
    """(threshold, scores) on the validation frames: at `threshold`, or at the best one for this model."""
    probs = forward.predict(model, normalise(va.x, meta))
    if threshold is None:  # the parent's own rule, so variant and parent sit at comparable operating points
        threshold = choose_threshold(probs, va.y, meta.task, fine_tune_config(meta).threshold_rule)
    return threshold, score_arrays(probs, va.y, meta.task, threshold)


def _resume_state(ckpt: Path, cfg: CompressConfig, parent_hash: str, resume: bool) -> dict | None:
    """The saved state of an interrupted fine-tune of this variant, checked against the request."""
    path = ckpt / "state.json"
    if not path.exists():
        if resume:
            raise ConfigError(f"{ckpt.parent}: nothing to resume (no checkpoints/state.json); start without --resume")
        return None
    state = json.loads(path.read_text())
    if not resume:
        raise ConfigError(f"{ckpt.parent}: an interrupted fine-tune is there ({state['phase']} epoch {state['epoch']}); "
                          "pass --resume to continue it or --force to start over")
    old, new = state["config"], dataclasses.asdict(cfg)
    defaults = dataclasses.asdict(CompressConfig())  # a state saved before a field existed had its default
    diffs = [f"{k}: {old.get(k, defaults[k])!r} -> {new[k]!r}" for k in new
             if k != "max_frames" and old.get(k, defaults[k]) != new[k]]
    if diffs:
        raise ConfigError(f"--resume with a changed config: {'; '.join(diffs)}; use the original options or --force")
    if state["parent_hash"] != parent_hash:
        raise ConfigError(f"--resume: the trained model changed since this fine-tune started (sha256 "
                          f"{state['parent_hash'][:12]} -> {parent_hash[:12]}); use --force to start over")
    return state


def applicable(run_dir: str | Path, configs: list[CompressConfig]) -> tuple[list[CompressConfig], list[tuple[str, str]]]:
    """(the variants that apply to the run's model, [(variant, why not)] for the others)."""
    model_path, meta = checkpoint.resolve_model(run_dir)
    parent = checkpoint.load_model(model_path)
    keep, skipped = [], []
    for cfg in configs:
        reason = refusal(parent, meta, cfg)
        if reason:
            skipped.append((cfg.variant, reason))
        else:
            keep.append(cfg)
    return keep, skipped


def parent_training_rate(model_path: Path, best_epoch: int | None) -> float | None:
    """The learning rate the parent's weights were trained at: that of its best epoch (the one
    model.keras keeps) in the history.csv beside it, else of the last epoch; None when there is none
    (an imported model, a run trained elsewhere) or it is unreadable."""
    return rate_at_epoch(read_history(Path(model_path).parent), best_epoch)


def continued(cfg: CompressConfig, model_path: Path, best_epoch: int | None = None) -> CompressConfig:
    """A continue_rate variant with its rate resolved (constant, the parent's); others unchanged."""
    rate = parent_training_rate(model_path, best_epoch) if cfg.continue_rate else None
    return dataclasses.replace(cfg, learning_rate=rate, lr_schedule="constant") if rate else cfg


def fine_tune_config(meta) -> TrainConfig:
    """The recipe fine-tunes follow: the run's training config, or for an imported model (which has
    none) the defaults at the model's own size, colour and task."""
    if meta.train_config:
        return TrainConfig.from_dict(meta.train_config)
    return TrainConfig(width=meta.width, height=meta.height, colour_mode=meta.colour_mode, task=meta.task)


# ---- one variant: a table of phases and one runner ----------------------------------------------

@dataclass
class FineTune:
    """What the phases of one variant share: its inputs, the resume state that PhaseKeeper writes to
    checkpoints/state.json, and the model so far (each phase replaces it with its result)."""

    cfg: CompressConfig
    tcfg: TrainConfig  # the fine-tunes' training recipe (fine_tune_recipe)
    meta: ModelMeta
    parent: object  # the trained model: the first phase's start, and the distillation teacher
    train: SplitArrays
    val: SplitArrays
    ckpt: Path  # RUN/compressed/VARIANT/checkpoints
    saved: dict  # phase, epoch, checkpoint, seconds, history: what --resume continues from
    callbacks: list
    verbose: int
    t0: float  # perf_counter() at the start, less the seconds earlier runs of this variant spent
    model: object = None
    model_cfg: TrainConfig | None = None  # the model's architecture: slimming narrows it
    clustered_layers: list = field(default_factory=list)
    sparsity_before_qat: dict | None = None

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train.x) / self.cfg.batch_size)


def fine_tune_recipe(meta, cfg: CompressConfig) -> TrainConfig:
    """The run's recipe at the variant's batch size and rate, on whole frames: the trained model (and
    tfmot's wrappers of it) has a fixed input size, so no crops."""
    tcfg = fine_tune_config(meta)
    tcfg.batch_size, tcfg.learning_rate = cfg.batch_size, cfg.learning_rate
    tcfg.crop_width = tcfg.crop_height = 0
    return tcfg


def _first_phase_lr(s: FineTune):
    """The slim / prune / finetune phase's rate: constant, or ("cosine") decayed to 5 % over its epochs."""
    return schedule(s.cfg.lr_schedule, s.cfg.learning_rate, s.cfg.epochs * s.steps_per_epoch)


def _fit_phase(s: FineTune, phase: str, model, epochs: int, lr, extra=()):
    """Compile and fit one phase, checkpointing every epoch; resumed inside this phase, the model (its
    wrappers rebuilt) first takes back the saved variables and continues from the next epoch."""
    model, start = _compile(model, s.tcfg, lr, s.cfg.distill), 0
    if s.saved["phase"] == phase:
        track = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        track.restore(str(s.ckpt / phase / s.saved["checkpoint"])).expect_partial()
        start = s.saved["epoch"]
    else:
        s.saved.update(phase=phase, epoch=0)
    if start < epochs:
        _fit(model, s.train, s.val, s.tcfg, epochs, [*extra, PhaseKeeper(s.ckpt, s.saved, phase, s.t0), *s.callbacks],
             s.verbose, initial_epoch=start, teacher=s.parent if s.cfg.distill else None, meta=s.meta)
    return model


def _entering(s: FineTune, phase: str):
    """The model a wrapping phase starts from, kept in a stage file so that a resume inside the phase
    rebuilds the wrappers (cluster masks, quantizers) from the same weights."""
    staged = s.ckpt / f"stage-{phase}.keras"
    if s.saved["phase"] == phase:
        return checkpoint.load_model(staged)
    checkpoint.save_model(s.model, staged)
    return s.model


def _slim(s: FineTune) -> None:
    """Keep cfg.width of every layer's channels, re-estimate the batch norms on the training frames
    (the trained statistics no longer describe the narrower layers), fine-tune."""
    slimmed, s.model_cfg = slim_unet(s.parent, s.model_cfg, s.cfg.width)
    if s.saved["phase"] != "slim":  # a resumed phase restores its own statistics
        recalibrate_batchnorm(slimmed, normalise(s.train.x, s.meta), s.cfg.batch_size)
    s.model = _fit_phase(s, "slim", slimmed, s.cfg.epochs, _first_phase_lr(s))


def _slimmed_structure(s: FineTune) -> None:
    """A finished slim phase: the narrower model again, the architecture its later phases were saved with."""
    s.model, s.model_cfg = slim_unet(s.parent, s.model_cfg, s.cfg.width)


def _prune(s: FineTune) -> None:
    """Magnitude pruning to cfg.sparsity while fine-tuning (the first and last layers kept dense), then
    the wrappers stripped: a plain model whose zeros are in its kernels."""
    pruned = _fit_phase(s, "prune", apply_pruning(s.model, s.cfg, s.steps_per_epoch * s.cfg.epochs), s.cfg.epochs,
                        _first_phase_lr(s), extra=[tfmot.sparsity.keras.UpdatePruningStep()])
    s.model = tfmot.sparsity.keras.strip_pruning(pruned)


def _finetune(s: FineTune) -> None:
    """The dense control and plain fine-tunes: the trained model trained on, nothing removed. Distilled,
    a copy is trained, so that the teacher stays the trained model instead of the student itself."""
    start = _copy(s.parent) if s.cfg.distill else s.parent
    s.model = _fit_phase(s, "finetune", start, s.cfg.epochs, _first_phase_lr(s))


def _cluster(s: FineTune) -> None:
    """At most cfg.clusters distinct weights per kernel (zeros kept after pruning), fine-tuned at a tenth
    of the rate (CLUSTER_LR_SHARE), then the wrappers stripped."""
    unclustered = _entering(s, "cluster")
    keep = kept_dense(unclustered)
    s.clustered_layers = clustering.clusterable_layers(unclustered, s.cfg.clusters, keep)
    wrapped = _fit_phase(s, "cluster", clustering.apply_clustering(unclustered, s.cfg.clusters, s.cfg.sparsity > 0, keep),
                         s.cfg.cluster_epochs, s.cfg.learning_rate * CLUSTER_LR_SHARE)
    s.model = clustering.strip_clustering(wrapped)


def _qat(s: FineTune) -> None:
    """Quantization-aware training (pruning-preserving with cfg.preserve_sparsity) at half the rate; the
    sparsity it starts from is recorded to show the zeros it kept."""
    stage = _entering(s, "qat")
    s.sparsity_before_qat = kernel_sparsity(stage)
    s.model = _fit_phase(s, "qat", apply_qat(stage, s.cfg.preserve_sparsity), s.cfg.qat_epochs, s.cfg.learning_rate / 2)


def _nothing(s: FineTune) -> None:
    """A finished phase whose result the next phase's stage file or checkpoint holds."""


@dataclass(frozen=True)
class PhaseSpec:
    """One fine-tuning phase: which variants run it, how, and what it leaves when resumed past."""

    name: str  # also its key in checkpoints/state.json and its checkpoint folder
    wanted: Callable[[CompressConfig], bool]  # whether a variant runs this phase
    run: Callable[[FineTune], None]  # fit it (from its own checkpoint when resumed inside it)
    done: Callable[[FineTune], None] = _nothing  # resumed after it: rebuild what later phases need


# The table. Order = the order the phases run in. Add a phase by adding a row.
PHASES: dict[str, PhaseSpec] = {spec.name: spec for spec in (
    PhaseSpec("slim", lambda c: c.width < 1, _slim, _slimmed_structure),
    PhaseSpec("prune", lambda c: c.sparsity > 0, _prune),
    PhaseSpec("finetune", lambda c: c.width == 1 and c.sparsity == 0 and not c.qat and not c.clusters, _finetune),
    PhaseSpec("cluster", lambda c: c.clusters > 0, _cluster),
    PhaseSpec("qat", lambda c: c.qat, _qat),
)}


def phases_of(cfg: CompressConfig) -> list[str]:
    """The phases variant `cfg` runs, in table order."""
    return [name for name, spec in PHASES.items() if spec.wanted(cfg)]


def run_phases(s: FineTune, start: int = 0) -> None:
    """The variant's phases in order from `start` (those before it were taken over from a finished
    variant). On resume, those before the saved phase are done (their result is in its checkpoint or
    stage file): only what later phases build on is rebuilt."""
    order = phases_of(s.cfg)
    resumed = order.index(s.saved["phase"]) if s.saved["phase"] in order else start
    for i, name in enumerate(order[start:], start):
        spec = PHASES[name]
        (spec.run if i >= resumed else spec.done)(s)


# ---- starting where a finished variant ended ----------------------------------------------------

# The settings of the phases that can follow another variant's (cluster, qat); every other setting
# shapes the phases before them.
LATER_PHASE_FIELDS = ("clusters", "cluster_epochs", "qat", "preserve_sparsity", "qat_epochs")
# Raise when a phase's code changes what it makes: finished variants of an older version are not taken over.
PHASES_VERSION = 1


def continues_from(cfg: CompressConfig, other: CompressConfig) -> bool:
    """Whether variant `cfg` begins with exactly the phases variant `other` runs, with the same settings
    (pruned50-c8 and pruned50-pqat after pruned50), so that it can start from other's finished model."""
    mine, theirs = phases_of(cfg), phases_of(other)
    if not theirs or len(theirs) >= len(mine) or mine[:len(theirs)] != theirs:
        return False
    return dataclasses.replace(cfg, name=other.name, **{f: getattr(other, f) for f in LATER_PHASE_FIELDS}) == other


def data_fingerprint(train: SplitArrays, val: SplitArrays) -> str:
    """sha256 of the fine-tuning frames and labels: which data a finished variant was tuned on."""
    digest = hashlib.sha256()
    for arr in (train.x, train.y, val.x, val.y):
        digest.update(str((arr.dtype.str, arr.shape)).encode())
        digest.update(np.ascontiguousarray(arr).data)
    return digest.hexdigest()


def finished_start(run_dir: Path, cfg: CompressConfig, parent_hash: str, data_hash: str) -> tuple[Path, CompressConfig, dict] | None:
    """The finished variant of the same parent and data whose phases `cfg` begins with (the longest such
    run), as (its folder, its config, its compress summary); None when there is none."""
    best = None
    for folder in checkpoint.variant_dirs(run_dir):
        try:
            summary = json.loads((folder / "meta.json").read_text()).get("extra", {}).get("compress") or {}
        except (OSError, ValueError, AttributeError):  # unreadable: not a source to trust
            continue
        same = (summary.get("parent_hash"), summary.get("data_sha256"), summary.get("phases_version"))
        if folder.name == cfg.variant or same != (parent_hash, data_hash, PHASES_VERSION):
            continue
        try:
            other = CompressConfig(**summary["config"])
        except (KeyError, TypeError):  # written by another version of this module
            continue
        if continues_from(cfg, other) and (best is None or len(phases_of(other)) > len(phases_of(best[1]))):
            best = (folder, other, summary)
    return best


def _start_from_finished(s: FineTune, run_dir: Path, parent_hash: str, data_hash: str) -> int:
    """Take over a finished variant's model when this one begins with its phases (identical work, not
    run twice); the number of phases taken over (0: none). Its epochs join this variant's history."""
    found = finished_start(run_dir, s.cfg, parent_hash, data_hash)
    if found is None:
        return 0
    folder, other, summary = found
    taken = phases_of(other)
    for name in taken:
        PHASES[name].done(s)  # the architecture those phases leave (slimming narrows it)
    s.model = checkpoint.load_model(checkpoint.model_file(folder))
    s.saved.update(continued_from=folder.name, history=[dict(e) for e in summary.get("epochs_run", [])])
    if s.verbose:
        print(f"{s.cfg.variant}: starts from the finished {folder.name} ({' + '.join(taken)} phase(s) with the same settings)")
    return len(taken)


def fine_tune_arrays(meta, cfg: CompressConfig, data_dir, train_arrays: SplitArrays | None,
                     val_arrays: SplitArrays | None) -> tuple[SplitArrays, SplitArrays]:
    """The given train/val frames, else those of `data_dir` (default: the dataset recorded at training)."""
    if train_arrays is not None and val_arrays is not None:
        return train_arrays, val_arrays
    data_dir = data_dir or meta.extra.get("data_dir")
    if not data_dir or not Path(data_dir).exists():
        raise DatasetError(f"fine-tuning data not found ({data_dir or 'no --data given and none recorded in meta.json'}); pass --data DIR")
    kw = dict(width=meta.width, height=meta.height, task=meta.task, colour_mode=meta.colour_mode, max_frames=cfg.max_frames)
    return train_arrays or load_split(data_dir, "train", **kw), val_arrays or load_split(data_dir, "val", **kw)


def _saved_state(ckpt: Path, cfg: CompressConfig, parent_hash: str, data_hash: str, *, resume: bool, force: bool,
                 reuse: bool) -> dict:
    """The interrupted fine-tune's state to continue (checked against the request: config, parent, data,
    reuse), else a fresh one; `force` drops an interrupted fine-tune's checkpoints first."""
    if force and ckpt.exists():
        shutil.rmtree(ckpt)
    state = _resume_state(ckpt, cfg, parent_hash, resume)
    if state is None:
        return {"config": dataclasses.asdict(cfg), "parent_hash": parent_hash, "data_sha256": data_hash, "phase": "",
                "epoch": 0, "seconds": 0.0, "history": []}
    if state.setdefault("data_sha256", data_hash) != data_hash:
        raise ConfigError("--resume with other fine-tuning frames than the interrupted fine-tune's (sha256 "
                          f"{state['data_sha256'][:12]} -> {data_hash[:12]}); use the original --data or --force")
    if not reuse and state.get("continued_from"):
        raise ConfigError(f"--resume --no-reuse: this fine-tune started from the finished {state['continued_from']}; "
                          "resume it without --no-reuse, or --force to run every phase")
    return state


def compress(run_dir: str | Path, cfg: CompressConfig, *, data_dir: str | Path | None = None, verbose: int = 2,
             train_arrays: SplitArrays | None = None, val_arrays: SplitArrays | None = None,
             resume: bool = False, force: bool = False, callbacks: list | None = None, reuse: bool = True) -> dict:
    """Make one variant under RUN/compressed/VARIANT/; returns its summary (also in meta.json).

    Fine-tuning runs in phases (PHASES: slim, prune or finetune, cluster, qat); each epoch is
    checkpointed, and `resume=True` continues an interrupted variant from its next epoch. `force`
    starts over. `reuse`: a variant that begins with a finished variant's phases (same parent, data and
    settings) starts from its model instead of running them again.
    """
    cfg.validate()
    model_path, meta = checkpoint.resolve_model(run_dir)
    cfg = continued(cfg, model_path, meta.extra.get("best_epoch"))
    tcfg = fine_tune_recipe(meta, cfg)
    train_arrays, val_arrays = fine_tune_arrays(meta, cfg, data_dir, train_arrays, val_arrays)
    out = Path(model_path).parent / "compressed" / cfg.variant
    parent_hash, data_hash = checkpoint.file_sha256(model_path), data_fingerprint(train_arrays, val_arrays)
    saved = _saved_state(out / "checkpoints", cfg, parent_hash, data_hash, resume=resume, force=force, reuse=reuse)
    parent = checkpoint.load_model(model_path)
    reason = refusal(parent, meta, cfg)
    if reason:
        raise ConfigError(f"{cfg.variant}: {reason}")
    _, before = _val_scores(parent, val_arrays, meta, meta.threshold)
    s = FineTune(cfg=cfg, tcfg=tcfg, meta=meta, parent=parent, train=train_arrays, val=val_arrays,
                 ckpt=out / "checkpoints", saved=saved, callbacks=list(callbacks or []), verbose=verbose,
                 t0=time.perf_counter() - saved["seconds"], model=parent, model_cfg=fine_tune_config(meta))
    s.ckpt.mkdir(parents=True, exist_ok=True)
    fresh = saved["phase"] == "" and not saved["history"]
    run_phases(s, _start_from_finished(s, out.parent.parent, parent_hash, data_hash) if reuse and fresh else 0)
    return _save_variant(s, out, before, parent_hash, data_hash)


# ---- the finished variant ---------------------------------------------------------------------------

def _save_variant(s: FineTune, out: Path, before: dict, parent_hash: str, data_hash: str) -> dict:
    """Score the variant on the validation frames at its own threshold, write its model and meta.json
    (with the summary), and drop its checkpoints: nothing is left to resume."""
    seconds = time.perf_counter() - s.t0
    sparsity = kernel_sparsity(s.model)
    threshold, after = _val_scores(s.model, s.val, s.meta)
    variant_file = out / ("model.h5" if s.cfg.qat else "model.keras")
    for stale in (*checkpoint.MODEL_FILES, "meta.json"):  # a crash before the new meta leaves no variant
        (out / stale).unlink(missing_ok=True)
    checkpoint.save_model(s.model, variant_file)
    summary = {**_summary(s, sparsity, before, after, parent_hash, seconds), "data_sha256": data_hash,
               "phases_version": PHASES_VERSION}
    checkpoint.save_meta(variant_file, _variant_meta(s, summary, sparsity, threshold, after))
    shutil.rmtree(s.ckpt, ignore_errors=True)
    return summary


def _summary(s: FineTune, sparsity: dict, before: dict, after: dict, parent_hash: str, seconds: float) -> dict:
    """What compress returns and meta.json keeps under extra.compress: sparsity, IoU before/after, MACs."""
    cfg, model = s.cfg, s.model
    before_qat = s.sparsity_before_qat if s.sparsity_before_qat is not None else sparsity
    return {
        "variant": cfg.variant, "config": dataclasses.asdict(cfg), "sparsity": sparsity["overall"],
        "sparsity_layers": sparsity["layers"], "sparsity_before_qat": before_qat["overall"],
        "val_iou_before": before["iou"], "val_iou_after": after["iou"], "iou_drop": before["iou"] - after["iou"],
        "iou_drop_ci": drop_interval_between(before, after),
        # per validation frame [intersection, union] of the parent and of the variant: the report's intervals
        "val_frame_rock_counts_before": before.get("frame_rock_counts"), "val_frame_rock_counts": after.get("frame_rock_counts"),
        "val_dice_after": after["dice"], "parent_hash": parent_hash, "seconds": round(seconds, 1),
        "epochs_run": [{"phase": r["phase"], "epoch": r["epoch"]} for r in s.saved["history"]],
        "continued_from": s.saved.get("continued_from"),  # the finished variant whose phases it took over
        "clusters": cfg.clusters, "clustered_layers": s.clustered_layers,
        "max_distinct_per_channel": clustering.max_distinct_per_channel(model, s.clustered_layers) if cfg.clusters else None,
        "width": cfg.width, "filters": s.model_cfg.filters if s.meta.train_config else None,
        "macs_before": count_macs(s.parent), "macs": count_macs(model),
    }


def _variant_meta(s: FineTune, summary: dict, sparsity: dict, threshold: float, after: dict):
    """The parent's metadata with the variant's sparsity, threshold, architecture and validation scores."""
    meta = s.meta
    return meta.replace(sparsity=sparsity["overall"], threshold=threshold, parent_hash=summary["parent_hash"],
                        train_config=s.model_cfg.to_dict() if meta.train_config else {},
                        val_metrics={k: v for k, v in after.items() if isinstance(v, (int, float, dict))},
                        extra={**meta.extra, "variant": s.cfg.variant, "qat": s.cfg.qat, "compress": summary,
                               "macs": summary["macs"], "params": int(s.model.count_params())})


def load_variant(path: str | Path):
    """Load a compressed variant directory or file (QAT variants are model.h5)."""
    return checkpoint.load_model(path)


def report_rows(run_dir: str | Path) -> list[dict]:
    """One row per variant: sparsity, dense bytes, gzip bytes, val IoU, IoU drop vs the parent and vs the
    dense control, each drop with its interval over the validation frames when the variant kept their counts."""
    import gzip

    model_path, meta = checkpoint.resolve_model(run_dir)
    variants = [(d, vmeta) for d in checkpoint.variant_dirs(run_dir)
                if (vmeta := _readable_variant_meta(d)) is not None]
    summaries = [vmeta["extra"].get("compress", {}) for _, vmeta in variants]
    base_iou = meta.val_metrics.get("iou")
    if base_iou is None:  # an imported model: the fine-tunes measured it on their validation split
        base_iou = next((c["val_iou_before"] for c in summaries if c.get("val_iou_before") is not None), None)
    rows = [{"variant": "(trained)", "sparsity": kernel_sparsity(load_variant(model_path))["overall"],
             "bytes": model_path.stat().st_size, "gzip_bytes": len(gzip.compress(model_path.read_bytes(), 9)),
             "val_iou": base_iou, "iou_drop": 0.0 if base_iou is not None else None, "qat": False,
             "macs": meta.extra.get("macs"),
             "frame_rock_counts": next((c.get("val_frame_rock_counts_before") for c in summaries), None)}]
    for (d, vmeta), comp in zip(variants, summaries):
        data = checkpoint.model_file(d).read_bytes()
        rows.append({"variant": d.name, "sparsity": vmeta["sparsity"], "bytes": len(data),
                     "gzip_bytes": len(gzip.compress(data, 9)), "val_iou": comp.get("val_iou_after"),
                     "iou_drop": comp.get("iou_drop"), "iou_drop_ci": comp.get("iou_drop_ci"),
                     "frame_rock_counts": comp.get("val_frame_rock_counts"), "qat": bool(vmeta["extra"].get("qat")),
                     "macs": comp.get("macs", vmeta["extra"].get("macs")), "continued_from": comp.get("continued_from")})
    control = next((r for r in rows if r["variant"] == CONTROL and r["val_iou"] is not None), None)
    for r in rows:
        r["drop_vs_control"] = None if control is None or r["val_iou"] is None else control["val_iou"] - r["val_iou"]
        r["drop_vs_control_ci"] = None if control is None or r is control else drop_interval_between(control, r)
    return rows


def _readable_variant_meta(folder: Path) -> dict | None:
    """A variant folder's meta.json, or None (the report then names it as skipped) when it is unreadable."""
    try:
        vmeta = json.loads((folder / "meta.json").read_text())
        return vmeta if isinstance(vmeta, dict) and isinstance(vmeta.get("extra"), dict) else None
    except (OSError, ValueError):
        return None


def skipped_variants(run_dir: str | Path) -> list[str]:
    """RUN/compressed folders the report leaves out, each with why (an interrupted or damaged variant)."""
    root = Path(run_dir) / "compressed"
    listed = {d.name for d in checkpoint.variant_dirs(run_dir) if _readable_variant_meta(d) is not None}
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in listed) if root.is_dir() else []:
        why = ("no model file" if not checkpoint.model_file(d).exists() else
               "no meta.json" if not (d / "meta.json").exists() else "meta.json is not readable")
        out.append(f"{d.name}: not listed ({why}; an interrupted fine-tune resumes with --resume)")
    return out


def convergence_note(rows: list[dict]) -> str:
    """Whether the trained model counts as converged: the dense control gains <= CONVERGED_GAIN."""
    control = next((r for r in rows if r["variant"] == CONTROL), None)
    if control is None:
        return f"no dense control ({CONTROL}): drops are against the trained model only"
    if control.get("iou_drop") is None:
        return f"the dense control ({CONTROL}) has no measured drop: convergence unknown"
    gain = -control["iou_drop"]
    interval = control.get("iou_drop_ci")
    gain_text = drop_with_interval(gain, interval and [-interval[1], -interval[0]], "+.4f")
    verdict = "converged" if gain <= CONVERGED_GAIN else "NOT converged: drops against it overstate compression"
    return (f"dense control {CONTROL} gains {gain_text} val IoU over the trained model: parent {verdict} "
            f"(limit {CONVERGED_GAIN})" + (f"; [lo, hi]: {INTERVAL_TEXT}" if interval else ""))


def format_report(rows: list[dict]) -> str:
    """The report_rows as a markdown table, then the convergence note."""
    head = ("| variant | sparsity | GMAC | bytes | gzip bytes | gzip / trained's | val IoU | IoU drop | drop vs control | QAT |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|:-:|")
    lines = [head]
    trained_gzip = rows[0]["gzip_bytes"]
    for r in rows:
        gmac = f"{r['macs'] / 1e9:.3f}" if r.get("macs") else "—"
        vs = "—" if r.get("drop_vs_control") is None else drop_with_interval(r["drop_vs_control"], r.get("drop_vs_control_ci"), "+.4f")
        val = "unknown" if r["val_iou"] is None else f"{r['val_iou']:.4f}"
        drop = "—" if r["iou_drop"] is None else drop_with_interval(r["iou_drop"], r.get("iou_drop_ci"), "+.4f")
        lines.append(f"| {r['variant']} | {r['sparsity']:.3f} | {gmac} | {r['bytes']:,} | {r['gzip_bytes']:,} | "
                     f"{r['gzip_bytes'] / trained_gzip:.2f} | {val} | {drop} | {vs} | "
                     f"{'yes' if r['qat'] else ''} |")
    taken = [f"{r['variant']} started from the finished {r['continued_from']} (the same first phases, not run twice)"
             for r in rows if r.get("continued_from")]
    return "\n".join(lines + ["", convergence_note(rows)] + taken)
