"""Rock statistics of a class map: fraction, count (8-connected components), largest rock, hazard.

Connected components are labelled on horizontal runs, fully vectorised in numpy (no scipy, no
per-pixel Python loop): find each row's runs of rock pixels, link runs in neighbouring rows that
touch (8-connectivity: they overlap or meet at a corner), then merge the links with min-label
propagation plus pointer jumping. Cost grows with the number of runs, not of pixels.
"""
from __future__ import annotations

import numpy as np

from lunarseg.runtime.imageio import nearest_source_index, resize

__all__ = ["find_runs", "label_runs", "label_components", "component_areas", "rock_stats",
           "HAZARD_ROWS", "HAZARD_COLS"]

# The path ahead: the bottom 40 % of the frame, centre third of the columns.
HAZARD_ROWS = 0.40
HAZARD_COLS = (1 / 3, 2 / 3)


def find_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, start, end) of every horizontal run of True pixels, end exclusive, in row-major order."""
    m = np.asarray(mask, dtype=bool)
    h, w = m.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = m
    edges = np.diff(padded.ravel())
    starts = np.flatnonzero(edges == 1)  # index into the flattened padded array (+1 shift)
    ends = np.flatnonzero(edges == -1)
    rows = starts // (w + 2)
    return rows, starts - rows * (w + 2), ends - rows * (w + 2)


def label_runs(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> tuple[np.ndarray, int]:
    """Component label (0..n-1) of each run under 8-connectivity, and the number of components."""
    n_runs = len(rows)
    if n_runs == 0:
        return np.zeros(0, dtype=np.int64), 0
    stride = width + 2
    key_s = rows * stride + starts
    key_e = rows * stride + ends  # exclusive end
    # Runs b in row r+1 touching run a (8-connected): b.start <= a.end and b.end >= a.start
    # (ends exclusive, so a corner contact counts).
    below = (rows + 1) * stride
    lo = np.searchsorted(key_e, below + starts, side="left")
    hi = np.searchsorted(key_s, below + ends, side="right")
    counts = np.maximum(hi - lo, 0)
    total = int(counts.sum())
    parent = np.arange(n_runs)
    if total:
        a = np.repeat(np.arange(n_runs), counts)
        offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        b = np.repeat(lo, counts) + offsets
        while True:
            prev = parent
            la, lb = parent[a], parent[b]
            m = np.minimum(la, lb)
            parent = parent.copy()
            np.minimum.at(parent, la, m)  # hook roots onto the smaller label
            np.minimum.at(parent, lb, m)
            parent = np.minimum(parent, parent[parent])
            while True:  # pointer jumping to the root
                nxt = parent[parent]
                if np.array_equal(nxt, parent):
                    break
                parent = nxt
            if np.array_equal(parent, prev) and np.array_equal(parent[a], parent[b]):
                break
    roots, labels = np.unique(parent, return_inverse=True)
    return labels.astype(np.int64), int(len(roots))


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """int32 H×W labels (0 = background, 1..n = components, 8-connectivity) and n."""
    m = np.asarray(mask, dtype=bool)
    h, w = m.shape
    rows, starts, ends = find_runs(m)
    labels, n = label_runs(rows, starts, ends, w)
    flat = np.zeros(h * w + 1, dtype=np.int64)
    np.add.at(flat, rows * w + starts, labels + 1)
    np.add.at(flat, rows * w + ends, -(labels + 1))
    return np.cumsum(flat[:-1]).reshape(h, w).astype(np.int32), n


def component_areas(mask: np.ndarray) -> np.ndarray:
    """Pixel area of each 8-connected component (unordered)."""
    rows, starts, ends = find_runs(mask)
    labels, n = label_runs(rows, starts, ends, np.shape(mask)[1])
    return np.bincount(labels, weights=ends - starts, minlength=n).astype(np.int64)


def rock_stats(classes: np.ndarray, rock: tuple[int, ...] = (1,), class_names=None,
               frame_hw: tuple[int, int] | None = None) -> dict:
    """Rock fraction, count, largest rock and a hazard summary for the path ahead, in frame pixels.

    With `frame_hw` larger than `classes` (a model-size mask that runtime.preprocess.mask_to_frame_size
    will upscale), the figures are those of the upscaled mask, computed exactly on the small one:
    nearest-neighbour upscaling keeps 8-connectivity, so each small pixel only weighs the block of
    frame pixels it becomes. ~3× cheaper than labelling the 720×480 mask.
    """
    c = np.asarray(classes)
    hs, ws = c.shape
    h, w = (hs, ws) if frame_hw is None else (int(frame_hw[0]), int(frame_hw[1]))
    if h < hs or w < ws:  # a downscaled mask loses pixels: measure the real thing
        return rock_stats(resize(np.ascontiguousarray(c, dtype=np.uint8), (h, w), nearest=True), rock, class_names)
    ri = nearest_source_index(hs, h) if h != hs else np.arange(h)
    ci = nearest_source_index(ws, w) if w != ws else np.arange(w)
    row_w = np.bincount(ri, minlength=hs)
    col_pos = np.concatenate(([0], np.cumsum(np.bincount(ci, minlength=ws))))  # frame column where each small column starts
    row_last = np.cumsum(row_w) - 1  # last frame row of each small row

    is_rock = c == rock[0] if len(rock) == 1 else np.isin(c, rock)
    rows, starts, ends = find_runs(is_rock)
    labels, n = label_runs(rows, starts, ends, ws)
    lengths = row_w[rows] * (col_pos[ends] - col_pos[starts])  # frame pixels of each run
    areas = np.bincount(labels, weights=lengths, minlength=n) if n else np.zeros(0)
    rock_px = int(lengths.sum())
    r0 = h - max(1, int(round(h * HAZARD_ROWS)))
    c0, c1 = int(round(w * HAZARD_COLS[0])), max(int(round(w * HAZARD_COLS[0])) + 1, int(round(w * HAZARD_COLS[1])))
    region_px = (h - r0) * (c1 - c0)
    if (h, w) == (hs, ws):
        region_rock = float(np.count_nonzero(is_rock[r0:, c0:c1]))
    else:  # weight the small block under the region by the frame pixels each small pixel becomes
        rs, cs, ce = ri[r0], ci[c0], ci[c1 - 1] + 1
        region_rows = np.bincount(ri[r0:] - rs, minlength=hs - rs).astype(np.float64)
        region_cols = np.bincount(ci[c0:c1] - cs, minlength=ce - cs).astype(np.float64)
        region_rock = float(region_rows @ is_rock[rs:, cs:ce] @ region_cols)
    # nearest rock = lowest rock row; in the path = any run overlapping the centre columns
    nearest = int(h - 1 - row_last[rows.max()]) if len(rows) else None
    in_path = (col_pos[starts] < c1) & (col_pos[ends] > c0)
    nearest_path = int(h - 1 - row_last[rows[in_path].max()]) if in_path.any() else None
    out = {
        "height": int(h), "width": int(w),
        "rock_pixels": rock_px,
        "rock_fraction": rock_px / float(h * w),
        "rock_count": int(n),
        "largest_rock_px": int(areas.max()) if n else 0,
        "hazard": {
            "region": {"rows": [int(r0), int(h)], "cols": [int(c0), int(c1)]},
            "rock_fraction": region_rock / region_px if region_px else 0.0,
            "nearest_rock_px": nearest,
            "nearest_rock_in_path_px": nearest_path,
        },
    }
    if class_names is not None and len(class_names) > 2:
        weights = (row_w[:, None] * np.diff(col_pos)[None, :]).ravel()
        counts = np.bincount(c.ravel(), weights=weights, minlength=len(class_names))[: len(class_names)]
        out["class_fractions"] = {str(name): float(v) / (h * w) for name, v in zip(class_names, counts)}
    return out
