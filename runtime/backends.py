"""Inference engines as a table: name → (file suffix, opener). Each suffix has a default engine
(`.onnx` → onnxruntime, `.tflite` → LiteRT); `openvino` is an optional second engine for `.onnx`.

Each backend opens a model file, reads the lunarseg metadata embedded in it, checks the metadata
against the model's real input/output shapes, and runs float32 NHWC batches, quantizing and
dequantizing around int8/uint8 tensors. Engines are imported lazily, inside the backend that
needs them, so importing this module costs nothing; no backend imports TensorFlow.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from lunarseg.runtime import native_stderr, preprocess
from lunarseg.runtime.errors import ModelFileError, one_line, unknown_key
from lunarseg.runtime.metadata import ModelMeta, read_onnx_metadata_map, read_tflite_metadata

__all__ = ["Backend", "OnnxBackend", "LiteRTBackend", "OpenVINOBackend", "BACKENDS", "DEFAULT_BACKEND",
           "SUFFIXES", "open_backend", "engines_for", "available"]


class Backend:
    """An opened model: `.meta`, `.name`, `.path`, `.batch` (fixed batch size or None), `run(x)`.

    An engine subclass supplies `_invoke` (the engine alone, on the tensor `_prepare` made) and, where
    its tensors are quantized, `_prepare` (float32 → engine input) and `dequantize` (engine output →
    float32); `run` and `engine_call` are those steps, so each exists once.
    """

    name = "?"
    suffix = "?"
    meta: ModelMeta
    batch: int | None = 1

    def run(self, x: np.ndarray) -> np.ndarray:
        """float32 N×H×W×C → float32 N×H×W×K."""
        return self.dequantize(self._invoke(self._prepare(x)))

    def engine_call(self, x: np.ndarray) -> Callable[[], object]:
        """A zero-argument callable that runs only the engine on `x`, an already prepared (normalised)
        float32 N×H×W×C tensor, and returns the engine's raw output (`dequantize` of it equals `run(x)`).

        It exists for timing the engine alone (benchmarks): `x` is converted — quantized, with the
        backend's own quantization — once, here, so the callable does none of that work. It stays valid
        while the backend runs no batch of another size in between.
        """
        xin = self._prepare(x)
        invoke = self._invoke
        return lambda: invoke(xin)

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        """The engine's input tensor for float32 `x` (float engines: contiguous float32)."""
        return np.ascontiguousarray(x, dtype=np.float32)

    def pixel_table(self) -> np.ndarray | None:
        """For an engine that takes quantized input: its input value for each uint8 pixel 0–255, i.e.
        normalisation and quantization as one lookup, value for value what `run` makes of
        preprocess.normalise. None for float engines, which take the normalised float32."""
        return None

    def run_engine_input(self, xin: np.ndarray) -> np.ndarray:
        """float32 probabilities N×H×W×K from a tensor already in the engine's input type (pixel_table)."""
        return self.dequantize(self._invoke(xin))

    def _invoke(self, xin: np.ndarray):
        """The engine alone on a tensor from `_prepare`: its raw output."""
        raise NotImplementedError

    def dequantize(self, y) -> np.ndarray:
        """The engine's raw output as float32 probabilities (float engines: a float32 view)."""
        return np.asarray(y, dtype=np.float32)

    def check_shapes(self, in_shape, out_shape) -> None:
        """Refuse metadata that disagrees with the model's real tensors (dims that are known)."""
        meta, src = self.meta, self.path
        want_in = [None, meta.height, meta.width, meta.channels]
        k = 1 if meta.output_activation == "sigmoid" else len(meta.class_names)
        want_out = [None, meta.height, meta.width, k]
        for what, real, want in (("input", in_shape, want_in), ("output", out_shape, want_out)):
            if len(real) != 4:
                raise ModelFileError(f"{src}: model {what} has shape {list(real)}, expected NHWC (4 dims)")
            for axis, name in ((1, "height"), (2, "width"), (3, "channels" if what == "input" else "classes")):
                r = real[axis]
                if isinstance(r, (int, np.integer)) and r > 0 and int(r) != want[axis]:
                    raise ModelFileError(
                        f"{src}: metadata disagrees with the model: {what} {name} is {int(r)} in the model "
                        f"but {want[axis]} in the metadata (input_shape {meta.input_shape}, "
                        f"{meta.output_activation} over {len(meta.class_names)} classes)")


def _read_model_bytes(path: Path) -> bytes:
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a directory, not a model file")
    try:
        data = path.read_bytes()
    except PermissionError:
        raise ModelFileError(f"{path}: permission denied") from None
    if not data:
        raise ModelFileError(f"{path}: model file is empty (0 bytes)")
    return data


class OnnxBackend(Backend):
    """onnxruntime, CPU: intra-op threads = `threads`, inter-op 1, all graph optimisations, sequential."""

    name = "onnxruntime"
    suffix = ".onnx"

    def __init__(self, path: str | os.PathLike, threads: int = 1):
        self.path = Path(path)
        data = _read_model_bytes(self.path)
        try:
            import onnxruntime as ort
        except ImportError:  # pragma: no cover - depends on the install
            raise ModelFileError(f"{self.path}: running .onnx models needs onnxruntime "
                                 "(pip install 'lunarseg[runtime-ort]')") from None
        ort.set_default_logger_severity(3)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # InvalidProtobuf, Fail, InvalidGraph, …
            raise ModelFileError(f"{self.path}: not a valid ONNX model ({type(exc).__name__}: "
                                 f"{one_line(exc)})") from None
        self.meta = read_onnx_metadata_map(self.session.get_modelmeta().custom_metadata_map, str(self.path))
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ModelFileError(f"{self.path}: expected one input and one output, got {len(inputs)} and {len(outputs)}")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self._output_names = [self.output_name]
        if inputs[0].type != "tensor(float)":
            raise ModelFileError(f"{self.path}: model input type is {inputs[0].type}; lunarseg models take float32")
        in_shape, out_shape = list(inputs[0].shape), list(outputs[0].shape)
        if not all(isinstance(d, int) for d in out_shape[1:]):  # symbolic output dims: run once to see
            probe = np.zeros([1, self.meta.height, self.meta.width, self.meta.channels], np.float32)
            try:
                out_shape = list(self._invoke(probe).shape)
            except Exception as exc:
                raise ModelFileError(f"{self.path}: model does not run on a {probe.shape} input "
                                     f"({type(exc).__name__}: {one_line(exc)})") from None
        self.check_shapes(in_shape, out_shape)
        b = in_shape[0]
        self.batch = int(b) if isinstance(b, int) and b > 0 else None

    def _invoke(self, xin: np.ndarray) -> np.ndarray:
        return self.session.run(self._output_names, {self.input_name: xin})[0]


# What LiteRT prints on stderr whatever the log level (runtime/native_stderr.py drops it).
LITERT_CHATTER = ("INFO: Created TensorFlow Lite XNNPACK delegate",)


class LiteRTBackend(Backend):
    """ai-edge-litert Interpreter (XNNPACK by default) with `num_threads=threads`."""

    name = "litert"
    suffix = ".tflite"

    def __init__(self, path: str | os.PathLike, threads: int = 1):
        self.path = Path(path)
        data = _read_model_bytes(self.path)
        self.meta = read_tflite_metadata(data, str(self.path))  # checks the TFL3 identifier first
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:  # pragma: no cover - depends on the install
            raise ModelFileError(f"{self.path}: running .tflite models needs ai-edge-litert "
                                 "(pip install 'lunarseg[runtime-litert]')") from None
        try:
            self.interp = Interpreter(model_content=data, num_threads=int(threads))
            with native_stderr.dropped_lines(LITERT_CHATTER):
                self.interp.allocate_tensors()
        except Exception as exc:  # ValueError "not a valid Flatbuffer buffer", RuntimeError on bad ops
            raise ModelFileError(f"{self.path}: not a valid TFLite model ({type(exc).__name__}: "
                                 f"{one_line(exc)})") from None
        ins, outs = self.interp.get_input_details(), self.interp.get_output_details()
        if len(ins) != 1 or len(outs) < 1:
            raise ModelFileError(f"{self.path}: expected one input and one output, got {len(ins)} and {len(outs)}")
        self.inp, self.out = ins[0], outs[0]
        self.check_shapes([int(d) for d in self.inp["shape"]], [int(d) for d in self.out["shape"]])
        for t in (self.inp, self.out):
            if t["dtype"] not in (np.float32, np.uint8, np.int8):
                raise ModelFileError(f"{self.path}: tensor {t['name']!r} has type {np.dtype(t['dtype']).name}; "
                                     "supported: float32, uint8, int8")
        sig = self.inp.get("shape_signature", self.inp["shape"])
        self.dynamic_batch = int(sig[0]) == -1
        self.batch = None if self.dynamic_batch else int(self.inp["shape"][0])
        self._allocated_batch = int(self.inp["shape"][0])
        self.in_q = self._qparams(self.inp)
        self.out_q = self._qparams(self.out)

    @staticmethod
    def _qparams(t) -> tuple[float, int] | None:
        if t["dtype"] == np.float32:
            return None
        scale, zero = t["quantization"]
        if not scale:
            raise ModelFileError(f"tensor {t['name']!r} is {np.dtype(t['dtype']).name} without a quantization scale")
        return float(scale), int(zero)

    def _resize(self, n: int) -> None:
        if n != self._allocated_batch:
            shape = [n] + [int(d) for d in self.inp["shape"][1:]]
            self.interp.resize_tensor_input(self.inp["index"], shape)
            self.interp.allocate_tensors()
            self._allocated_batch = n

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        """Resize a dynamic batch to x's, and quantize x where the input tensor is int8/uint8."""
        if self.dynamic_batch:
            self._resize(x.shape[0])
        return self._quantize(x)

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        if self.in_q is None:
            return np.ascontiguousarray(x, dtype=np.float32)
        scale, zero = self.in_q
        info = np.iinfo(self.inp["dtype"])
        return np.clip(np.rint(x / np.float32(scale)) + zero, info.min, info.max).astype(self.inp["dtype"])

    def pixel_table(self) -> np.ndarray | None:
        if self.in_q is None:
            return None
        pixels = np.arange(256, dtype=np.uint8)[:, None]
        return self._quantize(preprocess.normalise(pixels, self.meta)).reshape(256)

    def run_engine_input(self, xin: np.ndarray) -> np.ndarray:
        if self.dynamic_batch:
            self._resize(xin.shape[0])
        return super().run_engine_input(xin)

    def _invoke(self, xin: np.ndarray) -> np.ndarray:
        self.interp.set_tensor(self.inp["index"], xin)
        self.interp.invoke()
        return self.interp.get_tensor(self.out["index"])

    def dequantize(self, y) -> np.ndarray:
        if self.out_q is None:
            return np.asarray(y, dtype=np.float32)
        scale, zero = self.out_q
        return (y.astype(np.float32) - np.float32(zero)) * np.float32(scale)


class OpenVINOBackend(Backend):
    """OpenVINO's CPU plugin on the same `.onnx` files (optional: pip install 'lunarseg[openvino]').

    One stream, latency hint, INFERENCE_NUM_THREADS = `threads`, and f32 inference precision so that
    a float model is not silently run in bf16 on CPUs with AMX; int8 (QDQ) models still run int8.
    The batch is fixed to 1 (a dynamic batch compiles slower kernels); the segmenter loops batches.
    """

    name = "openvino"
    suffix = ".onnx"

    def __init__(self, path: str | os.PathLike, threads: int = 1):
        self.path = Path(path)
        _read_model_bytes(self.path)  # the same one-line errors for missing / empty / unreadable files
        try:
            import openvino as ov
        except ImportError:
            raise ModelFileError(f"{self.path}: the openvino engine needs the openvino package "
                                 "(pip install 'lunarseg[openvino]')") from None
        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
        except Exception as exc:
            raise ModelFileError(f"{self.path}: not a valid ONNX model for OpenVINO ({type(exc).__name__}: "
                                 f"{one_line(exc)})") from None
        self.meta = read_onnx_metadata_map(_openvino_metadata_props(model), str(self.path))
        if len(model.inputs) != 1 or len(model.outputs) < 1:
            raise ModelFileError(f"{self.path}: expected one input and one output, got {len(model.inputs)} and "
                                 f"{len(model.outputs)}")
        m = self.meta
        if model.inputs[0].get_partial_shape().is_dynamic:
            model.reshape({model.inputs[0]: [1, m.height, m.width, m.channels]})
        in_shape = [d.get_length() if d.is_static else None for d in model.inputs[0].get_partial_shape()]
        out_shape = [d.get_length() if d.is_static else None for d in model.outputs[0].get_partial_shape()]
        self.check_shapes(in_shape, out_shape)
        config = {"INFERENCE_NUM_THREADS": int(threads), "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": "f32"}
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise ModelFileError(f"{self.path}: OpenVINO cannot compile this model ({type(exc).__name__}: "
                                 f"{one_line(exc)})") from None
        self.request = self.compiled.create_infer_request()
        self.output = self.compiled.output(0)
        self.batch = 1

    def _invoke(self, xin: np.ndarray):
        return self.request.infer({0: xin})[self.output]


def _openvino_metadata_props(model) -> dict[str, str]:
    """ONNX metadata_props as OpenVINO keeps them: rt_info["framework"], values wrapped in OVAny."""
    try:
        framework = model.get_rt_info()["framework"]
        if hasattr(framework, "astype"):
            framework = framework.astype(dict)
        items = dict(framework).items()
    except Exception:  # a model without metadata_props has no such map
        return {}
    props = {}
    for key, value in items:
        try:
            props[str(key)] = value.astype(str) if hasattr(value, "astype") else str(value)
        except Exception:
            continue
    return props


@dataclass(frozen=True)
class BackendSpec:
    name: str
    suffix: str
    factory: Callable[..., Backend]
    module: str  # the engine's import name, to tell whether it is installed without importing it


# The table: engine name → spec. Add an engine by adding a row (and a default if it owns a suffix).
BACKENDS: dict[str, BackendSpec] = {
    "onnxruntime": BackendSpec("onnxruntime", ".onnx", OnnxBackend, "onnxruntime"),
    "litert": BackendSpec("litert", ".tflite", LiteRTBackend, "ai_edge_litert"),
    "openvino": BackendSpec("openvino", ".onnx", OpenVINOBackend, "openvino"),
}
DEFAULT_BACKEND = {".onnx": "onnxruntime", ".tflite": "litert"}
SUFFIXES = tuple(DEFAULT_BACKEND)


def available(name: str) -> bool:
    """Whether engine `name` is installed (checked without importing it)."""
    import importlib.util

    return importlib.util.find_spec(BACKENDS[name].module) is not None


def engines_for(path: str | os.PathLike, installed_only: bool = True) -> list[str]:
    """Engines that read this file's suffix, the default first."""
    suffix = Path(path).suffix.lower()
    names = [DEFAULT_BACKEND[suffix]] if suffix in DEFAULT_BACKEND else []
    names += [n for n, spec in BACKENDS.items() if spec.suffix == suffix and n not in names]
    return [n for n in names if not installed_only or available(n)]


def open_backend(path: str | os.PathLike, threads: int = 1, backend: str = "auto") -> Backend:
    """Open `path` with the default engine for its suffix, or the named one (which must read that suffix)."""
    p = Path(path)
    if backend != "auto" and backend not in BACKENDS:
        raise unknown_key("backend", backend, ["auto", *BACKENDS])
    suffix = p.suffix.lower()
    if suffix not in DEFAULT_BACKEND:
        raise unknown_key("model file suffix", suffix or p.name, DEFAULT_BACKEND)
    name = DEFAULT_BACKEND[suffix] if backend == "auto" else backend
    spec = BACKENDS[name]
    if spec.suffix != suffix:
        raise ModelFileError(f"{p}: backend {backend!r} reads {spec.suffix} files, not {suffix}")
    if int(threads) < 1:
        from lunarseg.runtime.errors import ConfigError

        raise ConfigError(f"threads must be at least 1, got {threads}")
    return spec.factory(p, threads=int(threads))
