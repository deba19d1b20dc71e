"""Vectorised value noise with analytic gradients: the texture source for terrain and rocks."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TABLE_SIZE = 256  # lattice period; a power of two so wrapping is a bit mask


@dataclass(frozen=True)
class Octave:
    """One noise layer: lattice values, frequency (cycles per unit) and amplitude."""

    table: np.ndarray
    frequency: float
    amplitude: float


def random_octaves(rng: np.random.Generator, base_frequency: float, count: int, *,
                   persistence: float = 0.5, lacunarity: float = 2.0) -> list[Octave]:
    """`count` octaves starting at `base_frequency`, each `lacunarity`× finer and `persistence`× weaker."""
    tables = rng.random((count, TABLE_SIZE, TABLE_SIZE), dtype=np.float32) * 2.0 - 1.0
    return [Octave(tables[i], base_frequency * lacunarity**i, persistence**i) for i in range(count)]


def value_noise(x: np.ndarray, y: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smoothstep-interpolated lattice noise at (x, y) in lattice units: value, d/dx, d/dy."""
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.float32)
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = x - x0
    fy = y - y0
    mask = TABLE_SIZE - 1
    ix = x0.astype(np.int32) & mask
    iy = (y0.astype(np.int32) & mask) * TABLE_SIZE
    ix1 = (ix + 1) & mask
    iy1 = (iy + TABLE_SIZE) & (mask * TABLE_SIZE + mask)
    flat = table.ravel()
    v00, v10 = flat.take(iy + ix), flat.take(iy + ix1)
    v01, v11 = flat.take(iy1 + ix), flat.take(iy1 + ix1)
    sx = fx * fx * (3.0 - 2.0 * fx)
    sy = fy * fy * (3.0 - 2.0 * fy)
    top = v10 - v00
    bottom = v11 - v01
    a = v00 + sx * top
    b_minus_a = v01 + sx * bottom - a
    value = a + sy * b_minus_a
    ddx = 6.0 * fx * (1.0 - fx) * (top + sy * (bottom - top))
    ddy = 6.0 * fy * (1.0 - fy) * b_minus_a
    return value, ddx, ddy


def fbm(x: np.ndarray, y: np.ndarray, octaves: list[Octave],
        footprint: np.ndarray | float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum of octaves at world (x, y): value and gradient per world unit.

    `footprint` (world units per pixel) fades out octaves finer than about two pixels, which keeps
    distant ground from turning into aliasing speckle.
    """
    shape = np.shape(x)
    x, y = np.ravel(x), np.ravel(y)
    value = np.zeros(x.size, np.float32)
    gx = np.zeros_like(value)
    gy = np.zeros_like(value)
    cycles = None if footprint is None else np.ravel(np.broadcast_to(footprint, shape)).astype(np.float32)
    for octave in octaves:
        if cycles is None:
            active, weight = slice(None), octave.amplitude
        else:
            fade = np.clip(2.0 - 3.0 * octave.frequency * cycles, 0.0, 1.0)
            active = np.flatnonzero(fade)  # fine octaves only reach the pixels near the camera
            if active.size == 0:
                continue
            if active.size == fade.size:
                active = slice(None)
            weight = octave.amplitude * fade[active]
        v, dx, dy = value_noise(x[active] * octave.frequency, y[active] * octave.frequency, octave.table)
        value[active] += weight * v
        gx[active] += weight * octave.frequency * dx
        gy[active] += weight * octave.frequency * dy
    return value.reshape(shape), gx.reshape(shape), gy.reshape(shape)


def periodic_noise(angle: np.ndarray, amplitudes: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """Smooth 2π-periodic function: Σ_k a_k cos(k·angle + φ_k), k = 1..len(amplitudes)."""
    k = np.arange(1, len(amplitudes) + 1, dtype=np.float32)
    return np.tensordot(amplitudes, np.cos(k[:, None] * angle.ravel()[None, :] + phases[:, None]),
                        axes=1).reshape(np.shape(angle)).astype(np.float32)
