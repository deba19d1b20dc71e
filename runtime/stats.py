"""Rock statistics of a class map: fraction, count (8-connected components), largest rock, hazard.

Connected components are labelled on horizontal runs, fully vectorised in numpy (no scipy, no
per-pixel Python loop): find each row's runs of rock pixels, link runs in neighbouring rows that
touch (8-connectivity: they overlap or meet at a corner), then merge the links with a vectorised
union-find (hook each larger root onto a smaller one, pointer jumping). Cost grows with the number
of runs, not of pixels; the per-call cost is a few dozen numpy calls on arrays of that length, with
the frame geometry cached and the padded mask buffer reused (~0.1 ms for a 384×256 model mask).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from lunarseg.runtime.imageio import nearest_source_index, resize

__all__ = ["find_runs", "label_runs", "label_components", "component_areas", "rock_stats",
           "HAZARD_ROWS", "HAZARD_COLS"]

# The path ahead: the bottom 40 % of the frame, centre third of the columns.
HAZARD_ROWS = 0.40
HAZARD_COLS = (1 / 3, 2 / 3)

_scratch = threading.local()


def _padded(h: int, w: int) -> np.ndarray:
    """A bool H×(W+2) buffer reused per thread and shape; its first and last columns stay False."""
    bufs = getattr(_scratch, "bufs", None)
    if bufs is None:
        bufs = _scratch.bufs = {}
    if (h, w) not in bufs:
        if len(bufs) > 8:
            bufs.clear()
        bufs[(h, w)] = np.zeros((h, w + 2), dtype=bool)
    return bufs[(h, w)]


def _edges(padded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices (row·(W+2) + column) of each run's start and exclusive end in a padded mask."""
    flat = padded.ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1])  # runs never cross the padding: starts, ends alternate
    return change[0::2], change[1::2]


def _runs_from_edges(key_s: np.ndarray, key_e: np.ndarray, stride: int):
    rows = key_s // stride
    return rows, key_s - rows * stride, key_e - rows * stride


def find_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, start, end) of every horizontal run of True pixels, end exclusive, in row-major order."""
    m = np.asarray(mask, dtype=bool)
    h, w = m.shape
    pad = _padded(h, w)
    pad[:, 1:-1] = m
    return _runs_from_edges(*_edges(pad), w + 2)


def _links(key_s: np.ndarray, key_e: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (a, b) of runs a in row r and b in row r+1 that touch (8-connected).

    b touches a when b.start <= a.end and b.end >= a.start (ends exclusive, so a corner counts); the
    runs of row r+1 touching a are a contiguous range [lo, hi) of the row-major run order.
    """
    lo = key_e.searchsorted(key_s + stride, side="left")
    hi = key_s.searchsorted(key_e + stride, side="right")
    counts = np.maximum(hi - lo, 0)
    a = np.arange(len(key_s)).repeat(counts)
    first = counts.cumsum() - counts  # position of a's first link in the pair list
    b = np.arange(len(a)) + (lo - first).repeat(counts)
    return a, b


def _union_roots(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root of each of n nodes after uniting every pair (a, b): the component's smallest index."""
    parent = np.arange(n)
    while len(a):
        pa, pb = parent[a], parent[b]  # parent is fully compressed: these are roots
        apart = pa != pb
        if not apart.any():
            break
        pa, pb = pa[apart], pb[apart]
        a, b = a[apart], b[apart]
        parent[np.maximum(pa, pb)] = np.minimum(pa, pb)  # hook a larger root onto a smaller one
        while True:  # pointer jumping; parent[i] <= i always, so no cycles
            nxt = parent[parent]
            if not (nxt != parent).any():
                break
            parent = nxt
    return parent


def _label_edges(key_s: np.ndarray, key_e: np.ndarray, stride: int) -> tuple[np.ndarray, int]:
    """Component label of each run (0..n-1, ordered by the component's first run) and n."""
    n_runs = len(key_s)
    if n_runs == 0:
        return np.zeros(0, dtype=np.int64), 0
    roots = _union_roots(n_runs, *_links(key_s, key_e, stride))
    label_of = (roots == np.arange(n_runs)).cumsum() - 1
    return label_of[roots], int(label_of[-1]) + 1


def label_runs(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> tuple[np.ndarray, int]:
    """Component label (0..n-1) of each run under 8-connectivity, and the number of components."""
    stride = width + 2
    rows = np.asarray(rows, dtype=np.int64)
    return _label_edges(rows * stride + starts, rows * stride + ends, stride)


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """int32 H×W labels (0 = background, 1..n = components, 8-connectivity) and n."""
    m = np.asarray(mask, dtype=bool)
    h, w = m.shape
    rows, starts, ends = find_runs(m)
    labels, n = label_runs(rows, starts, ends, w)
    flat = np.zeros(h * w + 1, dtype=np.int64)
    flat[rows * w + starts] += labels + 1  # starts are distinct, and so are ends
    flat[rows * w + ends] -= labels + 1
    return np.cumsum(flat[:-1]).reshape(h, w).astype(np.int32), n


def component_areas(mask: np.ndarray) -> np.ndarray:
    """Pixel area of each 8-connected component (unordered)."""
    rows, starts, ends = find_runs(mask)
    labels, n = label_runs(rows, starts, ends, np.shape(mask)[1])
    return np.bincount(labels, weights=ends - starts, minlength=n).astype(np.int64)


@dataclass(frozen=True)
class _Geometry:
    """Where each pixel of an hs×ws mask lands in its h×w nearest-neighbour upscale, and the hazard region."""

    row_w: np.ndarray  # (hs,) frame rows each small row becomes
    row_last: np.ndarray  # (hs,) last frame row of each small row
    col_pos: np.ndarray  # (ws+1,) frame column where each small column starts
    region_row_w: np.ndarray  # (hs,) frame rows of each small row inside the hazard region
    region: tuple[int, int, int]  # r0, c0, c1: the region is rows r0..h-1, columns c0..c1-1


@lru_cache(maxsize=16)
def _geometry(hs: int, ws: int, h: int, w: int) -> _Geometry:
    """The upscale and hazard geometry of a mask size and frame size, computed once."""
    ri = nearest_source_index(hs, h) if h != hs else np.arange(h)
    ci = nearest_source_index(ws, w) if w != ws else np.arange(w)
    row_w = np.bincount(ri, minlength=hs)
    r0 = h - max(1, int(round(h * HAZARD_ROWS)))
    c0 = int(round(w * HAZARD_COLS[0]))
    c1 = max(c0 + 1, int(round(w * HAZARD_COLS[1])))
    arrays = (row_w, np.cumsum(row_w) - 1, np.concatenate(([0], np.cumsum(np.bincount(ci, minlength=ws)))),
              np.bincount(ri[r0:], minlength=hs))
    for a in arrays:
        a.setflags(write=False)
    return _Geometry(*arrays, (r0, c0, c1))


@lru_cache(maxsize=4)
def _pixel_weights(hs: int, ws: int, h: int, w: int) -> np.ndarray:
    """(hs·ws,) frame pixels each small pixel becomes (for the class fractions)."""
    g = _geometry(hs, ws, h, w)
    out = (g.row_w[:, None] * np.diff(g.col_pos)[None, :]).ravel().astype(np.float64)
    out.setflags(write=False)
    return out


def _rock_edges(c: np.ndarray, rock: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, int]:
    """Run edges of the rock pixels of class map c (see _edges) and their row stride."""
    hs, ws = c.shape
    pad = _padded(hs, ws)
    if len(rock) == 1:
        np.equal(c, rock[0], out=pad[:, 1:-1])
    else:
        pad[:, 1:-1] = np.isin(c, rock)
    return (*_edges(pad), ws + 2)


def rock_stats(classes: np.ndarray, rock: tuple[int, ...] = (1,), class_names=None,
               frame_hw: tuple[int, int] | None = None) -> dict:
    """Rock fraction, count, largest rock and a hazard summary for the path ahead, in frame pixels.

    With `frame_hw` larger than `classes` (a model-size mask that runtime.preprocess.mask_to_frame_size
    will upscale), the figures are those of the upscaled mask, computed exactly on the small one:
    nearest-neighbour upscaling keeps 8-connectivity, so each small run only weighs the frame rows
    and columns it becomes.
    """
    c = np.asarray(classes)
    hs, ws = c.shape
    h, w = (hs, ws) if frame_hw is None else (int(frame_hw[0]), int(frame_hw[1]))
    if h < hs or w < ws:  # a downscaled mask loses pixels: measure the real thing
        return rock_stats(resize(np.ascontiguousarray(c, dtype=np.uint8), (h, w), nearest=True), rock, class_names)
    g = _geometry(hs, ws, h, w)
    r0, c0, c1 = g.region
    key_s, key_e, stride = _rock_edges(c, tuple(rock))
    labels, n = _label_edges(key_s, key_e, stride)
    rows, starts, ends = _runs_from_edges(key_s, key_e, stride)
    pos_s, pos_e = g.col_pos[starts], g.col_pos[ends]  # each run's frame columns
    lengths = g.row_w[rows] * (pos_e - pos_s)  # frame pixels of each run
    in_region_cols = np.minimum(pos_e, c1) - np.maximum(pos_s, c0)  # > 0: the run crosses the path
    in_path = np.flatnonzero(in_region_cols > 0)
    region_rock = int(g.region_row_w[rows] @ np.maximum(in_region_cols, 0)) if n else 0
    region_px = (h - r0) * (c1 - c0)
    rock_px = int(lengths.sum())
    out = {
        "height": int(h), "width": int(w),
        "rock_pixels": rock_px,
        "rock_fraction": rock_px / float(h * w),
        "rock_count": int(n),
        "largest_rock_px": int(np.bincount(labels, weights=lengths).max()) if n else 0,
        "hazard": {
            "region": {"rows": [int(r0), int(h)], "cols": [int(c0), int(c1)]},
            "rock_fraction": float(region_rock) / region_px if region_px else 0.0,
            # nearest rock = lowest rock row (runs are in row order); in the path = crossing the centre columns
            "nearest_rock_px": int(h - 1 - g.row_last[rows[-1]]) if n else None,
            "nearest_rock_in_path_px": int(h - 1 - g.row_last[rows[in_path[-1]]]) if len(in_path) else None,
        },
    }
    if class_names is not None and len(class_names) > 2:
        counts = np.bincount(c.ravel(), weights=_pixel_weights(hs, ws, h, w), minlength=len(class_names))
        out["class_fractions"] = {str(name): float(v) / (h * w) for name, v in zip(class_names, counts[: len(class_names)])}
    return out
