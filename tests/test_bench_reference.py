"""Each bench row's IoU drop is against one named reference: the run's Keras baseline, else the fp32
artifact of the same variant (same input size first), else the validation IoU in the file; none fails the gate."""
from lunarseg.benchmarks.bench import gate_failures
from lunarseg.benchmarks.inputs import BASELINE
from lunarseg.benchmarks.reference import VAL_IOU_REFERENCE, relate_to_reference


def _row(variant, fmt, iou, engine="onnxruntime", path=None, run="r", **kw):
    suffix = ".tflite" if fmt.startswith("tflite") else ".onnx" if fmt.startswith("onnx") else ".keras"
    return {"variant": variant, "format": fmt, "engine": engine, "status": "ok", "threads": 1, "iou": iou,
            "p50_ms": 10.0, "gzip_bytes": 1000, "path": path or f"{variant}/{fmt}{suffix}", "run": run,
            "deployable": fmt != BASELINE, **kw}


def test_the_keras_baseline_is_the_reference_when_it_was_measured():
    rows = [_row("base", BASELINE, 0.70, engine="tensorflow"), _row("base", "onnx-fp32", 0.69),
            _row("slim", "onnx-int8", 0.65)]
    relate_to_reference(rows)
    assert [(r["reference"], r["iou_drop"]) for r in rows] == [(BASELINE, 0.0), (BASELINE, 0.01), (BASELINE, 0.05)]


def test_without_a_baseline_the_fp32_artifact_of_the_same_variant_and_size_is_the_reference():
    rows = [_row("base", "onnx-fp32", 0.60, input_size="384x256"),
            _row("base", "onnx-fp32", 0.50, input_size="192x128", path="base/onnx-fp32-192x128.onnx"),
            _row("base", "onnx-int8", 0.48, input_size="192x128", path="base/onnx-int8-192x128.onnx")]
    relate_to_reference(rows)
    assert rows[2]["reference"] == "base/onnx-fp32 192x128 on onnxruntime" and rows[2]["iou_drop"] == 0.02
    assert rows[2]["speedup"] == 1.0 and rows[2]["size_ratio"] == 1.0


def test_with_no_fp32_artifact_the_validation_iou_in_the_file_is_the_reference_and_no_speedup_is_claimed():
    rows = [_row("base", "onnx-fp32", 0.60), _row("slim", "tflite-int8", 0.55, engine="litert", val_iou=0.58)]
    relate_to_reference(rows)
    slim = rows[1]
    assert slim["reference"] == VAL_IOU_REFERENCE and slim["reference_iou"] == 0.58 and slim["iou_drop"] == 0.03
    assert "speedup" not in slim


def test_references_do_not_cross_run_directories():
    rows = [_row("base", BASELINE, 0.70, engine="tensorflow", run="a"), _row("base", "onnx-int8", 0.65, run="b")]
    relate_to_reference(rows)
    assert "iou_drop" not in rows[1]


def test_a_deployable_row_with_no_reference_fails_the_gate_naming_it():
    rows = [_row("slim", "tflite-int8", 0.55, engine="litert")]
    relate_to_reference(rows)
    assert gate_failures(rows) == [
        "artifact slim/tflite-int8 on litert: no IoU reference (no Keras baseline, no fp32 artifact of slim, no "
        "validation IoU in its metadata): its IoU drop cannot be checked"]


def test_drops_against_measured_rows_carry_a_paired_interval_over_the_same_frames():
    base = _row("base", BASELINE, 0.70, engine="tensorflow", frame_rock_counts=[[70, 100], [70, 100], [70, 100]])
    control = _row("dense-ft", "onnx-int8", 0.70, frame_rock_counts=[[70, 100], [70, 100], [70, 100]])
    pruned = _row("pruned50", "onnx-int8", 0.60, frame_rock_counts=[[60, 100], [60, 100], [60, 100]])
    rows = [base, control, pruned]
    relate_to_reference(rows)
    assert pruned["iou_drop_ci"] == [0.1, 0.1] and pruned["drop_vs_control_ci"] == [0.1, 0.1]
    assert control["iou_drop_ci"] == [0.0, 0.0] and "iou_drop_ci" not in base  # the baseline is its own reference


def test_a_drop_against_the_metadata_or_other_frames_has_no_interval():
    meta_ref = _row("slim", "tflite-int8", 0.55, engine="litert", val_iou=0.58, frame_rock_counts=[[55, 100]])
    other_frames = [_row("base", "onnx-fp32", 0.7, frame_rock_counts=[[70, 100], [70, 100]]),
                    _row("base", "onnx-int8", 0.6, frame_rock_counts=[[60, 100]])]
    relate_to_reference([meta_ref])
    relate_to_reference(other_frames)
    assert "iou_drop_ci" not in meta_ref and "iou_drop_ci" not in other_frames[1]
    assert other_frames[1]["iou_drop"] == 0.1


def test_drop_text_shows_the_interval_after_the_drop():
    from lunarseg.benchmarks.reference import drop_text

    assert drop_text({"iou_drop": 0.0264, "iou_drop_ci": [0.0123, 0.041]}, "iou_drop") == "0.0264 [0.0123, 0.0410]"
    assert drop_text({"drop_vs_control": 0.01}, "drop_vs_control", "+.4f") == "+0.0100"
    assert drop_text({}, "iou_drop") is None
