"""TrainConfig: every knob that shapes the model and its training, saved with the model."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from lunarseg.runtime.errors import ConfigError, unknown_key
from lunarseg.runtime.masks import CLASS_NAMES

LOSSES = ("bce", "bce-dice", "focal-dice", "bce-tversky", "bce-tversky-small", "bce-tversky-recall")
# Keys of train/model.py's BUILDERS (kept here so a config validates without TensorFlow).
ARCHITECTURES = ("unet", "ds-unet")
STRATEGIES = ("default", "mirrored", "multi-worker")
# Keys of train/evaluate.py's THRESHOLD_RULES (how the threshold is chosen on validation frames).
THRESHOLD_RULES = ("iou", "rocks-f2")
# Learning-rate schedules of a training run (train/schedules.py LR_SCHEDULES).
LR_SCHEDULES = ("cosine", "constant", "one-cycle")
# Fields that may change when a run is resumed; anything else must match the checkpoint.
RESUMABLE_CHANGES = ("epochs", "patience", "strategy", "threshold_rule")  # the rule acts after training


@dataclass
class TrainConfig:
    """Model shape + training recipe. `size` is (width, height) like image sizes elsewhere."""

    width: int = 128
    height: int = 128
    depth: int = 4
    filters: int = 16
    colour_mode: str = "gray"
    task: str = "binary"
    batchnorm: bool = True
    dropout: float = 0.0
    loss: str = "bce-dice"
    epochs: int = 20
    batch_size: int = 16
    learning_rate: float = 2e-3
    # "cosine": decays to 5 % over the run; "one-cycle": a linear warm-up from a tenth of the rate over
    # the first tenth of the steps, then the cosine decay; "constant".
    lr_schedule: str = "cosine"
    patience: int = 6
    augment: bool = True
    # Sensor-noise augmentation: Gaussian noise of a sigma drawn from [0, noise_max] of the full scale.
    noise_max: float = 0.03
    # Vertical flips and 90° rotations: off by default, since a rover camera always has the sky
    # on top and near rocks at the bottom, and that perspective is a cue worth keeping.
    rotate: bool = False
    seed: int = 0
    strategy: str = "default"
    max_frames: int = 0  # 0 = all frames of each split
    # Train on random crops of this size cut from frames at the model's input size (0 = whole
    # frames): more, cheaper optimizer steps at the fine scale small rocks need; the model is fully
    # convolutional, so it validates, exports and runs at width x height.
    crop_width: int = 0
    crop_height: int = 0
    arch: str = "unet"
    # A strided stem (1 = none): one convolution of kernel and stride s turns each s×s patch into
    # `filters` features, the U-Net body runs at 1/s of the input's resolution, and a transposed
    # convolution of the same shape paints the masks back. No layer works at full resolution, where
    # few channels make CPU kernels slow (train/model.py).
    stem_stride: int = 1
    # How the deployed threshold is chosen on the validation frames: the best pixel rock IoU ("iou"),
    # or a rover's operating point, the best object-level F2 of rocks found and blobs right ("rocks-f2").
    threshold_rule: str = "iou"

    def validate(self) -> "TrainConfig":
        if self.task not in CLASS_NAMES:
            raise unknown_key("task", self.task, CLASS_NAMES)
        if self.loss not in LOSSES:
            raise unknown_key("loss", self.loss, LOSSES)
        if self.strategy not in STRATEGIES:
            raise unknown_key("strategy", self.strategy, STRATEGIES)
        if self.colour_mode not in ("gray", "rgb"):
            raise unknown_key("colour mode", self.colour_mode, ("gray", "rgb"))
        if self.lr_schedule not in LR_SCHEDULES:
            raise unknown_key("learning-rate schedule", self.lr_schedule, LR_SCHEDULES)
        for name in ("width", "height", "depth", "filters", "epochs", "batch_size", "stem_stride"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"learning rate must be a finite number > 0, got {self.learning_rate}")
        for name, least in (("patience", 0), ("max_frames", 0), ("seed", 0)):
            if getattr(self, name) < least:
                raise ConfigError(f"{name.replace('_', '-')} must be at least {least}, got {getattr(self, name)}")
        if self.seed >= 2 ** 32:
            raise ConfigError(f"seed must be below 2**32, got {self.seed}")
        if not 0.0 <= self.noise_max < 1.0:
            raise ConfigError(f"noise_max must be in [0, 1), got {self.noise_max}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        check_input_size(self.width, self.height, self.depth, self.stem_stride)
        if self.crops:
            if min(self.crop_width, self.crop_height) < 1 or self.crop_width > self.width or self.crop_height > self.height:
                raise ConfigError(f"crop {self.crop_width}x{self.crop_height} must have both sides >= 1 and fit "
                                  f"the model input {self.width}x{self.height}")
            check_input_size(self.crop_width, self.crop_height, self.depth, self.stem_stride)
        if self.arch not in ARCHITECTURES:
            raise unknown_key("architecture", self.arch, ARCHITECTURES)
        if self.threshold_rule not in THRESHOLD_RULES:
            raise unknown_key("threshold rule", self.threshold_rule, THRESHOLD_RULES)
        return self

    @property
    def crops(self) -> bool:
        """Whether training uses random crops smaller than the model input."""
        return bool(self.crop_width or self.crop_height) and (self.crop_width, self.crop_height) != (self.width, self.height)

    @property
    def train_pixels_share(self) -> float:
        """Pixels of one training sample over those of one model-size frame."""
        return self.crop_width * self.crop_height / (self.width * self.height) if self.crops else 1.0

    @property
    def channels(self) -> int:
        return 1 if self.colour_mode == "gray" else 3

    @property
    def num_outputs(self) -> int:
        return 1 if self.task == "binary" else len(CLASS_NAMES[self.task])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def differences(self, other: "TrainConfig", ignore=RESUMABLE_CHANGES) -> list[str]:
        """Human-readable `field: old -> new` for fields that differ (except `ignore`)."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if k not in ignore and a[k] != b[k]]


def size_step(depth: int, stem_stride: int = 1) -> int:
    """What both input sides must divide by: a stem of stride s, then d halvings."""
    return int(stem_stride) * 2 ** int(depth)


def check_input_size(width: int, height: int, depth: int, stem_stride: int = 1) -> None:
    """A U-Net of depth d (after a stem of stride s) halves the size d times, so both sides must divide by s·2**d."""
    step = size_step(depth, stem_stride)
    bad = [f"{n}={v}" for n, v in (("width", width), ("height", height)) if v % step]
    if bad:
        def near(v):
            lo = max(step, v // step * step)
            return f"{lo} or {lo + step}"
        hints = "; ".join(f"{n.split('=')[0]}: {near(int(n.split('=')[1]))}" for n in bad)
        stem_note = f" with a stride-{stem_stride} stem" if stem_stride > 1 else ""
        raise ConfigError(
            f"input size {width}x{height} does not fit a depth-{depth} U-Net{stem_note}: sides must be multiples of "
            f"{step} ({', '.join(bad)}; nearest that work: {hints})"
        )
