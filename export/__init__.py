"""lunarseg.export: TFLite and ONNX exports with embedded metadata, checked through the runtime."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
