"""The demo's time budget: epochs chosen from the measured training speed fit the budget, a slower
machine trains less, nothing exceeds its defaults, and bad budgets or profiles are refused."""
from dataclasses import replace

import pytest

from lunarseg.budget import MIN_TRAIN_EPOCHS, StageCosts, VariantWork, plan_demo
from lunarseg.cli import main
from lunarseg.demo import BUDGET, demo_variants
from lunarseg.runtime.errors import ConfigError
from lunarseg.runtime.interrupts import Terminated

VARIANTS = [VariantWork("pruned50", 4), VariantWork("slim50", 16, cost=0.5), VariantWork("pruned50-c8", 4, cluster_epochs=2)]


def plan(rate, budget_min=16.0, **kw):
    args = dict(budget_s=budget_min * 60, elapsed_s=100.0, images_per_s=rate, train_frames=156, val_frames=22,
                variants=VARIANTS, artifacts=9, max_train_epochs=16)
    return plan_demo(**{**args, **kw})


@pytest.mark.parametrize("rate", [9.0, 12.0, 24.0])
def test_plan_fits_the_budget_when_the_minimum_pipeline_does(rate):
    p = plan(rate)
    assert not p.over_budget
    assert sum(p.estimate_s.values()) <= 16 * 60
    assert p.estimate_s["so far"] == 100.0


def test_slower_machine_trains_and_fine_tunes_fewer_epochs():
    fast, slow = plan(12.0), plan(3.0)
    assert slow.train_epochs < fast.train_epochs
    assert all(slow.variant_epochs[v.name][0] <= fast.variant_epochs[v.name][0] for v in VARIANTS)
    assert sum(e for e, _ in slow.variant_epochs.values()) < sum(e for e, _ in fast.variant_epochs.values())


def test_epochs_never_exceed_the_maximum_or_a_variants_defaults():
    p = plan(1000.0)
    assert p.train_epochs == 16
    assert p.variant_epochs == {"pruned50": (4, 0), "slim50": (16, 0), "pruned50-c8": (4, 2)}


def test_every_phase_keeps_its_minimum_and_a_too_slow_machine_is_flagged():
    p = plan(0.5)
    assert p.train_epochs == MIN_TRAIN_EPOCHS
    assert p.variant_epochs == {"pruned50": (1, 0), "slim50": (1, 0), "pruned50-c8": (1, 1)}
    assert p.over_budget and "does not fit the budget" in p.describe()


def test_fixed_stages_scale_with_the_machines_speed():
    costs = StageCosts()
    assert costs.fixed_s(9, costs.reference_images_per_s / 2) == pytest.approx(2 * costs.fixed_s(9, costs.reference_images_per_s))


@pytest.mark.parametrize("kw, message", [(dict(budget_min=0), "budget must be positive"),
                                         (dict(rate=0.0), "training speed must be positive")])
def test_bad_budget_or_speed_refused(kw, message):
    with pytest.raises(ConfigError, match=message):
        plan(kw.pop("rate", 5.0), **kw)


def test_budget_profile_makes_the_target_variants():
    assert [v.variant for v in demo_variants(BUDGET)] == ["pruned50", "pruned50-c8", "dense-ft"]
    assert set(BUDGET.min_variant_epochs) <= set(BUDGET.variants)


def test_variant_minimum_comes_before_training_beyond_its_own_minimum():
    floors = [VariantWork("pruned50", 4, min_epochs=3), VariantWork("slim50", 16, cost=0.5, min_epochs=6),
              VariantWork("pruned50-c8", 4, cluster_epochs=2, min_epochs=3)]
    plain, floored = plan(8.0), plan(8.0, variants=floors)
    assert floored.variant_epochs["pruned50"][0] >= 3 and floored.variant_epochs["slim50"][0] >= 6
    assert floored.variant_epochs["pruned50-c8"][0] >= 3 and floored.variant_epochs["pruned50-c8"][1] >= 1
    assert floored.train_epochs < plain.train_epochs  # the floors are paid for by training
    assert not floored.over_budget


def test_minimum_above_a_variants_default_refused():
    with pytest.raises(ConfigError, match=r"pruned50: minimum fine-tune epochs must be in \[1, 4\]"):
        VariantWork("pruned50", 4, min_epochs=5)


@pytest.mark.parametrize("argv, message", [(["--profile", "fastest"], "unknown demo profile 'fastest'"),
                                           (["--budget-min", "-3"], "--budget-min must be a finite number >= 0"),
                                           (["--budget-min", "nan"], "--budget-min must be a finite number >= 0"),
                                           (["--frames", "-5"], "--frames must be at least 12, got -5"),
                                           (["--epochs", "-1"], "--epochs must be at least 1, got -1"),
                                           (["--workers", "0"], "--workers must be at least 1, got 0")])
def test_demo_refuses_bad_profile_or_budget_in_one_line(tmp_path, capsys, argv, message):
    assert main(["demo", "--out", str(tmp_path / "d"), *argv]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_a_demo_rerun_with_other_options_is_refused_naming_them(tmp_path, capsys):
    from lunarseg.demo import PROFILES, _same_options

    out = tmp_path / "d"
    out.mkdir()
    _same_options(out, PROFILES["quick"])
    _same_options(out, PROFILES["quick"])  # the same options: the demo continues
    with pytest.raises(ConfigError, match=r"holds a demo made with other options \(epochs 2 -> 3, frames 24 -> 30\)"):
        _same_options(out, replace(PROFILES["quick"], frames=30, epochs=3))


@pytest.mark.parametrize("code, stop", [(143, Terminated), (130, KeyboardInterrupt), (4, ConfigError)])
def test_a_stop_or_failure_inside_the_demos_segment_stage_ends_the_demo(tmp_path, monkeypatch, code, stop):
    import lunarseg.cli
    from data_fixtures import make_tree
    from lunarseg import demo

    d = demo.DemoRun(tmp_path, demo.QUICK, 1, demo.StageClock(), choice={"artifact": "m.tflite"})
    make_tree(d.data, numbers=range(1, 21))
    monkeypatch.setattr(lunarseg.cli, "main", lambda argv: code)
    with pytest.raises(stop):
        demo._segment(d)


def test_after_training_the_whole_time_left_goes_to_the_variants():
    before = plan(6.0)
    after = plan(6.0, elapsed_s=100.0 + before.estimate_s["train"], max_train_epochs=0)
    assert after.train_epochs == 0 and after.estimate_s["train"] == 0
    assert after.variant_epochs == before.variant_epochs


def test_training_speed_probe_is_batch_size_over_the_median_timed_batch_of_fit_on_the_training_stream(monkeypatch):
    """Fake clock at fit's batch ends: the timed batches take 0.1, 0.4 and 0.2 s (the warm-up one 9 s, untimed)."""
    import types

    from lunarseg.train import fit
    from lunarseg.train.config import TrainConfig

    ends, streams = iter([0.0, 9.0, 9.1, 9.5, 9.7]), []
    real = fit.make_dataset

    def recorded(x, y, cfg, **kw):
        ds = real(x, y, cfg, **kw)
        streams.append((kw, tuple(ds.element_spec[0].shape)))
        return ds

    monkeypatch.setattr(fit, "make_dataset", recorded)
    monkeypatch.setattr(fit, "time", types.SimpleNamespace(perf_counter=lambda: next(ends)))
    cfg = TrainConfig(width=64, height=32, depth=2, filters=4, batch_size=4, crop_width=32, crop_height=16)
    rate = fit.measure_training_speed(cfg, batches=3, warmup=1)
    assert rate == pytest.approx(4 / 0.2)
    # the augmented, repeated training stream, cut into crops of the configured size
    assert streams == [(dict(training=True, repeat=True), (None, 16, 32, 1))]


def test_training_on_quarter_frame_crops_buys_more_training_epochs_but_not_cheaper_fine_tunes():
    whole, crops = plan(6.0, max_train_epochs=400), plan(6.0, max_train_epochs=400, train_share=0.25)
    assert crops.train_epochs > 2.5 * whole.train_epochs
    assert crops.estimate_s["train"] == pytest.approx(whole.estimate_s["train"], rel=0.15)
    # fine-tunes run on whole frames either way: the same epochs but for what whole training epochs leave over
    assert all(abs(crops.variant_epochs[v][0] - whole.variant_epochs[v][0]) <= 1 for v in whole.variant_epochs)


def test_the_dense_control_fine_tunes_as_long_as_the_longest_variant_clustering_included():
    from lunarseg.demo import control_matches_longest

    planned = {"slim40": (9, 0), "pruned50-c8": (3, 1), "dense-ft": (5, 0)}
    assert control_matches_longest(planned)["dense-ft"] == (9, 0)
    assert control_matches_longest({"pruned50-c8": (4, 2), "dense-ft": (16, 0)})["dense-ft"] == (6, 0)
    assert control_matches_longest({"slim40": (9, 0)}) == {"slim40": (9, 0)}


def test_the_control_is_budgeted_as_the_longest_variant_so_no_time_is_planned_for_epochs_it_will_not_run():
    from lunarseg.demo import _as_long_as_the_longest

    work = [VariantWork("pruned50-c8", 4, cluster_epochs=2, min_epochs=3), VariantWork("dense-ft", 16, min_epochs=4)]
    control = _as_long_as_the_longest(work[1], work)
    assert (control.epochs, control.min_epochs, control.cluster_epochs) == (6, 4, 0)
    assert _as_long_as_the_longest(work[0], work) is work[0]


def test_time_the_variants_cannot_use_at_their_default_epochs_goes_to_training():
    few = [VariantWork("pruned50-c8", 4, cluster_epochs=2, min_epochs=3), VariantWork("dense-ft", 6, min_epochs=4)]
    p = plan(13.0, budget_min=16.0, variants=few, max_train_epochs=400, train_share=0.25)
    assert p.variant_epochs == {"pruned50-c8": (4, 2), "dense-ft": (6, 0)}  # the variants at their defaults
    # training takes the rest, beyond TRAIN_SHARE of it: the plan fills the budget to within one epoch
    epoch = StageCosts().epoch_s(156, 22, 13.0, 0.25, training=True)
    assert 16 * 60 - epoch <= sum(p.estimate_s.values()) <= 16 * 60
    assert p.estimate_s["train"] > 0.65 * (p.estimate_s["train"] + p.estimate_s["compress"])


def test_a_training_epoch_costs_less_fixed_time_than_a_fine_tune_epoch_of_the_same_frames():
    costs = StageCosts()
    slow = costs.reference_images_per_s / 2
    assert costs.epoch_s(160, 19, slow, 0.25) - costs.epoch_s(160, 19, slow, 0.25, training=True) == pytest.approx(
        2 * (costs.epoch_fixed_s - costs.train_epoch_fixed_s))  # the fixed part scales with the slowdown too


@pytest.mark.parametrize("epoch_s", [1.5, 3.9, 12.0])
def test_a_measured_training_epoch_gives_the_rate_whose_plan_takes_that_long(epoch_s):
    costs = StageCosts()
    rate = costs.rate_from_training_epoch(epoch_s, 160, 19, 0.25)
    assert costs.epoch_s(160, 19, rate, 0.25, training=True) == pytest.approx(epoch_s)


def _with_continued_c8(c8_epochs=4):
    return [VariantWork("pruned50", 4, min_epochs=3),
            VariantWork("pruned50-c8", c8_epochs, cluster_epochs=2, min_epochs=3, continues="pruned50"),
            VariantWork("dense-ft", 6, min_epochs=4)]


def test_a_variant_that_continues_a_finished_one_is_budgeted_its_clustering_alone_and_training_gets_the_rest():
    alone = [VariantWork(v.name, v.epochs, cluster_epochs=v.cluster_epochs, min_epochs=v.min_epochs)
             for v in _with_continued_c8()]
    kw = dict(budget_min=16.0, max_train_epochs=400, train_share=0.25)
    shared, separate = plan(13.0, variants=_with_continued_c8(), **kw), plan(13.0, variants=alone, **kw)
    assert shared.continued == {"pruned50-c8": "pruned50"} and separate.continued == {}
    assert shared.variant_epochs["pruned50-c8"][0] == shared.variant_epochs["pruned50"][0]
    assert shared.estimate_s["compress"] < separate.estimate_s["compress"]
    assert shared.train_epochs > separate.train_epochs
    assert "pruned50-c8 pruned50's 4+2 cluster" in shared.describe()


def test_a_continuation_planned_with_other_epochs_than_its_source_pays_for_its_own():
    kw = dict(max_train_epochs=400, train_share=0.25)
    p = plan(13.0, variants=_with_continued_c8(c8_epochs=5), **kw)
    alone = [VariantWork(v.name, v.epochs, cluster_epochs=v.cluster_epochs, min_epochs=v.min_epochs)
             for v in _with_continued_c8(c8_epochs=5)]
    assert p.continued == {}
    assert p.estimate_s == plan(13.0, variants=alone, **kw).estimate_s
