"""Tiny test models for the runtime tests, built with tf_keras and exported to ONNX / TFLite.

TensorFlow is imported only inside `build_models`, which the tests run in a *subprocess*
(`python tests/runtime_models.py OUTDIR`) so the pytest process itself never loads TensorFlow.
`models()` builds the whole set once per pytest process (cached) and returns {name: path}.

The set:
  bin.onnx, bin.tflite, bin_int8.tflite   32×32 gray, sigmoid (binary)
  cls4.onnx, cls4.tflite                  32×32 RGB, softmax 4-class
  nometa.onnx, nometa.tflite              the binary model without lunarseg metadata
  badshape.onnx, badshape.tflite          metadata claiming 48×48 input for the 32×32 model
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

H = W = 32
NAMES = ("bin.onnx", "bin.tflite", "bin_int8.tflite", "cls4.onnx", "cls4.tflite",
         "nometa.onnx", "nometa.tflite", "badshape.onnx", "badshape.tflite")


# Stand-ins for the sha256 of the Keras model each kind's files are exported from (export records it as
# parent_hash; bench pairs an artifact with its float reference by it).
MODEL_HASH = {"bin": "b1" * 32, "cls4": "c4" * 32}


def meta_for(kind: str, fmt: str, quant: str = "none"):
    from lunarseg.runtime.metadata import ModelMeta

    if kind == "bin":
        return ModelMeta(task="binary", class_names=["background", "rock"], input_shape=[1, H, W, 1],
                         colour_mode="gray", output_activation="sigmoid", format=fmt,
                         quantization={"mode": quant}, parent_hash=MODEL_HASH[kind])
    return ModelMeta(task="4class", class_names=["background", "sky", "small_rock", "large_rock"],
                     input_shape=[1, H, W, 3], colour_mode="rgb", output_activation="softmax",
                     format=fmt, quantization={"mode": quant}, parent_hash=MODEL_HASH[kind])


def build_unet(channels: int, classes: int, filters: int = 4, seed: int = 0):
    """A depth-2 U-Net-ish net: conv-pool-conv-up-concat-conv, then a 1×1 head over the features and
    the input itself (weights set so brightness drives the classes: masks are not all one class);
    sigmoid head (classes == 1) or softmax (classes > 1)."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    import tf_keras as keras

    tf.random.set_seed(seed)
    L = keras.layers
    inp = keras.Input((H, W, channels), name="image")
    c1 = L.Conv2D(filters, 3, padding="same", activation="relu")(inp)
    p1 = L.MaxPooling2D()(c1)
    c2 = L.Conv2D(filters * 2, 3, padding="same", activation="relu")(p1)
    u1 = L.UpSampling2D()(c2)
    m = L.Concatenate()([u1, c1])
    c3 = L.Conv2D(filters, 3, padding="same", activation="relu")(m)
    act = "sigmoid" if classes == 1 else "softmax"
    head = L.Conv2D(classes, 1, activation=act)
    out = head(L.Concatenate()([c3, inp]))  # the input feeds the head: bright pixels read as rock
    model = keras.Model(inp, out)
    import numpy as np

    kernel, bias = head.get_weights()
    kernel[0, 0, filters:, :] = np.array([8.0] if classes == 1 else [-6.0, 0.0, 3.0, 7.0]) / channels
    bias[:] = [-4.0] if classes == 1 else [3.0, 0.5, -1.0, -4.0]
    head.set_weights([kernel, bias])
    return model


def onnx_bytes(model, channels: int) -> "object":
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((1, H, W, channels), tf.float32, name="image"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    return proto


def save_onnx(proto, meta, path: Path) -> None:
    import onnx

    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    del proto.metadata_props[:]
    if meta is not None:
        entry = proto.metadata_props.add()
        entry.key, entry.value = "lunarseg", meta.to_json()
    path.write_bytes(proto.SerializeToString())


def tflite_bytes(model, channels: int, int8: bool = False) -> bytes:
    import numpy as np
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(0)

        def rep():
            for _ in range(16):
                yield [rng.random((1, H, W, channels), dtype=np.float32)]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
    return conv.convert()


def build_models(out_dir: str | Path) -> dict[str, str]:
    """Build every test model into out_dir (imports TensorFlow: run it in a subprocess)."""
    from lunarseg.runtime.metadata import embed_tflite_metadata

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    binary = build_unet(1, 1, seed=1)
    cls4 = build_unet(3, 4, seed=2)

    bin_onnx = onnx_bytes(binary, 1)
    save_onnx(bin_onnx, meta_for("bin", "onnx"), out / "bin.onnx")
    save_onnx(bin_onnx, None, out / "nometa.onnx")
    save_onnx(bin_onnx, meta_for("bin", "onnx").replace(input_shape=[1, 48, 48, 1]), out / "badshape.onnx")
    save_onnx(onnx_bytes(cls4, 3), meta_for("cls4", "onnx"), out / "cls4.onnx")

    bin_tfl = tflite_bytes(binary, 1)
    (out / "bin.tflite").write_bytes(embed_tflite_metadata(bin_tfl, meta_for("bin", "tflite")))
    (out / "nometa.tflite").write_bytes(bin_tfl)
    bad = meta_for("bin", "tflite").replace(input_shape=[1, 48, 48, 1])
    (out / "badshape.tflite").write_bytes(embed_tflite_metadata(bin_tfl, bad))
    (out / "bin_int8.tflite").write_bytes(
        embed_tflite_metadata(tflite_bytes(binary, 1, int8=True), meta_for("bin", "tflite", "int8")))
    (out / "cls4.tflite").write_bytes(embed_tflite_metadata(tflite_bytes(cls4, 3), meta_for("cls4", "tflite")))
    paths = {name: str(out / name) for name in NAMES}
    (out / "models.json").write_text(json.dumps(paths))
    return paths


@functools.lru_cache(maxsize=1)
def models() -> dict[str, str]:
    """Build the set once per process, in a TensorFlow subprocess; {file name: path}."""
    out = Path(tempfile.mkdtemp(prefix="lunarseg-test-models-"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_USE_LEGACY_KERAS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, __file__, str(out)], capture_output=True, text=True, env=env,
                          timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"building test models failed:\n{proc.stderr[-4000:]}")
    return json.loads((out / "models.json").read_text())


if __name__ == "__main__":
    build_models(sys.argv[1])
