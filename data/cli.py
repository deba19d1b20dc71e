"""`lunarseg data …`: synth, check, preview (registered by lunarseg.cli; heavy imports inside handlers)."""
from __future__ import annotations

import argparse
import re
import sys

from lunarseg.runtime.errors import ConfigError, require_at_least

MIN_SIDE = 16


def register(sub) -> None:
    """Add the `data` subcommand and its `synth`, `check` and `preview` actions."""
    from lunarseg.data.loader import MASK_KINDS
    data = sub.add_parser("data", help="synthetic lunar scenes; check and preview a dataset root")
    actions = data.add_subparsers(dest="data_command", metavar="ACTION")
    data.set_defaults(func=lambda args: data.print_help() or 2)

    synth = actions.add_parser("synth", help="write synthetic frames in the Kaggle layout")
    synth.add_argument("--out", required=True, help="dataset root to write")
    synth.add_argument("--count", type=_int_arg, default=100, help="number of frames (default 100)")
    synth.add_argument("--size", default="720x480", help="WIDTHxHEIGHT (default 720x480)")
    synth.add_argument("--seed", type=_int_arg, default=0)
    synth.add_argument("--workers", type=_int_arg, default=1, help="parallel processes (same files as 1)")
    synth.set_defaults(func=_synth)

    check = actions.add_parser("check", help="list every problem in a dataset root; exit 1 if any")
    check.add_argument("root")
    check.add_argument("--mask-kind", default="clean", help=" | ".join(MASK_KINDS) + " (clean falls back to ground)")
    check.add_argument("--sample", type=_int_arg, default=0, help="decode only N evenly spaced frames (0 = all)")
    check.set_defaults(func=_check)

    preview = actions.add_parser("preview", help="PNG grid of frames with their masks overlaid")
    preview.add_argument("root")
    preview.add_argument("--out", required=True, help="PNG to write")
    preview.add_argument("--count", type=_int_arg, default=12)
    preview.set_defaults(func=_preview)


def _int_arg(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def parse_size(text: str, flag: str = "--size", *, min_side: int = MIN_SIDE, square_ok: bool = False) -> tuple[int, int]:
    """(width, height) from 'WIDTHxHEIGHT' (or one number for a square when `square_ok`): the one size
    parser of every command; ConfigError naming `flag` for anything else or sides under `min_side`."""
    single = re.fullmatch(r"\s*(\d+)\s*", str(text)) if square_ok else None
    match = single or re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not match:
        example = "128 or 192x128" if square_ok else "720x480"
        raise ConfigError(f"{flag} {text!r}: expected WIDTHxHEIGHT{' or one number' if square_ok else ''}, e.g. {example}")
    width = int(match.group(1))
    height = width if single else int(match.group(2))
    if min(width, height) < min_side:
        raise ConfigError(f"{flag} {text!r}: width and height must be at least {min_side} pixel{'s' if min_side > 1 else ''}")
    return width, height


def _synth(args) -> int:
    from pathlib import Path

    size = parse_size(args.size)
    require_at_least("--count", args.count, 1)
    require_at_least("--workers", args.workers, 1)
    require_at_least("--seed", args.seed, 0)
    from lunarseg.runtime.imageio import DEFAULT_MAX_PIXELS  # a bigger frame no loader would read back

    if size[0] * size[1] > DEFAULT_MAX_PIXELS:
        raise ConfigError(f"--size {args.size}: at most {DEFAULT_MAX_PIXELS:,} pixels per frame")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} already exists and is not an empty folder: a dataset written over another "
                          "would mix the two; choose a new --out (after an interrupted synth, remove the folder)")
    from lunarseg.data.synth import write_dataset

    summary = write_dataset(args.out, args.count, size=size, seed=args.seed, workers=args.workers)
    fractions = ", ".join(f"{k} {100 * v:.1f}%" for k, v in summary["class_fractions"].items())
    print(f"wrote {summary['frames']} frames ({size[0]}x{size[1]}) and {summary['boxes']} boxes to "
          f"{summary['out']} in {summary['seconds']:.1f} s ({summary['frames_per_second']} frames/s, "
          f"{args.workers} worker(s)); class pixels: {fractions}")
    return 0


def _check(args) -> int:
    require_at_least("--sample", args.sample, 0)
    from lunarseg.data.check import check_dataset

    report = check_dataset(args.root, mask_kind=args.mask_kind, sample=args.sample)
    for line in report.problems:
        print(line)
    print(report.summary(), file=sys.stdout)
    return 1 if report.problems else 0


def _preview(args) -> int:
    from pathlib import Path

    require_at_least("--count", args.count, 1)
    if Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out} is a folder; give the PNG file to write, e.g. {Path(args.out) / 'preview.png'}")
    from lunarseg.data.preview import write_preview

    print(write_preview(args.root, args.out, count=args.count))
    return 0
