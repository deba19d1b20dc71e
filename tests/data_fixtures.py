"""Tiny hand-made dataset trees in the Kaggle layout, and crafted bad image files, for the data tests."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 64, 48
DIM_SMALL_ROCK = (0, 90, 0)  # a distant small rock, drawn dim in the mask
LARGE_ROCK = (0, 0, 255)


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(buf, format="PNG")
    return buf.getvalue()


def write_file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def frame_and_mask(number: int, size=(WIDTH, HEIGHT)) -> tuple[np.ndarray, np.ndarray]:
    """A grey frame with a sky band on top, a dim small rock and a bright large rock, and its colour mask."""
    w, h = size
    rng = np.random.default_rng(number)
    frame = rng.integers(90, 140, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w, 3), np.uint8)
    frame[: h // 6] = 0
    mask[: h // 6] = (255, 0, 0)
    mask[h // 2: h // 2 + 4, 5:9] = DIM_SMALL_ROCK
    mask[h - 16: h - 4, w - 20: w - 6] = LARGE_ROCK
    frame[mask[..., 1] > 0] = 200
    frame[mask[..., 2] > 0] = 220
    return frame, mask


def make_tree(root: Path, numbers=(1, 2, 3), mask_kind: str = "clean", size=(WIDTH, HEIGHT)) -> Path:
    """Renders and masks in the real layout: images/render/renderNNNN.png + images/<kind>/<kind>NNNN.png."""
    for n in numbers:
        frame, mask = frame_and_mask(n, size)
        write_file(root / "images" / "render" / f"render{n:04d}.png", png_bytes(frame))
        write_file(root / "images" / mask_kind / f"{mask_kind}{n:04d}.png", png_bytes(mask))
    return root


def make_real_photos(root: Path, names=("PCAM1", "TCAM2")) -> Path:
    """real_moon_images/NAME.png photos with hand-drawn g_NAME.png masks."""
    for i, name in enumerate(names):
        frame, mask = frame_and_mask(100 + i)
        write_file(root / "real_moon_images" / f"{name}.png", png_bytes(frame))
        write_file(root / "real_moon_images" / f"g_{name}.png", png_bytes(mask))
    return root


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width×height RGB pixels and has no data: a decompression-bomb header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IEND", b"")


def png16_gray(values: np.ndarray) -> bytes:
    """A 16-bit grayscale PNG, written by hand so the bit depth is certain."""
    h, w = values.shape
    rows = b"".join(b"\x00" + values[r].astype(">u2").tobytes() for r in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")
