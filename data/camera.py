"""A pinhole camera above a flat ground plane: cast every pixel's ray, project world points back."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class Camera:
    """Rover camera pose: horizontal FOV, pitch (negative looks down) and roll in degrees, height in metres."""

    width: int
    height: int
    fov_deg: float = 65.0
    pitch_deg: float = -15.0
    roll_deg: float = 0.0
    height_m: float = 1.5

    @property
    def focal(self) -> float:
        return 0.5 * self.width / np.tan(np.radians(self.fov_deg) / 2)

    @cached_property
    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World (X east, Y north, Z up) directions of the camera's right, down and forward axes."""
        p, r = np.radians(self.pitch_deg), np.radians(self.roll_deg)
        forward = np.array([0.0, np.cos(p), np.sin(p)])
        up0 = np.array([0.0, -np.sin(p), np.cos(p)])
        right0 = np.array([1.0, 0.0, 0.0])
        right = right0 * np.cos(r) + up0 * np.sin(r)
        up = -right0 * np.sin(r) + up0 * np.cos(r)
        return right, -up, forward

    def rays(self) -> np.ndarray:
        """Unnormalised world ray direction per pixel, H×W×3."""
        right, down, forward = self.axes
        f = self.focal
        u = (np.arange(self.width, dtype=np.float64) + 0.5 - self.width / 2) / f
        v = (np.arange(self.height, dtype=np.float64) + 0.5 - self.height / 2) / f
        return (u[None, :, None] * right + v[:, None, None] * down + forward).astype(np.float64)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixel column, row and forward depth of world points N×3 (depth ≤ 0 means behind the camera)."""
        right, down, forward = self.axes
        rel = np.asarray(points, np.float64) - np.array([0.0, 0.0, self.height_m])
        depth = rel @ forward
        safe = np.where(depth > 1e-6, depth, 1e-6)
        col = self.width / 2 + self.focal * (rel @ right) / safe
        row = self.height / 2 + self.focal * (rel @ down) / safe
        return col, row, depth

    def world_to_camera(self, vector: np.ndarray) -> np.ndarray:
        """A world direction in camera coordinates (x right, y down, z forward)."""
        right, down, forward = self.axes
        return np.array([vector @ right, vector @ down, vector @ forward])


@dataclass
class GroundView:
    """Where each pixel's ray meets the ground: world X/Y, distance, view elevation and azimuth."""

    x: np.ndarray
    y: np.ndarray
    distance: np.ndarray
    elevation: np.ndarray  # radians above the horizontal
    azimuth: np.ndarray  # radians, 0 = north (forward at yaw 0), positive east
    hits_ground: np.ndarray

    @classmethod
    def cast(cls, camera: Camera, max_distance: float = 5000.0) -> "GroundView":
        d = camera.rays()
        dx, dy, dz = d[..., 0], d[..., 1], d[..., 2]
        horizontal = np.hypot(dx, dy)
        elevation = np.arctan2(dz, horizontal)
        hits = dz < -1e-9
        t = np.where(hits, camera.height_m / np.where(hits, -dz, 1.0), np.inf)
        t = np.minimum(t, max_distance / np.linalg.norm(d, axis=2))
        norm = np.linalg.norm(d, axis=2)
        return cls(x=t * dx, y=t * dy, distance=(t * norm).astype(np.float32),
                   elevation=elevation.astype(np.float32),
                   azimuth=np.arctan2(dx, dy).astype(np.float32), hits_ground=hits)
