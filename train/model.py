"""The U-Nets, in tf_keras (Keras 2, which tfmot needs), behind one `build_unet(cfg)` and the
`BUILDERS` registry keyed by `cfg.arch`:

- `unet`: two 3×3 convolutions per level (the classic U-Net).
- `ds-unet`: the efficient one for edge CPUs: depthwise-separable blocks (3×3 depthwise + 1×1
  pointwise, as in MobileNet) below the full-resolution level, about a sixth of the MACs per block
  at the same width; tfmot prunes and int8-quantizes both of its layer types.

Either takes `cfg.stem_stride` s > 1: a stride-s convolution stem, the body at 1/s of the input's
resolution, and a stride-s transposed convolution head that paints each position's s×s patch of
scores. No layer then works at full resolution, where 8-channel layers run CPU kernels badly (on
onnxruntime int8 the plain U-Net's top level is 73 % of its time). Measured on the budget demo's
scenes (benchmarks/RESULTS.md): s = 4 with 24 filters, int8, runs 8-10.6x faster on onnxruntime and
LiteRT than the 8-filter U-Net in Keras, and trains 2.2x faster, for 0.046-0.075 less test IoU at
equal training time (as many rocks found, coarser outlines).

Upsampling inside the body is UpSampling2D + Conv2D rather than Conv2DTranspose, because tfmot's
pruning-preserving QAT scheme rejects Conv2DTranspose; a stem model's head is the one exception.
"""
from __future__ import annotations

import tf_keras as keras

from lunarseg.runtime.errors import unknown_key
from lunarseg.train.config import ARCHITECTURES, TrainConfig

L = keras.layers


def _bn_relu(x, cfg: TrainConfig, name: str):
    if cfg.batchnorm:
        # momentum 0.9: short CPU runs take few steps, and 0.99 leaves inference statistics stale
        x = L.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return L.ReLU(name=f"{name}_relu")(x)


def _conv_block(x, filters: int, cfg: TrainConfig, name: str):
    """Two 3×3 convolutions, each with batch norm and ReLU."""
    for i in (1, 2):
        x = L.Conv2D(filters, 3, padding="same", use_bias=not cfg.batchnorm,
                     kernel_initializer="he_normal", name=f"{name}_conv{i}")(x)
        if cfg.batchnorm:
            x = L.BatchNormalization(momentum=0.9, name=f"{name}_bn{i}")(x)
        x = L.ReLU(name=f"{name}_relu{i}")(x)
    return x


def _separable_block(x, filters: int, cfg: TrainConfig, name: str):
    """Two depthwise-separable 3×3 convolutions (depthwise, BN, ReLU, pointwise, BN, ReLU)."""
    for i in (1, 2):
        x = L.DepthwiseConv2D(3, padding="same", use_bias=not cfg.batchnorm, name=f"{name}_dw{i}")(x)
        x = _bn_relu(x, cfg, f"{name}_dw{i}")
        x = L.Conv2D(filters, 1, use_bias=not cfg.batchnorm, kernel_initializer="he_normal", name=f"{name}_pw{i}")(x)
        x = _bn_relu(x, cfg, f"{name}_pw{i}")
    return x


def _stem(x, cfg: TrainConfig):
    """Stride-s convolution of kernel s: each s×s patch → `cfg.filters` features. Overlapping 2s
    windows, with a 2s head, gave no better val IoU in one measured run (0.546 against 0.564) at
    1.2x the MACs."""
    s = cfg.stem_stride
    x = L.Conv2D(cfg.filters, s, strides=s, padding="same", use_bias=not cfg.batchnorm,
                 kernel_initializer="he_normal", name="stem")(x)
    return _bn_relu(x, cfg, "stem")


def _head(x, cfg: TrainConfig):
    """Per-pixel class scores: a 1×1 convolution, or with a stem a transposed convolution of the
    stem's shape (kernel s, stride s), which paints each body position's s×s patch of scores."""
    activation = "sigmoid" if cfg.task == "binary" else "softmax"
    s = cfg.stem_stride
    if s == 1:
        return L.Conv2D(cfg.num_outputs, 1, activation=activation, name="mask")(x)
    return L.Conv2DTranspose(cfg.num_outputs, s, strides=s, padding="same", activation=activation,
                             name="mask")(x)


def _unet(cfg: TrainConfig, inputs, block_at):
    """The U-Net graph; `block_at(level)` picks the block for each level (depth = the bottleneck)."""
    x = _stem(inputs, cfg) if cfg.stem_stride > 1 else inputs
    skips = []
    for level in range(cfg.depth):
        x = block_at(level)(x, cfg.filters * 2**level, cfg, f"enc{level}")
        skips.append(x)
        x = L.MaxPooling2D(name=f"enc{level}_pool")(x)
    x = block_at(cfg.depth)(x, cfg.filters * 2**cfg.depth, cfg, "bottleneck")
    if cfg.dropout:
        x = L.Dropout(cfg.dropout, name="bottleneck_dropout")(x)
    for level in reversed(range(cfg.depth)):
        x = L.UpSampling2D(name=f"dec{level}_up")(x)
        x = L.Conv2D(cfg.filters * 2**level, 2, padding="same", activation="relu",
                     kernel_initializer="he_normal", name=f"dec{level}_upconv")(x)
        x = L.Concatenate(name=f"dec{level}_skip")([x, skips[level]])
        x = block_at(level)(x, cfg.filters * 2**level, cfg, f"dec{level}")
    return _head(x, cfg)


BUILDERS = {
    "unet": lambda level: _conv_block,
    # full convolutions at full resolution, where few channels make them cheap and the first layer
    # sees raw pixels; separable ones below
    "ds-unet": lambda level: _conv_block if level == 0 else _separable_block,
}
assert tuple(BUILDERS) == ARCHITECTURES, "train/config.py ARCHITECTURES must list BUILDERS' keys"


def build_unet(cfg: TrainConfig, any_size: bool = False) -> keras.Model:
    """`cfg.arch` U-Net of `cfg.depth` poolings, `cfg.filters` at the top level doubling per level;
    input `cfg.height`×`cfg.width`, or any size (a multiple of stem_stride·2**depth) with `any_size`,
    for training on crops."""
    cfg.validate()
    if cfg.arch not in BUILDERS:
        raise unknown_key("architecture", cfg.arch, BUILDERS)
    hw = (None, None) if any_size else (cfg.height, cfg.width)
    inputs = keras.Input((*hw, cfg.channels), name="image")
    outputs = _unet(cfg, inputs, BUILDERS[cfg.arch])
    prefix = "unet" if cfg.arch == "unet" else cfg.arch.replace("-", "")
    stem = f"_s{cfg.stem_stride}" if cfg.stem_stride > 1 else ""
    return keras.Model(inputs, outputs, name=f"{prefix}{stem}_d{cfg.depth}_f{cfg.filters}")


def at_input_size(model: keras.Model, cfg: TrainConfig) -> keras.Model:
    """The same weights in a model built for `cfg`'s fixed input size (what export and the runtime need)."""
    fixed = build_unet(cfg)
    fixed.set_weights(model.get_weights())
    return fixed


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one forward pass (Conv2D, Conv2DTranspose and DepthwiseConv2D layers,
    also inside tfmot's pruning or quantization wrappers; the rest is negligible)."""
    total = 0
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)  # tfmot wrappers hold the real layer in `.layer`
        if isinstance(inner, L.Conv2DTranspose):  # each input position scatters a k×k×cout patch
            _, h, w, cin = layer.input_shape
            kh, kw = inner.kernel_size
            total += h * w * cin * kh * kw * inner.filters
        elif isinstance(inner, L.DepthwiseConv2D):
            _, h, w, cout = layer.output_shape
            kh, kw = inner.kernel_size
            total += h * w * cout * kh * kw
        elif isinstance(inner, L.Conv2D):
            _, h, w, cout = layer.output_shape
            kh, kw = inner.kernel_size
            cin = layer.input_shape[-1]
            total += h * w * cout * kh * kw * cin
    return int(total)
