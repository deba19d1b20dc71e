"""Calibration and validation frames for export: gathered, checked, and brought to the model's size.

Calibration frames come from arrays/paths the caller passes, or from the train split of a dataset
root; unreadable ones are skipped and counted, frames of another size are resized (with a warning),
and too few usable frames is a one-line DatasetError. Validation frames (with labels) come from the
caller or the dataset's val split; without either, parity runs on fixed synthetic frames and scores
the artifact against the Keras model's own masks.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np

from lunarseg.runtime import imageio, preprocess
from lunarseg.runtime.errors import DatasetError, ImageError, LunarsegError
from lunarseg.runtime.metadata import ModelMeta

__all__ = ["ExportWarning", "MIN_CALIB_FRAMES", "DEFAULT_CALIB_FRAMES", "calibration_frames",
           "validation_frames", "synthetic_frames", "LabelledFrames", "resized_frames"]

MIN_CALIB_FRAMES = 8
DEFAULT_CALIB_FRAMES = 100


class ExportWarning(UserWarning):
    """Something the export worked around (resized or skipped frames, fewer frames than asked)."""


def _split_kwargs(meta: ModelMeta) -> dict:
    return dict(width=meta.width, height=meta.height, task=meta.task, colour_mode=meta.colour_mode)


def _as_frames(calib, meta: ModelMeta, expected_hw=None) -> tuple[list[np.ndarray], int, set]:
    """Decode every item to the model's colour mode at its size; (frames, unreadable count, foreign
    sizes). Frames of `expected_hw` (the model's own size, when exporting at another) resize silently."""
    frames, bad, sizes = [], 0, set()
    for i, item in enumerate(list(calib)):  # paths, bytes or arrays; an N×H×W(×C) array gives its frames
        try:
            if isinstance(item, (str, os.PathLike, bytes, bytearray)):
                arr = imageio.read_image(item)
            else:
                arr = imageio.array_to_uint8(np.asarray(item), name=f"calibration frame {i}")
            arr = preprocess.to_model_colour(arr, meta)
        except (ImageError, ValueError, TypeError):
            bad += 1
            continue
        if arr.shape[:2] != (meta.height, meta.width):
            if expected_hw is None or tuple(arr.shape[:2]) != tuple(expected_hw):
                sizes.add(f"{arr.shape[1]}x{arr.shape[0]}")
            arr = imageio.resize(arr, (meta.height, meta.width))
        frames.append(arr if arr.ndim == 3 else arr[:, :, None])
    return frames, bad, sizes


def calibration_frames(meta: ModelMeta, *, calib=None, data_dir=None, count: int = DEFAULT_CALIB_FRAMES,
                       minimum: int = MIN_CALIB_FRAMES, expected_hw=None) -> np.ndarray:
    """uint8 N×H×W×C calibration frames at `meta`'s input size (N ≤ count): a dataset's train split
    is loaded at that size; given frames are resized to it (with a warning unless they are at
    `expected_hw`, the model's own size, when exporting at another size)."""
    if count < minimum:
        raise DatasetError(f"--calib-frames {count} is too few: full-integer quantization needs at least "
                           f"{minimum} calibration frames ({DEFAULT_CALIB_FRAMES} recommended)")
    bad, where = 0, "the calibration frames"
    if calib is not None:
        frames, bad, sizes = _as_frames(calib, meta, expected_hw)
        if sizes:
            warnings.warn(f"resized calibration frames of size {', '.join(sorted(sizes))} to the model input "
                          f"{meta.width}x{meta.height}", ExportWarning, stacklevel=3)
        x = np.stack(frames[:count]) if frames else np.zeros((0, meta.height, meta.width, meta.channels), np.uint8)
    elif data_dir is not None:
        from lunarseg.train.data import load_split

        where = f"the train split of {data_dir}"
        x = load_split(data_dir, "train", max_frames=count, **_split_kwargs(meta)).x
    else:
        raise DatasetError("int8 export needs calibration frames: pass --data DIR (its train split is used) "
                           "or calibration arrays")
    if bad:
        warnings.warn(f"skipped {bad} unreadable calibration frame(s)", ExportWarning, stacklevel=3)
    if len(x) < minimum:
        skipped = f" ({bad} unreadable skipped)" if bad else ""
        raise DatasetError(f"only {len(x)} usable calibration frames in {where}{skipped}; full-integer "
                           f"quantization needs at least {minimum} ({DEFAULT_CALIB_FRAMES} recommended)")
    if len(x) < count:
        warnings.warn(f"using {len(x)} calibration frames from {where}, fewer than the {count} asked for",
                      ExportWarning, stacklevel=3)
    return np.ascontiguousarray(x, dtype=np.uint8)


def synthetic_frames(meta: ModelMeta, n: int = 16, seed: int = 0) -> np.ndarray:
    """Fixed uint8 frames (smooth noise with bright blobs) for parity when no data is given."""
    rng = np.random.default_rng(seed)
    h, w, c = meta.height, meta.width, meta.channels
    x = rng.integers(30, 110, (n, h, w, 1)).astype(np.int32)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        for _ in range(4):
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(2, max(3, min(h, w) // 5))
            x[i, (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r, 0] += 110
    return np.repeat(np.clip(x, 0, 255).astype(np.uint8), c, axis=3)


@dataclass
class LabelledFrames:
    """uint8 frames N×H×W×C and their class labels N×H×W (what `val=` takes)."""

    x: np.ndarray
    y: np.ndarray


def resized_frames(val, width: int, height: int) -> LabelledFrames:
    """Labelled frames at width×height: frames antialiased, labels nearest (parity at another size)."""
    x, y = np.asarray(val.x), np.asarray(val.y)
    if x.ndim == 3:
        x = x[..., None]
    hw = (int(height), int(width))
    xs = [imageio.resize(f[..., 0] if f.shape[-1] == 1 else f, hw) for f in x]
    xs = np.stack([f[..., None] if f.ndim == 2 else f for f in xs]) if xs else x[:, :hw[0], :hw[1]]
    ys = np.stack([preprocess.mask_to_frame_size(t, hw) for t in y]) if len(y) else y
    return LabelledFrames(np.ascontiguousarray(xs, np.uint8), np.ascontiguousarray(ys, np.uint8))


def validation_frames(meta: ModelMeta, *, val=None, data_dir=None, max_frames: int = 64):
    """(x uint8 N×H×W×C, y uint8 N×H×W or None, where) for parity."""
    if val is not None:
        x, y = np.asarray(val.x), np.asarray(val.y)
        if x.ndim == 3:
            x = x[..., None]
        if x.shape[1:3] != (meta.height, meta.width):
            raise DatasetError(f"validation frames are {x.shape[2]}x{x.shape[1]} but the model expects "
                               f"{meta.width}x{meta.height}")
        if max_frames:
            x, y = x[:max_frames], y[:max_frames]
        return x, y, "given validation frames"
    if data_dir is not None:
        from lunarseg.train.data import load_split

        try:
            s = load_split(data_dir, "val", max_frames=max_frames, **_split_kwargs(meta))
            return s.x, s.y, f"the val split of {data_dir}"
        except LunarsegError as exc:
            warnings.warn(f"no validation frames ({exc}); parity uses synthetic frames against Keras masks",
                          ExportWarning, stacklevel=3)
    return synthetic_frames(meta), None, "synthetic frames (labels: Keras masks)"
