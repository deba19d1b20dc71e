"""lunarseg.export: TFLite and ONNX exports with embedded metadata, checked through the runtime.

    from lunarseg.export import export_model, export_run
    records = export_model("runs/a", ["tflite-fp32", "onnx-int8"], data_dir="data/synth")
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from lunarseg.export.formats import FORMAT_NAMES, FORMATS, FormatSpec, resolve_formats  # noqa: E402
from lunarseg.export.exporter import ArtifactRecord, export_model, export_run  # noqa: E402
from lunarseg.export.parity import IoUDropError, ParityError  # noqa: E402
from lunarseg.export.context import ConversionError  # noqa: E402

__all__ = ["export_model", "export_run", "ArtifactRecord", "FORMATS", "FORMAT_NAMES", "FormatSpec",
           "resolve_formats", "ParityError", "IoUDropError", "ConversionError"]
