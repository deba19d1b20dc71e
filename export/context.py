"""What a format builder receives and returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lunarseg.runtime.errors import LunarsegError
from lunarseg.runtime.metadata import ModelMeta

__all__ = ["BuildContext", "Built", "ConversionError"]


class ConversionError(LunarsegError):
    """A converter failed on this model (recorded in the manifest; the other formats go on)."""

    exit_code = 1


@dataclass
class BuildContext:
    """`model`: the tf_keras model; `calib`: float32 N×H×W×C model inputs (or None); `io`: the
    integer type of full-integer TFLite inputs/outputs; `qat`: the model holds fake-quant nodes;
    `cache`: shared between builders of one export (e.g. the int8 TFLite for the ONNX route);
    `workdir`: a scratch directory for converters that want files."""

    model: object
    meta: ModelMeta
    calib: np.ndarray | None = None
    io: str = "uint8"
    qat: bool = False
    cache: dict = field(default_factory=dict)
    workdir: Path | None = None

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        m = self.meta
        return (1, m.height, m.width, m.channels)


@dataclass
class Built:
    """The artifact bytes (metadata not yet embedded) and the quantization record for its meta."""

    data: bytes
    quantization: dict
    notes: dict = field(default_factory=dict)
