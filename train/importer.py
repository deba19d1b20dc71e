"""`lunarseg import`: turn a Keras model trained elsewhere (tf.keras/tf_keras `.h5`, a `.keras` file of
tf_keras or Keras 3, a SavedModel directory) into a run directory — `model.keras` in tf_keras form
plus `meta.json` — that every other command accepts like a trained run.

What the model says (input size and channels, output channels and activation) is inferred; what
it cannot say (class names, normalisation, threshold) comes from options with the trained runs'
defaults; what the options claim is checked against the model. The validation IoU of an imported
model is unknown and recorded as null.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lunarseg.runtime import preprocess
from lunarseg.runtime.errors import ConfigError, ModelFileError, one_line, require_folder_or_absent, unknown_key
from lunarseg.runtime.masks import CLASS_NAMES, rock_mask
from lunarseg.runtime.metadata import ModelMeta

FORMATS = ("h5", "keras", "savedmodel")
COLOURS = {1: "gray", 3: "rgb"}
# The head each task needs: (output channels, activation).
HEADS = {"binary": (1, "sigmoid"), "4class": (4, "softmax")}
DEFAULT_SCALE, DEFAULT_OFFSET = 1.0 / 255.0, 0.0


@dataclass
class ImportOptions:
    """What the user told `lunarseg import`; None = infer it from the model or use the default."""

    task: str | None = None
    classes: list[str] | None = None
    rock_classes: list[str] | None = None
    colour: str | None = None
    size: tuple[int, int] | None = None  # (width, height), for models with a free input size
    scale: float | None = None
    offset: float | None = None
    mean: float | None = None  # on the 0–1 scale: x = (pixel / 255 - mean) / std
    std: float | None = None
    threshold: float | None = None  # sigmoid heads only; None = 0.5
    extra: dict = field(default_factory=dict)


def normalisation(opts: ImportOptions) -> tuple[dict, dict]:
    """({"scale", "offset"} the runtime applies as pixel * scale + offset, what the user gave)."""
    if opts.mean is not None or opts.std is not None:
        if opts.scale is not None or opts.offset is not None:
            raise ConfigError("give either --scale/--offset or --mean/--std, not both")
        if opts.mean is None or opts.std is None:
            raise ConfigError(f"--{'std' if opts.std is None else 'mean'} is needed with --{'mean' if opts.std is None else 'std'}")
        if not (np.isfinite(opts.std) and opts.std > 0) or not np.isfinite(opts.mean):
            raise ConfigError(f"--mean must be finite and --std finite and > 0, got {opts.mean} and {opts.std}")
        given = {"mean": opts.mean, "std": opts.std, "units": "x = (pixel / 255 - mean) / std"}
        return {"scale": 1.0 / (255.0 * opts.std), "offset": -opts.mean / opts.std}, given
    scale = DEFAULT_SCALE if opts.scale is None else opts.scale
    offset = DEFAULT_OFFSET if opts.offset is None else opts.offset
    if not scale or not np.isfinite(scale) or not np.isfinite(offset):
        raise ConfigError(f"--scale must be finite and non-zero and --offset finite, got {scale} and {offset}")
    return {"scale": scale, "offset": offset}, {"scale": scale, "offset": offset, "units": "x = pixel * scale + offset"}


# ---- opening the file -------------------------------------------------------------------------

def model_format(path: Path) -> str:
    """'savedmodel' (a directory), 'h5' or 'keras', from the path; anything else is refused."""
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise ModelFileError(f"{path}: a directory but not a SavedModel (no saved_model.pb)")
        return "savedmodel"
    if not path.exists():
        raise ModelFileError(f"{path}: no such file or directory")
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("h5", "hdf5"):
        return "h5"
    if suffix == "keras":
        return "keras"
    raise ModelFileError(f"{path}: cannot import a {path.suffix or 'suffix-less'!r} file; give a .h5, a .keras "
                         "file or a SavedModel directory")


def keras_major(path: Path, fmt: str) -> int:
    """The Keras major version that saved the file (2 = tf.keras/tf_keras, 3 = Keras 3)."""
    try:
        if fmt == "keras":
            with zipfile.ZipFile(path) as zf:
                version = json.loads(zf.read("metadata.json")).get("keras_version", "2")
        elif fmt == "h5":
            import h5py

            with h5py.File(path, "r") as fh:
                version = fh.attrs.get("keras_version", "2")
                version = version.decode() if isinstance(version, bytes) else str(version)
        else:
            return 2
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelFileError(f"{path}: not a readable Keras {fmt} file ({type(exc).__name__})") from None
    return int(str(version).split(".")[0] or 2)


def _load_error(path: Path, exc: Exception) -> ModelFileError:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "Lambda" in text:
        return ModelFileError(f"{path}: the model holds a Lambda layer (Python code inside the model), which lunarseg "
                              "cannot load safely; replace it with a standard Keras layer")
    if "Unknown" in text or "custom" in text.lower():
        return ModelFileError(f"{path}: the model uses a custom layer or object lunarseg cannot rebuild "
                              f"({one_line(text, 300)})")
    return ModelFileError(f"{path}: not a loadable Keras model ({type(exc).__name__}: {one_line(text, 300)})")


def load_foreign(path: Path) -> tuple[object, dict]:
    """(tf_keras model, how it was read): Keras 3 files are rebuilt in tf_keras and checked."""
    fmt = model_format(path)
    major = keras_major(path, fmt)
    source = {"path": str(path.resolve()), "format": fmt, "keras_major": major}
    if fmt == "savedmodel" and not (path / "keras_metadata.pb").exists():
        raise ModelFileError(f"{path}: a SavedModel without Keras metadata (written by tf.saved_model.save or Keras 3 "
                             "model.export) cannot be rebuilt; save the Keras model itself as .keras or .h5")
    if major >= 3:
        import keras as keras3

        from lunarseg.train import keras3_convert

        try:
            k3 = keras3.saving.load_model(path, compile=False)
        except Exception as exc:  # noqa: BLE001 - any loader failure is the user's file
            raise _load_error(path, exc) from None
        model, diff = keras3_convert.convert(k3)
        source["keras3_max_abs_diff"] = diff
        return model, source
    import tf_keras as keras

    try:
        return keras.models.load_model(path, compile=False), source
    except Exception as exc:  # noqa: BLE001
        raise _load_error(path, exc) from None


# ---- what the model says ----------------------------------------------------------------------

def output_activation(model) -> str:
    """'sigmoid' or 'softmax' of the model's last layer; a refusal for logits or an unknown head."""
    last = model.layers[-1]
    if type(last).__name__ == "Softmax":
        return "softmax"
    fn = getattr(last, "activation", None)
    name = getattr(fn, "__name__", None)
    if name in ("sigmoid", "softmax"):
        return name
    if name == "linear":
        raise ConfigError(f"model output layer {last.name!r} ({type(last).__name__}) is linear (logits); lunarseg "
                          "needs probabilities: end the model with a sigmoid (1 channel) or softmax (4 channels)")
    raise ConfigError(f"cannot tell the output activation of layer {last.name!r} ({type(last).__name__}); end the "
                      "model with a sigmoid (1 channel) or softmax (4 channels) activation")


def at_fixed_size(model, opts: ImportOptions):
    """The model with a fixed H×W input (rebuilt with --size if its input size is free)."""
    import tf_keras as keras

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConfigError(f"model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                          "lunarseg imports one image in, one mask out")
    _, h, w, c = model.input_shape
    if opts.size:
        want_w, want_h = opts.size
        if (h is not None and h != want_h) or (w is not None and w != want_w):  # a free side takes any size
            raise ConfigError(f"--size {want_w}x{want_h} does not match the model's input {w}x{h}")
        h, w = want_h, want_w
    if h is None or w is None:
        raise ConfigError(f"model {model.name!r} takes any input size; give the size to run it at with --size WIDTHxHEIGHT")
    if tuple(model.input_shape[1:3]) == (h, w):
        return model
    try:
        fixed = keras.models.clone_model(model, input_tensors=keras.Input((h, w, c), name=model.inputs[0].name.split(":")[0]))
    except ValueError as exc:  # e.g. a U-Net whose pooling and skips need a multiple of 2**depth
        raise ConfigError(f"--size {w}x{h}: the model cannot be built at this size ({one_line(exc, 160)}); "
                          "a U-Net usually needs sides divisible by 2 to the power of its depth") from None
    fixed.set_weights(model.get_weights())
    return fixed


def refuse_lambda_layers(model, src: Path) -> None:
    """Lambda layers hold Python code that a saved model cannot reload safely: refused before anything is written."""
    lambdas = [layer.name for layer in model.layers if type(layer).__name__ == "Lambda"]
    if lambdas:
        raise ConfigError(f"{src}: layer {lambdas[0]!r} is a Lambda layer (Python code inside the model), which "
                          "lunarseg cannot save and reload safely; replace it with a standard Keras layer")


def colour_mode(model, opts: ImportOptions) -> str:
    channels = model.input_shape[-1]
    if channels not in COLOURS:
        raise ConfigError(f"model input has {channels} channels; lunarseg imports 1 (gray) or 3 (rgb)")
    mode = COLOURS[channels]
    if opts.colour is not None:
        if opts.colour not in COLOURS.values():
            raise unknown_key("colour mode", opts.colour, COLOURS.values())
        if opts.colour != mode:
            raise ConfigError(f"--colour {opts.colour} does not match the model's {channels}-channel input ({mode})")
    return mode


def task_of(model, activation: str, opts: ImportOptions) -> str:
    """The task from the head (1 sigmoid channel = binary, 4 softmax = 4class), checked against --task."""
    _, h, w, k = model.output_shape
    if (h, w) != tuple(model.input_shape[1:3]):
        raise ConfigError(f"model output is {w}x{h} but its input {model.input_shape[2]}x{model.input_shape[1]}; "
                          "lunarseg needs a mask the size of the input")
    inferred = next((t for t, head in HEADS.items() if head == (k, activation)), None)
    if opts.task is not None:
        if opts.task not in HEADS:
            raise unknown_key("task", opts.task, HEADS)
        if HEADS[opts.task] != (k, activation):
            need_k, need_act = HEADS[opts.task]
            raise ConfigError(f"--task {opts.task} needs {need_k} {need_act} output channel(s); the model has {k} {activation}")
        return opts.task
    if inferred is None:
        raise ConfigError(f"model head is {k} {activation} channel(s); lunarseg imports 1 sigmoid channel (--task binary) "
                          "or 4 softmax channels (--task 4class)")
    return inferred


def class_names(task: str, opts: ImportOptions) -> list[str]:
    """--classes (one name per class) or the task's own names, with the rock classes checked."""
    names = list(opts.classes) if opts.classes else list(CLASS_NAMES[task])
    if len(names) != len(CLASS_NAMES[task]):
        raise ConfigError(f"--classes gives {len(names)} names; the {task} model has {len(CLASS_NAMES[task])} classes")
    if len(set(names)) != len(names):
        raise ConfigError(f"--classes repeats a name: {','.join(names)}")
    found = preprocess.rock_classes(ModelMeta(task=task, class_names=names))
    rule = tuple(int(i) for i in np.flatnonzero(rock_mask(np.arange(len(names)), task)))
    if opts.rock_classes:
        unknown = [n for n in opts.rock_classes if n not in names]
        if unknown:
            raise ConfigError(f"--rock-classes names {','.join(unknown)}, not among --classes {','.join(names)}")
        wanted = tuple(sorted(names.index(n) for n in opts.rock_classes))
        if wanted != found:
            raise ConfigError(f"--rock-classes {','.join(opts.rock_classes)}: with these class names the rock "
                              f"class(es) are {','.join(names[i] for i in found)} (lunarseg's rule: the classes named "
                              "'*rock*', else every class but the first); the model's rock classes are decided by its "
                              "class order, so name them in --classes")
    if found != rule:
        rock_names = ",".join(CLASS_NAMES[task][i] for i in rule)
        raise ConfigError(f"--classes {','.join(names)}: the rock classes must be class(es) {list(rule)} of a {task} "
                          f"model, named like {rock_names} (order {','.join(CLASS_NAMES[task])}); "
                          f"these names make {[names[i] for i in found]} rock")
    return names


def infer_meta(model, opts: ImportOptions, source: dict, parent_hash: str) -> ModelMeta:
    """The run metadata of an imported model: inferred, given, checked."""
    from lunarseg.train.model import count_macs

    activation = output_activation(model)
    task = task_of(model, activation, opts)
    names = class_names(task, opts)
    norm, given = normalisation(opts)
    if opts.threshold is not None and activation != "sigmoid":
        raise ConfigError(f"--threshold applies to a sigmoid head; this model's {activation} head takes the "
                          "most likely class (argmax)")
    threshold = 0.5 if opts.threshold is None else opts.threshold
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"--threshold must be in (0, 1), got {threshold}")
    _, h, w, c = model.input_shape
    meta = ModelMeta(task=task, class_names=names, input_shape=[1, int(h), int(w), int(c)],
                     colour_mode=colour_mode(model, opts), normalisation=norm, output_activation=activation,
                     threshold=float(threshold), train_config={}, val_metrics={"iou": None, "dice": None},
                     parent_hash=parent_hash, format="keras",
                     extra={"imported": {**source, "normalisation_given": given}, "data_dir": "",
                            "macs": count_macs(model), "params": int(model.count_params()), **opts.extra})
    meta.validate("import")
    return meta


def source_hash(path: Path) -> str:
    """sha256 of the model file (of saved_model.pb for a SavedModel)."""
    from lunarseg.train.checkpoint import file_sha256

    return file_sha256(path / "saved_model.pb" if path.is_dir() else path)


def _save_checked(model, target: Path, meta: ModelMeta, src: Path) -> None:
    """Save the model, reload it and check it reproduces the imported one, then write its metadata."""
    from lunarseg.train import checkpoint

    checkpoint.save_model(model, target)
    try:
        reloaded = checkpoint.load_model(target)
    except ModelFileError as exc:
        raise ModelFileError(f"{src}: imported, but its saved copy does not reload ({exc})") from None
    x = np.random.default_rng(0).random((1, *meta.input_shape[1:]), dtype=np.float32)
    diff = float(np.max(np.abs(reloaded(x, training=False).numpy() - model(x, training=False).numpy())))
    if diff > 1e-5:
        raise ModelFileError(f"{src}: the saved model does not reproduce the imported one (max abs diff {diff:.3g})")
    checkpoint.save_meta(target, meta)


def import_model(src: str | Path, out: str | Path, opts: ImportOptions) -> dict:
    """Write RUN/model.keras + RUN/meta.json from `src`; returns a summary."""
    from lunarseg.train import checkpoint

    src, out = Path(src), Path(out)
    target = out / checkpoint.MODEL_FILES[0]
    require_folder_or_absent(out)
    if any((out / name).exists() for name in (*checkpoint.MODEL_FILES, "meta.json")):
        raise ConfigError(f"{out} already holds a model; choose another --out")
    model, source = load_foreign(src)
    model = at_fixed_size(model, opts)
    refuse_lambda_layers(model, src)
    meta = infer_meta(model, opts, source, source_hash(src))
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        _save_checked(model, target, meta, src)
    except BaseException:  # a failed import leaves no half-written run behind
        target.unlink(missing_ok=True)
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    return {"run": str(out), "model": str(target), "task": meta.task, "classes": meta.class_names,
            "input": f"{meta.width}x{meta.height}x{meta.channels}", "colour": meta.colour_mode,
            "activation": meta.output_activation, "normalisation": meta.normalisation, "source": source}
