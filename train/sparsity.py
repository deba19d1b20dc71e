"""Measure weight sparsity of a Keras model: the fraction of exact zeros in prunable kernels."""
from __future__ import annotations

import numpy as np


def kernel_sparsity(model) -> dict:
    """{'overall': f, 'layers': {name: f}, 'zeros': n, 'weights': n} over Conv2D/Dense kernels.

    Works on plain models and on QAT models (the kernel is found inside the quantize wrapper).
    """
    layers, zeros, total = {}, 0, 0
    for layer in model.layers:
        kernel = _kernel_of(layer)
        if kernel is None:
            continue
        w = np.asarray(kernel)
        z = int((w == 0).sum())
        layers[layer.name] = round(z / w.size, 4)
        zeros += z
        total += w.size
    return {"overall": round(zeros / total, 4) if total else 0.0, "layers": layers, "zeros": zeros, "weights": total}


def _kernel_of(layer):
    """The kernel variable's values; wrappers (pruning, QAT) hold it among their own weights."""
    for weight in layer.weights:
        if weight.name.split("/")[-1].startswith("kernel") and len(weight.shape) >= 2:
            return weight.numpy()
    return None
