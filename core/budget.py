"""Fit `lunarseg demo` into a wall-clock budget: epochs are chosen from this machine's measured
training speed, so a slow CPU trains less instead of overrunning (pure arithmetic; no TensorFlow)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from lunarseg.runtime.errors import ConfigError

# Share of the time left for fine-tuning that goes to training the base model (the rest compresses it).
TRAIN_SHARE = 0.65
MIN_TRAIN_EPOCHS = 2


@dataclass(frozen=True)
class StageCosts:
    """Seconds the stages took in a budget demo on the reference machine (2-core Intel Xeon with
    AVX-512 + AMX, 2026-12-01), where the probe measured `reference_images_per_s` whole model-size
    frames (8 filters, 384×256); a slower machine scales them up. Measured there: export 101 s for 9
    artifacts, bench 50 s for 9 artifacts + the baseline, evaluate 4 s; training epochs of 4.85 s
    where the probe predicted 3.6 (validation, callbacks and the input pipeline: `epoch_fixed_s`).
    Those probe readings came from train_on_batch; the probe now times fit on the training stream
    (core/demo.py PROBE_BATCHES), and these costs have not been refitted to it."""

    reference_images_per_s: float = 12.9
    evaluate_s: float = 4.0
    export_per_artifact_s: float = 11.2
    bench_per_artifact_s: float = 5.0
    finish_s: float = 10.0  # select + segment the sample frames + the summary
    # A validation frame costs about a third of a training frame (forward pass only).
    val_frame_share: float = 1 / 3
    epoch_fixed_s: float = 1.25
    # A training epoch's fixed cost is lower: it streams one repeated dataset. Fitted (with the
    # overhead below) to two fresh-clone demos, train stage / planned epochs: 437 s / 100 at a probe of
    # 13.0 images/s and 393 s / 59 at 8.89, where 1.25 had overestimated both by 16 %. With the fit
    # probe (demo 9, 9.66 images/s) the plan still errs long: 452 s for a planned 483.
    train_epoch_fixed_s: float = 0.46
    # Fixed cost of a fine-tuning phase (tracing, the first epoch's extra, saving), in epochs; measured
    # 1.2 (slim40: 196 s for 16 epochs of 10.6 s; training epochs 21 s), and of a training run 2.5
    # (loading the frames, tracing, threshold choice, curves).
    overhead_epochs: float = 1.2
    train_overhead_epochs: float = 2.5

    def slowdown(self, images_per_s: float) -> float:
        """How much slower than the reference machine this one trains."""
        return self.reference_images_per_s / images_per_s

    def fixed_s(self, artifacts: int, images_per_s: float) -> float:
        """Everything after compression, scaled by how much slower this machine trains."""
        return self.slowdown(images_per_s) * (self.evaluate_s + artifacts * (self.export_per_artifact_s + self.bench_per_artifact_s)
                                              + self.bench_per_artifact_s + self.finish_s)  # + the Keras baseline row

    def epoch_s(self, train_frames: int, val_frames: int, images_per_s: float, train_share: float = 1.0,
                training: bool = False) -> float:
        """One epoch, validation included, at `images_per_s` whole model-size frames; `train_share` is a
        training sample's share of a frame's pixels (< 1 when training on crops; fine-tunes use 1);
        `training`: a base-training epoch (its lower fixed cost), else a fine-tune epoch."""
        fixed = self.train_epoch_fixed_s if training else self.epoch_fixed_s
        return ((train_share * train_frames + self.val_frame_share * val_frames) / images_per_s
                + fixed * self.slowdown(images_per_s))

    def rate_from_training_epoch(self, epoch_s: float, train_frames: int, val_frames: int, train_share: float) -> float:
        """The whole model-size frames per second at which a base-training epoch takes `epoch_s` (the inverse
        of epoch_s(training=True)): what a measured epoch says about this machine."""
        work = train_share * train_frames + self.val_frame_share * val_frames
        return (work + self.train_epoch_fixed_s * self.reference_images_per_s) / epoch_s


@dataclass(frozen=True)
class VariantWork:
    """One compressed variant's fine-tuning: its default epochs per phase, the fewest worth running
    (`min_epochs`: fewer lose more IoU than the gate allows) and their per-epoch cost relative to a
    training epoch of the base model (measured: pruning and clustering 1.0, slimming to half width
    0.5 — a quarter of the MACs, but the same data pipeline and saves)."""

    name: str
    epochs: int
    cost: float = 1.0
    cluster_epochs: int = 0
    min_epochs: int = 1
    # The variant whose finished model this one starts from (compress.continues_from: pruned50-c8 after
    # pruned50): its own fine-tune epochs then cost nothing, only its clustering epochs do.
    continues: str = ""

    def __post_init__(self):
        if not 1 <= self.min_epochs <= self.epochs:
            raise ConfigError(f"{self.name}: minimum fine-tune epochs must be in [1, {self.epochs}] "
                              f"(its default), got {self.min_epochs}")


@dataclass
class DemoPlan:
    """What the budget allows: base epochs, each variant's (epochs, cluster epochs), and the estimate."""

    images_per_s: float
    train_epochs: int
    variant_epochs: dict[str, tuple[int, int]] = field(default_factory=dict)
    estimate_s: dict[str, float] = field(default_factory=dict)
    over_budget: bool = False
    continued: dict[str, str] = field(default_factory=dict)  # variant -> the finished variant it starts from

    def describe(self) -> str:
        parts = ", ".join(f"{k} " + (f"{self.continued[k]}'s {e}" if k in self.continued else f"{e}")
                          + (f"+{c} cluster" if c else "") for k, (e, c) in self.variant_epochs.items())
        est = " + ".join(f"{k} {v:.0f}" for k, v in self.estimate_s.items())
        train = f"train {self.train_epochs} epochs" if self.train_epochs else "base model trained"
        return (f"measured {self.images_per_s:.2f} training images/s → {train}; "
                f"compress epochs: {parts}; estimate (s): {est} = {sum(self.estimate_s.values()):.0f}"
                + ("  [the minimum pipeline does not fit the budget on this machine]" if self.over_budget else ""))


def plan_demo(*, budget_s: float, elapsed_s: float, images_per_s: float, train_frames: int, val_frames: int,
              variants: list[VariantWork], artifacts: int, max_train_epochs: int,
              costs: StageCosts = StageCosts(), train_share: float = 1.0) -> DemoPlan:
    """Split the time left between training and fine-tuning the variants.

    Training gets `TRAIN_SHARE` of the fine-tuning time, or all that the variants at their default
    epochs leave if that is more (at least `MIN_TRAIN_EPOCHS`, at most `max_train_epochs`; 0 when the
    base model is already trained and `elapsed_s` includes it), but never the variants' minimum; what
    its whole epochs leave goes to the variants, each scaled by
    the same factor of its default epochs beyond its minimum (one clustering epoch at least, never
    more than its defaults). `images_per_s` counts whole model-size frames; training on crops
    (`train_share` of a frame) makes its epochs cheaper than the whole-frame fine-tunes'.
    """
    if budget_s <= 0:
        raise ConfigError(f"the demo budget must be positive, got {budget_s / 60:g} min")
    if images_per_s <= 0 or not math.isfinite(images_per_s):
        raise ConfigError(f"measured training speed must be positive, got {images_per_s}")
    fixed = costs.fixed_s(artifacts, images_per_s)
    tunable = budget_s - elapsed_s - fixed
    epoch = costs.epoch_s(train_frames, val_frames, images_per_s)  # a fine-tune epoch
    train_epoch = costs.epoch_s(train_frames, val_frames, images_per_s, train_share, training=True)

    over = costs.overhead_epochs * epoch
    taken_over = _continuing(variants)

    def variant_s(v: VariantWork, e: int, c: int) -> float:
        if v.name in taken_over:  # its first phase is the finished variant's: only the clustering runs
            return c * epoch + over
        return (e * v.cost + c) * epoch + over * (2 if c else 1)

    least = sum(variant_s(v, v.min_epochs, 1 if v.cluster_epochs else 0) for v in variants)
    most = sum(variant_s(v, v.epochs, v.cluster_epochs) for v in variants)  # every variant at its defaults
    train_over = costs.train_overhead_epochs * epoch
    train_time = min(max(TRAIN_SHARE * tunable, tunable - most), tunable - least) - train_over
    train_epochs = 0 if max_train_epochs == 0 else max(
        MIN_TRAIN_EPOCHS, min(max_train_epochs, int(train_time // train_epoch) if train_time > 0 else 0))
    train_s = train_epochs * train_epoch + train_over if train_epochs else 0.0
    left = tunable - train_s

    # Everyone gets its minimum; the time beyond that is shared in proportion to the epochs each
    # variant would run by default beyond it.
    more = sum((v.epochs - v.min_epochs) * v.cost * epoch * (v.name not in taken_over)
               + max(0, v.cluster_epochs - 1) * epoch for v in variants)
    scale = min(1.0, max(0.0, left - least) / more) if more else 0.0
    chosen = {v.name: (v.min_epochs + math.floor((v.epochs - v.min_epochs) * scale),
                       1 + math.floor((v.cluster_epochs - 1) * scale) if v.cluster_epochs else 0) for v in variants}
    compress_s = sum(variant_s(v, *chosen[v.name]) for v in variants)
    estimate = {"so far": elapsed_s, "train": train_s, "compress": compress_s, "evaluate+export+bench": fixed}
    return DemoPlan(images_per_s=images_per_s, train_epochs=train_epochs, variant_epochs=chosen,
                    estimate_s={k: round(v, 1) for k, v in estimate.items()},
                    over_budget=sum(estimate.values()) > budget_s,
                    continued={v.name: v.continues for v in variants if v.name in taken_over})


def _continuing(variants: list[VariantWork]) -> set[str]:
    """The variants whose first phase is free: the variant they continue is planned too, with the same
    epochs, minimum and cost, so the plan gives both the same epochs and the work is done once."""
    shape = {v.name: (v.epochs, v.min_epochs, v.cost) for v in variants}
    return {v.name for v in variants if v.continues in shape and shape[v.continues] == (v.epochs, v.min_epochs, v.cost)}
