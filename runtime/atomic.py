"""Atomic file writes: write a temp file in the target directory, fsync, then rename over.

A reader (or a rover after a power cut, or a user's Ctrl-C) sees either the old file or the
whole new one, never a partial file.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success rename it to `path`, on failure delete it.

    `keep_suffix` ends the temp name with the target's suffix, for writers that insist on it
    (Keras only saves its native format to a name ending in `.keras`).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = f".tmp{target.suffix}" if keep_suffix else ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~current_umask())  # mkstemp makes 0600; give the file normal permissions
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def current_umask() -> int:
    """The process's umask (read by setting it and back: os has no getter)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_png(path: str | os.PathLike, array, **save_kwargs) -> Path:
    """Encode a uint8 array (H×W or H×W×3/4) as PNG and write it atomically."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", **save_kwargs)
    return write_bytes(path, buf.getvalue())
