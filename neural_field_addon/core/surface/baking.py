"""Baking a colour field into a texture: a UV layout for an extracted mesh (projection charts
packed by xatlas, a well-kept chart and packing library), then every texel's surface point looked
up in the field.

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
# Rounds of halving charts that lie over themselves before xatlas's own charts take over.
MAX_CHART_HALVINGS = 12
# The plane a chart projected along x, y or z lies in.
PLANES = np.array([[1, 2], [2, 0], [0, 1]])
# Candidate texels tested per chunk while rasterising.
RASTER_CHUNK = 1 << 22


def unwrap(mesh: TriangleMesh, size: int, charts: str = "projection") -> tuple[TriangleMesh, np.ndarray, np.ndarray]:
    """A UV layout of `mesh` for a size x size texture: the mesh with vertices split along the
    charts' seams, per-vertex UVs (n', 2) in [0, 1], and each new vertex's original index.

    `charts`: "projection" (see `projection_charts`; a chart whose projection lies over itself,
    such as a spiral ramp's, is halved until none does) or "xatlas" (its own chart growing, slow on
    large isosurfaces); xatlas packs either."""
    if charts not in ("projection", "xatlas"):
        raise ValueError(f"unknown charts {charts!r}: use 'projection' or 'xatlas'")
    if charts == "xatlas":
        return _xatlas_charts(mesh, size)
    chart, axis = projection_charts(mesh)
    for _ in range(MAX_CHART_HALVINGS):
        split, uvs, original = _pack_projections(mesh, chart, axis, size)
        folded = np.unique(chart[_overlapping_faces(split, uvs, size)])
        if len(folded) == 0:
            return split, uvs, original
        chart = _halve(mesh, chart, axis, folded)
    return _xatlas_charts(mesh, size)


def projection_charts(mesh: TriangleMesh) -> tuple[np.ndarray, np.ndarray]:
    """Charts for an isosurface: each face's chart (m,) and the axis (m,) it is projected along.

    A face belongs to the one of the six axis directions (+-x, +-y, +-z) nearest its normal, and a
    chart is a set of faces of one direction connected through shared edges. Projected along its
    axis, a chart never folds (every face keeps the same orientation), so it needs no solver. This
    is what suits marching-cubes meshes: their normals change at the scale of a voxel, which makes
    general chart growing (xatlas's own) cut them into thousands of tiny charts, slowly (minutes
    for a 256^3 surface; docs/BENCHMARKS.md)."""
    corners = mesh.vertices[mesh.faces]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    axis = np.abs(normals).argmax(axis=1)
    direction = 2 * axis + (normals[np.arange(len(normals)), axis] < 0)
    # Faces that share an edge, through the edges sorted by their two vertex indices.
    edges = np.sort(np.concatenate([mesh.faces[:, [0, 1]], mesh.faces[:, [1, 2]], mesh.faces[:, [2, 0]]]), axis=1)
    edge_key = edges[:, 0] * len(mesh.vertices) + edges[:, 1]
    face_of_edge = np.tile(np.arange(len(mesh.faces)), 3)
    order = np.argsort(edge_key, kind="stable")
    shared = edge_key[order][1:] == edge_key[order][:-1]
    first, second = face_of_edge[order][:-1][shared], face_of_edge[order][1:][shared]
    joined = direction[first] == direction[second]
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    adjacency = coo_matrix((np.ones(int(joined.sum())), (first[joined], second[joined])),
                           shape=(len(mesh.faces), len(mesh.faces)))
    _, island = connected_components(adjacency, directed=False)
    return island.astype(np.int64), axis.astype(np.int64)


def _xatlas():
    try:
        import xatlas
    except ImportError as error:
        raise ValueError("baking a texture needs the xatlas package (pip install xatlas) for the UV "
                         "layout") from error
    return xatlas


def _pack(atlas, chart_options, size: int) -> tuple[TriangleMesh, np.ndarray, np.ndarray]:
    """Generate the atlas into one size x size texture: the split faces (over the atlas's own
    vertices, no positions), UVs and each atlas vertex's index in the mesh that was added."""
    import xatlas

    pack = xatlas.PackOptions()
    pack.resolution = int(size)
    pack.padding = CHART_PADDING
    pack.bilinear = True
    pack.blockAlign = True
    atlas.generate(chart_options=chart_options, pack_options=pack)
    if atlas.atlas_count != 1:
        raise ValueError(f"the UV layout needs {atlas.atlas_count} textures of {size}^2; bake a larger texture")
    mapping, faces, uvs = atlas[0]
    mapping = mapping.astype(np.int64)
    return TriangleMesh(np.zeros((len(mapping), 3)), faces.astype(np.int64)), uvs.astype(np.float32), mapping


def _xatlas_charts(mesh: TriangleMesh, size: int) -> tuple[TriangleMesh, np.ndarray, np.ndarray]:
    xatlas = _xatlas()
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(mesh.vertices, dtype=np.float32), np.ascontiguousarray(mesh.faces, dtype=np.uint32))
    options = xatlas.ChartOptions()
    options.max_iterations = 0  # no extra chart-growing passes: 30% faster, as well packed
    split, uvs, mapping = _pack(atlas, options, size)
    return TriangleMesh(mesh.vertices[mapping], split.faces), uvs, mapping


def _pack_projections(mesh: TriangleMesh, chart: np.ndarray, axis: np.ndarray, size: int):
    """The layout of the charts, each projected along its axis, packed by xatlas (which keeps the
    faces in their order)."""
    xatlas = _xatlas()
    # One vertex per (vertex, chart): the charts' seams split the mesh.
    count = int(chart.max()) + 1
    keys, corner = np.unique((mesh.faces * count + chart[:, None]).reshape(-1), return_inverse=True)
    original = keys // count
    faces = corner.reshape(-1, 3)
    vertex_axis = np.empty(len(keys), dtype=np.int64)
    vertex_axis[faces.reshape(-1)] = np.repeat(axis, 3)
    # Flat on the plane of the other two axes, in object units: uniform texel density up to the
    # foreshortening of at most sqrt(3) where a normal is farthest from its axis.
    projected = np.take_along_axis(mesh.vertices[original], PLANES[vertex_axis], axis=1)
    # Each chart apart from the others on a grid: xatlas joins faces whose corners share a
    # position and a UV, which would weld a halved chart's two halves back together.
    vertex_chart = keys % count
    low = np.full((count, 2), np.inf)
    np.minimum.at(low, vertex_chart, projected)
    projected = projected - low[vertex_chart]
    spacing = 1.5 * float(projected.max()) + 1e-6
    side = int(np.ceil(np.sqrt(count)))
    projected = projected + spacing * np.stack([vertex_chart % side, vertex_chart // side], axis=1)
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(mesh.vertices[original], dtype=np.float32),
                   np.ascontiguousarray(faces, dtype=np.uint32), uvs=np.ascontiguousarray(projected, dtype=np.float32))
    options = xatlas.ChartOptions()
    options.use_input_mesh_uvs = True
    split, uvs, mapping = _pack(atlas, options, size)
    return TriangleMesh(mesh.vertices[original[mapping]], split.faces), uvs, original[mapping]


def _overlapping_faces(mesh: TriangleMesh, uvs: np.ndarray, size: int) -> np.ndarray:
    """Faces that share a texel with a face they do not touch: a chart lying over itself (texel
    centres on a shared edge or corner are in both neighbours and do not count)."""
    rows, columns, triangles, _ = rasterize(mesh, uvs, size)
    texels = (rows * size + columns).cpu().numpy()
    triangles = triangles.cpu().numpy()
    order = np.argsort(texels, kind="stable")
    texels, triangles = texels[order], triangles[order]
    same = np.flatnonzero(texels[1:] == texels[:-1])
    first, second = triangles[same], triangles[same + 1]
    faces = mesh.faces
    touching = (faces[first][:, :, None] == faces[second][:, None, :]).any(axis=(1, 2))
    return np.unique(np.concatenate([first[~touching], second[~touching]]))


def _halve(mesh: TriangleMesh, chart: np.ndarray, axis: np.ndarray, folded: np.ndarray) -> np.ndarray:
    """The charts with each of `folded` cut in two across the longer side of its projection."""
    chart = chart.copy()
    centroids = mesh.vertices[mesh.faces].mean(axis=1)
    next_chart = int(chart.max()) + 1
    for index in folded:
        members = np.flatnonzero(chart == index)
        plane = np.take_along_axis(centroids[members], PLANES[axis[members]], axis=1)
        side = int(np.argmax(plane.max(axis=0) - plane.min(axis=0)))
        upper = plane[:, side] > np.median(plane[:, side])
        if upper.all() or not upper.any():  # all at one coordinate: split by order instead
            upper = np.arange(len(members)) >= len(members) // 2
        chart[members[upper]] = next_chart
        next_chart += 1
    return chart


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
