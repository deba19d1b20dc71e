"""One model opener (lunarseg.train.open_model) for `evaluate` and the bench: every lunarseg form opens
and predicts what Keras or the runtime predicts; a foreign Keras model is refused in one line naming
`lunarseg import`; an unknown form lists the accepted ones; .onnx/.tflite open without TensorFlow."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import lunarseg.train  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from data_fixtures import make_tree
from runtime_models import H, W, build_unet, meta_for, onnx_bytes, save_onnx, tflite_bytes

from lunarseg.cli import main
from lunarseg.runtime.errors import ConfigError, ModelFileError
from lunarseg.runtime.metadata import embed_tflite_metadata
from lunarseg.runtime.segmenter import Segmenter
from lunarseg.train.open_model import FORMS, open_model

HEAVY = ("tensorflow", "tf_keras", "keras")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """The tiny binary 32x32 model in every form: a run, a variant's .h5 with meta.json, .onnx, .tflite,
    and as foreign .h5/.keras/SavedModel without metadata; labelled frames; the Keras model itself."""
    from lunarseg.train import checkpoint

    root = tmp_path_factory.mktemp("opener")
    model = build_unet(1, 1, seed=1)
    run = root / "run"
    checkpoint.save_model(model, run / "model.keras")
    checkpoint.save_meta(run / "model.keras", meta_for("bin", "keras"))
    variant = run / "compressed" / "qat"
    checkpoint.save_model(model, variant / "model.h5")
    checkpoint.save_meta(variant / "model.h5", meta_for("bin", "keras"))
    save_onnx(onnx_bytes(model, 1), meta_for("bin", "onnx"), root / "onnx-fp32.onnx")
    (root / "tflite-fp32.tflite").write_bytes(embed_tflite_metadata(tflite_bytes(model, 1), meta_for("bin", "tflite")))
    foreign = root / "foreign"
    foreign.mkdir()
    model.save(foreign / "nb.h5")
    model.save(foreign / "nb.keras")
    model.save(foreign / "nb_savedmodel", save_format="tf")
    files = {"run": run, ".keras": run / "model.keras", ".h5": variant / "model.h5",
             ".onnx": root / "onnx-fp32.onnx", ".tflite": root / "tflite-fp32.tflite",
             "foreign .h5": foreign / "nb.h5", "foreign .keras": foreign / "nb.keras",
             "foreign SavedModel": foreign / "nb_savedmodel"}
    return {"files": files, "model": model, "data": make_tree(root / "data", numbers=range(1, 21))}


def _inputs(n=3):
    return np.random.default_rng(0).random((n, H, W, 1), dtype=np.float32)


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("form", ["run", ".keras", ".h5"])
def test_a_keras_form_opens_in_tensorflow_and_predicts_what_the_keras_model_does(zoo, form):
    opened = open_model(zoo["files"][form])
    x = _inputs()
    assert opened.engine == "tensorflow" and opened.meta.input_shape == [1, H, W, 1]
    assert opened.path.name in ("model.keras", "model.h5")
    assert np.abs(opened.predict(x) - zoo["model"](x, training=False).numpy()).max() <= 1e-6


@pytest.mark.parametrize("form", [".onnx", ".tflite"])
def test_an_exported_file_opens_through_the_runtime_and_predicts_what_its_segmenter_does(zoo, form):
    path = zoo["files"][form]
    opened, seg = open_model(path, threads=1), Segmenter.from_file(path, threads=1)
    x = _inputs()
    assert opened.engine == seg.backend_name and opened.meta == seg.meta
    assert np.array_equal(opened.predict(x), seg.predict(x))
    assert np.abs(opened.predict(x) - zoo["model"](x, training=False).numpy()).max() <= 1e-4  # fp32 export


@pytest.mark.parametrize("form", ["foreign .h5", "foreign .keras", "foreign SavedModel"])
def test_a_foreign_keras_model_is_refused_in_one_line_naming_lunarseg_import(zoo, capsys, form):
    path = zoo["files"][form]
    err = _one_line_error(capsys, ["evaluate", str(path), "--data", str(zoo["data"])])
    assert err.startswith(f"lunarseg evaluate: error: {path}: a ") and "without lunarseg metadata" in err
    assert err.endswith(f"make it a run first: lunarseg import {path} --out RUN")


def test_an_unknown_suffix_is_one_line_listing_the_accepted_forms(tmp_path, capsys):
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"torch")
    err = _one_line_error(capsys, ["evaluate", str(weights), "--data", str(tmp_path)])
    assert err.startswith(f"lunarseg evaluate: error: {weights}: cannot open '.pt'; "
                          "accepted: run directory, .keras, .h5, .onnx, .tflite (")
    assert list(FORMS) == ["run directory", ".keras", ".h5", ".onnx", ".tflite"]


def test_a_directory_without_meta_json_is_not_a_run(tmp_path):
    with pytest.raises(ModelFileError, match=r"cannot open a directory with no meta.json; accepted: run directory"):
        open_model(tmp_path)


def test_a_missing_path_is_named(tmp_path):
    with pytest.raises(ModelFileError, match=r"nope.onnx: no such file or directory$"):
        open_model(tmp_path / "nope.onnx")


def test_a_runtime_engine_is_refused_for_a_keras_model_not_ignored(zoo):
    with pytest.raises(ConfigError, match=r"backend 'onnxruntime' runs .onnx/.tflite files; a Keras model runs in TensorFlow"):
        open_model(zoo["files"]["run"], backend="onnxruntime")


def test_evaluate_of_an_onnx_artifact_gives_the_run_report_fields_and_its_iou(zoo, capsys):
    from lunarseg.train.evaluate import evaluate

    on_run = evaluate(zoo["files"]["run"], zoo["data"])
    on_onnx = evaluate(zoo["files"][".onnx"], zoo["data"])
    assert set(on_onnx) == set(on_run) and on_onnx["frames"] == on_run["frames"] > 0
    assert abs(on_onnx["iou"] - on_run["iou"]) <= 1e-3 and 0 < on_run["iou"] < 1
    assert main(["evaluate", str(zoo["files"][".onnx"]), "--data", str(zoo["data"])]) == 0
    assert capsys.readouterr().out.startswith(f"iou={on_onnx['iou']:.4f} dice={on_onnx['dice']:.4f}")


OPEN_WITHOUT_TF = textwrap.dedent("""
    import json, sys
    import numpy as np
    from lunarseg.train.open_model import open_model
    from lunarseg.train.evaluate import evaluate
    opened = open_model(sys.argv[1])
    probs = opened.predict(np.zeros((2, *opened.meta.input_shape[1:]), np.float32))
    report = evaluate(sys.argv[1], sys.argv[2])
    heavy = sorted({n.split('.')[0] for n in sys.modules} & set(sys.argv[3].split(',')))
    print(json.dumps({"shape": list(probs.shape), "iou": report["iou"], "heavy": heavy}))
""")


@pytest.mark.parametrize("form", [".onnx", ".tflite"])
def test_opening_and_evaluating_an_exported_file_loads_no_tensorflow(zoo, form):
    done = subprocess.run([sys.executable, "-c", OPEN_WITHOUT_TF, str(zoo["files"][form]), str(zoo["data"]),
                           ",".join(HEAVY)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["heavy"] == [] and got["shape"] == [2, H, W, 1] and 0 < got["iou"] < 1


@pytest.mark.parametrize("form", [".onnx", ".tflite"])
def test_lunarseg_evaluate_of_an_exported_file_runs_where_tensorflow_is_not_installed(zoo, form):
    from test_cli_runtime_only import HIDE_TF

    done = subprocess.run([sys.executable, "-c", HIDE_TF, "evaluate", str(zoo["files"][form]), "--data", str(zoo["data"])],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "IoU" in done.stdout
