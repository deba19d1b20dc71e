"""Lean install: segmenting with ONNX and TFLite models never loads TensorFlow, Keras or tfmot."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from runtime_models import models as build_models

HEAVY = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "tfmot", "tf2onnx", "onnx")


@pytest.fixture(scope="session")
def models():
    return build_models()


def test_segment_cli_and_api_with_onnx_and_tflite_load_no_training_framework(tmp_path, models):
    frame = tmp_path / "f.png"
    Image.fromarray((np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)).save(frame)
    code = textwrap.dedent(
        f"""
        import json, sys
        from lunarseg.cli import main
        codes = [main(["segment", {models['bin.onnx']!r}, {str(frame)!r}, "--out", {str(tmp_path / 'o1')!r},
                       "--overlay", "--no-progress"]),
                 main(["segment", {models['bin_int8.tflite']!r}, {str(frame)!r}, "--out",
                       {str(tmp_path / 'o2')!r}, "--tile", "--no-progress"])]
        from lunarseg.runtime import Segmenter
        for name in ("cls4.onnx", "cls4.tflite"):
            Segmenter.from_file({models!r}[name]).segment({str(frame)!r})
        heavy = sorted(n for n in sys.modules if n.split(".")[0] in {HEAVY!r})
        print(json.dumps({{"codes": codes, "heavy": heavy,
                          "engines": [m in sys.modules for m in ("onnxruntime", "ai_edge_litert")]}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["codes"] == [0, 0]
    assert res["engines"] == [True, True]
    assert res["heavy"] == [], f"heavy modules imported: {res['heavy']}"
    assert (tmp_path / "o1" / "f_mask.png").exists() and (tmp_path / "o2" / "f_mask.png").exists()


def test_importing_the_segmenter_loads_no_engine():
    code = ("import sys, lunarseg.runtime.segmenter, lunarseg.runtime.cli, lunarseg.runtime.backends;"
            "print([m for m in ('onnxruntime', 'ai_edge_litert', 'tensorflow') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
