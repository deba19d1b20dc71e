"""Each bench row's IoU drop is against a float version of the trained model it descends from, measured
in the same bench: its Keras baseline, else the fp32 file exported from it (same input size first).
Rows pair by the trained model's hash, never by name or folder; no reference fails an IoU-drop limit."""
from lunarseg.benchmarks.bench import gate_failures
from lunarseg.benchmarks.inputs import BASELINE
from lunarseg.benchmarks.limits import Limits
from lunarseg.benchmarks.reference import relate_to_reference

TRAINED, PRUNED, OTHER = "t" * 64, "p" * 64, "o" * 64


def _row(variant, fmt, iou, engine="onnxruntime", path=None, run="r", trained=TRAINED, made_from=None, **kw):
    """A measured row; `made_from`: the Keras model the file was exported from (default: the trained one)."""
    suffix = ".tflite" if fmt.startswith("tflite") else ".onnx" if fmt.startswith("onnx") else ".keras"
    return {"variant": variant, "format": fmt, "engine": engine, "status": "ok", "threads": 1, "iou": iou,
            "p50_ms": 10.0, "gzip_bytes": 1000, "path": path or f"{variant}/{fmt}{suffix}", "run": run,
            "deployable": fmt != BASELINE, "trained_hash": trained, "model_hash": made_from or trained, **kw}


def test_the_keras_baseline_is_the_reference_when_it_was_measured():
    rows = [_row("base", BASELINE, 0.70, engine="tensorflow"), _row("base", "onnx-fp32", 0.69),
            _row("pruned", "onnx-int8", 0.65, made_from=PRUNED)]
    relate_to_reference(rows)
    assert [(r["reference"], r["iou_drop"]) for r in rows] == [(BASELINE, 0.0), (BASELINE, 0.01), (BASELINE, 0.05)]


def test_without_a_baseline_the_fp32_file_of_the_trained_model_at_the_same_size_is_the_reference():
    rows = [_row("base", "onnx-fp32", 0.60, input_size="384x256"),
            _row("base", "onnx-fp32", 0.50, input_size="192x128", path="base/onnx-fp32-192x128.onnx"),
            _row("base", "onnx-int8", 0.48, input_size="192x128", path="base/onnx-int8-192x128.onnx")]
    relate_to_reference(rows)
    assert rows[2]["reference"] == "base/onnx-fp32 192x128 on onnxruntime" and rows[2]["iou_drop"] == 0.02
    assert rows[2]["speedup"] == 1.0 and rows[2]["size_ratio"] == 1.0


def test_a_compressed_variant_is_measured_against_the_trained_model_not_its_own_fp32_file():
    rows = [_row("base", "onnx-fp32", 0.67), _row("pruned50", "onnx-fp32", 0.66, made_from=PRUNED),
            _row("pruned50", "onnx-int8", 0.645, made_from=PRUNED)]
    relate_to_reference(rows)
    assert rows[2]["reference"] == "base/onnx-fp32 on onnxruntime" and rows[2]["iou_drop"] == 0.025


def test_a_row_whose_trained_model_was_not_measured_has_no_drop_and_no_speedup():
    rows = [_row("base", "onnx-fp32", 0.60), _row("slim", "tflite-int8", 0.55, engine="litert", made_from=PRUNED,
                                                  trained=OTHER, val_iou=0.58)]
    relate_to_reference(rows)
    assert "iou_drop" not in rows[1] and "speedup" not in rows[1]  # its val IoU is another split's figure


def test_loose_files_of_other_models_never_stand_for_each_other_whatever_their_names():
    rows = [_row("base", "onnx-fp32", 0.04, run=None, trained=OTHER), _row("base", "onnx-int8", 0.67, run=None)]
    relate_to_reference(rows)
    assert "iou_drop" not in rows[1]


def test_the_same_trained_model_in_two_folders_is_one_reference():
    rows = [_row("base", BASELINE, 0.70, engine="tensorflow", run="a"), _row("base", "onnx-int8", 0.65, run=None)]
    relate_to_reference(rows)
    assert rows[1]["iou_drop"] == 0.05


def test_a_row_without_a_reference_fails_the_gate_only_under_an_iou_drop_limit():
    rows = [_row("slim", "tflite-int8", 0.55, engine="litert", made_from=PRUNED, trained=OTHER)]
    relate_to_reference(rows)
    assert gate_failures(rows) == []
    assert gate_failures(rows, Limits(max_iou_drop=0.02)) == [
        "artifact slim/tflite-int8 on litert: no IoU reference (no float version of its trained model was "
        "measured (its Keras baseline, or an fp32 file exported from it)): the IoU-drop limit cannot be checked"]


def test_drops_against_measured_rows_carry_a_paired_interval_over_the_same_frames():
    base = _row("base", BASELINE, 0.70, engine="tensorflow", frame_rock_counts=[[70, 100], [70, 100], [70, 100]])
    control = _row("dense-ft", "onnx-int8", 0.70, made_from=PRUNED, frame_rock_counts=[[70, 100], [70, 100], [70, 100]])
    pruned = _row("pruned50", "onnx-int8", 0.60, made_from=PRUNED, frame_rock_counts=[[60, 100], [60, 100], [60, 100]])
    rows = [base, control, pruned]
    relate_to_reference(rows)
    assert pruned["iou_drop_ci"] == [0.1, 0.1] and pruned["drop_vs_control_ci"] == [0.1, 0.1]
    assert control["iou_drop_ci"] == [0.0, 0.0] and "iou_drop_ci" not in base  # the baseline is its own reference


def test_the_dense_control_pairs_by_trained_model_not_by_folder():
    control = _row("dense-ft", "onnx-int8", 0.70, made_from=PRUNED, run="a", trained=OTHER)
    pruned = _row("pruned50", "onnx-int8", 0.60, made_from=PRUNED, run="a")
    relate_to_reference([control, pruned])
    assert "drop_vs_control" not in pruned  # the control of another trained model


def test_a_drop_against_other_frames_has_no_interval():
    rows = [_row("base", "onnx-fp32", 0.7, frame_rock_counts=[[70, 100], [70, 100]]),
            _row("base", "onnx-int8", 0.6, frame_rock_counts=[[60, 100]])]
    relate_to_reference(rows)
    assert "iou_drop_ci" not in rows[1] and rows[1]["iou_drop"] == 0.1


def test_drop_text_shows_the_interval_after_the_drop():
    from lunarseg.benchmarks.reference import drop_text

    assert drop_text({"iou_drop": 0.0264, "iou_drop_ci": [0.0123, 0.041]}, "iou_drop") == "0.0264 [0.0123, 0.0410]"
    assert drop_text({"drop_vs_control": 0.01}, "drop_vs_control", "+.4f") == "+0.0100"
    assert drop_text({}, "iou_drop") is None
