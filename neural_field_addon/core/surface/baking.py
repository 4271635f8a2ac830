"""Baking a colour field into a texture: a UV layout for an extracted mesh (xatlas, a well-kept
chart and packing library), then every texel's surface point looked up in the field.

Each triangle's texels (those whose centres fall inside it in UV space) take the colour at their
point of the triangle; texels outside every chart are then filled from their filled neighbours
for a few rings (a gutter), so bilinear sampling and mipmaps at a chart's edge never read the
empty background. The texture is linear RGB; writers encode it as sRGB.
"""

from __future__ import annotations

import numpy as np
import torch

from ..appearance.surface_colors import Texture
from ..geometry import TriangleMesh

# Texels of padding between charts, and rings of gutter grown around them.
CHART_PADDING = 4
GUTTER = 4
# Candidate texels tested per chunk while rasterising.
RASTER_CHUNK = 1 << 22


def unwrap(mesh: TriangleMesh, size: int) -> tuple[TriangleMesh, np.ndarray, np.ndarray]:
    """A UV layout of `mesh` for a size x size texture: the mesh with vertices split along the
    charts' seams, per-vertex UVs (n', 2) in [0, 1], and each new vertex's original index."""
    try:
        import xatlas
    except ImportError as error:
        raise ValueError("baking a texture needs the xatlas package (pip install xatlas) for the UV "
                         "layout") from error
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(mesh.vertices, dtype=np.float32),
                   np.ascontiguousarray(mesh.faces, dtype=np.uint32))
    charts = xatlas.ChartOptions()
    # No extra chart-growing iterations, aligned packing: 9 s instead of 13 s for 192k triangles,
    # more but equally packed charts (docs/BENCHMARKS.md).
    charts.max_iterations = 0
    pack = xatlas.PackOptions()
    pack.resolution = int(size)
    pack.padding = CHART_PADDING
    pack.bilinear = True
    pack.blockAlign = True
    atlas.generate(chart_options=charts, pack_options=pack)
    if atlas.atlas_count != 1:
        raise ValueError(f"the UV layout needs {atlas.atlas_count} textures of {size}^2; bake a larger texture")
    vmapping, faces, uvs = atlas[0]
    vmapping = vmapping.astype(np.int64)
    return TriangleMesh(mesh.vertices[vmapping], faces.astype(np.int64)), uvs.astype(np.float32), vmapping


def rasterize(mesh: TriangleMesh, uvs: np.ndarray, size: int, device="cpu"):
    """The texels covered by the mesh's triangles in UV space: texel rows and columns (k,) (row 0
    at the top, v = 1), the triangle of each (k,) and its barycentric weights (k, 3)."""
    device = torch.device(device)
    corners = torch.as_tensor(uvs, dtype=torch.float64, device=device)[torch.as_tensor(mesh.faces, device=device)]
    # Texel space: x = u * size, y = (1 - v) * size; texel (row j, column i) has its centre at (i + 0.5, j + 0.5).
    xy = torch.stack([corners[..., 0] * size, (1.0 - corners[..., 1]) * size], dim=-1)
    low = torch.floor(xy.min(dim=1).values - 0.5).clamp(0, size - 1).long()
    high = torch.ceil(xy.max(dim=1).values - 0.5).clamp(0, size - 1).long()
    extent = high - low + 1
    counts = extent[:, 0] * extent[:, 1]
    rows, columns, triangles, weights = [], [], [], []
    for start, stop in _chunks(counts, RASTER_CHUNK):
        count = counts[start:stop]
        triangle = torch.repeat_interleave(torch.arange(start, stop, device=device), count)
        offset = torch.arange(int(count.sum()), device=device) - torch.repeat_interleave(
            torch.cumsum(count, 0) - count, count)
        width = extent[triangle, 0]
        column = low[triangle, 0] + offset % width
        row = low[triangle, 1] + offset // width
        centre = torch.stack([column + 0.5, row + 0.5], dim=-1).double()
        weight = _barycentric_2d(centre, xy[triangle])
        inside = (weight >= -1e-9).all(dim=-1)
        rows.append(row[inside])
        columns.append(column[inside])
        triangles.append(triangle[inside])
        weights.append(weight[inside].clamp(min=0.0))
    weights = torch.cat(weights)
    return torch.cat(rows), torch.cat(columns), torch.cat(triangles), weights / weights.sum(-1, keepdim=True)


def _chunks(counts: torch.Tensor, limit: int):
    """Ranges of triangles whose texel candidates add up to about `limit` each."""
    total = torch.cumsum(counts, 0).cpu().numpy()
    start = 0
    while start < len(counts):
        base = total[start - 1] if start else 0
        stop = int(np.searchsorted(total, base + limit, side="right"))
        stop = max(stop, start + 1)
        yield start, stop
        start = stop


def _barycentric_2d(points: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    v0, v1, v2 = b - a, c - a, points - a
    denominator = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    safe = torch.where(denominator.abs() > 1e-18, denominator, torch.ones_like(denominator))
    v = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / safe
    w = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / safe
    weights = torch.stack([1.0 - v - w, v, w], dim=-1)
    return torch.where((denominator.abs() > 1e-18)[:, None], weights, torch.full_like(weights, -1.0))


def bake_texture(colors_at, mesh: TriangleMesh, uvs: np.ndarray, size: int, device="cpu") -> Texture:
    """A size x size texture of the colours `colors_at(points (q, 3)) -> (q, 3)` linear RGB takes
    at the mesh's surface (object space), through the per-vertex UVs, with a gutter grown around
    the charts."""
    if size < 8:
        raise ValueError(f"a texture must be at least 8 texels a side, got {size}")
    rows, columns, triangles, weights = rasterize(mesh, uvs, size, device)
    if len(rows) == 0:
        raise ValueError("the UV layout covers no texel of the texture")
    corners = torch.as_tensor(mesh.vertices, dtype=torch.float64, device=rows.device)[
        torch.as_tensor(mesh.faces, device=rows.device)[triangles]]
    points = (corners * weights[:, :, None]).sum(dim=1).cpu().numpy()
    image = torch.zeros(size, size, 3, dtype=torch.float32)
    filled = torch.zeros(size, size, dtype=torch.bool)
    rows, columns = rows.cpu(), columns.cpu()
    image[rows, columns] = torch.as_tensor(np.asarray(colors_at(points), dtype=np.float32))
    filled[rows, columns] = True
    return Texture(grow_gutter(image, filled, GUTTER).numpy(), name="baked")


def grow_gutter(image: torch.Tensor, filled: torch.Tensor, rings: int) -> torch.Tensor:
    """The image with empty texels next to filled ones set to the mean of their filled 8
    neighbours, `rings` times over; the rest is left as it is."""
    image, filled = image.clone(), filled.clone()
    for _ in range(rings):
        weight = filled.float()
        padded_image = torch.nn.functional.pad((image * weight[..., None]).permute(2, 0, 1)[None], (1, 1, 1, 1))
        padded_weight = torch.nn.functional.pad(weight[None, None], (1, 1, 1, 1))
        kernel = torch.ones(1, 1, 3, 3)
        sums = torch.nn.functional.conv2d(padded_image.reshape(3, 1, *padded_image.shape[2:]), kernel)[:, 0]
        counts = torch.nn.functional.conv2d(padded_weight, kernel)[0, 0]
        grow = ~filled & (counts > 0)
        if not bool(grow.any()):
            break
        image[grow] = (sums.permute(1, 2, 0)[grow] / counts[grow][:, None])
        filled |= grow
    return image
