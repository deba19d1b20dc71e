"""`lunarseg demo --quick`: the whole pipeline end to end on tiny synthetic data."""
import json

import pytest

from lunarseg.benchmarks.bench import COLUMNS
from lunarseg.cli import main
from lunarseg.demo import QUICK


pytestmark = pytest.mark.slow  # trains, compresses, exports and benchmarks


def test_quick_demo_runs_every_stage_and_prints_the_paths(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    for stage in range(1, 9):
        assert f"== {stage}/8" in printed
    assert "| " + " | ".join(COLUMNS) + " |" in printed
    results = json.loads((out / "run/bench/results.json").read_text())
    variants = {r["variant"] for r in results["rows"]}
    assert variants == {"base", "pruned50", "pruned75", "qat", "pruned50-pqat", "slim50", "slim40", "pruned50-c8", "dense-ft"}
    assert "rock recall by true-rock size" in printed and "of blobs right" in printed
    selection = json.loads((out / "run/deploy/selection.json").read_text())
    assert (out / "run/deploy").joinpath(selection["artifact"].split("/")[-1]).exists()
    assert_gate_holds(results, selection, QUICK.max_iou_drop)
    records = [json.loads(line) for line in (out / "segments/results.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["ok"] for r in records)
    for key in ("preview", "curves", "eval_grid", "pareto", "deployed"):
        assert f"  {key}" in printed
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings["stages_s"]) == {"synth", "train", "evaluate", "compress", "export", "bench", "select", "segment"}
    assert 0 < sum(timings["stages_s"].values()) <= timings["total_s"] + 0.05 * len(timings["stages_s"])  # each rounded to 0.1 s


def assert_gate_holds(results, selection, limit):
    """Every deployable row over the IoU-drop limit has a violation naming it, at least one does (the quick
    demo exercises the gate), and the deployed artifact is within the limit."""
    over = [r for r in results["rows"] if r.get("deployable") and r["status"] == "ok" and r["iou_drop"] > limit]
    assert over, "no artifact of the quick demo breaks the IoU-drop limit: the gate is not exercised"
    for r in over:
        name = f"LIMIT {r['variant']}/{r['format']} (threads={r['threads']}): IoU drop {r['iou_drop']:.4f} > limit {limit}"
        assert name in results["violations"], name
    deployed = [r for r in results["rows"] if (r["variant"], r["format"], r["engine"])
                == (selection["variant"], selection["format"], selection["engine"])]
    assert len(deployed) == 1 and deployed[0]["iou_drop"] <= limit and selection["max_iou_drop"] == limit
