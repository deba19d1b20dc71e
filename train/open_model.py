"""One model opener for `lunarseg evaluate` and the bench's measuring child: a run directory, a Keras
file with meta.json beside it, an .onnx or a .tflite file -> an `OpenedModel` with `.meta` and
`.predict(x float32 N×H×W×C) -> probabilities`.

It lives in train/ because that is the lowest layer that may reach Keras (runtime/ may not, and
train/ may not import benchmarks/); it imports TensorFlow only when a Keras model is opened, so
opening .onnx/.tflite (through the runtime's Segmenter) stays TensorFlow-free. A Keras model without
lunarseg metadata is never given guessed metadata: the error names `lunarseg import`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from lunarseg.runtime.backends import SUFFIXES as RUNTIME_SUFFIXES
from lunarseg.runtime.errors import ConfigError, ModelFileError
from lunarseg.runtime.metadata import ModelMeta, meta_json_path

RUN_DIR = "run directory"
KERAS_SUFFIXES = (".keras", ".h5")
SAVED_MODEL_FILE = "saved_model.pb"
IMPORT_HINT = "make it a run first: lunarseg import {path} --out RUN"


@dataclass
class OpenedModel:
    """A model ready to run: its metadata, the engine call on normalised float32 N×H×W×C, which engine
    runs it and the intra-op threads that engine reports (None where it has no setting we read)."""

    path: Path  # the model file itself (a run directory's model.keras)
    meta: ModelMeta
    predict: Callable[[np.ndarray], np.ndarray]
    engine: str
    engine_threads: int | None


def open_model(path: str | Path, threads: int | None = None, backend: str = "auto") -> OpenedModel:
    """Open any form in FORMS. `threads`: the engine's intra-op threads (None: TensorFlow's own default,
    1 for the runtime); `backend`: the runtime engine for .onnx/.tflite (auto = the suffix's default)."""
    p = Path(path)
    return FORMS[form_of(p)](p, threads, backend)


def form_of(path: Path) -> str:
    """The FORMS key of `path`, or a one-line error: missing, a foreign Keras model (naming `lunarseg
    import`), or a form not in FORMS (listing them)."""
    if not path.exists():
        raise ModelFileError(f"{path}: no such file or directory")
    if path.is_dir():
        if (path / SAVED_MODEL_FILE).exists():
            raise ModelFileError(f"{path}: a SavedModel without lunarseg metadata; {IMPORT_HINT.format(path=path)}")
        if meta_json_path(path / "model.keras").exists():  # meta.json inside
            return RUN_DIR
        raise unknown_form(path, "a directory with no meta.json")
    suffix = path.suffix.lower()
    if suffix in KERAS_SUFFIXES and not meta_json_path(path).exists():
        raise ModelFileError(f"{path}: a Keras model without lunarseg metadata (no meta.json beside it); "
                             f"{IMPORT_HINT.format(path=path)}")
    if suffix not in FORMS:
        raise unknown_form(path, f"{suffix or 'no suffix'!r}")
    return suffix


def unknown_form(path: Path, what: str) -> ModelFileError:
    """The error for a path no opener takes; it lists the accepted forms."""
    return ModelFileError(f"{path}: cannot open {what}; accepted: {', '.join(FORMS)} (a Keras file with meta.json "
                          f"beside it; a foreign .h5/.keras/SavedModel: lunarseg import PATH --out RUN)")


def _open_keras(path: Path, threads: int | None, backend: str) -> OpenedModel:
    """A run directory or a Keras file with meta.json, in TensorFlow (imported here, not before)."""
    if backend != "auto":
        raise ConfigError(f"{path}: backend {backend!r} runs .onnx/.tflite files; a Keras model runs in TensorFlow")
    tf = _tensorflow(threads)
    from lunarseg.train.checkpoint import load_model, resolve_model

    model_path, meta = resolve_model(path)
    model = load_model(model_path)
    return OpenedModel(model_path, meta, lambda x: np.asarray(model.predict_on_batch(x)), "tensorflow",
                       tf.config.threading.get_intra_op_parallelism_threads())


def _tensorflow(threads: int | None):
    """TensorFlow, imported quietly, with `threads` intra-op threads (and one inter-op) when given and
    TensorFlow is not yet initialised; a runtime-only install gets one line saying what to install."""
    from lunarseg.train.tf_env import import_tensorflow_quietly

    try:
        tf = import_tensorflow_quietly()
        import tf_keras  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"opening a Keras model needs TensorFlow ({exc.name or 'tensorflow'} is not installed): "
                          "pip install 'lunarseg[train]', or open its exported .onnx/.tflite") from None
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # already initialised in this process: engine_threads reports what it has
            pass
    return tf


def _open_runtime(path: Path, threads: int | None, backend: str) -> OpenedModel:
    """An .onnx/.tflite file through the runtime's Segmenter (its backends table; no TensorFlow)."""
    from lunarseg.runtime.segmenter import Segmenter

    requested = threads or 1
    seg = Segmenter.from_file(path, threads=requested, backend=backend)
    return OpenedModel(path, seg.meta, seg.predict, seg.backend_name, engine_threads(seg, requested))


def engine_threads(seg, requested: int) -> int:
    """The intra-op thread count the runtime engine itself reports (LiteRT has no getter: the value given)."""
    session = getattr(seg.backend, "session", None)
    if session is not None:
        return int(session.get_session_options().intra_op_num_threads)
    compiled = getattr(seg.backend, "compiled", None)  # OpenVINO
    if compiled is not None:
        return int(compiled.get_property("INFERENCE_NUM_THREADS"))
    return requested


# The table: form -> opener. A run directory and Keras files open in TensorFlow; the runtime's suffixes
# (runtime.backends.SUFFIXES, one definition) through its Segmenter.
FORMS: dict[str, Callable[[Path, int | None, str], OpenedModel]] = {
    RUN_DIR: _open_keras,
    **{suffix: _open_keras for suffix in KERAS_SUFFIXES},
    **{suffix: _open_runtime for suffix in RUNTIME_SUFFIXES},
}
