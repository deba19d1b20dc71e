"""The export formats as a table of data: name → suffix, quantization, builder, calibration, gate.

A builder turns a `BuildContext` (the Keras model, its metadata, calibration frames) into the bytes
of one artifact and the quantization record for its metadata; it does not embed the metadata or
write files (`export.exporter` does that, the same way for every format). Builders import their
converters when they run, so this table is cheap to import (the command line lists its names).

Parity gates: a format with `atol` set is compared with the Keras model as a float model (max abs
probability difference ≤ atol and mask agreement IoU ≥ min_mask_iou); a format without it is a
quantized model and is gated on its rock-IoU drop against labelled frames (`--max-iou-drop`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from lunarseg.runtime.errors import unknown_key

__all__ = ["FormatSpec", "FORMATS", "FORMAT_NAMES", "resolve_formats", "FP16_ATOL", "FP16_MIN_MASK_IOU"]

# Float tolerances. fp32 converters reorder float ops (BatchNorm folding, fused kernels): ~1e-6
# measured, 1e-4 allowed. fp16 weights move sigmoid outputs by up to ~0.04 on borderline pixels of a
# trained 384×256 model (measured 0.017–0.037, mask IoU vs Keras 0.998–0.999), so for fp16 the
# probability bound is loose and the mask agreement is what gates.
FP32_ATOL, FP32_MIN_MASK_IOU = 1e-4, 0.999
FP16_ATOL, FP16_MIN_MASK_IOU = 0.1, 0.99


@dataclass(frozen=True)
class FormatSpec:
    name: str
    suffix: str  # file suffix, with the dot
    quantization: str  # ModelMeta quantization mode: none | fp16 | dynamic | int8
    builder: Callable  # builder(ctx) -> Built
    needs_calibration: bool  # representative frames needed (QAT sources use their fake-quant ranges)
    atol: float | None = None  # float gate; None → quantized gate (IoU drop)
    min_mask_iou: float | None = None
    description: str = ""

    @property
    def family(self) -> str:
        return self.suffix.lstrip(".")

    @property
    def float_gate(self) -> bool:
        return self.atol is not None


def _lazy(module: str, func: str) -> Callable:
    """A builder reference that imports its module (and the converter) only when called."""
    def call(ctx):
        import importlib

        return getattr(importlib.import_module(module), func)(ctx)
    call.__name__ = func
    call.__qualname__ = f"{module}.{func}"
    return call


_T = "lunarseg.export.tflite_builders"
_O = "lunarseg.export.onnx_builders"

# The table. Order = export order and `--formats all` order. Add a format by adding a row.
FORMATS: dict[str, FormatSpec] = {spec.name: spec for spec in (
    FormatSpec("tflite-fp32", ".tflite", "none", _lazy(_T, "build_fp32"), False, FP32_ATOL, FP32_MIN_MASK_IOU,
               "TFLite, float32"),
    FormatSpec("tflite-fp16", ".tflite", "fp16", _lazy(_T, "build_fp16"), False, FP16_ATOL, FP16_MIN_MASK_IOU,
               "TFLite, float16 weights (float32 compute and I/O)"),
    FormatSpec("tflite-dynamic", ".tflite", "dynamic", _lazy(_T, "build_dynamic"), False, None, None,
               "TFLite, dynamic-range int8 weights"),
    FormatSpec("tflite-int8", ".tflite", "int8", _lazy(_T, "build_int8"), True, None, None,
               "TFLite, full integer with uint8/int8 I/O (representative frames or QAT ranges)"),
    FormatSpec("onnx-fp32", ".onnx", "none", _lazy(_O, "build_fp32"), False, FP32_ATOL, FP32_MIN_MASK_IOU,
               "ONNX opset 17, float32, NHWC input 'image', batch 1"),
    FormatSpec("onnx-int8", ".onnx", "int8", _lazy(_O, "build_int8_static"), True, None, None,
               "ONNX static QDQ int8 (onnxruntime quantize_static, per-channel) — the measured better route"),
    FormatSpec("onnx-int8-tflite", ".onnx", "int8", _lazy(_O, "build_int8_from_tflite"), True, None, None,
               "ONNX int8 converted from the full-integer TFLite model (tf2onnx from_tflite)"),
)}
FORMAT_NAMES = tuple(FORMATS)


def resolve_formats(names) -> list[FormatSpec]:
    """Specs for `names` (a list, or a comma-separated string; 'all' = every format), table order.

    An unknown name raises ConfigError listing the valid ones.
    """
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    wanted = [str(n).strip() for n in names if str(n).strip()]
    if not wanted:
        raise unknown_key("export format", "", (*FORMATS, "all"))
    if "all" in wanted:
        return list(FORMATS.values())
    for name in wanted:
        if name not in FORMATS:
            raise unknown_key("export format", name, (*FORMATS, "all"))
    return [spec for name, spec in FORMATS.items() if name in wanted]
