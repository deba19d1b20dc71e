"""The U-Net: encoder/decoder with skip connections, in tf_keras (Keras 2, which tfmot needs).

Upsampling is UpSampling2D + Conv2D rather than Conv2DTranspose, because tfmot's 8-bit QAT scheme
rejects Conv2DTranspose.
"""
from __future__ import annotations

import tf_keras as keras

from lunarseg.train.config import TrainConfig

L = keras.layers


def _conv_block(x, filters: int, cfg: TrainConfig, name: str):
    for i in (1, 2):
        x = L.Conv2D(filters, 3, padding="same", use_bias=not cfg.batchnorm,
                     kernel_initializer="he_normal", name=f"{name}_conv{i}")(x)
        if cfg.batchnorm:
            # momentum 0.9: short CPU runs take few steps, and 0.99 leaves inference statistics stale
            x = L.BatchNormalization(momentum=0.9, name=f"{name}_bn{i}")(x)
        x = L.ReLU(name=f"{name}_relu{i}")(x)
    return x


def build_unet(cfg: TrainConfig) -> keras.Model:
    """U-Net of `cfg.depth` poolings, `cfg.filters` at the top level doubling per level."""
    cfg.validate()
    inputs = keras.Input((cfg.height, cfg.width, cfg.channels), name="image")
    x, skips = inputs, []
    for level in range(cfg.depth):
        x = _conv_block(x, cfg.filters * 2**level, cfg, f"enc{level}")
        skips.append(x)
        x = L.MaxPooling2D(name=f"enc{level}_pool")(x)
    x = _conv_block(x, cfg.filters * 2**cfg.depth, cfg, "bottleneck")
    if cfg.dropout:
        x = L.Dropout(cfg.dropout, name="bottleneck_dropout")(x)
    for level in reversed(range(cfg.depth)):
        x = L.UpSampling2D(name=f"dec{level}_up")(x)
        x = L.Conv2D(cfg.filters * 2**level, 2, padding="same", activation="relu",
                     kernel_initializer="he_normal", name=f"dec{level}_upconv")(x)
        x = L.Concatenate(name=f"dec{level}_skip")([x, skips[level]])
        x = _conv_block(x, cfg.filters * 2**level, cfg, f"dec{level}")
    activation = "sigmoid" if cfg.task == "binary" else "softmax"
    outputs = L.Conv2D(cfg.num_outputs, 1, activation=activation, name="mask")(x)
    return keras.Model(inputs, outputs, name=f"unet_d{cfg.depth}_f{cfg.filters}")


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one forward pass (Conv2D layers, also inside tfmot's pruning or
    quantization wrappers; the rest is negligible)."""
    total = 0
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)  # tfmot wrappers hold the real layer in `.layer`
        if isinstance(inner, L.Conv2D):
            _, h, w, cout = layer.output_shape
            kh, kw = inner.kernel_size
            cin = layer.input_shape[-1]
            total += h * w * cout * kh * kw * cin
    return int(total)
