"""Frame size as an export axis: `--sizes 192x128,384x256`, the model re-instantiated at each size.

The U-Nets are fully convolutional, so the trained weights run at any input whose sides divide by
stem_stride·2**depth. Each size is parsed by the one `WIDTHxHEIGHT` parser (data/cli.py `parse_size`), checked
against the depth rule (train/config.py `check_input_size`) and an upper bound, and the model is
rebuilt at that size with the same weights: through `train.model.at_input_size` when the run's
training config describes it, else from the saved model's own config with a new Input shape.
Artifacts at the model's own size keep their plain names; other sizes carry `-WxH`.
"""
from __future__ import annotations

from lunarseg.runtime.errors import ConfigError, LunarsegError
from lunarseg.runtime.metadata import ModelMeta

__all__ = ["MAX_SIDE", "parse_sizes", "model_depth", "model_stem_stride", "size_pixels", "size_tag", "meta_at_size", "artifact_stem", "model_at_size"]

# Larger sides would mean gigabytes of float activations in the parity check (64 frames) and
# nothing an edge camera pipeline feeds a segmenter; 2048 covers 1920x1080 rounded up to 1920x1088.
MAX_SIDE = 2048
FLAG = "--sizes"


def size_tag(width: int, height: int) -> str:
    """'WxH', the form of sizes in file names, manifests and bench rows."""
    return f"{int(width)}x{int(height)}"


def size_pixels(tag: str) -> int:
    """W*H of a 'WxH' tag (0 for '' or anything else), to list sizes smallest first."""
    w, _, h = str(tag).partition("x")
    return int(w) * int(h) if w.isdigit() and h.isdigit() else 0


def _recorded(meta: ModelMeta, key: str) -> int | None:
    """A positive integer field of the run's training config (None when absent, as in imported models)."""
    value = (meta.train_config or {}).get(key)
    return int(value) if isinstance(value, int) and value > 0 else None


def model_depth(meta: ModelMeta) -> int | None:
    """Poolings of the model as its training config records them (None for imported models)."""
    return _recorded(meta, "depth")


def model_stem_stride(meta: ModelMeta) -> int:
    """The stride of the model's stem as its training config records it (1: none, or not recorded)."""
    return _recorded(meta, "stem_stride") or 1


def _one(text: str, depth: int | None, stem_stride: int) -> tuple[int, int]:
    from lunarseg.data.cli import parse_size
    from lunarseg.train.config import check_input_size

    width, height = parse_size(text.strip(), FLAG)
    if max(width, height) > MAX_SIDE:
        raise ConfigError(f"{FLAG} {text.strip()!r}: each side must be at most {MAX_SIDE} pixels")
    if depth is not None:
        try:
            check_input_size(width, height, depth, stem_stride)
        except ConfigError as exc:
            raise ConfigError(f"{FLAG} {text.strip()!r}: {exc}") from None
    return width, height


def parse_sizes(text, depth: int | None = None, stem_stride: int = 1) -> list[tuple[int, int]]:
    """[(width, height), ...] from 'WxH,WxH' (or a list of such strings / pairs), in the order given,
    duplicates dropped; None or '' → []. ConfigError names the flag and the rule broken; `depth`
    (when known) adds the rule that sides divide by stem_stride·2**depth."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return []
    items = text.split(",") if isinstance(text, str) else list(text)
    sizes: list[tuple[int, int]] = []
    for item in items:
        item = size_tag(*item) if isinstance(item, (tuple, list)) else str(item)
        if not item.strip():
            raise ConfigError(f"{FLAG} {text!r}: an empty entry; expected WIDTHxHEIGHT[,WIDTHxHEIGHT...]")
        size = _one(item, depth, stem_stride)
        if size not in sizes:
            sizes.append(size)
    return sizes


def meta_at_size(meta: ModelMeta, width: int, height: int) -> ModelMeta:
    """`meta` for the model run at width×height; the size it was built at is kept in extra."""
    if (width, height) == (meta.width, meta.height):
        return meta
    extra = dict(meta.extra)
    extra.setdefault("model_input_size", size_tag(meta.width, meta.height))
    return meta.replace(input_shape=[meta.input_shape[0], int(height), int(width), meta.channels], extra=extra)


def artifact_stem(format_name: str, width: int, height: int, meta: ModelMeta) -> str:
    """The file stem: the format name at the model's own size (today's names), else `-WxH` added."""
    if (width, height) == (meta.width, meta.height):
        return format_name
    return f"{format_name}-{size_tag(width, height)}"


# ---- the model at another size ---------------------------------------------------------------

def _from_train_config(model, meta: ModelMeta, width: int, height: int):
    """Via build_unet/at_input_size when the run's training config rebuilds this very model."""
    from lunarseg.train.config import ARCHITECTURES, TrainConfig
    from lunarseg.train.model import at_input_size

    tc = dict(meta.train_config or {})
    if tc.get("arch", "unet") not in ARCHITECTURES or "filters" not in tc or meta.extra.get("qat"):
        return None
    cfg = TrainConfig.from_dict({**tc, "width": width, "height": height, "crop_width": 0, "crop_height": 0})
    try:
        return at_input_size(model, cfg)
    except (ValueError, LunarsegError):  # another layout (a slimmed variant, an imported net): not this route
        return None


def _from_model_config(model, width: int, height: int):
    """The saved model's own config with the Input's batch shape changed, weights copied over."""
    import tf_keras as keras

    config = model.get_config()
    inputs = [layer for layer in config.get("layers", []) if layer.get("class_name") == "InputLayer"]
    if len(inputs) != 1:
        raise ConfigError(f"{FLAG}: {model.name} has {len(inputs)} inputs; only single-input models can be resized")
    shape = list(inputs[0]["config"].get("batch_input_shape") or inputs[0]["config"].get("batch_shape"))
    key = "batch_input_shape" if "batch_input_shape" in inputs[0]["config"] else "batch_shape"
    inputs[0]["config"][key] = [shape[0], int(height), int(width), shape[-1]]
    rebuilt = keras.Model.from_config(config)
    for layer in rebuilt.layers:
        _copy_layer_weights(model.get_layer(layer.name), layer)
    return rebuilt


def _copy_layer_weights(source, target) -> None:
    """Layer by layer, by position — or by variable name where the rebuilt layer has more variables
    (tfmot's QuantizeLayer, rebuilt from config, holds its range variables twice: both get the range)."""
    if len(source.weights) == len(target.weights):
        target.set_weights(source.get_weights())
        return
    by_name = {w.name.split("/")[-1]: w for w in source.weights}
    for var in target.weights:
        base = var.name.split("/")[-1]
        if base not in by_name:
            raise ValueError(f"layer {target.name}: variable {var.name} has no counterpart in the saved model")
        var.assign(by_name[base].numpy())


def model_at_size(model, meta: ModelMeta, width: int, height: int):
    """The same weights in a model whose input is width×height; ConfigError (one line) when the
    model cannot be rebuilt at that size (not fully convolutional, sides its poolings cannot halve)."""
    if (width, height) == (meta.width, meta.height):
        return model
    rebuilt = _from_train_config(model, meta, width, height)
    if rebuilt is None:
        try:
            if meta.extra.get("qat"):
                import tensorflow_model_optimization as tfmot

                with tfmot.quantization.keras.quantize_scope():
                    rebuilt = _from_model_config(model, width, height)
            else:
                rebuilt = _from_model_config(model, width, height)
        except LunarsegError:
            raise
        except Exception as exc:  # Keras says why in many ways; one line of it
            why = " ".join(str(exc).split())[:200]
            raise ConfigError(f"{FLAG} {size_tag(width, height)}: {model.name} cannot be re-instantiated at this "
                              f"size ({type(exc).__name__}: {why})") from None
    want = (height, width)
    got = tuple(rebuilt.output_shape[1:3])
    if got != want:
        raise ConfigError(f"{FLAG} {size_tag(width, height)}: {model.name} rebuilt at this size gives "
                          f"{got[1]}x{got[0]} masks, not {width}x{height}; it is not fully convolutional")
    return rebuilt
