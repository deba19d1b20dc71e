"""The bench's Pareto plot: IoU vs p50 latency, the front of deployable artifacts as a step line, the
IoU-budget line (reference IoU − max drop), engines as marker shapes, file size as marker area,
variants as colours, each point numbered with a non-overlapping label and named in the legend.
matplotlib is optional (the train extra): without it the plot is skipped and the caller says so."""
from __future__ import annotations

import importlib.util
import io
import math
from pathlib import Path

from lunarseg.runtime import atomic

ENGINE_MARKERS = {"tensorflow": "s", "onnxruntime": "o", "litert": "^", "openvino": "D"}
OTHER_MARKER = "P"
PLOT_SKIPPED = "Pareto plot skipped: matplotlib is not installed (pip install matplotlib)"
AREA_MIN, AREA_MAX = 40.0, 700.0  # marker area in points², smallest and largest file
DPI = 110


def matplotlib_installed() -> bool:
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        return False


def plotted_rows(results: dict) -> list[dict]:
    """Measured rows at the bench's first thread count."""
    first = results["threads"][0]
    return [r for r in results["rows"] if r["status"] == "ok" and r["threads"] == first
            and r.get("p50_ms") and r.get("iou") is not None]


def pareto_front(rows: list[dict]) -> list[dict]:
    """Deployable rows that no other deployable row beats (as fast or faster and more accurate), fastest first."""
    front, best = [], -math.inf
    for r in sorted((r for r in rows if r.get("deployable")), key=lambda r: (r["p50_ms"], -r["iou"])):
        if r["iou"] > best:
            front.append(r)
            best = r["iou"]
    return front


def budget_lines(results: dict, rows: list[dict]) -> list[tuple[str, float, list[str]]]:
    """(label, IoU, variants) per distinct budget of the deployable rows: reference IoU − the max IoU
    drop limit; references of equal IoU (one fp32 file on two engines, or one Keras baseline) share a line."""
    limit = (results.get("limits") or {}).get("max_iou_drop")
    if limit is None:
        return []
    groups: dict[float, dict] = {}
    for r in rows:
        if not r.get("deployable") or r.get("iou_drop") is None:
            continue
        ref_iou = r.get("reference_iou", r["iou"] + r["iou_drop"])  # results written before rows named it
        ref = (r.get("reference") or "reference").split(" on ")[0]
        g = groups.setdefault(round(ref_iou, 4), {"iou": ref_iou, "refs": [], "variants": []})
        for key, value in (("refs", ref), ("variants", r["variant"])):
            if value not in g[key]:
                g[key].append(value)
    return [(f"IoU budget of {', '.join(g['variants'])}: {' / '.join(g['refs'])} {g['iou']:.3f} − {limit:g}",
             g["iou"] - limit, g["variants"]) for g in groups.values()]


def row_label(r: dict, with_size: bool = True) -> str:
    size = f" {r['input_size']}" if with_size and r.get("input_size") else ""
    return f"{r['variant']}/{r['format']}{size} @ {r.get('engine')}"


def marker_area(nbytes: int, biggest: int) -> float:
    """Marker area in points², proportional to the file's bytes."""
    return AREA_MIN + (AREA_MAX - AREA_MIN) * nbytes / max(biggest, 1)


def _overlap(a: tuple, b: tuple) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def place_labels(ax, points: list[tuple[float, float]], texts: list[str], radii: list[float],
                 fontsize: float = 8) -> list[tuple[float, float]]:
    """Offsets (points) for each label so labels avoid each other and the markers: candidate spots
    round each point in widening rings, the first free one taken (else the least covered)."""
    px = ax.figure.dpi / 72.0
    xy = [tuple(ax.transData.transform(p)) for p in points]
    taken = [(x - r * px, y - r * px, x + r * px, y + r * px) for (x, y), r in zip(xy, radii)]
    offsets = []
    for (x, y), text, r in zip(xy, texts, radii):
        w, h = 0.62 * fontsize * len(text) * px, 1.25 * fontsize * px
        best, best_cost = None, math.inf
        for ring in (1.0, 2.0, 3.2, 4.5):
            d = (r + 2) * px * ring
            for dx, dy in ((d, d), (d, -d - h), (-d - w, d), (-d - w, -d - h), (d, -h / 2), (-d - w, -h / 2),
                           (-w / 2, d), (-w / 2, -d - h)):
                box = (x + dx, y + dy, x + dx + w, y + dy + h)
                cost = sum(_overlap(box, t) for t in taken)
                if cost < best_cost:
                    best, best_cost = (dx, dy, box), cost
            if best_cost == 0:
                break
        dx, dy, box = best
        taken.append(box)
        offsets.append((dx / px, dy / px))
    return offsets


def plot_pareto(results: dict, path: Path) -> str | None:
    """Write the plot to `path`; returns None, or the one line saying why it was skipped."""
    if not matplotlib_installed():
        return PLOT_SKIPPED
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import ScalarFormatter

    rows = plotted_rows(results)
    fig, ax = plt.subplots(figsize=(12.5, 6), dpi=DPI)
    fig.subplots_adjust(left=0.07, right=0.6, top=0.92, bottom=0.1)
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    colour = {v: plt.get_cmap("tab10")(i % 10) for i, v in enumerate(variants)}
    biggest = max((r.get("bytes") or 0 for r in rows), default=1)
    sizes = {r.get("input_size") for r in rows}
    handles = []
    for i, r in enumerate(rows, 1):
        area = marker_area(r.get("bytes") or 0, biggest)
        ax.scatter(r["p50_ms"], r["iou"], s=area, marker=ENGINE_MARKERS.get(r.get("engine"), OTHER_MARKER),
                   color=colour[r["variant"]], alpha=0.75, edgecolors="black", linewidths=0.6, zorder=3)
        handles.append(Line2D([], [], linestyle="", marker=ENGINE_MARKERS.get(r.get("engine"), OTHER_MARKER),
                              color=colour[r["variant"]], markeredgecolor="black", markersize=7,
                              label=f"{i:>2}  {row_label(r, len(sizes) > 1)}: {r['p50_ms']:.1f} ms, IoU {r['iou']:.3f}, "
                                    f"{(r.get('bytes') or 0) / 1e6:.2f} MB"))
    _draw_front(ax, pareto_front(rows), handles)
    for label, iou, of in budget_lines(results, rows):
        line_colour = colour[of[0]] if len(of) == 1 else "tab:red"
        ax.axhline(iou, color=line_colour, linestyle="--", linewidth=1.3, zorder=1)
        handles.append(Line2D([], [], color=line_colour, linestyle="--", label=label))
    _set_axes(ax, rows, results, ScalarFormatter, sizes)
    if rows:
        radii = [math.sqrt(marker_area(r.get("bytes") or 0, biggest)) / 2 for r in rows]
        pts = [(r["p50_ms"], r["iou"]) for r in rows]
        texts = [str(i) for i in range(1, len(rows) + 1)]
        for (x, y), t, off in zip(pts, texts, place_labels(ax, pts, texts, radii)):
            ax.annotate(t, (x, y), xytext=off, textcoords="offset points", fontsize=8, fontweight="bold",
                        arrowprops={"arrowstyle": "-", "color": "0.5", "linewidth": 0.5})
    handles += [Line2D([], [], linestyle="", marker=m, color="0.6", markeredgecolor="black", label=f"shape: {e}")
                for e, m in ENGINE_MARKERS.items() if any(r.get("engine") == e for r in rows)]
    handles.append(Line2D([], [], linestyle="", label="marker area ∝ file bytes; colour = variant"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7.5, frameon=False,
              handletextpad=0.4, borderaxespad=0.0)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    atomic.write_bytes(path, buf.getvalue())
    return None


def _draw_front(ax, front: list[dict], handles: list) -> None:
    """The Pareto front as a step line: the best IoU reachable within each latency."""
    from matplotlib.lines import Line2D

    if not front:
        return
    xs = [r["p50_ms"] for r in front]
    ys = [r["iou"] for r in front]
    ax.step(xs + [xs[-1] * 1e3], ys + [ys[-1]], where="post", color="0.25", linewidth=1.3, zorder=2)
    handles.append(Line2D([], [], color="0.25", linewidth=1.3, label="Pareto front of the deployable artifacts"))


def _set_axes(ax, rows: list[dict], results: dict, formatter, sizes: set) -> None:
    xs = [r["p50_ms"] for r in rows] or [1.0]
    ys = [r["iou"] for r in rows] or [0.0]
    if max(xs) / min(xs) >= 4:
        ax.set_xscale("log")
        ax.set_xlim(min(xs) / 1.25, max(xs) * 1.25)
        ax.xaxis.set_major_formatter(formatter())
        if max(xs) / min(xs) < 10:  # within a decade the minor ticks need numbers; wider, they crowd
            ax.xaxis.set_minor_formatter(formatter())
        ax.tick_params(axis="x", which="both", labelsize=8)
    else:
        span = max(xs) - min(xs) or max(xs) * 0.2
        ax.set_xlim(min(xs) - 0.15 * span, max(xs) + 0.15 * span)
    budget = [iou for _, iou, _ in budget_lines(results, rows)]
    lo, hi = min(ys + budget), max(ys + budget)
    pad = max(hi - lo, 0.01) * 0.15
    ax.set_ylim(lo - pad, hi + pad)
    threads = results["threads"][0]
    scale = ", log scale" if ax.get_xscale() == "log" else ""
    ax.set_xlabel(f"p50 latency, ms ({threads} thread{'s' if threads > 1 else ''}, batch 1{scale})")
    ax.set_ylabel(f"rock IoU ({results['frames']} labelled test frames, at the label's resolution)")
    cpu = results.get("cpu", {}).get("model", "")
    size = f", input {next(iter(sizes))}" if len(sizes) == 1 and None not in sizes else ""
    ax.set_title(f"lunarseg bench: IoU vs latency — {results['profile']} profile{size}, {cpu}", fontsize=10, loc="left")
    ax.grid(True, which="both", alpha=0.25)
