"""Synthetic lunar scenes in the Kaggle layout: render, colour mask and large-rock boxes per frame.

Each frame is seeded from (seed, index) alone, so the files are byte-identical whatever the
worker count or order of generation.
"""
from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from lunarseg.data import layout
from lunarseg.data.camera import Camera, GroundView
from lunarseg.data.rocks import REFERENCE_WIDTH, RockField, RockLayers, draw_rocks, sample_rocks
from lunarseg.data.terrain import Sun, render_ground, sample_style
from lunarseg.runtime import atomic
from lunarseg.runtime.masks import BACKGROUND, SKY, encode_class_map
from lunarseg.runtime.progress import Progress

BOX_MIN_BRIGHTNESS = 150  # the Kaggle boxes cover large rocks brighter than this in the mask …
BOX_MIN_SIDE = 20  # … and at least this many pixels wide and high (in 720-wide frames; scaled with width)
NUM_CLASSES = 4


@dataclass(frozen=True)
class Box:
    """A large rock's bounding box in pixels (the Kaggle CSV's TopLeftCornerX/Y, Length, Height)."""

    x: int
    y: int
    length: int
    height: int


@dataclass
class Scene:
    """One synthetic frame: RGB render, 4-class map, its colour mask, large-rock boxes, rock instances."""

    render: np.ndarray  # uint8 H×W×3
    classes: np.ndarray  # uint8 H×W: 0 background, 1 sky, 2 small rock, 3 large rock
    mask_rgb: np.ndarray  # uint8 H×W×3 in the Kaggle colour code, distant rocks dimmer
    boxes: list[Box]
    instances: np.ndarray  # uint16 H×W: 0 no rock, k the k-th rock drawn


@dataclass(frozen=True)
class SensorStyle:
    """Camera response of one frame: exposure, gamma, blur, read noise and a faint colour cast."""

    exposure: float
    gamma: float
    blur_px: float
    noise: float
    tint: tuple[float, float, float]


def sample_sensor(rng: np.random.Generator) -> SensorStyle:
    return SensorStyle(
        exposure=float(rng.uniform(0.8, 1.3)), gamma=float(rng.uniform(0.8, 1.25)),
        blur_px=float(rng.uniform(0.3, 1.1)), noise=float(rng.uniform(1.0, 4.5)),
        tint=tuple(float(t) for t in 1 + rng.uniform(-0.03, 0.03, 3)),
    )


def sample_camera(rng: np.random.Generator, size: tuple[int, int]) -> Camera:
    """The dataset's pose ranges: pitch −30°…0°, roll up to ±20° (mostly small), FOV 65°."""
    return Camera(width=size[0], height=size[1], fov_deg=65.0,
                  pitch_deg=float(rng.uniform(-30.0, 0.0)),
                  roll_deg=float(np.clip(rng.normal(0, 6), -20, 20)),
                  height_m=float(rng.uniform(1.0, 2.5)))


def generate_scene(seed: int, index: int, size: tuple[int, int] = (720, 480)) -> Scene:
    """Render frame `index` of the synthetic dataset `seed` at `size` = (width, height)."""
    rng = np.random.default_rng([seed, index])
    camera = sample_camera(rng, size)
    sun = Sun(azimuth_deg=float(rng.uniform(-180, 180)), elevation_deg=float(rng.uniform(20, 50)))
    style = sample_style(rng)
    field = RockField(density=float(np.exp(rng.uniform(np.log(0.15), np.log(1.5)))))
    view = GroundView.cast(camera)
    ground = render_ground(camera, view, sun, style, rng)
    layers = draw_rocks(sample_rocks(rng, field, camera), camera, view, ground, sun, style, rng)
    min_side = BOX_MIN_SIDE * size[0] / REFERENCE_WIDTH
    render = _expose(ground.intensity, sample_sensor(rng), rng)
    classes = np.where(ground.sky, SKY, BACKGROUND).astype(np.uint8)
    rock = layers.classes > 0
    classes[rock] = layers.classes[rock]
    brightness = np.where(rock, layers.brightness, 1.0).astype(np.float32)
    return Scene(render, classes, encode_class_map(classes, brightness), _boxes(layers, min_side),
                 layers.instances)


def _expose(intensity: np.ndarray, sensor: SensorStyle, rng: np.random.Generator) -> np.ndarray:
    """Linear intensity → uint8 RGB: exposure, gamma, optical blur, read/shot noise, colour cast."""
    level = np.clip(intensity * sensor.exposure, 0, 1) ** (1 / sensor.gamma) * 255
    blurred = Image.fromarray(np.clip(level + 0.5, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(sensor.blur_px))
    gray = np.asarray(blurred, np.float32)
    sigma = sensor.noise + 0.04 * np.sqrt(gray) * sensor.noise
    noisy = gray + rng.standard_normal(gray.shape, dtype=np.float32) * sigma
    rgb = noisy[..., None] * np.array(sensor.tint, np.float32)
    rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * (0.3 * sensor.noise)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def _boxes(layers: RockLayers, min_side: float) -> list[Box]:
    """Boxes of visible large rocks bright enough in the mask, following the Kaggle CSV's rule."""
    boxes = []
    for instance_id, brightness in layers.large_ids:
        if brightness * 255 <= BOX_MIN_BRIGHTNESS:
            continue
        rows, cols = np.nonzero(layers.instances == instance_id)
        if rows.size == 0:
            continue
        box = Box(int(cols.min()), int(rows.min()), int(cols.max() - cols.min() + 1),
                  int(rows.max() - rows.min() + 1))
        if box.length >= min_side and box.height >= min_side:
            boxes.append(box)
    return boxes


@dataclass(frozen=True)
class _FrameJob:
    out: Path
    seed: int
    index: int
    size: tuple[int, int]


def _write_frame(job: _FrameJob) -> tuple[int, np.ndarray, list[Box]]:
    """Generate and write one frame's render and clean mask; return its class pixel counts and boxes."""
    scene = generate_scene(job.seed, job.index, job.size)
    atomic.write_png(layout.render_path(job.out, job.index), scene.render, compress_level=3)
    atomic.write_png(layout.mask_path(job.out, "clean", job.index), scene.mask_rgb)
    counts = np.bincount(scene.classes.ravel(), minlength=NUM_CLASSES)
    return job.index, counts, scene.boxes


def write_dataset(out: str | Path, count: int, size: tuple[int, int] = (720, 480), seed: int = 0,
                  workers: int = 1, progress: bool = True) -> dict:
    """Write frames 0001…`count` in the Kaggle layout under `out`; return a summary with frames/s."""
    out = Path(out)
    jobs = [_FrameJob(out, seed, i, tuple(size)) for i in range(1, count + 1)]
    bar = Progress(count, desc="synth", unit="frames", enabled=progress)
    start = time.perf_counter()
    totals = np.zeros(NUM_CLASSES, np.int64)
    rows = []
    with multiprocessing.Pool(workers) if workers > 1 else _InlinePool() as pool:
        for index, counts, boxes in pool.imap(_write_frame, jobs, chunksize=1):
            totals += counts
            rows += [f"{index},{b.x},{b.y},{b.length},{b.height}" for b in boxes]
            bar.update()
    bar.close()
    atomic.write_text(out / layout.BOXES_CSV, "\n".join([layout.BOXES_HEADER, *rows]) + "\n")
    seconds = time.perf_counter() - start
    fractions = totals / max(int(totals.sum()), 1)
    return {
        "out": str(out), "frames": count, "size": list(size), "seed": seed, "workers": workers,
        "boxes": len(rows), "seconds": round(seconds, 3),
        "frames_per_second": round(count / seconds, 2) if seconds > 0 else None,
        "class_fractions": {name: round(float(f), 4) for name, f in
                            zip(("background", "sky", "small_rock", "large_rock"), fractions)},
    }


class _InlinePool:
    """The Pool interface run in this process, for workers=1 (no fork, easy to debug)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def imap(func, items, chunksize=1):
        return map(func, items)
