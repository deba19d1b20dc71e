"""Pre- and post-processing: THE single definition, used by the runtime, the trainer, export parity
and the benchmarks alike, so that all of them see the same pixels.

Pre-processing:  frame (uint8 H×W or H×W×3) → model colour mode (Pillow convert('L') for gray
                 models) → Pillow antialiased bilinear resize to the model input
                 (imageio.to_model_pixels) → float32 `pixel * normalisation.scale + offset`, H'×W'×C.
                 An engine with quantized input gets the same values quantized, by a 256-entry lookup
                 (Backend.pixel_table): with scale 1/255 and zero 0 that is the pixels themselves.
                 Tiled inference (full resolution) skips the resize: to_model_colour + normalise.
Post-processing: probabilities H×W×K → class indices (sigmoid: `p > threshold`; softmax: argmax)
                 → nearest-neighbour resize back to the frame's size.
"""
from __future__ import annotations

import numpy as np

from lunarseg.runtime import imageio

__all__ = ["to_model_colour", "normalise", "model_pixels", "prepare", "probs_to_classes", "mask_to_frame_size",
           "display_values", "rock_classes"]


def _as_uint8(frame: np.ndarray) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.dtype == np.uint8 and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        return arr
    return imageio.array_to_uint8(arr)


def to_model_colour(frame: np.ndarray, meta) -> np.ndarray:
    """uint8 H×W (gray models) or H×W×3 (rgb models) from any frame imageio accepts."""
    arr = _as_uint8(frame)
    return imageio.to_gray(arr) if meta.colour_mode == "gray" else imageio.to_rgb(arr)


def normalise(frame_model_colour: np.ndarray, meta, out: np.ndarray | None = None) -> np.ndarray:
    """float32 H×W×C = pixel * scale + offset (no resize); `out` is reused when given."""
    arr = frame_model_colour
    if arr.ndim == 2:
        arr = arr[:, :, None]
    norm = meta.normalisation
    scale, offset = float(norm.get("scale", 1.0 / 255.0)), float(norm.get("offset", 0.0))
    if out is None:
        out = np.empty(arr.shape, dtype=np.float32)
    np.multiply(arr, np.float32(scale), out=out, casting="unsafe")
    if offset:
        out += np.float32(offset)
    return out


def model_pixels(frame: np.ndarray, meta) -> np.ndarray:
    """uint8 H'×W' (gray) or H'×W'×3 (rgb): the frame in the model's colour mode and at its size."""
    return imageio.to_model_pixels(_as_uint8(frame), (meta.height, meta.width), meta.colour_mode)


def prepare(frame: np.ndarray, meta, out: np.ndarray | None = None) -> np.ndarray:
    """float32 H'×W'×C model input from a uint8 frame (H×W or H×W×3) of any size."""
    return normalise(model_pixels(frame, meta), meta, out=out)


def probs_to_classes(probs: np.ndarray, meta) -> np.ndarray:
    """uint8 H×W class indices from probabilities H×W×K (or H×W for a sigmoid map)."""
    p = np.asarray(probs)
    if p.ndim == 2:
        p = p[:, :, None]
    if meta.output_activation == "sigmoid" or p.shape[-1] == 1:
        return (p[:, :, 0] > np.float32(meta.threshold)).astype(np.uint8)
    return p.argmax(axis=-1).astype(np.uint8)


def mask_to_frame_size(classes: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a class map back to the frame's (h, w)."""
    return imageio.resize(np.ascontiguousarray(classes, dtype=np.uint8), tuple(size_hw), nearest=True)


def rock_classes(meta) -> tuple[int, ...]:
    """Indices that count as rock: classes named '*rock*' (else every non-background class)."""
    names = list(meta.class_names)
    found = tuple(i for i, n in enumerate(names) if "rock" in str(n).lower())
    return found or tuple(range(1, max(len(names), 2)))


def display_values(classes: np.ndarray, meta) -> np.ndarray:
    """Class indices scaled to visible gray levels: binary rock = 255; K classes spread over 0–255."""
    k = max(len(meta.class_names), 2)
    step = 255 // (k - 1)
    return (classes.astype(np.uint16) * step).clip(0, 255).astype(np.uint8)
