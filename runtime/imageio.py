"""Decode camera frames and masks into uint8 numpy arrays, refusing bad files in one line.

Used by the dataset loader, the trainer and the rover runtime alike, so every layer sees the same
pixels. Returns H×W (gray) or H×W×3 (RGB) uint8; 16-bit is scaled to 8-bit, alpha is dropped,
palettes are expanded.
"""
from __future__ import annotations

import io
import os
import struct
import threading
import warnings
from dataclasses import dataclass
from functools import lru_cache
from math import gcd
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from lunarseg.runtime.errors import ImageError

# A 720×480 frame is 0.35 MP; 8K video is 33 MP. Anything larger is refused before decoding.
DEFAULT_MAX_PIXELS = 40_000_000


def read_image(source: str | os.PathLike | bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file (or its bytes) to uint8 H×W or H×W×3; raise ImageError naming the file."""
    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        if isinstance(source, (bytes, bytearray)):
            data = bytes(source)
        else:
            path = Path(source)
            if not path.exists():
                raise ImageError(f"{name}: no such file")
            if path.is_dir():
                raise ImageError(f"{name}: is a directory, not an image")
            data = path.read_bytes()
        if not data:
            raise ImageError(f"{name}: file is empty (0 bytes)")
        return _decode(data, name, max_pixels)
    except PermissionError:
        raise ImageError(f"{name}: permission denied") from None


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png_header(data: bytes, name: str, max_pixels: int) -> None:
    """Refuse a PNG whose IHDR claims too many pixels, before Pillow sees it (its own limit may be higher)."""
    if not data.startswith(PNG_SIGNATURE):
        return
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ImageError(f"{name}: truncated or corrupt PNG (no IHDR header)")
    width, height = struct.unpack(">II", data[16:24])
    if width * height > max_pixels:
        raise ImageError(f"{name}: PNG header claims {width}x{height} = {width * height:,} pixels, over the "
                         f"limit of {max_pixels:,} (possible decompression bomb); refused without decoding")


def _decode(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    _check_png_header(data, name, max_pixels)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width <= 0 or height <= 0:
                raise ImageError(f"{name}: image has no pixels ({width}x{height})")
            if width * height > max_pixels:
                raise ImageError(
                    f"{name}: image is {width}x{height} = {width * height:,} pixels, over the limit "
                    f"of {max_pixels:,} (possible decompression bomb)"
                )
            img.load()
        except ImageError:
            raise
        except UnidentifiedImageError:
            raise ImageError(f"{name}: not a readable image (unknown or corrupt format)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError(f"{name}: image header claims too many pixels (decompression bomb)") from None
        except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError,
                KeyError, ZeroDivisionError) as exc:  # what Pillow raises on damaged files
            raise ImageError(f"{name}: truncated or corrupt image data ({exc})") from None
    return _to_uint8_array(img, name)


def _to_uint8_array(img: Image.Image, name: str) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img).astype(np.int64)
        top = 65535 if arr.max(initial=0) > 255 or mode.startswith("I;16") else 255
        return np.clip(arr * 255 // top, 0, 255).astype(np.uint8)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise ImageError(f"{name}: float image contains NaN or Inf")
        hi = 1.0 if arr.max(initial=0.0) <= 1.0 else 255.0
        return np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if mode in ("1", "L"):
        return np.asarray(img.convert("L"), dtype=np.uint8)
    if mode == "LA":
        return np.asarray(img.convert("L"), dtype=np.uint8)
    if mode in ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "RGBX", "LAB", "HSV"):
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    raise ImageError(f"{name}: unsupported pixel mode {mode!r}")


def array_to_uint8(frame: np.ndarray, name: str = "<array>") -> np.ndarray:
    """Normalise an in-memory frame (uint8/uint16/float, gray/RGB/RGBA) to uint8 H×W or H×W×3."""
    arr = np.asarray(frame)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ImageError(f"{name}: expected H×W, H×W×1, H×W×3 or H×W×4, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"{name}: frame has no pixels (shape {arr.shape})")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return (arr.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ImageError(f"{name}: frame contains NaN or Inf")
        scale = 255.0 if arr.max(initial=0.0) <= 1.0 else 1.0
        return np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8)
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    raise ImageError(f"{name}: unsupported dtype {arr.dtype}")


def to_gray(arr: np.ndarray) -> np.ndarray:
    """uint8 H×W from H×W or H×W×3: Pillow's convert('L') (ITU-R 601 luma), ~2× faster than numpy."""
    if arr.ndim == 2:
        return arr
    return np.asarray(Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8)).convert("L"))


def to_rgb(arr: np.ndarray) -> np.ndarray:
    """uint8 H×W×3 from H×W or H×W×3."""
    if arr.ndim == 3:
        return arr
    return np.repeat(arr[:, :, None], 3, axis=2)


# The antialiased resize is Pillow's: an integer box reduce while the remaining factor stays ≥ this gap,
# then Pillow's bilinear filter (720→192 is reduce(3) + bilinear 240→192). It is computed here as one
# linear map per axis (box reduce composed with Pillow's bilinear coefficients), applied in float32
# as blocked matrix products and rounded once — 2–3× faster than Pillow's scalar 8-bit passes on a
# 720×480 frame and within one gray level of them (Pillow rounds after each pass, this only at the end).
REDUCING_GAP = 1.25
RESAMPLE_BLOCK_MAX = 16  # outputs per block; a size ratio whose period is longer uses gathered windows


def resize(arr: np.ndarray, size_hw: tuple[int, int], *, nearest: bool = False) -> np.ndarray:
    """Resize uint8 H×W(×C) to (h, w): the antialiased resize for frames, Pillow's nearest for label maps."""
    h, w = size_hw
    if arr.shape[:2] == (h, w):
        return arr
    if nearest and arr.ndim == 2:  # label maps: Pillow's own NEAREST mapping, applied as two gathers
        # Columns by np.take, whose output is C-contiguous, so the row gather copies whole rows: 0.16 ms
        # for a 384x256 -> 720x480 mask. Fancy indexing gathers the columns faster alone but leaves a
        # column-major array that made the row gather, and the whole, 2x slower (0.35 ms).
        cols = np.take(arr, nearest_source_index(arr.shape[1], w), axis=1)
        return cols.take(nearest_source_index(arr.shape[0], h), axis=0)
    if nearest:
        return np.asarray(Image.fromarray(arr).resize((w, h), resample=Image.NEAREST))
    return resample(arr, (h, w))


def nearest_source_index(n_src: int, n_dst: int) -> np.ndarray:
    """Source index Pillow's NEAREST resize reads for each of n_dst positions (n_src → n_dst), cached.

    Applying it with np.take is 5× faster than Pillow on a 192×128 → 720×480 mask and identical.
    """
    return _nearest_source_index(int(n_src), int(n_dst))


@lru_cache(maxsize=64)
def _nearest_source_index(n_src: int, n_dst: int) -> np.ndarray:
    ramp = np.arange(n_src, dtype=np.int32)[None, :]
    idx = np.asarray(Image.fromarray(ramp).resize((n_dst, 1), resample=Image.NEAREST)).astype(np.intp)[0]
    idx.setflags(write=False)
    return idx


def reduce_factor(n_in: int, n_out: int) -> int:
    """The integer box reduce done before the bilinear filter (Pillow's reducing_gap rule)."""
    return int(n_in / n_out / REDUCING_GAP) or 1


def _box_reduce_matrix(n_in: int, factor: int) -> np.ndarray:
    """Pillow's reduce(factor) along one axis: mean of each block, the last (partial) block included."""
    n_red = -(-n_in // factor)
    m = np.zeros((n_red, n_in))
    for i in range(n_red):
        lo, hi = i * factor, min((i + 1) * factor, n_in)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Pillow's antialiased bilinear coefficients (Resample.c precompute_coeffs) as an n_out×n_in matrix."""
    scale = n_in / n_out
    filter_scale = max(scale, 1.0)
    support = filter_scale  # the bilinear (triangle) filter has support 1
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = (i + 0.5) * scale
        lo, hi = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), n_in)
        x = np.arange(lo, hi)
        wgt = np.maximum(0.0, 1.0 - np.abs((x - centre + 0.5) / filter_scale))
        if wgt.sum() > 0:
            m[i, lo:hi] = wgt / wgt.sum()
    return m


def axis_weights(n_in: int, n_out: int) -> np.ndarray:
    """float64 n_out×n_in map of the antialiased resize along one axis (box reduce, then bilinear)."""
    factor = reduce_factor(n_in, n_out)
    if factor == 1:
        return _bilinear_matrix(n_in, n_out)
    box = _box_reduce_matrix(n_in, factor)
    return _bilinear_matrix(box.shape[0], n_out) @ box


@dataclass(frozen=True)
class AxisPlan:
    """One axis of the resize as blocks: block b's `block` outputs read `length` inputs from start b."""

    n_in: int
    n_out: int
    block: int
    starts: np.ndarray  # (n_blocks,) first input of each block, in padded coordinates
    length: int
    pad: tuple[int, int]  # zero inputs added before and after (periodic plans only)
    weights: np.ndarray  # float32 (n_blocks, block, length)

    @property
    def stride(self) -> int | None:
        """Inputs between consecutive block starts when constant (windows are then a strided view)."""
        d = np.diff(self.starts)
        return int(d[0]) if len(d) and (d == d[0]).all() else (0 if len(d) == 0 else None)


@lru_cache(maxsize=64)
def axis_plan(n_in: int, n_out: int) -> AxisPlan:
    """Blocked form of axis_weights: the size ratio's period when short (strided windows), else 8."""
    wts = axis_weights(n_in, n_out)
    period = n_out // gcd(n_out, -(-n_in // reduce_factor(n_in, n_out)) * reduce_factor(n_in, n_out))
    periodic = period <= RESAMPLE_BLOCK_MAX and (n_in * period) % n_out == 0
    block = period if periodic else 8
    n_blocks = -(-n_out // block)
    rows = [wts[b * block:(b + 1) * block] for b in range(n_blocks)]
    nz = [np.flatnonzero(r.any(axis=0)) for r in rows]
    lo, hi = np.array([z[0] for z in nz]), np.array([z[-1] + 1 for z in nz])
    if periodic:
        step = n_in * block // n_out
        offset = int((lo - step * np.arange(n_blocks)).min())
        starts = offset + step * np.arange(n_blocks)
        length = int((hi - starts).max())
        pad = (max(0, -offset), max(0, int(starts[-1]) + length - n_in))
    else:
        length = int((hi - lo).max())
        starts, pad = np.minimum(lo, n_in - length), (0, 0)
    weights = np.zeros((n_blocks, block, length), dtype=np.float32)
    for b, r in enumerate(rows):
        s = int(starts[b])
        src_lo, src_hi = max(s, 0), min(s + length, n_in)
        weights[b, :len(r), src_lo - s:src_hi - s] = r[:, src_lo:src_hi]
    starts = starts + pad[0]
    starts.setflags(write=False)
    weights.setflags(write=False)
    return AxisPlan(n_in, n_out, block, starts, length, pad, weights)


# OpenBLAS runs a product on several threads from about 2**18 multiply-accumulates: with the engine
# pinned to one core those threads fight over it (15 ms instead of 0.3), so every product stays below.
BLAS_SINGLE_THREAD_MACS = 1 << 18


def _windows(x: np.ndarray, plan: AxisPlan, axis: int, channels: int) -> np.ndarray:
    """Each block's input window along `axis` of 2-D float32 x (columns hold pixel·channel): a view
    when the plan is periodic. axis 0: (n_blocks, length, K); axis 1: (n_blocks, R, length·C)."""
    n_blocks, length, stride = len(plan.starts), plan.length, plan.stride
    s0, s1 = x.strides
    if axis == 0:
        if stride is not None:
            return np.lib.stride_tricks.as_strided(x[int(plan.starts[0]):], (n_blocks, length, x.shape[1]),
                                                   (stride * s0, s0, s1), writeable=False)
        return x[(plan.starts[:, None] + np.arange(length)).ravel()].reshape(n_blocks, length, -1)
    if stride is not None:
        return np.lib.stride_tricks.as_strided(x[:, int(plan.starts[0]) * channels:],
                                               (n_blocks, x.shape[0], length * channels),
                                               (stride * channels * s1, s0, s1), writeable=False)
    pix = (plan.starts[:, None] + np.arange(length)).ravel()
    idx = (pix[:, None] * channels + np.arange(channels)).ravel()
    return x[:, idx].reshape(x.shape[0], n_blocks, length * channels).transpose(1, 0, 2)


@lru_cache(maxsize=64)
def _column_weights(n_in: int, n_out: int, channels: int) -> np.ndarray:
    """(n_blocks, length·C, block·C): a column plan's weights applied to each channel alike."""
    w = axis_plan(n_in, n_out).weights.transpose(0, 2, 1)  # (n_blocks, length, block)
    out = np.ascontiguousarray(np.einsum("blj,cd->blcjd", w, np.eye(channels, dtype=np.float32))
                               .reshape(w.shape[0], w.shape[1] * channels, w.shape[2] * channels))
    out.setflags(write=False)
    return out


def _matmul_small(a: np.ndarray, b: np.ndarray, out: np.ndarray, split_axis: int) -> None:
    """Batched a @ b into out, split along b's columns (axis 2) or a's rows (axis 1) so that every
    single product stays under BLAS_SINGLE_THREAD_MACS."""
    macs = a.shape[1] * a.shape[2] * b.shape[2]
    parts = -(-macs // BLAS_SINGLE_THREAD_MACS)
    n = (b if split_axis == 2 else a).shape[split_axis]
    step = max(1, -(-n // parts))
    for i in range(0, n, step):
        if split_axis == 2:
            np.matmul(a, b[:, :, i:i + step], out=out[:, :, i:i + step])
        else:
            np.matmul(a[:, i:i + step], b, out=out[:, i:i + step])


_scratch = threading.local()


def _scratch_buffer(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A zeroed float32 buffer reused per thread, name and shape (its padding is never written)."""
    bufs = getattr(_scratch, "bufs", None)
    if bufs is None:
        bufs = _scratch.bufs = {}
    key = (name, shape)
    if key not in bufs:
        if len(bufs) > 16:
            bufs.clear()
        bufs[key] = np.zeros(shape, dtype=np.float32)
    return bufs[key]


def resample(arr: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """uint8 h×w(×C): the antialiased resize of uint8 H×W(×C), channels alike (see REDUCING_GAP).

    Rows, then columns, each as batched small matrix products over strided windows of reused
    float32 buffers; rounded once, half up.
    """
    h, w = size_hw
    rows_in, cols_in = arr.shape[:2]
    c = 1 if arr.ndim == 2 else arr.shape[2]
    ph, pw = axis_plan(rows_in, h), axis_plan(cols_in, w)
    x = _scratch_buffer("in", (ph.pad[0] + rows_in + ph.pad[1], cols_in * c))
    np.copyto(x[ph.pad[0]:ph.pad[0] + rows_in], arr.reshape(rows_in, cols_in * c), casting="unsafe")
    y = _scratch_buffer("rows", (len(ph.starts) * ph.block, (pw.pad[0] + cols_in + pw.pad[1]) * c))
    inner = y[:, pw.pad[0] * c:(pw.pad[0] + cols_in) * c].reshape(len(ph.starts), ph.block, -1)
    _matmul_small(ph.weights, _windows(x, ph, 0, c), inner, split_axis=2)
    z = _scratch_buffer("cols", (h, len(pw.starts), pw.block * c))  # written block-major, so rounding is contiguous
    _matmul_small(_windows(y[:h], pw, 1, c), _column_weights(cols_in, w, c), z.transpose(1, 0, 2), split_axis=1)
    z += 0.5
    res = np.empty((h, len(pw.starts) * pw.block * c), dtype=np.uint8)
    np.copyto(res, z.reshape(h, -1), casting="unsafe")
    res = res[:, :w * c] if len(pw.starts) * pw.block != w else res
    return np.ascontiguousarray(res).reshape((h, w) if arr.ndim == 2 else (h, w, c))


def to_model_pixels(arr: np.ndarray, size_hw: tuple[int, int], colour_mode: str) -> np.ndarray:
    """uint8 frame at the model's size and colour mode: H×W (gray) or H×W×3 (rgb).

    Colour first (Pillow's convert('L') for gray models), then the antialiased resize: a gray model's
    resize touches one channel instead of three. The trainer's loader calls this too, so training
    and the rover see the same pixels.
    """
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    arr = to_gray(arr) if colour_mode == "gray" else to_rgb(arr)
    return resize(arr, tuple(size_hw))
