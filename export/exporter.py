"""Export a lunarseg Keras model to every requested format, check each through the runtime, and
record the result in the run's manifest.

    records = export_model("runs/a", ["tflite-fp32", "tflite-int8"], data_dir="data/synth")
    records = export_run("runs/a", "all", data_dir="data/synth")   # base + every compressed variant

Each artifact: built (export.formats table), metadata embedded, written atomically, reopened with
`runtime.Segmenter` and compared with the Keras model (export.parity). A converter that throws or a
gate that fails marks that artifact `failed` with a one-line reason; the other formats still export.
"""
from __future__ import annotations

import datetime as _dt
import gzip
import hashlib
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from lunarseg.export import frames as frames_mod
from lunarseg.export import sizes as sizes_mod
from lunarseg.export.context import BuildContext, Built, ConversionError
from lunarseg.export.formats import FormatSpec, resolve_formats
from lunarseg.export.manifest import MANIFEST_NAME, merge_manifest
from lunarseg.export.parity import check_gate, compare, latency_ms
from lunarseg.runtime import atomic
from lunarseg.runtime.errors import ConfigError, GateError, LunarsegError, ModelFileError, one_line, unknown_key

_error_line = partial(one_line, limit=300, with_type=True)  # an artifact record's error field
from lunarseg.runtime.metadata import METADATA_KEY, ModelMeta, embed_tflite_metadata

__all__ = ["ArtifactRecord", "export_model", "export_run", "embed_metadata", "locate_source", "BASE_VARIANT"]

BASE_VARIANT = "base"
IO_TYPES = ("uint8", "int8")


@dataclass
class ArtifactRecord:
    """One exported artifact as the manifest lists it. `file` is its absolute path."""

    format: str
    variant: str
    path: str  # relative to the run directory (absolute when written outside it)
    file: str
    status: str  # "ok" | "failed"
    error: str = ""
    sha256: str = ""
    bytes: int = 0
    gzip_bytes: int = 0
    quantization: dict = field(default_factory=dict)
    sparsity: float = 0.0
    source: dict = field(default_factory=dict)  # variant, path, sha256 of the .keras model
    parity: dict = field(default_factory=dict)
    exported: str = ""
    seconds: float = 0.0
    input_size: str = ""  # "WxH" the artifact takes (the model's own size unless exported with sizes)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("file")
        return d


# ---- where things are ------------------------------------------------------------------------

def locate_source(model_path: Path) -> tuple[Path, str]:
    """(run directory, variant name) of a model file: RUN/model.keras → base;
    RUN/compressed/V/model.keras → V; any other .keras file → its folder, base."""
    p = Path(model_path).resolve()
    if p.parent.parent.name == "compressed":
        return p.parent.parent.parent, p.parent.name
    return p.parent, BASE_VARIANT


def _check_writable(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_probe", dir=root)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{root}: output directory is not writable ({exc.strerror or exc})") from None


def _rel(path: Path, run_dir: Path) -> str:
    try:
        return str(path.resolve().relative_to(run_dir.resolve()))
    except ValueError:
        return str(path.resolve())


# ---- metadata --------------------------------------------------------------------------------

def embed_metadata(data: bytes, suffix: str, meta: ModelMeta) -> bytes:
    """The artifact bytes with `meta` stored inside (TFLite Metadata entry / ONNX metadata_props)."""
    if suffix == ".tflite":
        return embed_tflite_metadata(data, meta)
    if suffix == ".onnx":
        import onnx

        proto = onnx.ModelProto.FromString(data)
        kept = [(p.key, p.value) for p in proto.metadata_props if p.key != METADATA_KEY]
        del proto.metadata_props[:]
        for key, value in kept + [(METADATA_KEY, meta.to_json())]:
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        return proto.SerializeToString()
    raise unknown_key("artifact suffix", suffix, (".tflite", ".onnx"))


def _created_stamp(source_meta: ModelMeta) -> str:
    """The `created` of an exported file: SOURCE_DATE_EPOCH when set, else the source model's own
    `created` — never the wall clock, so re-exporting the same model gives the same bytes."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.isdigit():
        return _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc).isoformat(timespec="seconds")
    return source_meta.created


def artifact_meta(source: ModelMeta, spec: FormatSpec, built: Built, parent_hash: str, variant: str) -> ModelMeta:
    extra = dict(source.extra)
    extra["variant"] = variant
    return source.replace(format=spec.name, quantization=dict(built.quantization), sparsity=float(source.sparsity),
                          parent_hash=parent_hash, created=_created_stamp(source), extra=extra)


# ---- loading the Keras model -------------------------------------------------------------------

def _is_qat(meta: ModelMeta) -> bool:
    return bool(meta.extra.get("qat"))


def load_source(model_path: Path, meta: ModelMeta):
    """The tf_keras model (inside tfmot's quantize_scope for QAT/PQAT models)."""
    from lunarseg.train.checkpoint import load_model

    if not _is_qat(meta):
        return load_model(model_path)
    import tensorflow_model_optimization as tfmot

    with tfmot.quantization.keras.quantize_scope():
        return load_model(model_path)


def _keras_predict(model, x: np.ndarray) -> np.ndarray:
    """The Keras model's probabilities, the reference every artifact is compared with."""
    from lunarseg.train.forward import predict

    return predict(model, x)


# ---- one artifact ------------------------------------------------------------------------------

def _export_one(spec: FormatSpec, ctx: BuildContext, *, out_path: Path, run_dir: Path, variant: str,
                source_info: dict, x_val: np.ndarray, y_val, keras_probs: np.ndarray, max_iou_drop: float,
                threads: int) -> ArtifactRecord:
    from lunarseg.runtime.segmenter import Segmenter

    t0 = time.perf_counter()
    rec = ArtifactRecord(format=spec.name, variant=variant, path=_rel(out_path, run_dir), file=str(out_path),
                         status="failed", quantization={"mode": spec.quantization},
                         sparsity=float(ctx.meta.sparsity), source=dict(source_info),
                         exported=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    try:
        with warnings.catch_warnings():  # TF's own converters still call the deprecated tf.lite.Interpreter
            warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is deprecated")
            built = spec.builder(ctx)
        meta = artifact_meta(ctx.meta, spec, built, source_info["sha256"], variant)
        data = embed_metadata(built.data, spec.suffix, meta)
        atomic.write_bytes(out_path, data)
        rec.quantization = dict(built.quantization)
        rec.sha256 = hashlib.sha256(data).hexdigest()
        rec.bytes = len(data)
        rec.gzip_bytes = len(gzip.compress(data, compresslevel=9, mtime=0))
        if built.notes:
            rec.parity["notes"] = dict(built.notes)
    except GateError as exc:
        rec.error = _error_line(exc)
        rec.seconds = round(time.perf_counter() - t0, 2)
        return rec
    except Exception as exc:  # a converter can throw anything; record it, go on
        rec.error = _error_line(exc if isinstance(exc, LunarsegError) else ConversionError(_error_line(exc)))
        rec.seconds = round(time.perf_counter() - t0, 2)
        return rec
    try:
        seg = Segmenter.from_file(out_path, threads=threads)
        probs = np.asarray(seg.predict(x_val), dtype=np.float32)
        figures = compare(keras_probs, probs, ctx.meta, y_val)
        figures["latency_ms"] = round(latency_ms(seg.predict, x_val[:1]), 4)
        figures["threads"] = threads
        figures["backend"] = seg.backend_name
        rec.parity.update(figures)
        check_gate(spec, rec.parity, max_iou_drop, qat=ctx.qat)
        rec.status = "ok"
    except GateError as exc:
        rec.error = _error_line(exc)
    except Exception as exc:  # the runtime refused the file it was given: that is a failed artifact too
        rec.error = _error_line(exc)
    rec.seconds = round(time.perf_counter() - t0, 2)
    return rec


# ---- the API -------------------------------------------------------------------------------------

def export_model(model_or_run, formats, *, data_dir=None, calib=None, val=None, out_dir=None,
                 max_iou_drop: float = 0.02, io: str = "uint8", calib_frames: int = frames_mod.DEFAULT_CALIB_FRAMES,
                 val_frames: int = 64, threads: int = 1, write_manifest: bool = True,
                 sizes=None) -> list[ArtifactRecord]:
    """Export one Keras model (a run directory, a compressed variant's folder or a .keras file).

    `formats`: names from `export.formats.FORMATS` (list or comma string; "all"). `calib`: uint8
    frames (array N×H×W[×C] or a list of frames/paths) for int8 calibration, else the train split
    of `data_dir`. `val`: SplitArrays (x, y) for parity, else the val split of `data_dir`, else fixed
    synthetic frames scored against the Keras masks. `sizes`: input sizes ('WxH,WxH' or a list;
    None = the model's own) — the same weights re-instantiated at each, calibrated and checked there.
    Artifacts go to `out_dir` (default RUN/export, and RUN/export/VARIANT for a compressed variant);
    the run's manifest.json is updated there. Returns one record per (size, format), sizes in the
    order given, formats in table order; failures are records, not exceptions.
    """
    specs = resolve_formats(formats)
    _check_options(io, max_iou_drop, threads)
    model_path, meta, size_list, source = _locate(model_or_run, out_dir, sizes)
    model = _load_checked(model_path, meta)
    data_dir = data_dir if data_dir is not None or calib is not None else recorded_dataset(meta)
    frames = dict(data_dir=data_dir, calib=calib, val=val, calib_frames=calib_frames, val_frames=val_frames)
    gate = dict(max_iou_drop=float(max_iou_drop), io=io, threads=int(threads))
    records = _export_sizes(model, meta, size_list, specs, source, frames, gate)
    if write_manifest:
        merge_manifest(source["root"] / MANIFEST_NAME, [r.to_dict() for r in records], source["run_dir"])
    return records


def _check_options(io: str, max_iou_drop: float, threads: int) -> None:
    """Refuse an integer I/O type, IoU-drop limit or thread count that no export could use."""
    if io not in IO_TYPES:
        raise unknown_key("integer I/O type", io, IO_TYPES)
    if not 0.0 <= float(max_iou_drop) <= 1.0:
        raise ConfigError(f"--max-iou-drop must be between 0 and 1, got {max_iou_drop}")
    if int(threads) < 1:
        raise ConfigError(f"threads must be at least 1, got {threads}")


def _locate(model_or_run, out_dir, sizes):
    """(model file, its metadata, the input sizes to export, where it comes from and where its artifacts
    go); bad sizes and an unwritable output fail here, before the model loads."""
    from lunarseg.train.checkpoint import file_sha256, model_file, resolve_model

    path = Path(model_or_run)
    if path.is_dir() and not model_file(path).exists() and (path / "meta.json").exists():
        raise ModelFileError(f"{path}: has meta.json but no model file (model.keras or model.h5)")
    model_path, meta = resolve_model(path)
    size_list = sizes_mod.parse_sizes(sizes, sizes_mod.model_depth(meta), sizes_mod.model_stem_stride(meta)) or [(meta.width, meta.height)]
    run_dir, variant = locate_source(model_path)
    root = Path(out_dir) if out_dir is not None else run_dir / "export"
    art_dir = root if variant == BASE_VARIANT else root / variant
    _check_writable(art_dir)
    source = dict(variant=variant, run_dir=run_dir, root=root, art_dir=art_dir,
                  info={"variant": variant, "path": _rel(model_path, run_dir), "sha256": file_sha256(model_path)})
    return model_path, meta, size_list, source


def _load_checked(model_path: Path, meta: ModelMeta):
    """The Keras model, refused when its input disagrees with its metadata's."""
    model = load_source(model_path, meta)
    want_in = (meta.height, meta.width, meta.channels)
    if tuple(model.input_shape[1:]) != want_in:
        raise ModelFileError(f"{model_path}: the model's input {tuple(model.input_shape[1:])} disagrees with "
                             f"meta.json's input_shape {meta.input_shape}")
    return model


def _export_sizes(model, meta: ModelMeta, size_list, specs, source: dict, frames: dict, gate: dict) -> list[ArtifactRecord]:
    """Every format at every size. Every size is rebuilt before anything is written: a size the model
    cannot take refuses the export."""
    sized = {size: sizes_mod.model_at_size(model, meta, *size) for size in size_list}
    records = []
    with tempfile.TemporaryDirectory(prefix="lunarseg-export-") as work:
        for (width, height), sized_model in sized.items():
            workdir = Path(work) / sizes_mod.size_tag(width, height)
            workdir.mkdir()
            records += _export_at_size(sized_model, meta, specs, width, height, source, frames, gate, workdir)
    return records


def _frames_at_size(meta: ModelMeta, native: ModelMeta, specs, frames: dict, qat: bool):
    """(calibration inputs or None, validation inputs, labels or None) at `meta`'s input size, normalised
    as the model's metadata says (the runtime's one definition)."""
    from lunarseg.runtime.preprocess import normalise

    resized = (meta.width, meta.height) != (native.width, native.height)
    calib_x = None
    if any(s.needs_calibration for s in specs):
        if not qat or frames["calib"] is not None or frames["data_dir"] is not None:
            calib_x = normalise(frames_mod.calibration_frames(
                meta, calib=frames["calib"], data_dir=frames["data_dir"], count=frames["calib_frames"],
                expected_hw=(native.height, native.width) if resized else None), meta)
    val = frames["val"]
    if val is not None and resized:
        val = frames_mod.resized_frames(val, meta.width, meta.height)
    x_u8, y_val, _ = frames_mod.validation_frames(meta, val=val, data_dir=frames["data_dir"],
                                                  max_frames=frames["val_frames"])
    return calib_x, normalise(x_u8, meta), y_val


def _export_at_size(sized, native: ModelMeta, specs, width: int, height: int, source: dict, frames: dict,
                    gate: dict, workdir: Path) -> list[ArtifactRecord]:
    """Every format of the model re-instantiated at width×height (`sized`), checked against it there."""
    qat = _is_qat(native)
    meta = sizes_mod.meta_at_size(native, width, height)
    calib_x, x_val, y_val = _frames_at_size(meta, native, specs, frames, qat)
    keras_probs = _keras_predict(sized, x_val)
    ctx = BuildContext(model=sized, meta=meta, calib=calib_x, io=gate["io"], qat=qat, workdir=workdir)
    records = []
    for spec in specs:
        out_path = source["art_dir"] / f"{sizes_mod.artifact_stem(spec.name, width, height, native)}{spec.suffix}"
        rec = _export_one(spec, ctx, out_path=out_path, run_dir=source["run_dir"], variant=source["variant"],
                          source_info=source["info"], x_val=x_val, y_val=y_val, keras_probs=keras_probs,
                          max_iou_drop=gate["max_iou_drop"], threads=gate["threads"])
        rec.input_size = sizes_mod.size_tag(width, height)
        records.append(rec)
    return records


def recorded_dataset(meta) -> str | None:
    """The dataset the model was trained on, when it is still there (said in a warning), else None."""
    recorded = (meta.extra or {}).get("data_dir") or ""
    if not recorded or not (Path(recorded) / "images").is_dir():
        return None
    warnings.warn(f"no --data given: calibrating and checking parity on the dataset recorded at training, {recorded}",
                  frames_mod.ExportWarning)
    return recorded


def export_run(run_dir, formats, data_dir=None, include_variants: bool = True, **kwargs) -> list[ArtifactRecord]:
    """Export the run's base model and (by default) every RUN/compressed/* variant; one manifest."""
    run_dir = Path(run_dir)
    records = export_model(run_dir, formats, data_dir=data_dir, **kwargs)
    if include_variants:
        from lunarseg.train.checkpoint import variant_dirs

        for vdir in variant_dirs(run_dir):
            records += export_model(vdir, formats, data_dir=data_dir, **kwargs)
    return records

