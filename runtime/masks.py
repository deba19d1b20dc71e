"""Colour-coded masks (the Kaggle dataset's code) ↔ class-index maps.

Colour code (RGB): sky red, small rocks green, large rocks blue, background black. Distant rocks
are drawn dimmer, so a pixel's class is its strongest channel when that channel reaches a
threshold, not an exact colour match.
"""
from __future__ import annotations

import numpy as np

from lunarseg.runtime.errors import ImageError, unknown_key

# Class indices for the 4-class task; binary merges small and large rocks into "rock".
BACKGROUND, SKY, SMALL_ROCK, LARGE_ROCK = 0, 1, 2, 3
CLASS_NAMES = {
    "binary": ("background", "rock"),
    "4class": ("background", "sky", "small_rock", "large_rock"),
}
CLASS_COLOURS = np.array([(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)], dtype=np.uint8)
DEFAULT_CHANNEL_THRESHOLD = 50


def rock_mask(classes: np.ndarray, task: str) -> np.ndarray:
    """The one rule for which pixels are rock: class 1 of a binary map; small or large rock of a 4-class map."""
    return classes >= SMALL_ROCK if task == "4class" else classes > 0


def class_names(task: str) -> tuple[str, ...]:
    if task not in CLASS_NAMES:
        raise unknown_key("task", task, CLASS_NAMES)
    return CLASS_NAMES[task]


def decode_colour_mask(mask: np.ndarray, task: str = "binary", *,
                       threshold: int = DEFAULT_CHANNEL_THRESHOLD, name: str = "<mask>") -> np.ndarray:
    """uint8 class map H×W from an RGB colour mask (or a gray mask: nonzero = rock, binary only)."""
    class_names(task)
    if mask.ndim == 2:
        if task != "binary":
            raise ImageError(f"{name}: single-channel mask cannot give 4 classes; it needs the RGB colour code")
        return (mask >= threshold).astype(np.uint8)
    if mask.ndim != 3 or mask.shape[2] < 3:
        raise ImageError(f"{name}: mask must be H×W or H×W×3, got shape {mask.shape}")
    rgb = mask[..., :3]
    strongest = rgb.argmax(axis=2)  # 0 red, 1 green, 2 blue
    on = rgb.max(axis=2) >= threshold
    four = np.where(on, strongest + 1, BACKGROUND).astype(np.uint8)  # red→1 sky, green→2, blue→3
    if task == "4class":
        return four
    return (four >= SMALL_ROCK).astype(np.uint8)


def encode_class_map(classes: np.ndarray, brightness: np.ndarray | None = None) -> np.ndarray:
    """RGB colour mask from a 4-class map; `brightness` (0–1, per pixel) dims distant rocks."""
    rgb = CLASS_COLOURS[classes]
    if brightness is not None:
        rgb = (rgb.astype(np.float32) * brightness[..., None]).round().astype(np.uint8)
    return rgb


def overlay(frame: np.ndarray, classes: np.ndarray, *, alpha: float = 0.45,
            task: str = "binary") -> np.ndarray:
    """RGB picture of a frame with its class map tinted on top (rocks in colour, sky left clear)."""
    from lunarseg.runtime.imageio import to_rgb

    rgb = to_rgb(frame).astype(np.float32)
    if task == "binary":
        colours = np.array([(0, 0, 0), (255, 140, 0)], dtype=np.float32)
        tint_on = classes > 0
    else:
        colours = CLASS_COLOURS.astype(np.float32)
        tint_on = classes >= SMALL_ROCK
    tint = colours[np.clip(classes, 0, len(colours) - 1)]
    out = np.where(tint_on[..., None], (1 - alpha) * rgb + alpha * tint, rgb)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
