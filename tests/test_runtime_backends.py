"""Backends: `engine_call` is the engine alone on a prepared tensor, quantized once up front by the
backend's own code, and its raw output dequantizes to exactly what `run` returns."""
import numpy as np
import pytest

from engines import on_engine
from runtime_models import models as build_models
from lunarseg.runtime import preprocess
from lunarseg.runtime.backends import open_backend

CASES = [on_engine(name, engine, engine=engine) for name, engine in (
    ("bin.onnx", "onnxruntime"), ("cls4.onnx", "onnxruntime"),
    ("bin.tflite", "litert"), ("bin_int8.tflite", "litert"), ("cls4.tflite", "litert"),
    ("bin.onnx", "openvino"), ("cls4.onnx", "openvino"))]


@pytest.fixture(scope="module")
def models():
    return build_models()


def _case(models, name, engine):
    backend = open_backend(models[name], backend=engine)
    frame = (np.random.default_rng(1).random((40, 50, 3)) * 255).astype(np.uint8)
    return backend, preprocess.prepare(frame, backend.meta)[None]


@pytest.mark.parametrize("name,engine", CASES)
def test_engine_call_output_dequantized_equals_run(models, name, engine):
    backend, x = _case(models, name, engine)
    call = backend.engine_call(x)
    raw = call()
    np.testing.assert_allclose(backend.dequantize(raw), backend.run(x), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(call(), raw)  # the same tensor each call
    if name == "bin_int8.tflite":  # an int8 model: the engine's own int8 output, not yet dequantized
        assert raw.dtype in (np.int8, np.uint8)
    else:
        assert raw.dtype == np.float32


@pytest.mark.parametrize("name,engine", CASES)
def test_engine_call_prepares_and_quantizes_once_up_front_not_per_call(models, name, engine, monkeypatch):
    backend, x = _case(models, name, engine)
    call = backend.engine_call(x)
    monkeypatch.setattr(backend, "_prepare", lambda _x: pytest.fail("the callable prepared its input again"))
    monkeypatch.setattr(backend, "dequantize", lambda _y: pytest.fail("the callable dequantized"))
    assert call() is not None
