"""No "triggered tf.function retracing" warnings from scoring many fresh models (each through one graph
function of its own, train/forward.py), with model.predict's figures bit for bit; and a fit traces its
train step once, not twice (the optimizer is built before the first step)."""
import logging

import numpy as np
import pytest

import lunarseg.train  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from tensorflow.python.eager.polymorphic_function import polymorphic_function

from lunarseg.train import compress as compress_mod
from lunarseg.train import fit as fit_mod
from lunarseg.train import forward
from lunarseg.train.compress import CompressConfig, compress
from lunarseg.train.fit import train
from lunarseg.train.model import build_unet
from lunarseg.train.tf_input import make_dataset
from test_train import blobs, tiny_cfg

TR, VA = blobs(16), blobs(20, seed=1)  # VA: a full batch of 16 to score and a partial one of 4


@pytest.fixture
def retracing(monkeypatch):
    """The retracing warnings TensorFlow logs from here on. TensorFlow keeps its count per process and
    warns at most twice per function: a fresh count, so that earlier tests cannot have used it up."""
    monkeypatch.setattr(polymorphic_function, "_frequent_tracing_detector_manager",
                        polymorphic_function._FrequentTracingDetectorManager())
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    yield lambda: [r.getMessage() for r in records if "triggered tf.function retracing" in r.getMessage()]
    logger.removeHandler(handler)


def fresh_models(n):
    return [build_unet(tiny_cfg()) for _ in range(n)]


def test_keras_predict_on_fresh_models_warns_of_retracing_here(retracing):
    """The control: what the helpers replaced does warn, so the tests below can see the warning."""
    for model in fresh_models(6):
        model.predict(VA.x / 255.0, batch_size=16, verbose=0)
    assert any("predict_function" in m for m in retracing())


def test_scoring_many_fresh_models_logs_no_retracing(retracing):
    for model in fresh_models(8):
        forward.predict(model, VA.x / 255.0)
    assert retracing() == []


def test_forward_predict_gives_model_predicts_figures():
    model = build_unet(tiny_cfg())
    x = (VA.x / 255.0).astype(np.float32)
    np.testing.assert_array_equal(forward.predict(model, x), model.predict(x, batch_size=16, verbose=0))


@pytest.mark.slow
@pytest.mark.parametrize("compile_for_fit", [
    lambda m: fit_mod._compile(m, tiny_cfg(), steps_per_epoch=2),
    lambda m: compress_mod._compile(m, tiny_cfg(), 1e-3),
], ids=["train", "fine-tune"])
def test_a_fit_traces_its_train_step_once(compile_for_fit):
    model = build_unet(tiny_cfg())
    compile_for_fit(model)
    model.fit(make_dataset(TR.x, TR.y, tiny_cfg(), training=True), epochs=1, verbose=0)
    assert model.train_function.experimental_get_tracing_count() == 1


@pytest.mark.slow
def test_training_then_making_variants_logs_no_scoring_retracing(tmp_path, retracing):
    """The demo's path on a tiny run: training ends by scoring its best model, and every variant scores
    the parent and itself. (Keras's train and validation steps are traced once per fresh model: fine-tunes
    of a few steps each still trip TensorFlow's count, which is not what this checks; the train step's
    single trace is test_a_fit_traces_its_train_step_once.)"""
    train(tiny_cfg(epochs=1), None, tmp_path, verbose=0, train_arrays=TR, val_arrays=VA)
    for kw in (dict(sparsity=0.5), dict(sparsity=0.0, name="ft"), dict(sparsity=0.0, width=0.5), dict(sparsity=0.75)):
        compress(tmp_path, CompressConfig(epochs=1, batch_size=8, **kw), train_arrays=TR, val_arrays=VA, verbose=0)
    fit_steps = ("make_train_function", "make_test_function")
    assert [m for m in retracing() if not any(step in m for step in fit_steps)] == []
