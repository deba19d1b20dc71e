"""Weight clustering (tfmot): every convolution kernel keeps at most N distinct weight values, so
the int8 kernels made from them hold at most N distinct bytes per channel and gzip well. Applied
after pruning with the zeros preserved (tfmot's sparsity-aware clustering): the middle step of
tfmot's prune → cluster → quantize "collaborative optimization" pipeline."""
from __future__ import annotations

import numpy as np
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from tensorflow_model_optimization.python.core.clustering.keras import cluster_wrapper

from lunarseg.runtime.errors import ConfigError

MIN_CLUSTERS, MAX_CLUSTERS = 2, 256


def clusterable_layers(model, clusters: int, keep_dense: set[str]) -> list[str]:
    """Convolutions to cluster: those not kept dense and with more weights per output channel than
    clusters (tfmot skips smaller ones; clustering would not reduce them)."""
    return [layer.name for layer in model.layers
            if isinstance(layer, keras.layers.Conv2D) and layer.name not in keep_dense
            and int(np.prod(layer.kernel.shape[:-1])) > clusters]


def apply_clustering(model, clusters: int, preserve_sparsity: bool, keep_dense: set[str]):
    """Wrap the clusterable convolutions: k-means++ centroids per kernel, the zero weights kept at
    zero if asked. Per kernel rather than tfmot's per-channel mode: that one loops over channels in
    Python inside every call, and on the demo U-Net (~1,700 channels) its first training step had not
    started after 8 minutes of graph building. Per-kernel clusters still bound every channel: batch
    norm folding and per-channel int8 scale each channel as a whole, which keeps ≤ N values in it."""
    names = set(clusterable_layers(model, clusters, keep_dense))
    if not names:
        raise ConfigError(f"model {model.name!r} has no convolution to cluster")

    def wrap(layer):
        if layer.name not in names:
            return layer
        # The wrapper directly: tfmot's own size check counts channels by the last trainable weight,
        # which for a bias-free convolution (ours: batch norm follows) is the kernel, so it would
        # refuse every such layer as "not enough weights" (tfmot 0.8.1).
        return cluster_wrapper.ClusterWeights(
            layer, clusters, tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS,
            preserve_sparsity, False)

    return keras.models.clone_model(model, clone_function=wrap)


def strip_clustering(model):
    """A plain model whose kernels hold the clustered values."""
    return tfmot.clustering.keras.strip_clustering(model)


def max_distinct_per_channel(model, names: list[str] | None = None) -> int:
    """The largest number of distinct non-zero values in one output channel of any convolution kernel
    (`names` restricts the layers); the quantity clustering bounds."""
    worst = 0
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Conv2D) or (names is not None and layer.name not in names):
            continue
        kernel = np.asarray(layer.kernel).reshape(-1, layer.kernel.shape[-1])
        for c in range(kernel.shape[1]):
            col = kernel[:, c]
            worst = max(worst, len(np.unique(col[col != 0])))
    return worst
