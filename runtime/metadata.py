"""The metadata every lunarseg model carries, and how it is stored in each file format.

A `.keras` model has `meta.json` beside it; a `.onnx` file holds it in `metadata_props` under the
key `lunarseg`; a `.tflite` file holds it as a flatbuffer Metadata entry named `lunarseg`. The
runtime needs nothing but the model file.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path

from lunarseg.runtime.errors import ModelFileError

SCHEMA_VERSION = 1
METADATA_KEY = "lunarseg"
QUANTIZATION_MODES = ("none", "fp16", "dynamic", "int8")
# The variant name of the dense control: the trained model fine-tuned as long as the compressed
# variants, nothing removed (made by train/compress.py, compared against in benchmarks/bench.py).
CONTROL_VARIANT = "dense-ft"


@dataclass
class ModelMeta:
    """What a model needs around it to turn a camera frame into a mask."""

    task: str = "binary"
    class_names: list[str] = field(default_factory=lambda: ["background", "rock"])
    input_shape: list[int] = field(default_factory=lambda: [1, 256, 256, 1])  # NHWC
    colour_mode: str = "gray"  # "gray" | "rgb"
    # model input = pixel (0–255) * scale + offset
    normalisation: dict = field(default_factory=lambda: {"scale": 1.0 / 255.0, "offset": 0.0})
    output_activation: str = "sigmoid"  # "sigmoid" (binary) | "softmax" (4-class)
    threshold: float = 0.5
    quantization: dict = field(default_factory=lambda: {"mode": "none"})
    sparsity: float = 0.0
    train_config: dict = field(default_factory=dict)
    val_metrics: dict = field(default_factory=dict)
    parent_hash: str = ""
    format: str = "keras"
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    extra: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def height(self) -> int:
        return int(self.input_shape[1])

    @property
    def width(self) -> int:
        return int(self.input_shape[2])

    @property
    def channels(self) -> int:
        return int(self.input_shape[3])

    @property
    def trained_hash(self) -> str:
        """sha256 of the trained model this one descends from: a compressed variant's parent (recorded
        by compress), else the model it was exported from (`parent_hash`); '' when unknown."""
        compress = self.extra.get("compress")
        return (compress.get("parent_hash") if isinstance(compress, dict) else None) or self.parent_hash

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=str)

    def replace(self, **changes) -> "ModelMeta":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict, source: str = "<metadata>") -> "ModelMeta":
        if not isinstance(data, dict):
            raise ModelFileError(f"{source}: lunarseg metadata is not a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ModelFileError(f"{source}: metadata schema version {version!r} is not supported (expected {SCHEMA_VERSION})")
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [k for k in ("task", "class_names", "input_shape", "colour_mode", "normalisation",
                               "output_activation", "threshold") if k not in data]
        if missing:
            raise ModelFileError(f"{source}: metadata lacks {', '.join(missing)}")
        meta = cls(**{k: v for k, v in data.items() if k in known})
        meta.validate(source)
        return meta

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "<metadata>") -> "ModelMeta":
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelFileError(f"{source}: lunarseg metadata is not valid JSON ({exc})") from None
        return cls.from_dict(data, source)

    def validate(self, source: str = "<metadata>") -> None:
        shape = self.input_shape
        if not (isinstance(shape, (list, tuple)) and len(shape) == 4 and all(isinstance(d, int) for d in shape[1:])):
            raise ModelFileError(f"{source}: input_shape must be NHWC [N, H, W, C], got {shape!r}")
        if self.colour_mode not in ("gray", "rgb") or self.channels != (1 if self.colour_mode == "gray" else 3):
            raise ModelFileError(f"{source}: colour_mode {self.colour_mode!r} does not match {self.channels} input channels")
        if self.output_activation not in ("sigmoid", "softmax"):
            raise ModelFileError(f"{source}: unknown output_activation {self.output_activation!r}")
        if self.quantization.get("mode", "none") not in QUANTIZATION_MODES:
            raise ModelFileError(f"{source}: unknown quantization mode {self.quantization.get('mode')!r}")


# ---- TFLite: a flatbuffer Metadata entry pointing at a buffer that holds the JSON ----------------

def _tflite_schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelFileError("reading .tflite files needs ai-edge-litert (pip install 'lunarseg[runtime-litert]')") from exc
    return schema


def embed_tflite_metadata(model_bytes: bytes, meta: ModelMeta) -> bytes:
    """Return the TFLite flatbuffer with `meta` stored (replacing any earlier lunarseg entry)."""
    import flatbuffers
    import numpy as np

    schema = _tflite_schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_bytes, 0))
    payload = np.frombuffer(meta.to_json().encode("utf-8"), dtype=np.uint8)
    model.metadata = [m for m in (model.metadata or []) if m.name not in (METADATA_KEY, METADATA_KEY.encode())]
    buf = schema.BufferT()
    buf.data = payload
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = METADATA_KEY
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    builder = flatbuffers.Builder(len(model_bytes) + len(payload) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_tflite_metadata(model_bytes: bytes, source: str = "<tflite>") -> ModelMeta:
    schema = _tflite_schema()
    if len(model_bytes) < 8 or model_bytes[4:8] != b"TFL3":
        raise ModelFileError(f"{source}: not a TFLite flatbuffer (missing TFL3 identifier)")
    try:
        model = schema.Model.GetRootAsModel(model_bytes, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if entry.Name() == METADATA_KEY.encode():
                data = model.Buffers(entry.Buffer()).DataAsNumpy()
                return ModelMeta.from_json(bytes(data), source)
    except ModelFileError:
        raise
    except Exception as exc:  # a damaged flatbuffer raises anything from IndexError to struct.error
        raise ModelFileError(f"{source}: corrupt TFLite file ({type(exc).__name__})") from None
    raise ModelFileError(f"{source}: TFLite file carries no lunarseg metadata; export it with `lunarseg export`")


def read_onnx_metadata_map(custom_map: dict, source: str = "<onnx>") -> ModelMeta:
    """Parse the metadata from an ONNX model's custom metadata map (as onnxruntime returns it)."""
    if METADATA_KEY not in custom_map:
        raise ModelFileError(f"{source}: ONNX file carries no lunarseg metadata; export it with `lunarseg export`")
    return ModelMeta.from_json(custom_map[METADATA_KEY], source)


def meta_json_path(model_path: str | Path) -> Path:
    """`meta.json` beside a Keras model file."""
    return Path(model_path).with_name("meta.json")


def read_keras_meta(model_path: str | Path) -> ModelMeta:
    path = meta_json_path(model_path)
    if not path.exists():
        raise ModelFileError(f"{model_path}: no meta.json beside it; not a lunarseg model")
    return ModelMeta.from_json(path.read_text(), str(path))
