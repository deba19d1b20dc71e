"""`lunarseg export` (registered by lunarseg.cli; TensorFlow and the converters load in the handler)."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    """Add this layer's subcommands to the top-level parser."""
    from lunarseg.export.formats import FORMATS

    p = sub.add_parser(
        "export", help="export a model to TFLite / ONNX with embedded metadata, checked through the runtime",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="formats: " + "; ".join(f"{name} ({spec.description})" for name, spec in FORMATS.items()))
    p.add_argument("model", metavar="MODEL_OR_RUN",
                   help="run directory, RUN/compressed/VARIANT directory, or a .keras file with meta.json beside it")
    p.add_argument("--formats", required=True, help="comma-separated format names, or 'all'")
    p.add_argument("--out", help="output directory (default: RUN/export, RUN/export/VARIANT for variants)")
    p.add_argument("--data", help="dataset root: train split for calibration, val split for parity")
    p.add_argument("--calib-frames", type=int, default=100, help="calibration frames for int8 (at least 8)")
    p.add_argument("--val-frames", type=int, default=64, help="validation frames for the parity check (0 = all)")
    p.add_argument("--max-iou-drop", type=float, default=0.02,
                   help="largest rock-IoU loss a quantized artifact may have vs the Keras model")
    p.add_argument("--io", default="uint8", choices=("uint8", "int8"), help="full-integer TFLite input/output type")
    p.add_argument("--variants", action="store_true",
                   help="with a run directory: also export every RUN/compressed/* variant")
    p.add_argument("--sizes", metavar="WxH[,WxH...]",
                   help="input sizes to export at (default: the model's own); the same weights re-instantiated "
                        "at each, sides multiples of stem stride x 2**depth; files at other sizes are named FORMAT-WxH; "
                        "with --variants every variant is exported at each size too")
    p.add_argument("--threads", type=int, default=1, help="runtime threads for the parity/latency check")
    p.set_defaults(func=_export)


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def _summary(rec) -> str:
    p = rec.parity
    if "max_abs_diff" not in p:
        return ""
    return (f"maxdiff={p['max_abs_diff']:.2g} maskIoU={p['mask_iou']:.4f} IoUdrop={p['iou_drop']:+.4f} "
            f"{p.get('latency_ms', 0):.2f}ms")


def _export(args) -> int:
    import sys
    import warnings
    from pathlib import Path

    from lunarseg.runtime.errors import DatasetError

    from lunarseg.export.exporter import export_model, export_run
    from lunarseg.export.formats import resolve_formats
    from lunarseg.export.frames import ExportWarning
    from lunarseg.export.manifest import MANIFEST_NAME

    from lunarseg.export.sizes import parse_sizes

    resolve_formats(args.formats)  # an unknown name or a malformed size fails before TensorFlow loads
    parse_sizes(args.sizes)
    if args.data is not None and not Path(args.data).is_dir():  # a typo, not a reason for synthetic frames
        raise DatasetError(f"--data {args.data}: no such dataset directory")
    warnings.simplefilter("always", ExportWarning)
    warnings.showwarning = lambda msg, cat, *a, **k: print(f"lunarseg export: warning: {msg}", file=sys.stderr)
    kw = dict(data_dir=args.data, out_dir=args.out, max_iou_drop=args.max_iou_drop, io=args.io,
              calib_frames=args.calib_frames, val_frames=args.val_frames, threads=args.threads,
              sizes=args.sizes)
    if args.variants:
        records = export_run(args.model, args.formats, **kw)
    else:
        records = export_model(args.model, args.formats, **kw)
    several = len({r.input_size for r in records}) > 1
    for r in records:
        name = r.format if r.variant == "base" else f"{r.variant}/{r.format}"
        name += f" {r.input_size}" if several else ""
        if r.ok:
            print(f"ok      {name:<28} {_size(r.bytes):>10} (gzip {_size(r.gzip_bytes)})  {_summary(r)}  {r.path}")
        else:
            print(f"FAILED  {name:<28} {r.error}")
    from pathlib import Path

    first = Path(records[0].file) if records else None
    if first is not None:
        root = first.parent if records[0].variant == "base" else first.parent.parent
        print(f"manifest: {root / MANIFEST_NAME}")
    failed = [r for r in records if not r.ok]
    if failed:
        print(f"lunarseg export: {len(failed)} of {len(records)} artifacts failed", file=sys.stderr)
        return 1
    return 0
