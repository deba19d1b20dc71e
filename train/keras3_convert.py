"""Keras 3 → tf_keras: rebuild a Keras 3 functional (or sequential) model layer by layer in tf_keras,
which tfmot needs, copy the weights and check the two give the same outputs.

Only the layers a segmentation U-Net uses are converted (CONVERTERS: class name → the config keys
tf_keras takes over as they are); anything else is refused by name. Initialisers, regularisers and
constraints are dropped: the weights are copied, and fine-tuning does not regularise.
"""
from __future__ import annotations

import numpy as np

from lunarseg.runtime.errors import ConfigError

# Equal outputs on random inputs: the largest absolute difference allowed.
MAX_ABS_DIFF = 1e-5
ACTIVATIONS = ("linear", "relu", "relu6", "sigmoid", "softmax", "tanh", "elu", "selu", "swish", "silu",
               "gelu", "hard_sigmoid", "leaky_relu", "softplus")

_CONV = ("filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate", "activation", "use_bias")
_POOL = ("pool_size", "strides", "padding", "data_format")
CONVERTERS: dict[str, tuple[str, ...]] = {
    "Conv2D": (*_CONV, "groups"),
    "Conv2DTranspose": (*_CONV, "output_padding"),
    "DepthwiseConv2D": ("kernel_size", "strides", "padding", "data_format", "dilation_rate", "activation",
                        "use_bias", "depth_multiplier"),
    "SeparableConv2D": (*_CONV, "depth_multiplier"),
    "BatchNormalization": ("axis", "momentum", "epsilon", "center", "scale"),
    "Activation": ("activation",),
    "ReLU": ("max_value", "negative_slope", "threshold"),
    "LeakyReLU": (),  # Keras 3 calls alpha negative_slope (mapped below)
    "Softmax": ("axis",),
    "MaxPooling2D": _POOL,
    "AveragePooling2D": _POOL,
    "UpSampling2D": ("size", "data_format", "interpolation"),
    "Concatenate": ("axis",),
    "Add": (),
    "Multiply": (),
    "Dropout": ("rate",),
    "SpatialDropout2D": ("rate",),
    "ZeroPadding2D": ("padding", "data_format"),
    "Cropping2D": ("cropping", "data_format"),
    "Resizing": ("height", "width", "interpolation", "crop_to_aspect_ratio"),
    "Rescaling": ("scale", "offset"),
}


def _tf_keras_config(class_name: str, name: str, config: dict) -> dict:
    """The tf_keras config of one Keras 3 layer, or a refusal naming it."""
    if class_name not in CONVERTERS:
        raise ConfigError(f"Keras 3 layer {name!r} ({class_name}) cannot be converted to tf_keras; convertible: "
                          f"{', '.join(sorted(CONVERTERS))}")
    out = {k: config[k] for k in CONVERTERS[class_name] if k in config}
    if class_name == "LeakyReLU":
        out["alpha"] = config.get("negative_slope", config.get("alpha", 0.3))
    activation = out.get("activation")
    if activation is not None and not (isinstance(activation, str) and activation in ACTIVATIONS):
        raise ConfigError(f"Keras 3 layer {name!r} ({class_name}) uses activation {activation!r}, which cannot be "
                          f"converted; known: {', '.join(ACTIVATIONS)}")
    return {**out, "name": name}


def _history(arg) -> list[str]:
    """Names of the layers whose outputs a Keras 3 node argument holds (nested lists allowed)."""
    if isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__":
        name, node, index = arg["config"]["keras_history"]
        if node != 0 or index != 0:
            raise ConfigError(f"Keras 3 graph reuses layer {name!r} (node {node}, output {index}); shared layers "
                              "cannot be converted")
        return [name]
    if isinstance(arg, (list, tuple)):
        return [n for a in arg for n in _history(a)]
    return []


def _functional_layers(config: dict) -> list[tuple[dict, list[str], bool]]:
    """(layer entry, inbound layer names, inputs given as a list) for a functional or sequential config."""
    layers = config["layers"]
    if all("inbound_nodes" in entry for entry in layers):
        rows = []
        for entry in layers:
            nodes = entry["inbound_nodes"]
            if len(nodes) > 1:
                raise ConfigError(f"Keras 3 layer {entry['name']!r} is called {len(nodes)} times; shared layers cannot be converted")
            args = nodes[0]["args"] if nodes else []
            as_list = bool(args) and isinstance(args[0], (list, tuple))
            rows.append((entry, _history(args), as_list))
        return rows
    rows, previous = [], None
    for entry in layers:  # Sequential: each layer reads the previous one
        entry = {**entry, "name": entry.get("name") or entry["config"]["name"]}
        rows.append((entry, [previous] if previous else [], False))
        previous = entry["name"]
    return rows


def rebuild(k3_model):
    """The tf_keras model with the graph and weights of Keras 3 `k3_model` (not yet checked)."""
    import tf_keras as keras

    config = k3_model.get_config()
    if "layers" not in config:
        raise ConfigError(f"Keras 3 model {k3_model.name!r} is a subclassed model ({type(k3_model).__name__}); only "
                          "functional and sequential models can be converted")
    tensors, inputs = {}, []
    for entry, inbound, as_list in _functional_layers(config):
        class_name, name = entry["class_name"], entry["name"]
        if class_name == "InputLayer":
            shape = entry["config"].get("batch_shape") or entry["config"].get("batch_input_shape")
            tensors[name] = keras.Input(batch_shape=tuple(shape), name=name)
            inputs.append(tensors[name])
            continue
        if class_name in ("Functional", "Sequential", "Model"):
            raise ConfigError(f"Keras 3 layer {name!r} is a nested model ({class_name}); flatten it before importing")
        if not inbound:
            raise ConfigError("Keras 3 sequential model has no input shape; build it with keras.Input first")
        layer_config = _tf_keras_config(class_name, name, entry["config"])  # refuses what is not in CONVERTERS
        layer = getattr(keras.layers, class_name).from_config(layer_config)
        args = [tensors[n] for n in inbound]
        tensors[name] = layer(args if as_list or len(args) > 1 else args[0])
        layer.set_weights(k3_model.get_layer(name).get_weights())
    ends = config.get("output_layers") or [[name, 0, 0]]
    ends = [ends] if isinstance(ends[0], str) else ends  # one output is saved as [name, 0, 0]
    outputs = [tensors[o[0]] for o in ends]
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs if len(outputs) > 1 else outputs[0],
                       name=k3_model.name)


def max_output_difference(k3_model, tk_model, seed: int = 0, frames: int = 2) -> float:
    """Largest |Keras 3 − tf_keras| output on random inputs in [0, 1] (fixed input sizes; 64 for free
    ones), over every input and output (the importer refuses more than one of each afterwards)."""
    rng = np.random.default_rng(seed)
    xs = [rng.random([frames] + [d or 64 for d in t.shape[1:]], dtype=np.float32) for t in tk_model.inputs]
    x = xs if len(xs) > 1 else xs[0]
    a, b = k3_model(x, training=False), tk_model(x, training=False)
    pairs = zip(a, b) if isinstance(a, (list, tuple)) else [(a, b)]
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in pairs)


def convert(k3_model) -> tuple[object, float]:
    """(tf_keras model, max abs output difference): rebuilt, weights copied, outputs checked equal."""
    tk_model = rebuild(k3_model)
    diff = max_output_difference(k3_model, tk_model)
    if not diff <= MAX_ABS_DIFF:
        raise ConfigError(f"Keras 3 → tf_keras conversion changed the outputs (max abs difference {diff:.3g} > "
                          f"{MAX_ABS_DIFF}); not importing it")
    return tk_model, diff
