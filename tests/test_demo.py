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
    """The bench recorded exactly the violations the gate finds at the demo's limit, each row over it
    named; the deployed artifact is within it. And the gate is exercised on the demo's own rows whatever
    the training gave: at half the largest IoU drop measured, it names that row."""
    from lunarseg.benchmarks.bench import _violations
    from lunarseg.benchmarks.limits import Limits

    rows, threads = results["rows"], results["threads"][0]
    assert results["violations"] == _violations(rows, Limits(max_iou_drop=limit), threads)
    ok = [r for r in rows if r.get("deployable") and r["status"] == "ok" and r["threads"] == threads]
    for r in ok:
        if r["iou_drop"] > limit:
            name = f"LIMIT {r['variant']}/{r['format']} on {r['engine']} (threads={r['threads']}): IoU drop {r['iou_drop']:.4f} > limit {limit}"
            assert any(v.startswith(name) for v in results["violations"]), name
    worst = max(ok, key=lambda r: r["iou_drop"])
    assert worst["iou_drop"] > 0, "no compressed artifact of the quick demo lost any IoU"
    tight = _violations(rows, Limits(max_iou_drop=worst["iou_drop"] / 2), threads)
    assert any(v.startswith(f"LIMIT {worst['variant']}/{worst['format']} on {worst['engine']} (threads={threads})")
               for v in tight)
    deployed = [r for r in rows if (r["variant"], r["format"], r["engine"])
                == (selection["variant"], selection["format"], selection["engine"])]
    assert len(deployed) == 1 and deployed[0]["iou_drop"] <= limit and selection["max_iou_drop"] == limit
