"""`lunarseg bundle`: models, a wheelhouse for the board, install/check scripts; the check passes on
the masks it recorded and fails on a changed one; bad requests get one line."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lunarseg.bundle import engines_for, make_bundle, model_files
from lunarseg.cli import main
from lunarseg.runtime.bundle_check import check_bundle, min_agreement, pixel_agreement
from lunarseg.runtime.errors import ConfigError
from runtime_models import models as build_models


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    m = build_models()
    out = tmp_path_factory.mktemp("b") / "bundle"
    manifest = make_bundle([m["bin.onnx"], m["bin_int8.tflite"]], out, "linux-x86_64", "3.11")
    return out, manifest


def test_bundle_holds_models_wheels_for_both_engines_scripts_and_sample(bundle):
    out, manifest = bundle
    wheels = {w.split("-")[0].lower() for w in manifest["wheels"]}
    assert {"lunarseg", "numpy", "pillow", "onnxruntime", "ai_edge_litert"} <= wheels
    assert not any(w.startswith(("tensorflow", "tf_keras")) for w in wheels)
    assert (out / "models/bin.onnx").exists() and (out / "models/bin_int8.tflite").exists()
    assert "--no-index --find-links" in (out / "install.sh").read_text()
    assert "lunarseg[runtime]" in (out / "install.sh").read_text()
    assert os.access(out / "check.sh", os.X_OK) and (out / "sample/frame.png").exists()
    assert manifest["bytes"] > 10_000_000  # the wheels are there, not just named


def test_check_passes_on_the_recorded_masks_in_a_tensorflow_free_process(bundle):
    out, _ = bundle
    code = ("import sys; from lunarseg.runtime.bundle_check import main; rc = main([sys.argv[1]]); "
            "assert 'tensorflow' not in sys.modules; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("ok  ") == 2


def test_check_fails_when_a_mask_differs(bundle, tmp_path):
    import shutil

    from lunarseg.runtime import atomic
    from lunarseg.runtime.imageio import read_image

    out, _ = bundle
    copy = tmp_path / "copy"
    shutil.copytree(out / "models", copy / "models")
    shutil.copytree(out / "sample", copy / "sample")
    shutil.copy(out / "bundle.json", copy / "bundle.json")
    entry = json.loads((copy / "bundle.json").read_text())["models"][0]
    expected = copy / entry["samples"][0]["expected"]
    mask = read_image(expected)
    mask = (mask if mask.ndim == 2 else mask[..., 0]).copy()
    mask[: mask.shape[0] // 10] ^= 1  # a tenth of the pixels flipped
    atomic.write_png(expected, mask)
    rows = check_bundle(copy)
    assert [r["ok"] for r in rows] == [False, True]


def test_agreement_limits_are_stricter_for_float_than_int8():
    assert min_agreement("none") == 0.999 and min_agreement("fp16") == 0.999 and min_agreement("int8") == 0.995
    assert pixel_agreement(np.zeros((2, 2)), np.zeros((2, 3))) == 0.0


def test_engine_that_cannot_run_a_model_is_refused(tmp_path):
    (tmp_path / "a.tflite").write_bytes(b"x")
    with pytest.raises(ConfigError, match="--engine ort cannot run a.tflite"):
        engines_for(model_files([str(tmp_path / "a.tflite")]), "ort")
    assert engines_for(model_files([str(tmp_path)]), "auto") == ["litert"]


@pytest.mark.parametrize("name, message", [("missing.onnx", "no such model file"), ("model.keras", "takes .onnx or .tflite")])
def test_bad_model_paths_are_refused_in_one_line(tmp_path, capsys, name, message):
    if name.endswith(".keras"):
        (tmp_path / name).write_bytes(b"x")
    code = main(["bundle", str(tmp_path / name), "--platform", "linux-aarch64", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_unknown_platform_is_refused_with_the_valid_ones(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bundle", str(tmp_path), "--platform", "linux-riscv", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "linux-aarch64" in capsys.readouterr().err


def test_models_that_share_a_file_name_get_their_variant_folder_as_prefix(tmp_path):
    from lunarseg.bundle import bundle_names

    base = tmp_path / "run/export/onnx-int8.onnx"
    slim = tmp_path / "run/compressed/slim40/export/onnx-int8.onnx"
    assert bundle_names([base, slim]) == ["onnx-int8.onnx", "slim40-onnx-int8.onnx"]
