"""Latency *estimates* for rover-class boards: an artifact's multiply-accumulates over the MAC rate
XNNPACK achieved on that CPU in a published benchmark. Not measurements: a real board differs (its
clock, thermals, the engine version, how well this graph's layers use the kernels).

Sources — XNNPACK's README (google/XNNPACK, "Performance"), fp32 MobileNet v2 1.0× at 224×224
(300 M MACs), benchmarked 2020 with end2end_bench:
- Raspberry Pi 3+ (4× Cortex-A53 1.4 GHz), 4 threads: 79 ms → 3.8 GMAC/s, 0.95 per core.
- Raspberry Pi 4 (4× Cortex-A72 1.5 GHz), 4 threads: 44 ms → 6.8 GMAC/s, 1.70 per core.
- Pixel 3a (Cortex-A75 2.0 GHz big cores), 1 thread: 55 ms → 5.5 GMAC/s; the Pi 5's Cortex-A76 at
  2.4 GHz is taken at that per-clock rate: 6.5 GMAC/s (an extrapolation).
Per core = the 4-thread rate / 4 (linear scaling, so the one-thread estimate errs slow). int8 runs
INT8_SPEEDUP× the fp32 rate (XNNPACK's int8 kernels on these cores: 1.4–1.6× by the team's figures,
not re-measured here). MobileNet's depthwise layers use a core less well than a U-Net's dense 3×3
convolutions, another reason these estimates err slow.

Snapdragon 801 (4× Krait 400, 32-bit ARMv7-A with NEON; the board Ingenuity flew, 2.26 GHz): no published
XNNPACK or ncnn figure for Krait / MSM8974 was found, so the closest cited ARMv7 NEON big core stands
in — the Cortex-A17 of a Rockchip RK3288 (also 32-bit ARMv7-A NEON, out-of-order, same phone era).
Tencent/ncnn benchmark/README.md, "Rockchip RK3288 (Cortex-A17 1.8GHz x 4)", `./benchncnn 8 1 0`
(fp32, 1 thread): mobilenet_v2 avg 179.24 ms → 1.67 GMAC/s at 1.8 GHz, taken at that per-clock rate
at 2.26 GHz: 2.10 GMAC/s (an extrapolation across microarchitectures). ncnn, not XNNPACK: on the Pi 4
the same README gives ncnn 75.84 ms for mobilenet_v2 at 4 threads against XNNPACK's 44 ms, so this
estimate likely errs slow.
"""
from __future__ import annotations

from dataclasses import dataclass

from lunarseg.runtime.errors import unknown_key

INT8_SPEEDUP = 1.5
MOBILENET_V2_MACS = 300e6

# The Snapdragon 801 stand-in (see the module docstring): ncnn, RK3288 Cortex-A17, 1 thread.
RK3288_MOBILENET_V2_1T_MS = 179.24
RK3288_GHZ, SD801_GHZ = 1.8, 2.26


@dataclass(frozen=True)
class Board:
    name: str
    cpu: str
    gmac_per_s_per_core: float  # fp32, XNNPACK (ncnn for sd801)
    source: str


BOARDS = {b.name: b for b in (
    Board("pi3", "Cortex-A53 1.4 GHz (Raspberry Pi 3+)", 300e-3 / 0.079 / 4, "XNNPACK README: MobileNet v2, RPi 3+, 4 threads, 79 ms"),
    Board("pi4", "Cortex-A72 1.5 GHz (Raspberry Pi 4)", 300e-3 / 0.044 / 4, "XNNPACK README: MobileNet v2, RPi 4, 4 threads, 44 ms"),
    Board("pi5", "Cortex-A76 2.4 GHz (Raspberry Pi 5)", 300e-3 / 0.055 * 2.4 / 2.0,
          "XNNPACK README: MobileNet v2, Pixel 3a (A75 2.0 GHz), 1 thread, 55 ms; scaled by clock"),
    Board("sd801", f"Krait 400 {SD801_GHZ} GHz (Snapdragon 801, Ingenuity)",
          MOBILENET_V2_MACS * 1e-9 / (RK3288_MOBILENET_V2_1T_MS * 1e-3) * SD801_GHZ / RK3288_GHZ,
          f"ncnn benchmark README: mobilenet_v2, RK3288 (Cortex-A17 {RK3288_GHZ} GHz, standing in for Krait), "
          f"1 thread, {RK3288_MOBILENET_V2_1T_MS} ms; scaled by clock"),
)}


def get_board(name: str) -> Board:
    if name not in BOARDS:
        raise unknown_key("board", name, BOARDS)
    return BOARDS[name]


def estimate_ms(macs: float, board: Board, int8: bool, threads: int = 1) -> float:
    """Estimated latency of `macs` multiply-accumulates on `threads` cores of `board`."""
    rate = board.gmac_per_s_per_core * 1e9 * threads * (INT8_SPEEDUP if int8 else 1.0)
    return 1e3 * macs / rate


def board_estimates(rows: list[dict], threads: int = 1) -> list[dict]:
    """One row per measured artifact that knows its MACs (Keras baseline excluded): ms per board."""
    out = []
    for r in rows:
        if r.get("status") != "ok" or not r.get("gmacs") or r.get("format") == "keras-fp32":
            continue
        int8 = (r.get("quantization") or {}).get("mode") == "int8" or "int8" in r["format"]
        out.append({"variant": r["variant"], "format": r["format"], "gmacs": r["gmacs"], "int8": int8,
                    **{f"{b}_ms": round(estimate_ms(r["gmacs"] * 1e9, BOARDS[b], int8, threads), 1) for b in BOARDS}})
    return out


def estimates_markdown(estimates: list[dict]) -> list[str]:
    """A Markdown section, clearly labelled as estimates, with the sources named."""
    if not estimates:
        return []
    seen, rows = set(), []
    for e in estimates:  # one line per artifact (several engines read the same file)
        key = (e["variant"], e["format"])
        if key not in seen:
            seen.add(key)
            rows.append(e)
    head = "| variant | format | GMAC | " + " | ".join(f"{b} ms (est.)" for b in BOARDS) + " |"
    lines = ["", "## Board latency estimates, 1 thread (estimates from published XNNPACK and ncnn rates, not measurements)", "",
             "Rates: " + "; ".join(f"{b.name} {b.cpu}: {b.gmac_per_s_per_core:.2f} GMAC/s per core fp32 ({b.source})"
                                   for b in BOARDS.values()) + f"; int8 at {INT8_SPEEDUP}× fp32.", "",
             head, "|---|---|---:|" + "---:|" * len(BOARDS)]
    lines += [f"| {e['variant']} | {e['format']} | {e['gmacs']:.3f} | " + " | ".join(f"{e[f'{b}_ms']:.1f}" for b in BOARDS) + " |"
              for e in rows]
    return lines
