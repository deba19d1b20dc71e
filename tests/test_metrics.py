"""The numpy metrics are the project's single definition of IoU/Dice; check them on known cases."""
import numpy as np
import pytest

from lunarseg.runtime import metrics


def test_iou_and_dice_of_known_overlap():
    t = np.zeros((4, 4), np.uint8); t[:2, :] = 1          # 8 px
    p = np.zeros((4, 4), np.uint8); p[1:3, :] = 1         # 8 px, 4 overlap
    assert metrics.iou(t, p) == pytest.approx(4 / 12)
    assert metrics.dice(t, p) == pytest.approx(8 / 16)


def test_empty_truth_and_prediction_score_one():
    z = np.zeros((3, 3), np.uint8)
    assert metrics.iou(z, z) == 1.0 and metrics.dice(z, z) == 1.0


def test_accumulator_is_micro_average_over_frames():
    acc = metrics.MetricAccumulator()
    a = np.ones((2, 2), np.uint8)
    acc.update(a, a)                    # 4 TP
    acc.update(a, np.zeros_like(a))     # 4 FN
    r = acc.result()
    assert r["iou"] == pytest.approx(0.5) and r["recall"] == pytest.approx(0.5) and r["precision"] == 1.0
    assert r["frames"] == 2 and r["pixels"] == 8


def test_four_class_report_merges_rocks_and_gives_miou():
    acc = metrics.MetricAccumulator(("background", "sky", "small_rock", "large_rock"))
    t = np.array([[0, 1, 2, 3]])
    p = np.array([[0, 1, 3, 2]])        # small/large swapped: still rock
    acc.update(t, p)
    r = acc.result()
    assert r["iou"] == 1.0
    assert r["per_class_iou"]["small_rock"] == 0.0 and r["per_class_iou"]["sky"] == 1.0
    assert r["miou"] == pytest.approx(0.5)


def test_confusion_matrix_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in size"):
        metrics.confusion_matrix(np.zeros(3), np.zeros(4), 2)


def test_binary_miou_averages_background_and_rock_and_is_not_the_headline():
    acc = metrics.MetricAccumulator()
    t = np.array([[0, 0, 0, 0, 1, 1]])
    p = np.array([[0, 0, 0, 1, 1, 0]])  # background IoU 3/5, rock IoU 1/3
    acc.update(t, p)
    r = acc.result()
    assert r["iou"] == pytest.approx(1 / 3)
    assert r["per_class_iou"] == {"background": pytest.approx(3 / 5), "rock": pytest.approx(1 / 3)}
    assert r["miou"] == pytest.approx((3 / 5 + 1 / 3) / 2)


def test_recall_by_rock_size_buckets_true_rocks_by_area_and_counts_what_was_found():
    from lunarseg.train.evaluate import recall_by_rock_size

    y = np.zeros((1, 40, 40), np.uint8)
    y[0, 0:2, 0:2] = 1            # 4 px rock: bucket 0-16, missed
    y[0, 10:20, 10:20] = 1        # 100 px rock: bucket 64-256, half found
    pred = np.zeros_like(y)
    pred[0, 10:15, 10:20] = 1
    buckets = recall_by_rock_size(pred, y, "binary")
    assert [b["min_px"] for b in buckets] == [0, 16, 64, 256]
    assert buckets[0]["recall"] == 0.0 and buckets[0]["rock_pixel_share"] == pytest.approx(4 / 104)
    assert buckets[1]["recall"] is None and buckets[3]["recall"] is None
    assert buckets[2]["recall"] == pytest.approx(0.5) and buckets[2]["rock_pixel_share"] == pytest.approx(100 / 104)
    from lunarseg.train.evaluate import describe_recall_by_size

    assert describe_recall_by_size(buckets) == "rock recall by true-rock size: 0-16 px 0.00 (4% of rock), 64-256 px 0.50 (96% of rock)"


def test_accumulator_keeps_each_frames_rock_counts_and_they_pool_to_the_reported_iou():
    acc = metrics.MetricAccumulator(("background", "sky", "small_rock", "large_rock"))
    acc.update(np.array([[0, 2, 3, 3]]), np.array([[2, 3, 3, 1]]))  # rock: 2 in both, 4 in either
    acc.update(np.array([[1, 1, 0, 0]]), np.array([[1, 1, 0, 0]]))  # no rock anywhere
    r = acc.result()
    assert r["frame_rock_counts"] == [[2, 4], [0, 0]]
    assert metrics.pooled_iou(r["frame_rock_counts"]) == pytest.approx(r["iou"]) == pytest.approx(0.5)


def _frames(ious, union=100):
    """Per-frame [intersection, union] counts with the given IoUs and equal unions."""
    return [[round(i * union), union] for i in ious]


def test_drop_interval_of_identical_predictions_is_exactly_zero():
    counts = _frames([0.9, 0.5, 0.7, 0.3])
    assert metrics.iou_drop_interval(counts, counts) == (0.0, 0.0)


def test_drop_interval_holds_the_pooled_drop_and_is_reproducible():
    ref = _frames([0.70, 0.72, 0.65, 0.80, 0.60, 0.75, 0.68, 0.71])
    other = _frames([0.69, 0.70, 0.66, 0.76, 0.58, 0.75, 0.60, 0.70])
    drop = metrics.pooled_iou(ref) - metrics.pooled_iou(other)
    lo, hi = metrics.iou_drop_interval(ref, other)
    assert lo < drop < hi
    assert metrics.iou_drop_interval(ref, other) == (lo, hi)  # seeded: the same frames give the same interval


def test_a_loss_on_every_frame_is_significant_and_one_frames_loss_is_not():
    ref = _frames([0.7] * 10)
    everywhere = metrics.iou_drop_interval(ref, _frames([0.65] * 9 + [0.6]))
    assert everywhere[0] > 0.0
    one_frame = metrics.iou_drop_interval(ref, _frames([0.7] * 9 + [0.2]))
    assert one_frame[0] == 0.0 < one_frame[1]  # resamples without that frame lose nothing


def test_drop_interval_needs_the_same_frames():
    assert metrics.iou_drop_interval(_frames([0.5, 0.6]), _frames([0.5])) is None
    assert metrics.iou_drop_interval([], []) is None
