"""The lit lunar ground: multi-scale regolith relief, albedo patches, craters, distant hills, sky."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lunarseg.data.camera import Camera, GroundView
from lunarseg.data.noise import fbm, periodic_noise, random_octaves


@dataclass(frozen=True)
class Sun:
    """Sun direction: azimuth (0 = straight ahead, positive to the right) and elevation, degrees."""

    azimuth_deg: float
    elevation_deg: float

    @property
    def direction(self) -> np.ndarray:
        """Unit world vector towards the sun."""
        az, el = np.radians(self.azimuth_deg), np.radians(self.elevation_deg)
        return np.array([np.cos(el) * np.sin(az), np.cos(el) * np.cos(az), np.sin(el)])

    @property
    def horizontal(self) -> np.ndarray:
        """Unit ground-plane vector towards the sun."""
        az = np.radians(self.azimuth_deg)
        return np.array([np.sin(az), np.cos(az)])


@dataclass(frozen=True)
class TerrainStyle:
    """Per-frame look of the ground; sampled by `sample_style`."""

    albedo: float  # mean regolith reflectance (0–1 scale of the final image)
    relief: float  # height amplitude of the coarsest octave, metres
    albedo_contrast: float
    crater_count: int
    haze_distance: float  # metres over which contrast fades
    hill_height_deg: float  # peak elevation of the distant skyline above the flat horizon
    ambient: float


def sample_style(rng: np.random.Generator) -> TerrainStyle:
    return TerrainStyle(
        albedo=float(rng.uniform(0.45, 0.7)),
        relief=float(rng.uniform(0.25, 0.9)),
        albedo_contrast=float(rng.uniform(0.1, 0.3)),
        crater_count=int(rng.integers(4, 40)),
        haze_distance=float(rng.uniform(120.0, 400.0)),
        hill_height_deg=float(rng.uniform(0.0, 5.0)),
        ambient=float(rng.uniform(0.02, 0.08)),
    )


@dataclass
class Crater:
    """A bowl-shaped depression with a raised rim, in world metres."""

    x: float
    y: float
    radius: float
    depth: float
    rim: float


def sample_craters(rng: np.random.Generator, count: int, fov_deg: float) -> list[Crater]:
    """Craters spread uniformly over the visible ground wedge, radii from a power law (many small)."""
    radius = np.minimum(1.0 * (1 - rng.random(count)) ** (-1 / 1.2), 30.0)
    dist = np.sqrt(rng.uniform(3.0**2, 80.0**2, count))
    az = np.radians(rng.uniform(-0.6, 0.6, count) * fov_deg)
    depth = radius * rng.uniform(0.1, 0.25, count)
    rim = radius * rng.uniform(0.03, 0.08, count)
    return [Crater(float(d * np.sin(a)), float(d * np.cos(a)), float(r), float(dp), float(rm))
            for d, a, r, dp, rm in zip(dist, az, radius, depth, rim)]


def ground_windows(camera: Camera, cx: np.ndarray, cy: np.ndarray, reach: np.ndarray) -> list[tuple[slice, slice] | None]:
    """Pixel rows/cols covering each ground square of half-size `reach` around (cx, cy); None if unseen."""
    signs = np.array([(-1, -1), (-1, 1), (1, -1), (1, 1)], np.float64)
    corners = np.stack([
        np.asarray(cx)[:, None] + signs[None, :, 0] * np.asarray(reach)[:, None],
        np.asarray(cy)[:, None] + signs[None, :, 1] * np.asarray(reach)[:, None],
        np.zeros((len(cx), 4)),
    ], axis=2).reshape(-1, 3)
    col, row, depth = (a.reshape(-1, 4) for a in camera.project(corners))
    seen = depth.min(axis=1) > 0.05
    c0 = np.clip(np.floor(col.min(axis=1)), 0, camera.width).astype(int)
    c1 = np.clip(np.ceil(col.max(axis=1)) + 1, 0, camera.width).astype(int)
    r0 = np.clip(np.floor(row.min(axis=1)), 0, camera.height).astype(int)
    r1 = np.clip(np.ceil(row.max(axis=1)) + 1, 0, camera.height).astype(int)
    ok = seen & (c0 < c1) & (r0 < r1)
    return [(slice(r0[i], r1[i]), slice(c0[i], c1[i])) if ok[i] else None for i in range(len(ok))]


def _carve_crater(crater: Crater, window, view: GroundView, gx, gy, shade, sun: Sun) -> None:
    """Add the crater's slope to the ground gradient and darken the part of the bowl the rim shadows."""
    rows, cols = window
    px = view.x[rows, cols] - crater.x
    py = view.y[rows, cols] - crater.y
    r = np.hypot(px, py) + 1e-6
    q = r / crater.radius
    near = (q < 1.6) & view.hits_ground[rows, cols]
    if not near.any():
        return
    width = 0.18
    rim_shape = np.exp(-(((q - 1) / width) ** 2))
    dh_dq = np.where(q < 1, 2 * crater.depth * q, 0.0) + crater.rim * rim_shape * (-2 * (q - 1) / width**2)
    dh_dr = np.where(near, dh_dq / crater.radius, 0.0)
    gx[rows, cols] += (dh_dr * px / r).astype(np.float32)
    gy[rows, cols] += (dh_dr * py / r).astype(np.float32)
    sx, sy = sun.horizontal
    toward = px * sx + py * sy
    across = px * sy - py * sx
    to_rim = np.sqrt(np.maximum(crater.radius**2 - across**2, 0.0)) - toward
    below_rim = crater.rim + crater.depth * (1 - np.minimum(q, 1) ** 2)
    excess = below_rim - to_rim * np.tan(np.radians(sun.elevation_deg))
    in_shadow = np.clip(excess / (0.05 * crater.radius + 1e-3), 0, 1) * (q < 1) * near
    shade[rows, cols] *= (1 - 0.9 * in_shadow).astype(np.float32)


@dataclass
class GroundImage:
    """Linear intensity of the terrain (no rocks yet), the sky mask and per-pixel distance."""

    intensity: np.ndarray
    sky: np.ndarray
    distance: np.ndarray
    far_level: float


def render_ground(camera: Camera, view: GroundView, sun: Sun, style: TerrainStyle,
                  rng: np.random.Generator) -> GroundImage:
    """Lambert-lit regolith with craters, faded with distance; sky above a noisy skyline."""
    h, w = camera.height, camera.width
    ground = view.hits_ground
    footprint = view.distance / camera.focal / np.sqrt(np.maximum(-np.sin(view.elevation), 0.02))
    gx = np.zeros((h, w), np.float32)
    gy = np.zeros((h, w), np.float32)
    albedo = np.full((h, w), style.albedo, np.float32)
    gx_g, gy_g, alb_g = _regolith(view.x[ground].astype(np.float32), view.y[ground].astype(np.float32),
                                  footprint[ground], style, rng)
    gx[ground], gy[ground] = gx_g, gy_g
    albedo[ground] *= alb_g
    shade = np.ones((h, w), np.float32)
    craters = sample_craters(rng, style.crater_count, camera.fov_deg)
    windows = ground_windows(camera, np.array([c.x for c in craters]), np.array([c.y for c in craters]),
                             np.array([1.6 * c.radius for c in craters]))
    for crater, window in zip(craters, windows):
        if window is not None:
            _carve_crater(crater, window, view, gx, gy, shade, sun)
    lx, ly, lz = sun.direction
    lambert = np.maximum((-gx * lx - gy * ly + lz) / np.sqrt(gx * gx + gy * gy + 1), 0.0)
    intensity = albedo * (style.ambient + lambert * shade)
    far_level = style.albedo * (style.ambient + 0.8 * np.sin(np.radians(sun.elevation_deg)))
    intensity = fade_with_distance(intensity, view.distance, style, far_level)
    hills, hill_intensity = _skyline(view, style, far_level, rng)
    intensity = np.where(hills, hill_intensity, intensity)
    sky = ~ground & ~hills
    intensity[sky] = 0.0
    distance = np.where(ground | hills, view.distance, np.inf).astype(np.float32)
    return GroundImage(intensity.astype(np.float32), sky, distance, far_level)


def fade_with_distance(intensity, distance, style: TerrainStyle, far_level: float):
    """Contrast and brightness drop with distance, so far terrain and rocks are flatter and dimmer."""
    fade = np.exp(-distance / style.haze_distance).astype(np.float32)
    return (far_level + (intensity - far_level) * fade) * (0.75 + 0.25 * fade)


def _regolith(x, y, footprint, style: TerrainStyle, rng: np.random.Generator):
    """Height gradient and albedo factor of the regolith at ground points (world metres)."""
    relief = random_octaves(rng, 1 / 16.0, 8, persistence=0.6)
    _, gx, gy = fbm(x, y, relief, footprint)
    patches = random_octaves(rng, 1 / 40.0, 2, persistence=0.6)
    speckle = random_octaves(rng, 2.0, 3, persistence=0.6)
    big, _, _ = fbm(x, y, patches)
    fine, _, _ = fbm(x, y, speckle, footprint)
    albedo = 1 + style.albedo_contrast * big + 0.2 * fine
    return style.relief * gx, style.relief * gy, np.clip(albedo, 0.3, 2.0).astype(np.float32)


def _skyline(view: GroundView, style: TerrainStyle, far_level: float, rng: np.random.Generator):
    """Distant hills: pixels above the flat horizon but below a noisy skyline, drawn as dim terrain."""
    harmonics = 24
    amplitudes = (rng.normal(0, 1, harmonics) / np.arange(1, harmonics + 1) ** 1.1).astype(np.float32)
    phases = rng.uniform(0, 2 * np.pi, harmonics).astype(np.float32)
    texture = random_octaves(rng, 30.0, 4, persistence=0.6)
    top = np.radians(style.hill_height_deg)
    candidates = ~view.hits_ground & (view.elevation < top)
    az, el = view.azimuth[candidates], view.elevation[candidates]
    profile = periodic_noise(az * 3, amplitudes, phases)
    below = el < top * np.clip(0.5 + 0.5 * profile, 0, 1)
    tex, tx, _ = fbm(az * 3, el * 3, texture)
    hills = np.zeros_like(candidates)
    hills[candidates] = below
    intensity = np.zeros(candidates.shape, np.float32)
    intensity[candidates] = far_level * np.clip(0.9 + 0.25 * tex + 0.1 * np.sign(tx), 0.2, 2.0)
    return hills, intensity
