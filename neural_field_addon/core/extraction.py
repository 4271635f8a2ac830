"""Isosurface extraction: evaluate the field on a grid in slabs, run marching cubes, map back.

The grid spacing is the box's longest side / (resolution - 1), the same along every axis, so
flat objects cost fewer evaluations. A one-cell border outside the level is added around the
grid, so a surface cut by the box is capped and the result is closed.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .field import NeuralField
from .geometry import TriangleMesh


class EmptySurfaceError(ValueError):
    """The field has no level set inside its box at the requested level."""


def grid_axes(box_low, box_high, resolution: int):
    """Sample coordinates along x, y, z with equal spacing h; returns (axes, h)."""
    if resolution < 8:
        raise ValueError(f"resolution must be at least 8, got {resolution}")
    extent = np.asarray(box_high, dtype=np.float64) - np.asarray(box_low, dtype=np.float64)
    h = float(extent.max()) / (resolution - 1)
    counts = [max(2, int(math.ceil(e / h - 1e-9)) + 1) for e in extent]
    axes = [box_low[i] + np.arange(counts[i]) * h for i in range(3)]
    return axes, h


@torch.no_grad()
def evaluate_grid(field: NeuralField, axes, chunk: int = 1 << 18) -> np.ndarray:
    """Field values (nx, ny, nz) float32 at the grid points, evaluated slab by slab along x."""
    device = field.device
    xs, ys, zs = (torch.as_tensor(a, dtype=torch.float32, device=device) for a in axes)
    plane = torch.stack(torch.meshgrid(ys, zs, indexing="ij"), dim=-1).reshape(-1, 2)
    values = np.empty((len(xs), len(ys), len(zs)), dtype=np.float32)
    slab = max(1, chunk // len(plane))
    for start in range(0, len(xs), slab):
        x = xs[start : start + slab]
        points = torch.cat(
            [x.repeat_interleave(len(plane))[:, None], plane.repeat(len(x), 1)], dim=1
        )
        block = field.evaluate_field_space(points, chunk=chunk)
        values[start : start + len(x)] = block.reshape(len(x), len(ys), len(zs)).cpu().numpy()
    return values


def extract_isosurface(field: NeuralField, resolution: int = 256, level: float = 0.0) -> TriangleMesh:
    """The surface {f = level} as a triangle mesh in object coordinates.

    `level` is in object units: a positive level grows the shape by that distance (SDF fields;
    occupancy fields are extracted at probability 0.5 only).
    Raises EmptySurfaceError if the field is entirely inside or outside at that level.
    """
    from skimage.measure import marching_cubes

    if field.config.kind == "occupancy" and level != 0.0:
        raise ValueError(
            f"an occupancy field has no distance scale, so it cannot be offset by a level ({level:g}); "
            "extract it at level 0, or fit a signed-distance field"
        )
    axes, h = grid_axes(field.box_low, field.box_high, resolution)
    values = evaluate_grid(field, axes)
    iso = float(level) * field.transform.scale
    low, high = float(values.min()), float(values.max())
    if low >= iso:
        raise EmptySurfaceError(
            f"the field has no surface at level {level:g}: it is outside everywhere in its box "
            f"(smallest value {low / field.transform.scale:.4g} in object units)"
        )
    if high <= iso:
        raise EmptySurfaceError(
            f"the field has no surface at level {level:g}: it is inside everywhere in its box "
            f"(largest value {high / field.transform.scale:.4g} in object units)"
        )
    padded = np.pad(values, 1, mode="constant", constant_values=iso + h)
    vertices, faces, _, _ = marching_cubes(padded, level=iso, spacing=(h, h, h))
    origin = np.array([axes[0][0], axes[1][0], axes[2][0]]) - h
    vertices = field.transform.to_object(vertices.astype(np.float64) + origin)
    # scikit-image's default winding (gradient_direction="descent") already faces outward for a
    # field that is negative inside.
    return TriangleMesh(vertices, faces.astype(np.int64))
