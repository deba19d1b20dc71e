"""`lunarseg` subcommands of the runtime layer (registered by lunarseg.cli; heavy imports inside handlers)."""
from __future__ import annotations

import argparse

SEGMENT_EPILOG = """\
inputs: image files, directories (their images, sorted), glob patterns, or '-' to read frame
paths from stdin, one per line, as they arrive (a camera writing frames into a folder).

outputs in --out: <stem>_mask.png (class index scaled to gray: rock = 255 for binary models),
<stem>_overlay.png with --overlay, and one JSON line per frame appended to results.jsonl (or
--jsonl): input, ok, error, mask, stats (rock fraction/count/largest rock, hazard ahead),
latency_ms. A stem already used in --out (by this run or an earlier one) becomes <stem>-2, -3, ...,
so every record keeps pointing at its own files. Every file is written atomically and a frame gets
all its outputs or none; a bad frame is reported on stderr and in the JSONL and the stream goes on.

exit status: 0 all frames segmented; 3 some frames failed (see the JSONL); 2 bad usage or an
unusable model file; 4 an output could not be written (full disk, permissions; the frames before
it are complete); 130 interrupted (Ctrl-C); 143 terminated (SIGTERM).
"""


def register(sub) -> None:
    """Add this layer's subcommands to the top-level parser."""
    p = sub.add_parser(
        "segment",
        help="segment rock in frames with an exported .onnx/.tflite model (no TensorFlow)",
        description="Segment rocks in camera frames with an exported lunarseg model (.onnx or .tflite), "
        "writing masks, optional overlays and a JSONL record per frame.",
        epilog=SEGMENT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="exported model file (.onnx or .tflite)")
    p.add_argument("inputs", metavar="INPUTS", nargs="+", help="image files, directories, globs, or '-' for stdin")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="engine threads (default 1)")
    p.add_argument("--tile", action="store_true",
                   help="full-resolution: overlapping model-size tiles, blended, instead of resizing the frame")
    p.add_argument("--jsonl", metavar="FILE", default=None, help="JSONL results file (default DIR/results.jsonl)")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse frames larger than N pixels (default 40,000,000)")
    p.add_argument("--backend", default="auto", help="auto (the file suffix's default engine), onnxruntime, litert or "
                   "openvino (.onnx, optional extra)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_segment)


def _run_segment(args) -> int:
    from lunarseg.runtime.segment_cli import run_segment

    return run_segment(args)
