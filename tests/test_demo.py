"""`lunarseg demo --quick`: the whole pipeline end to end on tiny synthetic data."""
import json

from lunarseg.benchmarks.bench import COLUMNS
from lunarseg.cli import main


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
    records = [json.loads(line) for line in (out / "segments/results.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["ok"] for r in records)
    for key in ("preview", "curves", "eval_grid", "pareto", "deployed"):
        assert f"  {key}" in printed
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings["stages_s"]) == {"synth", "train", "evaluate", "compress", "export", "bench", "select", "segment"}
    assert 0 < sum(timings["stages_s"].values()) <= timings["total_s"] + 0.05 * len(timings["stages_s"])  # each rounded to 0.1 s
