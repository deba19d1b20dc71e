"""The Pareto plot people read: the front as a step line over the deployable rows, the IoU-budget line,
labels that do not overlap, engines as shapes, size as area; skipped in one line without matplotlib."""
import pytest

from lunarseg.benchmarks import plots


def _row(variant, fmt, engine, p50, iou, nbytes=1000, deployable=True, **kw):
    return {"variant": variant, "format": fmt, "engine": engine, "status": "ok", "threads": 1, "p50_ms": p50,
            "iou": iou, "bytes": nbytes, "deployable": deployable, **kw}


def _results(rows, max_iou_drop=0.02):
    return {"rows": rows, "threads": [1], "frames": 20, "profile": "rover", "cpu": {"model": "test CPU"},
            "limits": {"max_iou_drop": max_iou_drop}}


def test_pareto_front_keeps_only_deployable_rows_nothing_faster_beats_fastest_first():
    rows = [_row("base", "keras-fp32", "tensorflow", 1.0, 0.99, deployable=False),  # not deployable: never on it
            _row("a", "onnx-int8", "openvino", 7.0, 0.66), _row("b", "onnx-int8", "onnxruntime", 30.0, 0.65),
            _row("c", "onnx-int8", "openvino", 8.0, 0.68), _row("d", "tflite-int8", "litert", 40.0, 0.69)]
    assert [r["variant"] for r in plots.pareto_front(rows)] == ["a", "c", "d"]


def test_budget_line_is_each_reference_iou_minus_the_max_drop_and_names_reference_and_variants():
    rows = [_row("base", "onnx-int8", "onnxruntime", 5, 0.60, reference="base/onnx-fp32 on onnxruntime",
                 reference_iou=0.62, iou_drop=0.02),
            _row("base", "onnx-int8", "openvino", 3, 0.60, reference="base/onnx-fp32 on openvino",
                 reference_iou=0.62, iou_drop=0.02),  # the same fp32 file on another engine: the same line
            _row("slim", "onnx-int8", "onnxruntime", 4, 0.55, reference="other/onnx-fp32 on onnxruntime",
                 reference_iou=0.58, iou_drop=0.03)]
    lines = plots.budget_lines(_results(rows, 0.02), rows)
    assert [(label, of) for label, _, of in lines] == [("IoU budget of base: base/onnx-fp32 0.620 − 0.02", ["base"]),
                                                       ("IoU budget of slim: other/onnx-fp32 0.580 − 0.02", ["slim"])]
    assert [v for _, v, _ in lines] == pytest.approx([0.60, 0.56])
    assert plots.budget_lines(_results(rows, None), rows) == []


def test_one_keras_baseline_gives_one_budget_line_for_every_variant():
    rows = [_row(v, "onnx-int8", "onnxruntime", 5, 0.6, reference="keras-fp32", reference_iou=0.65, iou_drop=0.05)
            for v in ("base", "slim")]
    assert plots.budget_lines(_results(rows, 0.02), rows) == [
        ("IoU budget of base, slim: keras-fp32 0.650 − 0.02", pytest.approx(0.63), ["base", "slim"])]


def test_labels_of_clustered_points_do_not_overlap_each_other():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    pts = [(30.0 + 0.3 * i, 0.667 + 0.0001 * (i % 3)) for i in range(8)]  # eight points on top of each other
    ax.set_xlim(0, 60)
    ax.set_ylim(0.6, 0.7)
    texts = [str(i) for i in range(1, 9)]
    offsets = plots.place_labels(ax, pts, texts, radii=[6.0] * 8)
    px = fig.dpi / 72.0
    boxes = []
    for (x, y), (dx, dy), t in zip(pts, offsets, texts):
        X, Y = ax.transData.transform((x, y))
        w, h = 0.62 * 8 * len(t) * px, 1.25 * 8 * px
        boxes.append((X + dx * px, Y + dy * px, X + dx * px + w, Y + dy * px + h))
    plt.close(fig)
    overlaps = [(i, j) for i in range(8) for j in range(i + 1, 8) if plots._overlap(boxes[i], boxes[j]) > 0]
    assert overlaps == []


def test_marker_area_grows_with_file_bytes_and_engines_have_distinct_shapes():
    assert plots.marker_area(0, 100) == plots.AREA_MIN and plots.marker_area(100, 100) == plots.AREA_MAX
    assert plots.marker_area(25, 100) < plots.marker_area(50, 100)
    assert len(set(plots.ENGINE_MARKERS.values())) == len(plots.ENGINE_MARKERS)


def test_plot_is_a_png_with_the_front_and_budget_drawn(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures, close = [], plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (figures.append(fig), close(fig)))
    rows = [_row("base", "keras-fp32", "tensorflow", 34, 0.667, 2_000_000, deployable=False),
            _row("base", "onnx-int8", "openvino", 7, 0.667, 460_000, iou_drop=0.0, reference="keras-fp32",
                 reference_iou=0.667, input_size="384x256"),
            _row("dense-ft", "onnx-int8", "openvino", 8, 0.676, 460_000, iou_drop=-0.009, reference="keras-fp32",
                 reference_iou=0.667),
            _row("pruned", "tflite-int8", "litert", 49, 0.658, 199_000, iou_drop=0.009, reference="keras-fp32",
                 reference_iou=0.667)]
    out, results = tmp_path / "pareto.png", _results(rows)
    assert plots.plot_pareto(results, out) is None
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    [fig] = figures
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    front = plots.pareto_front(plots.plotted_rows(results))
    steps = [line for line in ax.lines if list(line.get_ydata()) == [r["iou"] for r in front] + [front[-1]["iou"]]]
    assert len(front) >= 2 and steps and "Pareto front of the deployable artifacts" in labels
    budgets = plots.budget_lines(results, plots.plotted_rows(results))
    assert budgets
    for label, iou, _ in budgets:
        assert label in labels and any(list(line.get_ydata()) == [iou, iou] for line in ax.lines), label


def test_without_matplotlib_the_plot_is_skipped_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "matplotlib_installed", lambda: False)
    out = tmp_path / "pareto.png"
    assert plots.plot_pareto(_results([]), out) == plots.PLOT_SKIPPED
    assert not out.exists() and "\n" not in plots.PLOT_SKIPPED
