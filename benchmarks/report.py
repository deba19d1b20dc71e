"""The current-figures table of a run, regenerated from its own JSON (meta, test evaluation,
compressed variants, bench results, the demo's timings), so the README quotes one named run.

    python -m lunarseg.benchmarks.report demo_out/run      # prints Markdown, writes RUN/report.md
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from lunarseg.benchmarks.reference import INTERVAL_NOTE, INTERVAL_OF, drop_text
from lunarseg.runtime import atomic
from lunarseg.runtime.errors import ConfigError, LunarsegError
from lunarseg.runtime.metadata import CONTROL_VARIANT
from lunarseg.runtime.metrics import drop_interval_between, drop_with_interval, interval_text


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def model_line(meta: dict) -> str:
    """One line on the model: its recipe for a trained run; its shape and origin for an imported one."""
    cfg, extra = meta.get("train_config") or {}, meta.get("extra", {})
    if not cfg.get("width"):
        shape = "×".join(str(v) for v in meta.get("input_shape", [])[1:3][::-1]) or "?"
        source = extra.get("imported", {})
        origin = f"{Path(source['path']).name} ({source.get('format', '?')})" if source.get("path") else "elsewhere"
        return (f"Model: imported from {origin}, {shape} {meta.get('colour_mode', '?')} input "
                f"({extra.get('macs', 0) / 1e9:.3g} GMAC), trained outside lunarseg.")
    crop = f", trained on {cfg['crop_width']}×{cfg['crop_height']} crops" if cfg.get("crop_width") else ""
    return (f"Model: {cfg.get('arch', 'unet')}, {cfg['width']}×{cfg['height']} {cfg['colour_mode']} input{crop}, depth "
            f"{cfg['depth']}, {cfg['filters']} filters ({extra.get('macs', 0) / 1e9:.2f} GMAC), loss {cfg['loss']}, "
            f"lr {cfg['learning_rate']:g} {cfg['lr_schedule']}, {extra.get('epochs_trained')} epochs "
            f"(best {extra.get('best_epoch')}), {extra.get('train_images_per_s')} training samples/s; threshold "
            f"{meta.get('threshold', 0.5):.2f} chosen on val by the {cfg.get('threshold_rule', 'iou')} rule.")


def quality_lines(ev: dict) -> list[str]:
    obj = ev.get("objects") or {}
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    found, right = (fmt(obj.get(k)) + interval_text(obj.get(f"{k}_interval")) for k in ("recall", "precision"))
    lines = ["| test frames | rock IoU | Dice | precision | recall | mIoU | rocks >= 0.05 % of the frame found | "
             "their blobs right |", "|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| {ev['frames']} | {ev['iou']:.3f} | {ev['dice']:.3f} | {ev['precision']:.3f} | {ev['recall']:.3f} | "
             f"{ev['miou']:.3f} | {found} ({obj.get('rocks', 0)}) | {right} ({obj.get('blobs', 0)}) |"]
    if obj.get("recall_interval"):
        lines += ["", "Rocks found and blobs right: [lo, hi] is the 95 % interval of a bootstrap over the test frames."]
    return lines


def variant_lines(run: Path, base_val: float | None) -> list[str]:
    rows = []
    for meta_path in sorted((run / "compressed").glob("*/meta.json")):
        comp = json.loads(meta_path.read_text()).get("extra", {}).get("compress", {})
        rows.append((meta_path.parent.name, comp))
    if not rows:
        return []
    control_comp = next((c for n, c in rows if n == CONTROL_VARIANT), None)
    control = None if control_comp is None else control_comp.get("val_iou_after")
    base = "unknown" if base_val is None else f"{base_val:.4f}"
    lines = ["", f"Variants (val IoU; trained model {base}; the dense control {CONTROL_VARIANT} is fine-tuned as "
             "long as the longest variant, at the rate the trained model's weights were trained at):", "",
             "| variant | GMAC | fine-tune epochs | val IoU | drop vs trained | drop vs dense control |", "|---|---:|---:|---:|---:|---:|"]
    for name, c in rows:
        vs = "—"
        if control is not None and name != CONTROL_VARIANT:
            vs = drop_with_interval(control - c.get("val_iou_after", 0), drop_interval_between(control_comp, c, "val_frame_rock_counts"), "+.4f")
        lines.append(f"| {name} | {c.get('macs', 0) / 1e9:.3f} | {len(c.get('epochs_run', []))} | {c.get('val_iou_after', 0):.4f} | "
                     f"{drop_with_interval(c.get('iou_drop', 0), c.get('iou_drop_ci'), '+.4f')} | {vs} |")
    if control is not None and base_val is not None:
        gain, interval = control - base_val, control_comp.get("iou_drop_ci")
        gain_text = drop_with_interval(gain, interval and [-interval[1], -interval[0]], "+.4f")
        lines += ["", f"Dense control gain {gain_text} val IoU: the trained model "
                  + ("counts as converged (<= 0.01)." if gain <= 0.01 else "had NOT converged (gain > 0.01).")]
    if any(c.get("iou_drop_ci") for _, c in rows):
        lines += ["", "[lo, hi] after a val drop: its 95 % interval, a paired bootstrap over the validation frames."]
    return lines


def bench_lines(results: dict) -> list[str]:
    """The bench table: per artifact its input size, speed, size, IoU and the reference its drop is against."""
    base = next((r for r in results["rows"] if r["format"] == "keras-fp32" and r["status"] == "ok"), None)
    shape = f", model input {results['input_shape']}" if results.get("input_shape") else ""
    lines = ["", f"Bench ({results['profile']} profile, {results['frames']} test frames{shape}"
             + (f"; Keras fp32 {base['p50_ms']:.1f} ms" if base else "") + "):", "",
             "| variant | format | input | engine | p50 ms | speed-up | gzip bytes | test IoU | drop | against | "
             "drop vs control |", "|---|---|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in results["rows"]:
        if r["status"] != "ok" or r["format"] == "keras-fp32":
            continue
        speedup = "—" if r.get("speedup") is None else f"{r['speedup']:.1f}×"
        lines.append(f"| {r['variant']} | {r['format']} | {r.get('input_size') or '—'} | {r['engine']} | "
                     f"{r['p50_ms']:.2f} | {speedup} | {r['gzip_bytes']:,} | {r['iou']:.4f} | "
                     f"{drop_text(r, 'iou_drop', '+.4f') or '—'} | {r.get('reference') or ('keras-fp32' if base else '—')} | "
                     f"{drop_text(r, 'drop_vs_control', '+.4f') or '—'} |")
    if results.get("iou_rule"):
        lines += ["", f"IoU: {results['iou_rule']}."]
    if any(r.get(k) for r in results["rows"] for k in INTERVAL_OF.values()):
        lines += ["", f"{INTERVAL_NOTE}."]
    if results.get("violations"):
        lines += ["", "Gate: " + "; ".join(results["violations"])]
    return lines


def report(run: str | Path) -> str:
    run = Path(run)
    meta = _json(run / "meta.json")
    if meta is None:
        raise ConfigError(f"{run}: no meta.json; not a run directory")
    cpu = (_json(run / "bench/results.json") or {}).get("cpu", {})
    lines = [f"### Run `{run}` ({meta.get('created', '?')[:10]}; {cpu.get('model', 'CPU unknown')}, "
             f"{cpu.get('cores', '?')} cores)", "", model_line(meta), ""]
    timings = _json(run.parent / "timings.json")
    if timings:
        lines += [f"Demo wall time {timings['total_s'] / 60:.1f} min (" + ", ".join(
            f"{k} {v:.0f} s" for k, v in timings["stages_s"].items()) + ").", ""]
    ev = _json(run / "eval_test.json")
    if ev:
        lines += quality_lines(ev)
    lines += variant_lines(run, (meta.get("val_metrics") or {}).get("iou"))
    results = _json(run / "bench/results.json")
    if results:
        lines += bench_lines(results)
    text = "\n".join(lines) + "\n"
    atomic.write_text(run / "report.md", text)
    return text


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m lunarseg.benchmarks.report RUN", file=sys.stderr)
        return 2
    try:
        print(report(argv[0]))
    except LunarsegError as exc:
        print(f"report: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
