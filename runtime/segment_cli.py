"""The `lunarseg segment` handler: stream frames through a Segmenter, write masks and JSONL.

Bad frames never stop the stream: each gets one line on stderr and a JSONL record with its error.
Masks and overlays are written atomically (temp file + rename); each JSONL record is one
`write()` of one line on an O_APPEND descriptor, so a reader never sees half a record. A frame's
files and record are written with Ctrl-C and SIGTERM held, and removed again if one cannot be
written: a frame has all its outputs or none. Names never reuse a file already in --out, so
records appended by an earlier run keep pointing at their own masks.
"""
from __future__ import annotations

import errno
import glob
import json
import os
import sys
from pathlib import Path
from typing import Iterator

from lunarseg.runtime import atomic, imageio, interrupts
from lunarseg.runtime.errors import ConfigError, LunarsegError, OutputError, require_folder_or_absent

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".pgm", ".ppm", ".pnm", ".gif")


class InputItem:
    __slots__ = ("path", "error")

    def __init__(self, path: str, error: str | None = None):
        self.path, self.error = path, error


def _expand_one(arg: str) -> list[InputItem]:
    if os.path.isdir(arg):
        files = sorted(str(p) for p in Path(arg).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        return [InputItem(f) for f in files] or [InputItem(arg, f"{arg}: directory holds no images "
                                                              f"({', '.join(IMAGE_SUFFIXES)})")]
    if os.path.exists(arg) or not glob.has_magic(arg):
        return [InputItem(arg)]  # a missing file is reported by the decoder, in the stream
    matches = sorted(m for m in glob.glob(arg) if os.path.isfile(m))
    return [InputItem(m) for m in matches] or [InputItem(arg, f"{arg}: no files match this pattern")]


def _stdin_items(stream) -> Iterator[InputItem]:
    for line in iter(stream.readline, ""):  # one line at a time, as frames arrive
        path = line.strip()
        if path:
            yield InputItem(path)


def expand_inputs(inputs: list[str], stdin=None) -> tuple[Iterator[InputItem], int | None]:
    """(items, total): total is None when '-' streams paths from stdin."""
    if "-" in inputs:
        def gen():
            for arg in inputs:
                if arg == "-":
                    yield from _stdin_items(stdin or sys.stdin)
                else:
                    yield from _expand_one(arg)
        return gen(), None
    items = [item for arg in inputs for item in _expand_one(arg)]
    return iter(items), len(items)


class JsonlWriter:
    """Append one JSON record per line; each record is a single write() on an O_APPEND descriptor."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, record: dict) -> None:
        """One record; a short write (a disk filling mid-record) is undone and raised as a full disk."""
        data = (json.dumps(record, sort_keys=True, default=str) + "\n").encode("utf-8")
        end = os.lseek(self.fd, 0, os.SEEK_END)
        written = os.write(self.fd, data)
        if written != len(data):
            os.ftruncate(self.fd, end)
            raise OSError(errno.ENOSPC, f"No space left on device ({written} of {len(data)} bytes written)")

    def close(self) -> None:
        os.close(self.fd)


class StemNamer:
    """`<stem>` for a frame's output files, unique in the output directory: a stem this run used, or
    whose mask or overlay is there from an earlier run, gets `-2`, `-3`, … (`a.png`, `a.jpg` → `a`, `a-2`)."""

    SUFFIXES = ("_mask.png", "_overlay.png")

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.seen: dict[str, int] = {}

    def _taken(self, name: str) -> bool:
        return any((self.out_dir / f"{name}{suffix}").exists() for suffix in self.SUFFIXES)

    def __call__(self, path: str) -> str:
        stem = Path(path).stem or "frame"
        n = self.seen.get(stem, 0) + 1
        while self._taken(stem if n == 1 else f"{stem}-{n}"):
            n += 1
        self.seen[stem] = n
        return stem if n == 1 else f"{stem}-{n}"


def write_frame_outputs(files: list[tuple[Path, object]], jsonl: "JsonlWriter", record: dict) -> None:
    """Write a frame's PNGs (path, uint8 array), then its record, all or none: a file that cannot be
    written removes those written before it. Callers hold stop signals around it (interrupts.held)."""
    done: list[Path] = []
    target = jsonl.path
    try:
        for target, array in files:
            atomic.write_png(target, array)
            done.append(target)
        target = jsonl.path
        jsonl.write(record)
    except OSError as exc:
        for p in done:
            p.unlink(missing_ok=True)
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}; the frames before it are complete") from None


def _error_line(msg: str) -> None:
    print(f"lunarseg segment: frame error: {msg}", file=sys.stderr, flush=True)


def run_segment(args, stdin=None) -> int:
    from lunarseg.runtime import masks, preprocess
    from lunarseg.runtime.progress import Progress
    from lunarseg.runtime.segmenter import Segmenter

    if args.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {args.threads}")
    max_pixels = imageio.DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels
    if max_pixels < 1:
        raise ConfigError(f"--max-pixels must be positive, got {max_pixels}")
    out_dir = Path(args.out)
    require_folder_or_absent(out_dir)

    seg = Segmenter.from_file(args.model, threads=args.threads, backend=args.backend)
    meta = seg.meta
    overlay_task = "binary" if meta.output_activation == "sigmoid" else "4class"
    out_dir.mkdir(parents=True, exist_ok=True)
    jsonl = JsonlWriter(Path(args.jsonl) if args.jsonl else out_dir / "results.jsonl")
    items, total = expand_inputs(args.inputs, stdin=stdin)
    bar = Progress(total, desc="segment", unit="frame", enabled=not args.no_progress)
    namer = StemNamer(out_dir)
    ok = failed = 0
    try:
        for item in items:
            record: dict = {"input": item.path, "model": str(seg.path), "backend": seg.backend_name}
            try:
                if item.error:
                    raise LunarsegError(item.error)
                result = seg.segment(item.path, tile=args.tile, max_pixels=max_pixels, keep_frame=args.overlay)
            except (LunarsegError, OSError) as exc:
                msg = str(exc) if isinstance(exc, LunarsegError) else f"{item.path}: {exc.strerror or exc}"
                _error_line(msg)
                record.update(ok=False, error=msg)
                with interrupts.held():  # the record and the count agree whenever a stop arrives
                    write_frame_outputs([], jsonl, record)
                    failed += 1
                bar.update(failed=failed)
                continue
            stem = namer(item.path)
            mask_path = out_dir / f"{stem}_mask.png"
            files = [(mask_path, preprocess.display_values(result.classes, meta))]
            record.update(ok=True, error=None, mask=str(mask_path), stats=result.stats,
                          latency_ms=round(result.timings_ms["total"], 3),
                          timings_ms={k: round(v, 3) for k, v in result.timings_ms.items()})
            if args.overlay:
                ov_path = out_dir / f"{stem}_overlay.png"
                files.append((ov_path, masks.overlay(result.frame, result.classes, task=overlay_task)))
                record["overlay"] = str(ov_path)
            with interrupts.held():
                write_frame_outputs(files, jsonl, record)
                ok += 1
            bar.update(failed=failed)
    finally:  # the count also when a stop signal or an unwritable output ends the stream
        bar.close()
        jsonl.close()
        print(f"lunarseg segment: {ok} frame(s) segmented, {failed} failed; results in {jsonl.path}",
              file=sys.stderr, flush=True)
    return 3 if failed else 0
