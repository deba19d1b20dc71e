"""What `lunarseg bench` measures: the artifacts of run directories, of model folders (RUN/deploy, a
bundle) and single .onnx/.tflite files, as rows to measure — without TensorFlow (only a Keras
baseline needs it, and only when it is installed)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from lunarseg.runtime.errors import ConfigError, LunarsegError
from lunarseg.runtime.metadata import read_keras_meta

BASELINE = "keras-fp32"
MODEL_SUFFIXES = (".onnx", ".tflite")
KERAS_MODEL = "model.keras"
MANIFEST = Path("export") / "manifest.json"
NO_TENSORFLOW_NOTE = ("Keras baseline skipped: TensorFlow is not installed (pip install 'lunarseg[train]'); "
                      "IoU drops are against the fp32 file exported from each row's trained model, when measured")


def tensorflow_installed() -> bool:
    """TensorFlow and tf_keras can be imported (looked up, not imported)."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in ("tensorflow", "tf_keras"))
    except (ImportError, ValueError):
        return False


def is_run_dir(path: Path) -> bool:
    """A lunarseg run directory: a Keras model with meta.json, or an export manifest."""
    return path.is_dir() and ((path / KERAS_MODEL).exists() or (path / MANIFEST).exists())


def format_name(meta) -> str:
    """The export format name of a file's metadata ('onnx-int8'); a bare 'onnx' gets its quantisation."""
    if "-" in meta.format:
        return meta.format
    mode = meta.quantization.get("mode", "none")
    return f"{meta.format}-{'fp32' if mode == 'none' else mode}"


def is_fp32(row: dict) -> bool:
    """An unquantised exported artifact: the reference of its variant's other artifacts."""
    return row["format"] != BASELINE and str(row["format"]).endswith("-fp32")


def run_rows(run: Path, with_keras: bool) -> list[dict]:
    """The Keras baseline (when `with_keras` and the run has one), then every artifact of RUN's manifest."""
    from lunarseg.export.manifest import read_manifest  # TF-free: json + runtime.atomic only

    keras = run / KERAS_MODEL
    meta = read_keras_meta(keras) if keras.exists() else None
    macs = meta.extra.get("macs") if meta else None
    rows = []
    if meta is not None and with_keras:
        rows.append({"variant": "base", "format": BASELINE, "path": str(keras), "status": "ok", "deployable": False,
                     "macs": macs, "run": str(run)})
    for entry in read_manifest(run / MANIFEST)["artifacts"]:
        path = Path(entry["path"]) if Path(entry["path"]).is_absolute() else run / entry["path"]
        inside = not Path(entry["path"]).is_absolute()
        rows.append({"variant": entry.get("variant", "base"), "format": entry["format"], "path": str(path),
                     # where `select` finds the file again, wherever the run directory has moved
                     "run_path": entry["path"] if inside else None,
                     "status": entry.get("status", "ok"), "error": entry.get("error"), "deployable": True,
                     "macs": macs, "quantization": entry.get("quantization"), "sparsity": entry.get("sparsity"),
                     "input_size": entry.get("input_size"), "run": str(run)})
    return rows


def file_row(path: Path) -> dict:
    """A row for one model file, named from its own metadata (variant, format); unreadable → an error row."""
    from lunarseg.runtime.backends import open_backend

    row = {"variant": path.stem, "format": path.suffix.lstrip("."), "path": str(path), "status": "ok",
           "deployable": True}
    try:
        meta = open_backend(path).meta
    except LunarsegError as exc:
        return {**row, "status": "error", "error": str(exc)}
    return {**row, "variant": meta.extra.get("variant") or path.stem, "format": format_name(meta),
            "quantization": meta.quantization, "sparsity": meta.sparsity, "macs": meta.extra.get("macs")}


def folder_models(folder: Path) -> list[Path]:
    """The .onnx/.tflite files anywhere under a folder (RUN/deploy, a bundle's models/)."""
    models = sorted(p for p in folder.rglob("*") if p.suffix.lower() in MODEL_SUFFIXES and p.is_file())
    if not models:
        raise ConfigError(f"{folder}: not a run directory (no {KERAS_MODEL}, no {MANIFEST}) and holds no "
                          f"{'/'.join(MODEL_SUFFIXES)} models")
    return models


def collect(paths: list[Path], with_keras: bool) -> tuple[list[dict], list[Path]]:
    """(rows to measure, the run directories among `paths`); bad paths are refused in one line."""
    rows, runs, seen = [], [], set()
    for path in paths:
        if not path.exists():
            raise ConfigError(f"{path}: no such file or directory")
        if is_run_dir(path):
            runs.append(path)
            found = run_rows(path, with_keras)
        elif path.is_dir():
            found = [file_row(p) for p in folder_models(path)]
        elif path.suffix.lower() in MODEL_SUFFIXES:
            found = [file_row(path)]
        else:
            raise ConfigError(f"{path}: bench takes run directories, folders of models or "
                              f"{'/'.join(MODEL_SUFFIXES)} files, not {path.suffix or 'a file without suffix'!r}")
        for row in found:
            key = Path(row["path"]).resolve()
            if key not in seen:
                seen.add(key)
                rows.append(row)
    return rows, runs
