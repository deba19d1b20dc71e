"""TFLite builders: float32, float16 weights, dynamic range, full integer (post-training or QAT).

All go through `tf.lite.TFLiteConverter.from_keras_model`. The full-integer model takes and returns
uint8 (or int8) tensors; their scale/zero-point go into the metadata and the runtime applies them.
A QAT model converts from its fake-quant ranges (Optimize.DEFAULT, no representative data needed).
"""
from __future__ import annotations

import numpy as np

from lunarseg.export.context import BuildContext, Built, ConversionError

IO_TYPES = ("uint8", "int8")


def _converter(ctx: BuildContext):
    import tensorflow as tf

    return tf, tf.lite.TFLiteConverter.from_keras_model(ctx.model)


def _convert(conv, what: str) -> bytes:
    try:
        return bytes(conv.convert())
    except Exception as exc:  # converter errors are long MLIR dumps: keep the first line
        first = " ".join(str(exc).split())[:200]
        raise ConversionError(f"{what}: TFLite converter failed ({type(exc).__name__}: {first})") from None


def representative(calib: np.ndarray):
    """The converter's representative dataset: one frame per step, batch 1, float32."""
    def gen():
        for i in range(len(calib)):
            yield [np.ascontiguousarray(calib[i:i + 1], dtype=np.float32)]
    return gen


def tensor_quantization(model_bytes: bytes) -> dict:
    """{'input': {...}, 'output': {...}} scale/zero_point/dtype of integer I/O tensors (floats omitted)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model_bytes)
    out = {}
    for key, details in (("input", interp.get_input_details()[0]), ("output", interp.get_output_details()[0])):
        dtype = np.dtype(details["dtype"]).name
        if dtype == "float32":
            continue
        scale, zero = details["quantization"]
        out[key] = {"scale": float(scale), "zero_point": int(zero), "dtype": dtype}
    return out


def build_fp32(ctx: BuildContext) -> Built:
    _, conv = _converter(ctx)
    return Built(_convert(conv, "tflite-fp32"), {"mode": "none"})


def build_fp16(ctx: BuildContext) -> Built:
    tf, conv = _converter(ctx)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    return Built(_convert(conv, "tflite-fp16"), {"mode": "fp16"})


def build_dynamic(ctx: BuildContext) -> Built:
    tf, conv = _converter(ctx)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    return Built(_convert(conv, "tflite-dynamic"), {"mode": "dynamic"})


def int8_bytes(ctx: BuildContext, io: str | None) -> bytes:
    """Full-integer TFLite; `io` = 'uint8' / 'int8' integer I/O, or None for float32 I/O (the graph
    inside is integer either way). Cached per I/O type within one export."""
    key = f"tflite-int8:{io}"
    if key in ctx.cache:
        return ctx.cache[key]
    tf, conv = _converter(ctx)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if ctx.calib is not None:
        conv.representative_dataset = representative(ctx.calib)
    elif not ctx.qat:
        raise ConversionError("tflite-int8: full-integer quantization needs calibration frames")
    if not ctx.qat:  # QAT graphs are integer through their fake-quant ranges; the converter refuses
        # TFLITE_BUILTINS_INT8 there without a representative dataset
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if io is not None:
        if io not in IO_TYPES:
            from lunarseg.runtime.errors import unknown_key

            raise unknown_key("integer I/O type", io, IO_TYPES)
        conv.inference_input_type = getattr(tf, io)
        conv.inference_output_type = getattr(tf, io)
    import warnings

    with warnings.catch_warnings():  # "Statistics for quantized inputs were expected": ranges come from data
        warnings.simplefilter("ignore", UserWarning)
        data = _convert(conv, "tflite-int8")
    ctx.cache[key] = data
    return data


def build_int8(ctx: BuildContext) -> Built:
    data = int8_bytes(ctx, ctx.io)
    quant = {"mode": "int8", "source": "qat" if ctx.qat else "post-training",
             "calibration_frames": 0 if ctx.calib is None else int(len(ctx.calib))}
    quant.update(tensor_quantization(data))
    return Built(data, quant)
