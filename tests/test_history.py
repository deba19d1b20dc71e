"""A run's history.csv: what the trainer writes is what the fine-tunes and the demo's planner read,
without TensorFlow."""
import subprocess
import sys

from lunarseg.train.history import positive_number, rate_at_epoch, read_history, write_history


def test_history_rows_written_by_the_trainer_read_back_with_epoch_first(tmp_path):
    write_history(tmp_path / "history.csv", [{"lr": 0.01, "epoch": 1, "seconds": 3.5}, {"epoch": 2, "lr": 0.002, "seconds": 3.0}])
    assert (tmp_path / "history.csv").read_text().splitlines()[0] == "epoch,lr,seconds"
    rows = read_history(tmp_path)
    assert [(r["epoch"], r["lr"]) for r in rows] == [("1", "0.01"), ("2", "0.002")]
    assert rate_at_epoch(rows, 1) == 0.01 and rate_at_epoch(rows, None) == 0.002


def test_a_run_without_history_reads_as_no_rows_and_no_rate(tmp_path):
    assert read_history(tmp_path) == [] and rate_at_epoch([], 3) is None


def test_only_finite_positive_history_cells_count_as_numbers():
    assert [positive_number(v) for v in ("0.5", "2", "0", "-1", "inf", "nan", "", None, "abc")] == \
        [0.5, 2.0, None, None, None, None, None, None, None]


def test_reading_a_history_loads_no_tensorflow():
    code = ("import sys, lunarseg.train.history; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras')))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
