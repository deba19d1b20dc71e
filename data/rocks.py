"""Rocks: power-law sizes on the ground plane, drawn as shaded irregular blobs with cast shadows."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lunarseg.data.camera import Camera, GroundView
from lunarseg.data.noise import fbm, periodic_noise, random_octaves
from lunarseg.data.terrain import GroundImage, Sun, TerrainStyle, fade_with_distance, ground_windows
from lunarseg.runtime.masks import LARGE_ROCK, SMALL_ROCK

REFERENCE_WIDTH = 720  # pixel thresholds below are for the dataset's 720-wide frames; they scale with width
LARGE_ROCK_MIN_DIAMETER_PX = 20.0  # equivalent-circle diameter at which a rock is labelled "large"
MIN_ROCK_PX = 5.0  # rocks narrower than this on screen (at 720 px wide) are not drawn: specks a camera cannot resolve
MASK_FADE_DISTANCE = 110.0  # metres over which the mask colour of a rock dims
MIN_MASK_BRIGHTNESS = 0.36  # far rocks keep ≥ 92/255 in the mask, above the decoder's threshold


@dataclass(frozen=True)
class RockField:
    """How rocky a frame is: rocks per m² (≥ `min_diameter`), power-law slope, and size bounds in metres."""

    density: float
    slope: float = 2.4
    min_diameter: float = 0.1
    max_diameter: float = 4.0
    max_distance: float = 120.0


@dataclass
class Rock:
    """One rock in world metres, with its shape and shading parameters."""

    x: float
    y: float
    diameter: float
    height: float
    albedo: float
    squareness: float
    bury: float
    harmonics: np.ndarray
    phases: np.ndarray
    bump_offset: tuple[float, float]  # where in the shared bump texture this rock's surface starts


@dataclass
class RockLayers:
    """What drawing the rocks added to a frame: instance ids, classes, mask brightness, boxes."""

    instances: np.ndarray  # uint16, 0 = no rock, k = k-th drawn rock
    classes: np.ndarray  # uint8: 0, SMALL_ROCK or LARGE_ROCK
    brightness: np.ndarray  # float32 mask brightness per pixel (1 near, dimmer far)
    large_ids: list[tuple[int, float]] = field(default_factory=list)  # (instance id, mask brightness)
    drawn: int = 0


def sample_rocks(rng: np.random.Generator, field: RockField, camera: Camera) -> list[Rock]:
    """Rocks uniform over the visible ground wedge with a truncated Pareto diameter distribution."""
    half_fov = np.radians(camera.fov_deg) * 0.65
    area = half_fov * field.max_distance**2
    count = int(rng.poisson(field.density * area))
    u = rng.random(count)
    tail = (field.max_diameter / field.min_diameter) ** -field.slope
    diameter = field.min_diameter * (1 - u * (1 - tail)) ** (-1 / field.slope)
    dist = field.max_distance * np.sqrt(rng.uniform(0.0004, 1.0, count))
    az = rng.uniform(-half_fov, half_fov, count)
    x, y = dist * np.sin(az), dist * np.cos(az)
    col, row, depth = camera.project(np.stack([x, y, np.zeros(count)], axis=1))
    width_px = diameter * camera.focal / np.maximum(depth, 1e-6)
    margin = width_px
    seen = ((depth > 0.3) & (width_px >= MIN_ROCK_PX * camera.width / REFERENCE_WIDTH) & (col > -margin) & (col < camera.width + margin)
            & (row > -margin) & (row < camera.height + 2 * margin))
    keep = np.flatnonzero(seen)
    k = keep.size
    height = diameter[keep] * rng.uniform(0.3, 0.75, k)
    albedo, squareness, bury = rng.uniform(0.85, 1.5, k), rng.uniform(1.7, 3.2, k), rng.uniform(0.55, 1.0, k)
    harmonics = (rng.normal(0, 1, (k, 6)) * 0.09 / np.arange(1, 7) ** 0.6).astype(np.float32)
    phases = rng.uniform(0, 2 * np.pi, (k, 6)).astype(np.float32)
    offsets = rng.uniform(0, 256, (k, 2))
    return [Rock(x=float(x[i]), y=float(y[i]), diameter=float(diameter[i]), height=float(height[j]),
                 albedo=float(albedo[j]), squareness=float(squareness[j]), bury=float(bury[j]),
                 harmonics=harmonics[j], phases=phases[j], bump_offset=(float(offsets[j, 0]), float(offsets[j, 1])))
            for j, i in enumerate(keep)]


def draw_rocks(rocks: list[Rock], camera: Camera, view: GroundView, ground: GroundImage, sun: Sun,
               style: TerrainStyle, rng: np.random.Generator) -> RockLayers:
    """Paint rocks far to near over `ground.intensity` (in place), shadows first; return their labels."""
    h, w = camera.height, camera.width
    layers = RockLayers(np.zeros((h, w), np.uint16), np.zeros((h, w), np.uint8), np.zeros((h, w), np.float32))
    if not rocks:
        return layers
    bumps = random_octaves(rng, 1.5, 3, persistence=0.5)
    light = camera.world_to_camera(sun.direction)
    rocks = sorted(rocks, key=lambda r: -(r.x**2 + r.y**2))
    x, y = np.array([r.x for r in rocks]), np.array([r.y for r in rocks])
    height = np.array([r.height for r in rocks])
    zeros = np.zeros_like(x)
    centre = camera.project(np.stack([x, y, 0.45 * height], axis=1))
    base = camera.project(np.stack([x, y, zeros], axis=1))
    above = camera.project(np.stack([x, y, zeros + 1.0], axis=1))
    up = np.stack([above[0] - base[0], above[1] - base[1]], axis=1)
    up /= np.maximum(np.linalg.norm(up, axis=1, keepdims=True), 1e-9)
    shadow_length = height / np.tan(np.radians(sun.elevation_deg))
    sx, sy = sun.horizontal
    shadow_x, shadow_y = x - sx * shadow_length / 2, y - sy * shadow_length / 2
    half_width = 0.45 * np.array([r.diameter for r in rocks])
    shadow_windows = ground_windows(camera, shadow_x, shadow_y, shadow_length / 2 + half_width)
    for i, rock in enumerate(rocks):
        if shadow_windows[i] is not None:
            shadow = _Shadow(shadow_x[i], shadow_y[i], shadow_length[i] / 2 + half_width[i], half_width[i])
            _cast_shadow(shadow, shadow_windows[i], camera, view, ground, layers, sun)
        sprite = _Sprite(centre[0][i], centre[1][i], centre[2][i], up[i, 0], up[i, 1])
        _draw_rock(rock, sprite, camera, ground, layers, light, style, bumps)
    return layers


@dataclass(frozen=True)
class _Shadow:
    """A rock's shadow on the ground: an ellipse centred behind the rock, long axis away from the sun."""

    x: float
    y: float
    half_length: float
    half_width: float


@dataclass(frozen=True)
class _Sprite:
    """Where a rock lands on screen: centre column/row, depth, and the screen direction of world up."""

    col: float
    row: float
    depth: float
    up_col: float
    up_row: float


def _cast_shadow(shadow: _Shadow, window, camera: Camera, view: GroundView, ground: GroundImage,
                 layers: RockLayers, sun: Sun) -> None:
    """Darken ground pixels (not rocks already drawn) inside the soft-edged shadow ellipse."""
    rows, cols = window
    px = view.x[rows, cols] - shadow.x
    py = view.y[rows, cols] - shadow.y
    sx, sy = sun.horizontal
    along = px * sx + py * sy
    across = px * sy - py * sx
    e = (along / shadow.half_length) ** 2 + (across / shadow.half_width) ** 2
    px_per_metre = camera.focal / max(float(np.hypot(shadow.x, shadow.y)), 0.5)
    edge = 4.0 / max(shadow.half_width * px_per_metre, 1.0) + 0.05
    dark = np.clip((1 - e) / edge, 0, 1) * (view.hits_ground[rows, cols] & (layers.instances[rows, cols] == 0))
    ground.intensity[rows, cols] *= (1 - 0.85 * dark).astype(np.float32)


def _draw_rock(rock: Rock, sprite: _Sprite, camera: Camera, ground: GroundImage, layers: RockLayers,
               light: np.ndarray, style: TerrainStyle, bump_octaves: list) -> None:
    """Rasterise one rock's silhouette, shade it as a bumpy dome, and label its pixels."""
    if sprite.depth <= 0.3:
        return
    scale = camera.focal / sprite.depth
    grazing = np.arctan2(camera.height_m, np.hypot(rock.x, rock.y))
    half_w = 0.5 * rock.diameter * scale
    half_h = 0.5 * scale * (rock.height * np.cos(grazing) + rock.diameter * np.sin(grazing))
    reach = 1.4 * max(half_w, half_h)
    r0, r1 = max(int(sprite.row - reach), 0), min(int(sprite.row + reach) + 2, camera.height)
    c0, c1 = max(int(sprite.col - reach), 0), min(int(sprite.col + reach) + 2, camera.width)
    if r1 - r0 < 2 or c1 - c0 < 2:
        return
    dy = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5 - sprite.row
    dx = np.arange(c0, c1, dtype=np.float32)[None, :] + 0.5 - sprite.col
    xx = (dx * -sprite.up_row + dy * sprite.up_col) / half_w  # along the rock's horizontal axis on screen
    yy = -(dx * sprite.up_col + dy * sprite.up_row) / half_h  # downwards along the rock's vertical axis
    theta = np.arctan2(yy, xx)
    rho = np.hypot(xx, yy)
    n = rock.squareness
    radius = (np.abs(np.cos(theta)) ** n + np.abs(np.sin(theta)) ** n) ** (-1 / n)
    radius = radius * (1 + periodic_noise(theta, rock.harmonics, rock.phases))
    radius = radius * (1 - (1 - rock.bury) * np.maximum(np.sin(theta), 0) ** 2)
    edge_px = max(min(half_w, half_h), 0.5)
    coverage = np.clip((radius - rho) * edge_px + 0.5, 0, 1)
    inside = coverage >= 0.5
    area = int(inside.sum())
    if area == 0:
        return
    dome = np.sqrt(np.clip(1 - (rho / np.maximum(radius, 1e-3)) ** 2, 0, 1))
    albedo = style.albedo * rock.albedo
    if edge_px > 3:  # surface bumps only where they span pixels
        bumps, _, _ = fbm(xx + rock.bump_offset[0], yy + rock.bump_offset[1], bump_octaves,
                          footprint=1.0 / edge_px)
        dome = dome + 0.18 * bumps
        albedo = albedo * (1 + 0.25 * bumps)
    d_row, d_col = np.gradient(dome * edge_px)
    lambert = np.maximum((-d_col * light[0] - d_row * light[1] - light[2]) / np.sqrt(d_col**2 + d_row**2 + 1), 0)
    shaded = fade_with_distance(albedo * (style.ambient + lambert), sprite.depth, style, ground.far_level)
    target = ground.intensity[r0:r1, c0:c1]
    target[...] = coverage * shaded + (1 - coverage) * target
    large = np.sqrt(4 * area / np.pi) >= LARGE_ROCK_MIN_DIAMETER_PX * camera.width / REFERENCE_WIDTH
    layers.drawn += 1
    brightness = max(MIN_MASK_BRIGHTNESS, 1.0 - np.hypot(rock.x, rock.y) / MASK_FADE_DISTANCE)
    layers.instances[r0:r1, c0:c1][inside] = layers.drawn
    layers.classes[r0:r1, c0:c1][inside] = LARGE_ROCK if large else SMALL_ROCK
    layers.brightness[r0:r1, c0:c1][inside] = brightness
    if large:
        layers.large_ids.append((layers.drawn, brightness))
