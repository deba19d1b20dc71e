"""Segmenter: a model file in, class masks and rock statistics out — numpy, Pillow and one engine.

    seg = Segmenter.from_file("model.tflite", threads=1)
    result = seg.segment("frame.png")            # or a numpy frame; tile=True for full resolution
    result.classes, result.stats, result.timings_ms

`predict` is the raw engine call on normalised float32 N×H×W×C tensors (what export parity and
benchmarks compare); `segment` adds pre-processing, tiling and post-processing (runtime.preprocess)
and statistics (runtime.stats).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lunarseg.runtime import imageio, preprocess, stats
from lunarseg.runtime.backends import open_backend

__all__ = ["Segmenter", "SegmentResult", "tile_positions", "TILE_OVERLAP"]

TILE_OVERLAP = 0.25


@dataclass
class SegmentResult:
    """`classes`: uint8 H×W class indices at the frame's own size (None when not asked for);
    `stats` (None when not asked for); `timings_ms`; `model_classes`: the mask at the model's size."""

    classes: np.ndarray | None
    stats: dict | None
    timings_ms: dict = field(default_factory=dict)
    frame: np.ndarray | None = None  # the decoded uint8 frame (for overlays)
    model_classes: np.ndarray | None = None  # untiled: uint8 class indices at the model's input size


def tile_positions(length: int, tile: int, overlap: float = TILE_OVERLAP) -> list[int]:
    """Start offsets of tiles of size `tile` covering `length` with about `overlap` overlap.

    The last tile is aligned with the end; a length equal to the tile gives the single offset 0.
    """
    if length <= tile:
        return [0]
    stride = max(1, int(tile * (1.0 - overlap)))
    pos = list(range(0, length - tile, stride))
    pos.append(length - tile)
    return sorted(set(pos))


class Segmenter:
    """Run a lunarseg model file (.onnx / .tflite) on frames."""

    def __init__(self, backend, path: str | os.PathLike):
        self.backend = backend
        self.meta = backend.meta
        self.backend_name = backend.name
        self.path = Path(path)
        m = self.meta
        self._in_buf = np.empty((1, m.height, m.width, m.channels), dtype=np.float32)
        self._rock = preprocess.rock_classes(m)
        # An engine with quantized input takes the model-size pixels through one lookup (exactly what
        # normalising and quantizing would give), or as they are when that lookup is the identity. A
        # file with a fixed batch > 1 keeps the float path, where predict pads the batch.
        self._table = backend.pixel_table() if backend.batch in (None, 1) else None
        self._table_is_identity = (self._table is not None and self._table.dtype == np.uint8
                                   and np.array_equal(self._table, np.arange(256)))
        if self._table is not None:
            self._q_buf = np.empty(self._in_buf.shape, dtype=self._table.dtype)

    @classmethod
    def from_file(cls, path: str | os.PathLike, threads: int = 1, backend: str = "auto") -> "Segmenter":
        return cls(open_backend(path, threads=threads, backend=backend), path)

    def __repr__(self) -> str:
        return f"Segmenter({str(self.path)!r}, backend={self.backend_name!r}, input={self.meta.input_shape})"

    # ---- the engine call -------------------------------------------------------------------
    def predict(self, x: np.ndarray) -> np.ndarray:
        """float32 probabilities N×H×W×K from normalised float32 N×H×W×C (or one H×W×C)."""
        x = np.asarray(x, dtype=np.float32)
        single = x.ndim == 3
        if single:
            x = x[None]
        fixed = self.backend.batch
        if fixed is None or x.shape[0] == fixed:
            y = self.backend.run(x)
        elif fixed == 1:
            y = np.concatenate([self.backend.run(x[i:i + 1]) for i in range(x.shape[0])], axis=0)
        else:  # a fixed batch > 1: pad the last chunk
            chunks = []
            for i in range(0, x.shape[0], fixed):
                part = x[i:i + fixed]
                n = part.shape[0]
                if n < fixed:
                    part = np.concatenate([part, np.zeros((fixed - n, *part.shape[1:]), np.float32)])
                chunks.append(self.backend.run(part)[:n])
            y = np.concatenate(chunks, axis=0)
        return y[0] if single else y

    # ---- frames ----------------------------------------------------------------------------
    def load(self, frame_or_path, max_pixels: int = imageio.DEFAULT_MAX_PIXELS) -> np.ndarray:
        """uint8 H×W or H×W×3 from a path or any in-memory frame imageio accepts."""
        if isinstance(frame_or_path, (str, os.PathLike)):
            return imageio.read_image(frame_or_path, max_pixels=max_pixels)
        if isinstance(frame_or_path, (bytes, bytearray)):
            return imageio.read_image(bytes(frame_or_path), max_pixels=max_pixels)
        return imageio.array_to_uint8(frame_or_path)

    def _probs_tiled(self, frame: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Full-resolution probabilities H×W×K from overlapping model-size tiles, averaged."""
        m = self.meta
        t0 = time.perf_counter()
        img = preprocess.normalise(preprocess.to_model_colour(frame, m), m)
        h, w = img.shape[:2]
        th, tw = m.height, m.width
        if h < th or w < tw:  # pad small frames by reflection up to one tile
            img = np.pad(img, ((0, max(0, th - h)), (0, max(0, tw - w)), (0, 0)), mode="reflect"
                         if h > 1 and w > 1 else "edge")
        hp, wp = img.shape[:2]
        ys, xs = tile_positions(hp, th), tile_positions(wp, tw)
        tiles = np.empty((len(ys) * len(xs), th, tw, m.channels), dtype=np.float32)
        coords = []
        for y in ys:
            for x in xs:
                tiles[len(coords)] = img[y:y + th, x:x + tw]
                coords.append((y, x))
        t1 = time.perf_counter()
        probs = self.predict(tiles)
        t2 = time.perf_counter()
        k = probs.shape[-1]
        acc = np.zeros((hp, wp, k), dtype=np.float32)
        count = np.zeros((hp, wp, 1), dtype=np.float32)
        for (y, x), p in zip(coords, probs):
            acc[y:y + th, x:x + tw] += p
            count[y:y + th, x:x + tw] += 1.0
        if len(coords) > 1:
            acc /= count
        return acc[:h, :w], (t1 - t0) * 1e3, (t2 - t1) * 1e3

    def _engine_input(self, frame: np.ndarray) -> np.ndarray:
        """The 1×H'×W'×C model input for a frame: normalised float32, or the engine's quantized input
        type by pixel_table (the model-size pixels themselves when it is the identity)."""
        if self._table is None:
            return preprocess.prepare(frame, self.meta, out=self._in_buf[0])[None]
        pixels = preprocess.model_pixels(frame, self.meta).reshape(self._q_buf.shape)
        return pixels if self._table_is_identity else np.take(self._table, pixels, out=self._q_buf)

    def segment(self, frame_or_path, tile: bool = False, *, max_pixels: int = imageio.DEFAULT_MAX_PIXELS,
                keep_frame: bool = False, frame_mask: bool = True, with_stats: bool = True) -> SegmentResult:
        """Class mask at the frame's own size, rock statistics and timings for one frame.

        A planner that reads only the statistics and the model-size mask (`model_classes`) passes
        frame_mask=False and skips the upscale to the frame's size; with_stats=False skips the
        statistics. Tiled results are at the frame's size already.
        """
        t0 = time.perf_counter()
        frame = self.load(frame_or_path, max_pixels=max_pixels)
        h, w = frame.shape[:2]
        t1 = time.perf_counter()
        small = None
        if tile:
            probs, pre_ms, infer_ms = self._probs_tiled(frame)
            t3 = time.perf_counter()
            classes = preprocess.probs_to_classes(probs, self.meta)
            st = stats.rock_stats(classes, self._rock, self.meta.class_names) if with_stats else None
        else:
            engine_input = self._engine_input(frame)
            t2 = time.perf_counter()
            probs = self.backend.run_engine_input(engine_input) if self._table is not None else self.predict(engine_input)
            t3 = time.perf_counter()
            pre_ms, infer_ms = (t2 - t1) * 1e3, (t3 - t2) * 1e3
            small = preprocess.probs_to_classes(probs[0], self.meta)
            classes = preprocess.mask_to_frame_size(small, (h, w)) if frame_mask else None
            st = stats.rock_stats(small, self._rock, self.meta.class_names, frame_hw=(h, w)) if with_stats else None
        t4 = time.perf_counter()
        timings = {"decode": (t1 - t0) * 1e3, "preprocess": pre_ms, "infer": infer_ms,
                   "postprocess": (t4 - t3) * 1e3, "total": (t4 - t0) * 1e3}
        return SegmentResult(classes, st, timings, frame if keep_frame else None, small)

    def segment_batch(self, frames, tile: bool = False, *,
                      max_pixels: int = imageio.DEFAULT_MAX_PIXELS) -> list[SegmentResult]:
        """Segment several frames; untiled frames go through the engine as one batch."""
        frames = list(frames)
        if tile:
            return [self.segment(f, tile=True, max_pixels=max_pixels) for f in frames]
        m = self.meta
        t0 = time.perf_counter()
        decoded = [self.load(f, max_pixels=max_pixels) for f in frames]
        t1 = time.perf_counter()
        x = np.empty((len(decoded), m.height, m.width, m.channels), dtype=np.float32)
        for i, f in enumerate(decoded):
            preprocess.prepare(f, m, out=x[i])
        t2 = time.perf_counter()
        probs = self.predict(x) if decoded else np.zeros((0,))
        t3 = time.perf_counter()
        results = []
        n = max(len(decoded), 1)
        for f, p in zip(decoded, probs):
            s = time.perf_counter()
            small = preprocess.probs_to_classes(p, m)
            classes = preprocess.mask_to_frame_size(small, f.shape[:2])
            st = stats.rock_stats(small, self._rock, m.class_names, frame_hw=f.shape[:2])
            post = (time.perf_counter() - s) * 1e3
            timings = {"decode": (t1 - t0) * 1e3 / n, "preprocess": (t2 - t1) * 1e3 / n,
                       "infer": (t3 - t2) * 1e3 / n, "postprocess": post}
            timings["total"] = sum(timings.values())
            results.append(SegmentResult(classes, st, timings, None, small))
        return results
