"""lunarseg.runtime: the bottom layer — decode frames, run an exported model, post-process, score.

Imports nothing from train/export/benchmarks and never TensorFlow, Keras or tfmot, so it runs on a
rover board with numpy, Pillow and onnxruntime or ai-edge-litert.
"""
