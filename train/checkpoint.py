"""Saving and loading Keras models atomically, with their metadata beside them."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import tf_keras as keras

from lunarseg.runtime import atomic
from lunarseg.runtime.errors import ModelFileError
from lunarseg.runtime.metadata import ModelMeta, meta_json_path
from lunarseg.train import losses, schedules  # noqa: F401  (registers the custom objects for loading)


MODEL_FILES = ("model.keras", "model.h5")  # QAT models go to H5: tfmot's wrappers do not reload from .keras


def model_file(directory: str | Path) -> Path:
    """The model file inside a run or variant directory (model.keras, else model.h5)."""
    for name in MODEL_FILES:
        if (Path(directory) / name).exists():
            return Path(directory) / name
    return Path(directory) / MODEL_FILES[0]


def variant_dirs(run_dir: str | Path) -> list[Path]:
    """RUN/compressed/* folders holding a model file and its meta.json, sorted by name."""
    root = Path(run_dir) / "compressed"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if model_file(p).exists() and (p / "meta.json").exists())


def is_quantize_aware(model: keras.Model) -> bool:
    return any(type(layer).__name__.startswith("Quantize") for layer in model.layers)


def save_model(model: keras.Model, path: str | Path, *, include_optimizer: bool = False) -> Path:
    """Write `path` (.keras or .h5) via a temp file + rename: an interrupted save leaves the old file."""
    if Path(path).suffix == ".h5":
        import tensorflow_model_optimization as tfmot

        with tfmot.quantization.keras.quantize_scope(), atomic.atomic_path(path, keep_suffix=True) as tmp:
            keras.models.save_model(model, tmp, include_optimizer=include_optimizer, save_format="h5")
        return Path(path)
    if not include_optimizer and model.optimizer is not None:
        weights_only = keras.models.clone_model(model)  # uncompiled: the file holds no optimizer state
        weights_only.set_weights(model.get_weights())
        model = weights_only
    with atomic.atomic_path(path, keep_suffix=True) as tmp:
        model.save(tmp)
    return Path(path)


def load_model(path: str | Path, *, compile: bool = False) -> keras.Model:
    import tensorflow_model_optimization as tfmot

    path = Path(path)
    if path.is_dir():
        path = model_file(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file")
    try:
        with tfmot.quantization.keras.quantize_scope(), tfmot.sparsity.keras.prune_scope():
            return keras.models.load_model(path, compile=compile)
    except Exception as exc:  # zip/h5/json errors of a damaged or foreign file
        raise ModelFileError(f"{path}: not a loadable Keras model ({type(exc).__name__}: {str(exc)[:120]})") from None


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_meta(model_path: str | Path, meta: ModelMeta) -> Path:
    return atomic.write_text(meta_json_path(model_path), json.dumps(meta.to_dict(), indent=2, sort_keys=True) + "\n")


def resolve_model(model_or_run: str | Path) -> tuple[Path, ModelMeta]:
    """A run directory or a .keras file → (model path, its metadata)."""
    from lunarseg.runtime.metadata import read_keras_meta

    path = Path(model_or_run)
    if path.is_dir():
        path = model_file(path)
    if not path.exists():
        raise ModelFileError(f"{model_or_run}: no lunarseg model here (expected a run directory with model.keras, or a .keras file)")
    return path, read_keras_meta(path)
