"""Bad model files are refused with one line that says what is wrong (never an engine traceback)."""
import os

import pytest

from engines import needs_openvino
from runtime_models import models as build_models
from lunarseg.runtime import Segmenter
from lunarseg.runtime.errors import ConfigError, ModelFileError


@pytest.fixture(scope="session")
def models():
    return build_models()


def _refused(path, exc=ModelFileError, **kw):
    with pytest.raises(exc) as info:
        Segmenter.from_file(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


@pytest.mark.parametrize("suffix", [".onnx", ".tflite"])
def test_random_bytes_model_is_refused_in_one_line(tmp_path, suffix):
    p = tmp_path / f"random{suffix}"
    p.write_bytes(os.urandom(4096))
    msg = _refused(p)
    assert str(p) in msg
    assert ("not a valid ONNX model" in msg) if suffix == ".onnx" else ("not a TFLite flatbuffer" in msg)


@pytest.mark.parametrize("name", ["bin.onnx", "bin.tflite", "bin_int8.tflite"])
def test_truncated_model_is_refused_in_one_line(tmp_path, models, name):
    data = open(models[name], "rb").read()
    p = tmp_path / name
    p.write_bytes(data[: len(data) // 2])
    msg = _refused(p)
    assert str(p) in msg
    assert any(s in msg for s in ("not a valid ONNX model", "not a valid TFLite model", "corrupt TFLite file",
                                  "carries no lunarseg metadata")), msg


@pytest.mark.parametrize("suffix", [".onnx", ".tflite"])
def test_empty_and_missing_model_files_are_refused(tmp_path, suffix):
    p = tmp_path / f"empty{suffix}"
    p.write_bytes(b"")
    assert _refused(p) == f"{p}: model file is empty (0 bytes)"
    assert _refused(tmp_path / f"nope{suffix}") == f"{tmp_path / f'nope{suffix}'}: no such model file"


@pytest.mark.parametrize("name", ["nometa.onnx", "nometa.tflite"])
def test_model_without_lunarseg_metadata_is_refused(models, name):
    msg = _refused(models[name])
    assert "carries no lunarseg metadata" in msg and "lunarseg export" in msg


@pytest.mark.parametrize("name", ["badshape.onnx", "badshape.tflite"])
def test_metadata_disagreeing_with_the_model_shape_is_refused(models, name):
    msg = _refused(models[name])
    assert "metadata disagrees with the model: input height is 32 in the model but 48 in the metadata" in msg


def test_metadata_with_wrong_class_count_is_refused(tmp_path, models):
    from lunarseg.runtime.metadata import embed_tflite_metadata, read_tflite_metadata

    data = open(models["bin.tflite"], "rb").read()
    meta = read_tflite_metadata(data).replace(
        task="4class", output_activation="softmax", class_names=["background", "sky", "small_rock", "large_rock"])
    p = tmp_path / "wrongk.tflite"
    p.write_bytes(embed_tflite_metadata(data, meta))
    assert "output classes is 1 in the model but 4 in the metadata" in _refused(p)


def test_unknown_suffix_lists_the_valid_ones(tmp_path):
    p = tmp_path / "model.pb"
    p.write_bytes(b"x")
    msg = _refused(p, ConfigError)
    assert msg == "unknown model file suffix '.pb'; valid: .onnx, .tflite"


def test_unknown_backend_lists_the_valid_ones(models):
    msg = _refused(models["bin.onnx"], ConfigError, backend="tensorrt")
    assert msg == "unknown backend 'tensorrt'; valid: auto, litert, onnxruntime, openvino"


def test_backend_that_does_not_read_the_suffix_is_refused(models):
    assert "backend 'litert' reads .tflite files, not .onnx" in _refused(models["bin.onnx"], backend="litert")


def test_explicit_matching_backend_and_threads_work(models):
    seg = Segmenter.from_file(models["bin.tflite"], threads=2, backend="litert")
    assert seg.backend_name == "litert" and seg.meta.input_shape == [1, 32, 32, 1]
    assert _refused(models["bin.onnx"], ConfigError, threads=0) == "threads must be at least 1, got 0"


@needs_openvino
def test_openvino_refuses_files_without_metadata_and_with_lying_metadata(models):
    assert "carries no lunarseg metadata" in _refused(models["nometa.onnx"], backend="openvino")
    assert "metadata disagrees with the model" in _refused(models["badshape.onnx"], backend="openvino")


def test_one_line_collapses_a_library_message_cuts_it_and_can_name_its_type():
    from lunarseg.runtime.errors import one_line

    exc = ValueError("first line\n  second\tline " + "x" * 300)
    assert one_line(exc, limit=23) == "first line second line …"
    assert one_line(ValueError("short"), with_type=True) == "ValueError: short"
    assert "\n" not in one_line(exc) and len(one_line(exc)) == 201
