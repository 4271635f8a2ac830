"""Samples of a mesh: `sample_surface` (numpy, float64) for the metrics, and `DeviceSampler`
(PyTorch, on the training device) for training pools: surface, near-surface and uniform box
points. Both are reproducible from a seed.
"""

from __future__ import annotations

import numpy as np

from .mesh import TriangleMesh


def sample_surface(mesh: TriangleMesh, count: int, rng: np.random.Generator):
    """Area-weighted uniform points on the surface with their face normals: ((count, 3), (count, 3))."""
    points, normals, _, _ = sample_surface_barycentric(mesh, count, rng)
    return points, normals


def sample_surface_barycentric(mesh: TriangleMesh, count: int, rng: np.random.Generator):
    """sample_surface's points and normals, with their faces (count,) and barycentric weights
    (count, 3), from which a surface's colours are read."""
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
    return points, normals[face], face, np.stack([1.0 - u - v, u, v], axis=1)


class DeviceSampler:
    """The same three kinds of samples drawn with PyTorch on the training device, so a CUDA fit
    never round-trips its samples through the host. One seeded generator reproduces them all."""

    def __init__(self, mesh: TriangleMesh, device="cpu", seed: int = 0):
        import torch

        areas, normals = mesh.face_areas_and_normals()
        if not areas.sum() > 0:
            raise ValueError("the mesh has zero surface area: every triangle is degenerate")
        self.device = torch.device(device)
        self.triangles = torch.as_tensor(mesh.triangles(), dtype=torch.float32, device=self.device)
        self.normals = torch.as_tensor(normals, dtype=torch.float32, device=self.device)
        self.areas = torch.as_tensor(areas, dtype=torch.float32, device=self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def _uniform(self, *shape):
        import torch

        return torch.rand(*shape, device=self.device, generator=self.generator)

    def surface(self, count: int):
        """Area-weighted points on the surface and their face normals, each (count, 3)."""
        points, normals, _, _ = self.surface_samples(count)
        return points, normals

    def surface_samples(self, count: int):
        """Area-weighted points on the surface (count, 3), their face normals (count, 3), faces
        (count,) and barycentric weights (count, 3)."""
        import torch

        face = torch.multinomial(self.areas, count, replacement=True, generator=self.generator)
        u, v = self._uniform(count), self._uniform(count)
        flip = u + v > 1.0
        u, v = torch.where(flip, 1.0 - u, u), torch.where(flip, 1.0 - v, v)
        tri = self.triangles[face]
        points = tri[:, 0] + u[:, None] * (tri[:, 1] - tri[:, 0]) + v[:, None] * (tri[:, 2] - tri[:, 0])
        return points, self.normals[face], face, torch.stack([1.0 - u - v, u, v], dim=-1)

    def near_surface(self, count: int, scales):
        """Surface points displaced by isotropic Gaussian noise, an equal share at each scale."""
        import torch

        points, _ = self.surface(count)
        sigma = torch.as_tensor(scales, dtype=torch.float32, device=self.device)
        sigma = sigma.repeat_interleave(-(-count // len(scales)))[:count]
        noise = torch.randn(count, 3, device=self.device, generator=self.generator)
        return points + noise * sigma[:, None]

    def uniform_box(self, low, high, count: int):
        import torch

        low = torch.as_tensor(low, dtype=torch.float32, device=self.device)
        high = torch.as_tensor(high, dtype=torch.float32, device=self.device)
        return low + self._uniform(count, 3) * (high - low)
