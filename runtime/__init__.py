"""lunarseg.runtime: the bottom layer — decode frames, run an exported model, post-process, score.

Imports nothing from train/export/benchmarks and never TensorFlow, Keras or tfmot, so it runs on a
rover board with numpy, Pillow and onnxruntime or ai-edge-litert.

`Segmenter` and `SegmentResult` are loaded on first use (engines are imported later still, by the
backend that needs them), so `import lunarseg.runtime` stays cheap.
"""
from __future__ import annotations

__all__ = ["Segmenter", "SegmentResult"]


def __getattr__(name: str):
    if name in __all__:
        from lunarseg.runtime import segmenter

        return getattr(segmenter, name)
    raise AttributeError(f"module 'lunarseg.runtime' has no attribute {name!r}")
