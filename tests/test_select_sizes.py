"""`select` over frame size: rows of several input sizes compete on one objective, `selection.json`
records the chosen artifact's input size and engine, and results written before bench had an
`input_size` column get it from the artifact's own metadata (tiny Sigmoid ONNX files, no TensorFlow)."""
import json
from pathlib import Path

import pytest

from lunarseg.benchmarks.select import input_size_of, select
from lunarseg.runtime.errors import GateError
from lunarseg.runtime.metadata import ModelMeta


def _onnx(path, width, height):
    """A one-node ONNX model (sigmoid of the image) carrying lunarseg metadata for width×height."""
    import onnx
    from onnx import TensorProto, helper

    shape = [1, height, width, 1]
    graph = helper.make_graph([helper.make_node("Sigmoid", ["image"], ["mask"])], "tiny",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("mask", TensorProto.FLOAT, shape)])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    entry = proto.metadata_props.add()
    entry.key, entry.value = "lunarseg", ModelMeta(input_shape=shape, format="onnx-fp32").to_json()
    onnx.save(proto, path)
    return str(path)


def _row(path, size, p50, drop, engine="onnxruntime", with_size=True):
    row = {"variant": "base", "format": "onnx-fp32", "path": path, "status": "ok", "deployable": True,
           "threads": 1, "engine": engine, "iou": 0.6 - drop, "iou_drop": drop, "p50_ms": p50,
           "bytes": 1000, "gzip_bytes": 900, "speedup": 1.0}
    if with_size:
        row["input_size"] = size
    return row


@pytest.fixture
def run(tmp_path):
    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    (run / "bench").mkdir()
    return run


def _results(run, rows, old=False):
    """results.json as bench writes it for RUN: each of the run's rows keeps its path inside the run
    (`old`: as bench wrote it before it recorded that, the paths alone)."""
    for r in rows:
        r.setdefault("run", str(run))
        if not old:
            r.setdefault("run_path", str(Path(r["path"]).relative_to(run)))
    (run / "bench/results.json").write_text(json.dumps({"run": str(run), "threads": [1], "rows": rows}))


def test_select_chooses_among_every_input_size_and_records_the_chosen_size_and_engine(run):
    small = _onnx(run / "export/onnx-fp32-192x128.onnx", 192, 128)
    native = _onnx(run / "export/onnx-fp32.onnx", 384, 256)
    big = _onnx(run / "export/onnx-fp32-768x512.onnx", 768, 512)
    _results(run, [_row(native, "384x256", 20.0, 0.0), _row(small, "192x128", 5.0, 0.03),
                   _row(big, "768x512", 80.0, -0.02), _row(small, "192x128", 4.0, 0.03, engine="openvino")])
    choice = select(run, max_iou_drop=0.05, engines=("onnxruntime",))
    assert (choice["input_size"], choice["engine"]) == ("192x128", "onnxruntime")
    assert choice["input_sizes_considered"] == ["192x128", "384x256", "768x512"]
    assert "at 192x128 on onnxruntime" in choice["reason"] and "3 input sizes" in choice["reason"]
    saved = json.loads((run / "deploy/selection.json").read_text())
    assert saved["input_size"] == "192x128" and saved["artifact"].endswith("onnx-fp32-192x128.onnx")
    tight = select(run, max_iou_drop=0.0, engines=("onnxruntime",))  # the small size no longer fits
    assert tight["input_size"] == "384x256"  # the faster of the two that keep the budget


def test_rows_without_an_input_size_column_take_it_from_the_artifacts_metadata(run):
    small = _onnx(run / "export/onnx-fp32-192x128.onnx", 192, 128)
    native = _onnx(run / "export/onnx-fp32.onnx", 384, 256)
    _results(run, [_row(native, "", 20.0, 0.0, with_size=False), _row(small, "", 5.0, 0.0, with_size=False)],
             old=True)  # nor a run_path: the file is found by its path inside the run
    assert input_size_of({"path": small}) == "192x128"
    assert input_size_of({"path": str(run / "missing.onnx")}) == ""
    assert select(run, max_iou_drop=0.01)["input_size"] == "192x128"


def test_an_engine_nobody_measured_is_still_refused_with_sizes_present(run):
    small = _onnx(run / "export/onnx-fp32-192x128.onnx", 192, 128)
    _results(run, [_row(small, "192x128", 5.0, 0.0)])
    with pytest.raises(GateError, match="was measured on litert"):
        select(run, max_iou_drop=0.01, engines=("litert",))


def test_a_smaller_size_measured_against_its_own_fp32_is_charged_what_its_size_costs(run):
    small = _onnx(run / "export/onnx-int8-192x128.onnx", 192, 128)
    native = _onnx(run / "export/onnx-int8.onnx", 384, 256)
    rows = [_row(native, "384x256", 20.0, 0.001), _row(small, "192x128", 5.0, 0.002)]
    rows[0].update(iou=0.665, reference="base/onnx-fp32 384x256 on onnxruntime", reference_iou=0.666)
    rows[1].update(iou=0.522, reference="base/onnx-fp32 192x128 on onnxruntime", reference_iou=0.524)
    _results(run, rows)  # a TensorFlow-free bench: each size's drop against its own size's fp32
    choice = select(run, max_iou_drop=0.01)
    assert choice["input_size"] == "384x256" and choice["figures"]["iou_drop"] == pytest.approx(0.001)
    assert choice["drops_against"].startswith("base/onnx-fp32 384x256 on onnxruntime (IoU 0.6660)")
    assert select(run, max_iou_drop=0.15)["input_size"] == "192x128"  # a budget that pays for the size


def test_one_keras_baseline_for_every_size_leaves_the_drops_as_bench_measured_them(run):
    small = _onnx(run / "export/onnx-int8-192x128.onnx", 192, 128)
    rows = [_row(small, "192x128", 5.0, 0.142)]
    rows[0].update(reference="keras-fp32", reference_iou=0.666)
    _results(run, rows)
    choice = select(run, max_iou_drop=0.15)
    assert choice["figures"]["iou_drop"] == 0.142 and choice["drops_against"].startswith("each row's own reference")
