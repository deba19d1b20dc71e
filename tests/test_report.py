"""The current-figures report is rebuilt from a run's JSON and says whether the parent converged."""
import json

from lunarseg.benchmarks.report import main, report


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def fake_run(tmp_path, control_val):
    run = tmp_path / "run"
    cfg = {"arch": "unet", "width": 384, "height": 256, "colour_mode": "gray", "crop_width": 192, "crop_height": 128,
           "depth": 4, "filters": 8, "loss": "bce-dice", "learning_rate": 0.01, "lr_schedule": "cosine",
           "threshold_rule": "rocks-f2"}
    _write(run / "meta.json", {"train_config": cfg, "threshold": 0.35, "val_metrics": {"iou": 0.60}, "created": "2026-12-01T10:00:00",
                               "extra": {"macs": 1.29e9, "epochs_trained": 90, "best_epoch": 88, "train_images_per_s": 30}})
    _write(run / "eval_test.json", {"frames": 21, "iou": 0.65, "dice": 0.79, "precision": 0.8, "recall": 0.78,
                                    "miou": 0.82, "objects": {"recall": 0.9, "rocks": 278, "precision": 0.98, "blobs": 264}})
    for name, val in (("dense-ft", control_val), ("slim40", 0.58)):
        _write(run / f"compressed/{name}/meta.json", {"extra": {"compress": {
            "val_iou_after": val, "iou_drop": 0.60 - val, "macs": 2e8, "epochs_run": [{}] * 16}}})
    return run


def test_report_shows_quality_variants_and_drops_against_the_dense_control(tmp_path):
    text = report(fake_run(tmp_path, control_val=0.605))
    assert "| 21 | 0.650 | 0.790 |" in text and "0.900 (278)" in text
    assert "| slim40 | 0.200 | 16 | 0.5800 | +0.0200 | +0.0250 |" in text
    assert "counts as converged" in text
    assert "threshold 0.35 chosen on val by the rocks-f2 rule" in text
    assert (tmp_path / "run/report.md").read_text() == text


def test_report_flags_a_parent_the_dense_control_still_improves(tmp_path):
    assert "had NOT converged" in report(fake_run(tmp_path, control_val=0.64))


def test_report_on_a_folder_that_is_not_a_run_is_one_line(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"report: error: {tmp_path}: no meta.json; not a run directory"


def test_bench_table_names_each_rows_input_size_and_the_reference_of_its_drop(tmp_path):
    run = fake_run(tmp_path, control_val=0.605)
    rows = [{"variant": "base", "format": "keras-fp32", "engine": "tensorflow", "status": "ok", "p50_ms": 30.0},
            {"variant": "base", "format": "onnx-int8", "engine": "onnxruntime", "status": "ok", "p50_ms": 10.0,
             "speedup": 3.0, "gzip_bytes": 460000, "iou": 0.66, "iou_drop": 0.005, "reference": "keras-fp32",
             "input_size": "384x256"},
            {"variant": "slim40", "format": "tflite-int8", "engine": "litert", "status": "ok", "p50_ms": 5.0,
             "gzip_bytes": 100000, "iou": 0.6, "iou_drop": 0.02, "reference": "val IoU in the file's metadata",
             "input_size": "192x128"}]
    _write(run / "bench/results.json", {"profile": "rover", "frames": 20, "input_shape": [1, 256, 384, 1], "rows": rows,
                                        "iou_rule": "the rule", "violations": []})
    text = report(run)
    assert "| base | onnx-int8 | 384x256 | onnxruntime | 10.00 | 3.0× | 460,000 | 0.6600 | +0.0050 | keras-fp32 | — |" in text
    assert ("| slim40 | tflite-int8 | 192x128 | litert | 5.00 | — | 100,000 | 0.6000 | +0.0200 | "
            "val IoU in the file's metadata | — |") in text
    assert "IoU: the rule." in text


def test_report_on_an_imported_run_names_its_source_and_an_unknown_parent_iou(tmp_path):
    run = fake_run(tmp_path, control_val=0.605)
    _write(run / "meta.json", {"train_config": {}, "val_metrics": {"iou": None, "dice": None}, "input_shape": [1, 64, 96, 3],
                               "colour_mode": "rgb", "created": "2026-12-01T10:00:00",
                               "extra": {"macs": 2.5e7, "imported": {"path": "/models/nb.h5", "format": "h5"}}})
    text = report(run)
    assert "Model: imported from nb.h5 (h5), 96×64 rgb input (0.025 GMAC), trained outside lunarseg." in text
    assert "trained model unknown" in text and "converged" not in text


def test_bench_table_gives_each_drop_its_interval_and_says_what_the_interval_is(tmp_path):
    run = fake_run(tmp_path, control_val=0.605)
    rows = [{"variant": "pruned50", "format": "onnx-int8", "engine": "onnxruntime", "status": "ok", "p50_ms": 10.0,
             "speedup": 3.0, "gzip_bytes": 200000, "iou": 0.64, "iou_drop": 0.026, "iou_drop_ci": [0.012, 0.041],
             "reference": "keras-fp32", "drop_vs_control": 0.02, "drop_vs_control_ci": [-0.001, 0.038]}]
    _write(run / "bench/results.json", {"profile": "rover", "frames": 20, "rows": rows, "violations": []})
    text = report(run)
    assert "| 0.6400 | +0.0260 [+0.0120, +0.0410] | keras-fp32 | +0.0200 [-0.0010, +0.0380] |" in text
    assert "95 % interval, a paired bootstrap over the test frames" in text


def test_variant_drops_carry_their_val_intervals_when_the_summaries_kept_frame_counts(tmp_path):
    run = fake_run(tmp_path, control_val=0.605)
    counts = {"dense-ft": [[60, 100], [61, 100]], "slim40": [[58, 100], [58, 100]]}
    for name, frames in counts.items():
        path = run / f"compressed/{name}/meta.json"
        meta = json.loads(path.read_text())
        meta["extra"]["compress"].update(val_frame_rock_counts=frames, iou_drop_ci=[0.01, 0.03])
        _write(path, meta)
    text = report(run)
    assert "| slim40 | 0.200 | 16 | 0.5800 | +0.0200 [+0.0100, +0.0300] | +0.0250 [+0.0200, +0.0300] |" in text
    assert "Dense control gain +0.0050 [-0.0300, -0.0100] val IoU" in text  # the control's own drop, negated
    assert "a paired bootstrap over the validation frames" in text


def test_quality_table_gives_found_and_right_their_intervals(tmp_path):
    run = fake_run(tmp_path, control_val=0.605)
    ev = json.loads((run / "eval_test.json").read_text())
    ev["objects"].update(recall_interval=[0.935, 0.982], precision_interval=[0.96, 0.995])
    _write(run / "eval_test.json", ev)
    text = report(run)
    assert "| 0.900 [0.935, 0.982] (278) | 0.980 [0.960, 0.995] (264) |" in text
    assert "95 % interval of a bootstrap over the test frames" in text
