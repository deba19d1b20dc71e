"""Rock statistics: 8-connected component counts on hand-made masks, areas, hazard summary."""
import numpy as np
import pytest

from lunarseg.runtime.stats import component_areas, label_components, rock_stats


def _mask(rows):
    return np.array([[c == "#" for c in r] for r in rows], dtype=bool)


def _bfs_areas(m):
    """Reference: plain flood fill, 8-connectivity; the pixel area of each component."""
    h, w = m.shape
    seen = np.zeros_like(m)
    areas = []
    for i in range(h):
        for j in range(w):
            if m[i, j] and not seen[i, j]:
                areas.append(0)
                stack = [(i, j)]
                seen[i, j] = True
                while stack:
                    y, x = stack.pop()
                    areas[-1] += 1
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            yy, xx = y + dy, x + dx
                            if 0 <= yy < h and 0 <= xx < w and m[yy, xx] and not seen[yy, xx]:
                                seen[yy, xx] = True
                                stack.append((yy, xx))
    return areas


def _bfs_count(m):
    return len(_bfs_areas(m))


@pytest.mark.parametrize("rows,count", [
    (["....", "....", "...."], 0),
    (["####", "####"], 1),
    (["#...", ".#..", "..#.", "...#"], 1),          # a diagonal chain touches corner to corner
    (["...#", "..#.", ".#..", "#..."], 1),          # the other diagonal
    (["#.#", "...", "#.#"], 4),                      # gaps of one pixel separate
    (["##..##", "##..##", "......", "..##.."], 3),
    (["#####", "#...#", "#.#.#", "#...#", "#####"], 2),  # a ring and a dot in its hole
    (["#.#.#.#"], 4),
    (["#", ".", "#"], 2),
])
def test_rock_count_uses_8_connectivity(rows, count):
    m = _mask(rows)
    assert label_components(m)[1] == count
    assert rock_stats(m.astype(np.uint8))["rock_count"] == count


def test_u_shape_merges_into_one_rock_although_its_arms_start_apart():
    m = _mask(["#...#", "#...#", "#...#", "#####"])
    labels, n = label_components(m)
    assert n == 1 and set(np.unique(labels)) == {0, 1}


def test_comb_and_spiral_like_shapes_are_one_component():
    m = np.zeros((60, 60), bool)
    m[::2, :] = True
    m[1::4, -1] = True
    m[3::4, 0] = True  # a snake: rows joined alternately at the right and left ends
    assert label_components(m)[1] == 1


def test_labels_and_areas_match_a_flood_fill_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(150):
        h, w = rng.integers(1, 25, 2)
        m = rng.random((h, w)) < rng.random()
        labels, n = label_components(m)
        areas = _bfs_areas(m)
        assert n == len(areas)
        assert np.array_equal(labels > 0, m)
        assert sorted(component_areas(m)) == sorted(areas)
        assert sorted(np.bincount(labels[m], minlength=n + 1)[1:]) == sorted(areas)


def test_stats_on_a_hand_made_frame():
    c = np.zeros((10, 9), np.uint8)
    c[0:2, 0:2] = 1          # 4 px, far away (top-left)
    c[7:9, 4:6] = 1          # 4 px, in the path, bottom row 8 → 1 px from the bottom edge
    c[5, 8] = 1              # 1 px, at the side
    s = rock_stats(c)
    assert s["rock_count"] == 3 and s["largest_rock_px"] == 4 and s["rock_pixels"] == 9
    assert s["rock_fraction"] == pytest.approx(9 / 90)
    hz = s["hazard"]
    assert hz["region"] == {"rows": [6, 10], "cols": [3, 6]}
    assert hz["rock_fraction"] == pytest.approx(4 / 12)
    assert hz["nearest_rock_px"] == 1 and hz["nearest_rock_in_path_px"] == 1


def test_no_rock_gives_zero_counts_and_no_nearest_rock():
    s = rock_stats(np.zeros((5, 7), np.uint8))
    assert s["rock_count"] == 0 and s["largest_rock_px"] == 0 and s["rock_fraction"] == 0.0
    assert s["hazard"]["nearest_rock_px"] is None and s["hazard"]["nearest_rock_in_path_px"] is None


def test_four_class_rock_merges_small_and_large_rock_classes():
    c = np.array([[2, 3, 0], [1, 1, 0], [0, 0, 2]], np.uint8)  # 2 and 3 touch: one rock; sky is not rock
    s = rock_stats(c, rock=(2, 3), class_names=["background", "sky", "small_rock", "large_rock"])
    assert s["rock_count"] == 2 and s["largest_rock_px"] == 2
    assert s["class_fractions"]["sky"] == pytest.approx(2 / 9)


@pytest.mark.parametrize("small_hw,frame_hw", [((128, 192), (480, 720)), ((8, 12), (17, 40)), ((5, 7), (5, 7)),
                                               ((16, 16), (16, 50)), ((20, 30), (10, 15))])
def test_stats_from_the_model_size_mask_equal_stats_of_the_upscaled_mask(small_hw, frame_hw):
    from lunarseg.runtime.preprocess import mask_to_frame_size

    rng = np.random.default_rng(sum(small_hw) + sum(frame_hw))
    names = ["background", "sky", "small_rock", "large_rock"]
    for density in (0.0, 0.05, 0.3, 0.7):
        small = (rng.random(small_hw) < density).astype(np.uint8) * rng.integers(1, 4, small_hw).astype(np.uint8)
        big = mask_to_frame_size(small, frame_hw)
        for rock, cls in (((1,), None), ((2, 3), names)):
            stats = rock_stats(small, rock, cls, frame_hw=frame_hw)
            assert stats == rock_stats(big, rock, cls)
            areas = _bfs_areas(np.isin(big, rock))  # the upscaled mask, measured pixel by pixel
            assert (stats["rock_count"], stats["rock_pixels"], stats["largest_rock_px"]) == (
                len(areas), sum(areas), max(areas, default=0))


def _label_runs_by_min_propagation(rows, starts, ends, width):
    """Reference: the labelling the runtime used before the union-find (min-label propagation)."""
    n_runs = len(rows)
    if n_runs == 0:
        return np.zeros(0, dtype=np.int64), 0
    stride = width + 2
    key_s, key_e = rows * stride + starts, rows * stride + ends
    below = (rows + 1) * stride
    lo = np.searchsorted(key_e, below + starts, side="left")
    hi = np.searchsorted(key_s, below + ends, side="right")
    counts = np.maximum(hi - lo, 0)
    parent = np.arange(n_runs)
    if counts.sum():
        a = np.repeat(np.arange(n_runs), counts)
        b = np.repeat(lo, counts) + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        while True:
            prev = parent
            la, lb = parent[a], parent[b]
            m = np.minimum(la, lb)
            parent = parent.copy()
            np.minimum.at(parent, la, m)
            np.minimum.at(parent, lb, m)
            while not np.array_equal(parent[parent], parent):
                parent = parent[parent]
            if np.array_equal(parent, prev) and np.array_equal(parent[a], parent[b]):
                break
    roots, labels = np.unique(parent, return_inverse=True)
    return labels.astype(np.int64), int(len(roots))


def test_union_find_labels_equal_the_min_propagation_labels_on_random_masks():
    from lunarseg.runtime.stats import find_runs, label_runs

    rng = np.random.default_rng(7)
    for _ in range(300):
        h, w = rng.integers(1, 70, 2)
        m = rng.random((h, w)) < rng.random()
        runs = find_runs(m)
        new, n_new = label_runs(*runs, w)
        old, n_old = _label_runs_by_min_propagation(*runs, w)
        assert n_new == n_old and np.array_equal(new, old)


def _stats_pixel_by_pixel(big):
    """Reference hazard figures of a binary frame-size mask, read off the pixels directly."""
    h, w = big.shape
    r0 = h - max(1, int(round(h * 0.4)))
    c0 = int(round(w / 3))
    c1 = max(c0 + 1, int(round(w * 2 / 3)))
    rock_rows = np.flatnonzero(big.any(axis=1))
    path_rows = []
    for r in rock_rows:  # a run crosses the path when any of its pixels lies in columns c0..c1-1
        path_rows += [r] if big[r, c0:c1].any() else []
    return {"rock_fraction": big[r0:, c0:c1].mean(),
            "nearest_rock_px": int(h - 1 - rock_rows[-1]) if len(rock_rows) else None,
            "nearest_rock_in_path_px": int(h - 1 - path_rows[-1]) if path_rows else None}


@pytest.mark.parametrize("small_hw,frame_hw", [((64, 96), (120, 180)), ((7, 9), (7, 9)), ((10, 12), (33, 31))])
def test_hazard_figures_from_runs_equal_the_figures_read_off_the_upscaled_pixels(small_hw, frame_hw):
    from lunarseg.runtime.preprocess import mask_to_frame_size

    rng = np.random.default_rng(3)
    for density in (0.0, 0.002, 0.05, 0.5):
        small = (rng.random(small_hw) < density).astype(np.uint8)
        big = mask_to_frame_size(small, frame_hw)
        hz, ref = rock_stats(small, frame_hw=frame_hw)["hazard"], _stats_pixel_by_pixel(big)
        assert hz["rock_fraction"] == pytest.approx(ref["rock_fraction"], abs=1e-12)
        assert hz["nearest_rock_px"] == ref["nearest_rock_px"]
        assert hz["nearest_rock_in_path_px"] == ref["nearest_rock_in_path_px"]
