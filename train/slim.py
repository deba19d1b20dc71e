"""Structured channel pruning ("slimming"): a narrower U-Net that keeps, in every convolution, the
output channels that matter most in the trained one.

Unstructured zeros do not make XNNPACK or onnxruntime faster (measured: 50 % sparse 25.4 ms vs dense
23.1 ms); fewer channels do — width 0.5 leaves a quarter of the multiply-accumulates. A channel's
importance is |gamma| of the batch norm that follows its convolution (network slimming, Liu et al.
2017), or the L1 norm of its kernel when no batch norm follows (Li et al. 2017). The kept indices
flow through the graph — batch norms, activations, pooling, upsampling and the skip concatenations —
so every kernel is sliced on its input and output channels consistently. The head keeps every class.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tf_keras as keras

from lunarseg.runtime.errors import ConfigError
from lunarseg.train.config import TrainConfig
from lunarseg.train.model import build_unet

L = keras.layers
PASS_THROUGH = (L.ReLU, L.MaxPooling2D, L.UpSampling2D, L.Dropout, L.Activation)


def slim_filters(filters: int, width: float) -> int:
    """Base filters of the slimmed model (at least 1)."""
    if not 0.0 < width <= 1.0:
        raise ConfigError(f"width must be in (0, 1], got {width}")
    return max(1, int(round(filters * width)))


def _inbound(layer) -> list:
    inbound = layer._inbound_nodes[0].inbound_layers  # noqa: SLF001 - the functional graph's own record
    return list(inbound) if isinstance(inbound, (list, tuple)) else [inbound]


def _consumers(model: keras.Model) -> dict[str, list]:
    users: dict[str, list] = {}
    for layer in model.layers:
        if isinstance(layer, L.InputLayer):
            continue
        for src in _inbound(layer):
            users.setdefault(src.name, []).append(layer)
    return users


def channel_importance(conv, users: list) -> np.ndarray:
    """|gamma| of the batch norm that alone consumes `conv`, else the L1 norm of each output kernel."""
    if len(users) == 1 and isinstance(users[0], L.BatchNormalization):
        return np.abs(users[0].gamma.numpy())
    out_axis = 2 if isinstance(conv, L.Conv2DTranspose) else 3  # kernels: (kh, kw, out, in) / (kh, kw, in, out)
    return np.abs(conv.kernel.numpy()).sum(axis=tuple(a for a in range(4) if a != out_axis))


HANDLED = (L.InputLayer, L.Conv2D, L.Conv2DTranspose, L.DepthwiseConv2D, L.BatchNormalization, L.Concatenate, *PASS_THROUGH)


def slim_check(model: keras.Model, cfg: TrainConfig | None) -> None:
    """Refuse, naming the layer, a graph the slimmer does not understand: it rebuilds the narrow model
    with build_unet(cfg), so it handles lunarseg's own U-Nets and their layer types only."""
    for layer in model.layers:
        if type(layer) not in HANDLED:  # exact types: a subclass of a handled layer may slice differently
            raise ConfigError(f"channel slimming does not know layer {layer.name!r} ({type(layer).__name__}); it handles "
                              "lunarseg's U-Nets (Conv2D, Conv2DTranspose, DepthwiseConv2D, BatchNormalization, ReLU, "
                              "pooling, upsampling, "
                              "dropout, concatenation); prune or cluster this model instead")
    if cfg is None:
        raise ConfigError(f"channel slimming rebuilds lunarseg's own U-Net from the run's train_config, and model "
                          f"{model.name!r} was imported (meta.json has none); prune or cluster it instead")
    built = {layer.name: type(layer) for layer in build_unet(cfg).layers}
    for layer in model.layers:
        if not isinstance(layer, L.InputLayer) and built.get(layer.name) is not type(layer):
            raise ConfigError(f"channel slimming: layer {layer.name!r} ({type(layer).__name__}) is not in the U-Net "
                              "its train_config describes; prune or cluster this model instead")


def slim_unet(model: keras.Model, cfg: TrainConfig, width: float) -> tuple[keras.Model, TrainConfig]:
    """(narrow model initialised from `model`, its config) keeping `width` of every layer's channels."""
    slim_check(model, cfg)
    new_cfg = dataclasses.replace(cfg, filters=slim_filters(cfg.filters, width))
    slim = build_unet(new_cfg)
    users = _consumers(model)
    keep: dict[str, np.ndarray] = {}
    for layer in model.layers:
        name = layer.name
        if isinstance(layer, L.InputLayer):
            keep[name] = np.arange(layer.output_shape[0][-1] if isinstance(layer.output_shape, list) else layer.output_shape[-1])
            continue
        src = _inbound(layer)
        target = slim.get_layer(name)
        if isinstance(layer, L.DepthwiseConv2D):  # one kernel per channel: keeps its input's channels
            idx = keep[src[0].name]
            weights = [layer.depthwise_kernel.numpy()[:, :, idx, :]]
            if layer.use_bias:
                weights.append(layer.bias.numpy()[idx])
            target.set_weights(weights)
            keep[name] = idx
        elif isinstance(layer, L.Conv2D):  # Conv2DTranspose too: its kernel is (kh, kw, out, in)
            cin = keep[src[0].name]
            n_out = target.filters
            if n_out >= layer.filters:
                cout = np.arange(layer.filters)
            else:
                order = np.argsort(-channel_importance(layer, users.get(name, [])), kind="stable")
                cout = np.sort(order[:n_out])
            kernel = layer.kernel.numpy()
            if isinstance(layer, L.Conv2DTranspose):
                weights = [kernel[:, :, :, cin][:, :, cout]]
            else:
                weights = [kernel[:, :, cin][..., cout]]
            if layer.use_bias:
                weights.append(layer.bias.numpy()[cout])
            target.set_weights(weights)
            keep[name] = cout
        elif isinstance(layer, L.BatchNormalization):
            idx = keep[src[0].name]
            target.set_weights([w[idx] for w in layer.get_weights()])
            keep[name] = idx
        elif isinstance(layer, L.Concatenate):
            parts, offset = [], 0
            for s in src:
                parts.append(keep[s.name] + offset)
                offset += s.output_shape[-1]
            keep[name] = np.concatenate(parts)
        elif isinstance(layer, PASS_THROUGH):
            keep[name] = keep[src[0].name]
        else:
            raise ConfigError(f"channel slimming does not know layer {name!r} ({type(layer).__name__}); "
                              "it handles the lunarseg U-Nets' Conv2D, Conv2DTranspose, DepthwiseConv2D, BatchNormalization, ReLU, pooling, "
                              "upsampling, dropout and concatenation")
    return slim, new_cfg


def recalibrate_batchnorm(model: keras.Model, x: np.ndarray, batch_size: int = 16) -> int:
    """Re-estimate every batch norm's moving mean and variance on `x` (model-ready floats).

    Slimming removes half of each convolution's inputs, so the statistics the trained model kept no
    longer describe the activations. Fine-tuning trains with batch statistics, but inference uses the
    moving ones, which follow at the layer's momentum (0.9 in train/model.py, about 10 steps; 0.99,
    about 100, in many imported models). Measured on the demo model without
    this step: slim50's val IoU stayed 0 for 12 epochs and its logits stayed near 0, too close for int8
    to resolve. Running averages over the data from the start fix the statistics (BN recalibration).
    Returns the number of batches used.
    """
    bns = [layer for layer in model.layers if isinstance(layer, L.BatchNormalization)]
    if not bns or not len(x):
        return 0
    momenta = [bn.momentum for bn in bns]
    batches = [x[i:i + batch_size] for i in range(0, len(x), batch_size)]
    try:
        for k, batch in enumerate(batches):
            for bn in bns:  # moving = k/(k+1)·moving + 1/(k+1)·batch: the mean over the batches so far
                bn.momentum = k / (k + 1)
            model(batch, training=True)
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m
    return len(batches)
