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
    assert any(w.startswith("pip-") for w in manifest["wheels"])  # install.sh runs pip from it
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


def test_check_goes_on_past_a_model_that_cannot_run_and_names_a_mask_of_another_size(bundle, tmp_path):
    import shutil

    from lunarseg.runtime import atomic

    out, _ = bundle
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("wheels"))
    entries = json.loads((copy / "bundle.json").read_text())["models"]
    (copy / entries[0]["path"]).write_bytes(b"truncated")
    atomic.write_png(copy / entries[1]["samples"][0]["expected"], np.zeros((100, 100), np.uint8))
    rows = check_bundle(copy)
    assert [r["ok"] for r in rows] == [False, False]
    assert "not a valid ONNX model" in rows[0]["error"] or "ONNX" in rows[0]["error"]
    assert "the workstation's" in rows[1]["error"] and "100x100" in rows[1]["error"]


def test_install_sh_installs_offline_into_a_venv_and_check_sh_uses_it(bundle, tmp_path):
    import shutil

    out, _ = bundle
    board = tmp_path / "board"
    shutil.copytree(out, board)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PIP_INDEX_URL")}
    env.update(PYTHON=sys.executable, PIP_NO_INDEX="1")  # no network: --no-index and the wheels only
    done = subprocess.run(["sh", str(board / "install.sh"), "--quiet"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (board / "venv/bin/lunarseg").exists()
    env.pop("PYTHON")
    check = subprocess.run(["sh", str(board / "check.sh")], capture_output=True, text=True, env=env, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("ok  ") == 2


def test_the_bundle_folder_has_the_users_normal_permissions(bundle):
    out, _ = bundle
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask  # not mkdtemp's 0700


def test_check_sh_runs_the_venv_install_sh_made_wherever_VENV_put_it(bundle, tmp_path):
    out, _ = bundle
    fake = tmp_path / "elsewhere/bin/python"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\necho \"ran $*\"\n")
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV")}
    done = subprocess.run(["sh", str(out / "check.sh")], capture_output=True, text=True, timeout=60,
                          env={**env, "VENV": str(tmp_path / "elsewhere")})
    assert done.returncode == 0 and done.stdout.strip() == f"ran -m lunarseg.runtime.bundle_check {out}"


def test_check_sh_without_lunarseg_installed_says_so_with_exit_2(bundle, tmp_path):
    out, _ = bundle
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    env = dict(os.environ, PYTHON=str(tmp_path / "bare/bin/python"))
    done = subprocess.run(["sh", str(out / "check.sh")], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2 and "lunarseg is not installed" in done.stderr and "run install.sh" in done.stderr


def test_a_model_that_is_not_lunarseg_s_is_refused_before_any_download_and_leaves_nothing(tmp_path, capsys,
                                                                                          monkeypatch):
    import lunarseg.bundle as bundle_module

    monkeypatch.setattr(bundle_module, "build_wheelhouse", lambda *a: pytest.fail("downloaded before checking"))
    (tmp_path / "fake.onnx").write_bytes(b"notamodel")
    code = main(["bundle", str(tmp_path / "fake.onnx"), "--platform", "linux-x86_64", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(tmp_path / "fake.onnx") in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.onnx"]


def test_a_bundle_that_fails_half_way_leaves_nothing_and_can_be_made_again(tmp_path, monkeypatch):
    import lunarseg.bundle as bundle_module

    def no_network(*a):
        raise ConfigError("downloading the wheels failed: the package index cannot be reached")

    monkeypatch.setattr(bundle_module, "build_wheelhouse", no_network)
    with pytest.raises(ConfigError, match="cannot be reached"):
        make_bundle([build_models()["bin.onnx"]], tmp_path / "o", "linux-x86_64")
    assert list(tmp_path.iterdir()) == []  # no --out, no partial folder beside it


def test_pip_failing_for_want_of_a_network_says_so(monkeypatch):
    import lunarseg.bundle as bundle_module

    stderr = ("WARNING: Retrying (Retry(total=0)) after connection broken by 'NewConnectionError(...)'\n"
              "ERROR: Could not find a version that satisfies the requirement ai-edge-litert==2.3.0 (from versions: none)")
    monkeypatch.setattr(bundle_module.subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 1, stdout="", stderr=stderr))
    with pytest.raises(ConfigError, match="the package index cannot be reached"):
        bundle_module._pip(["download", "x"], "downloading the wheels")


def test_the_glibc_a_bundle_needs_is_the_newest_its_wheels_ask_for():
    from lunarseg.bundle import glibc_needed

    assert glibc_needed(["numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
                         "onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_x86_64.whl",
                         "protobuf-7.36.2-cp310-abi3-manylinux2014_x86_64.whl", "tqdm-4.70.1-py3-none-any.whl"]) == "2.28"


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
