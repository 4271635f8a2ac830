"""Training and evaluation samples: surface points, near-surface points, uniform box points.

All functions take a numpy `Generator`, so a seed reproduces every sample.
"""

from __future__ import annotations

import numpy as np

from .mesh import TriangleMesh


def sample_surface(mesh: TriangleMesh, count: int, rng: np.random.Generator):
    """Area-weighted uniform points on the surface with their face normals: ((count, 3), (count, 3))."""
    areas, normals = mesh.face_areas_and_normals()
    total = areas.sum()
    if not total > 0:
        raise ValueError("the mesh has zero surface area: every triangle is degenerate")
    face = rng.choice(len(areas), size=count, p=areas / total)
    # Uniform barycentrics by reflecting the unit square's upper triangle.
    u, v = rng.random(count), rng.random(count)
    flip = u + v > 1.0
    u[flip], v[flip] = 1.0 - u[flip], 1.0 - v[flip]
    tri = mesh.triangles()[face]
    points = tri[:, 0] + u[:, None] * (tri[:, 1] - tri[:, 0]) + v[:, None] * (tri[:, 2] - tri[:, 0])
    return points, normals[face]


def sample_near_surface(
    mesh: TriangleMesh, count: int, scales: tuple[float, ...], rng: np.random.Generator
) -> np.ndarray:
    """Surface points displaced by isotropic Gaussian noise, an equal share at each scale."""
    points, _ = sample_surface(mesh, count, rng)
    sigma = np.repeat(np.asarray(scales, dtype=np.float64), -(-count // len(scales)))[:count]
    return points + rng.normal(size=points.shape) * sigma[:, None]


def sample_uniform_box(low, high, count: int, rng: np.random.Generator) -> np.ndarray:
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    return low + rng.random((count, 3)) * (high - low)
