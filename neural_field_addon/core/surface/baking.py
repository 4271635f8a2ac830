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
# Islands of fewer faces join a neighbouring large one, growing by a ring per round.
SMALL_CHART_FACES = 64
SMALL_CHART_ROUNDS = 8
# Rounds of cutting charts that lie over themselves before xatlas's own charts take over.
MAX_CHART_SPLITS = 32
# The plane a chart projected along x, y or z lies in.
PLANES = np.array([[1, 2], [2, 0], [0, 1]])
# Dunavant's 6-point rule (degree 4, positive weights summing to 1): barycentric points of the
# colour samples per face for vertex colours.
_A, _B = 0.445948490915965, 0.091576213509771
QUADRATURE_POINTS = np.array([[_A, _A, 1 - 2 * _A], [_A, 1 - 2 * _A, _A], [1 - 2 * _A, _A, _A],
                              [_B, _B, 1 - 2 * _B], [_B, 1 - 2 * _B, _B], [1 - 2 * _B, _B, _B]])
QUADRATURE_WEIGHTS = np.array([0.223381589678011] * 3 + [0.109951743655322] * 3)
MASS_SOLVE_ITERATIONS = 100
# Candidate texels tested per chunk while rasterising.
RASTER_CHUNK = 1 << 22


def unwrap(mesh: TriangleMesh, size: int, charts: str = "projection") -> tuple[TriangleMesh, np.ndarray, np.ndarray]:
    """A UV layout of `mesh` for a size x size texture: the mesh with vertices split along the
    charts' seams, per-vertex UVs (n', 2) in [0, 1], and each new vertex's original index.

    `charts`: "projection" (see `projection_charts`; a chart whose projection lies over itself,
    such as a spiral ramp's, is cut between its overlapping faces until none does) or "xatlas"
    (its own chart growing, slow on large isosurfaces); xatlas packs either."""
    if charts not in ("projection", "xatlas"):
        raise ValueError(f"unknown charts {charts!r}: use 'projection' or 'xatlas'")
    if charts == "xatlas":
        return _xatlas_charts(mesh, size)
    first, second = face_adjacency(mesh)
    chart, axis = projection_charts(mesh, (first, second))
    checked = np.arange(len(mesh.faces))  # faces whose charts changed since they were last checked
    for _ in range(MAX_CHART_SPLITS):
        split, original, projected = _chart_layout(mesh, chart, axis)
        uvs, canvas = _texel_space(split, projected, size)
        folds = _overlapping_pairs(split, uvs, canvas, checked)
        if len(folds) == 0:
            faces, uvs, mapping = _pack_layout(split, projected, size)
            return TriangleMesh(mesh.vertices[original[mapping]], faces), uvs, original[mapping]
        chart, checked = _split_folds(chart, first, second, folds)
    return _xatlas_charts(mesh, size)


def face_adjacency(mesh: TriangleMesh) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of faces (k,), (k,) that share an edge."""
    edges = mesh.edges()
    edge_key = edges[:, 0] * len(mesh.vertices) + edges[:, 1]
    face_of_edge = np.tile(np.arange(len(mesh.faces)), 3)
    order = np.argsort(edge_key, kind="stable")
    shared = edge_key[order][1:] == edge_key[order][:-1]
    return face_of_edge[order][:-1][shared], face_of_edge[order][1:][shared]


def projection_charts(mesh: TriangleMesh, adjacency=None) -> tuple[np.ndarray, np.ndarray]:
    """Charts for an isosurface: each face's chart (m,) and the axis (m,) it is projected along
    (`adjacency`: the mesh's `face_adjacency`, if it is at hand).

    A face belongs to the one of the six axis directions (+-x, +-y, +-z) nearest its normal, and a
    chart is a set of faces of one direction connected through shared edges. Projected along its
    axis, a chart never folds (every face keeps the same orientation), so it needs no solver. This
    is what suits marching-cubes meshes: their normals change at the scale of a voxel, which makes
    general chart growing (xatlas's own) cut them into thousands of tiny charts, slowly (minutes
    for a 256^3 surface; docs/BENCHMARKS.md)."""
    _, normals = mesh.face_areas_and_normals()  # unit normals; 0 for degenerate faces
    axis = np.abs(normals).argmax(axis=1)
    direction = 2 * axis + (normals[np.arange(len(normals)), axis] < 0)
    first, second = face_adjacency(mesh) if adjacency is None else adjacency
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    def components(direction):
        joined = direction[first] == direction[second]
        graph = coo_matrix((np.ones(int(joined.sum())), (first[joined], second[joined])),
                           shape=(len(mesh.faces), len(mesh.faces)))
        return connected_components(graph, directed=False)[1]

    island = components(direction)
    # Faces of small islands (where normals hover between two directions) join a large
    # neighbouring island whose direction is still within 60 degrees of their normal: fewer,
    # larger charts, foreshortened at most 2x, and no fold (the same orientation).
    directions = np.concatenate([np.eye(3), -np.eye(3)])[[0, 3, 1, 4, 2, 5]]  # +x -x +y -y +z -z
    for _ in range(SMALL_CHART_ROUNDS):
        size = np.bincount(island)[island]
        for a, b in ((first, second), (second, first)):
            candidate = (size[a] < SMALL_CHART_FACES) & (size[b] >= SMALL_CHART_FACES)
            candidate &= np.einsum("ij,ij->i", normals[a], directions[direction[b]]) >= 0.5
            direction[a[candidate]] = direction[b[candidate]]
            island[a[candidate]] = island[b[candidate]]
            size[a[candidate]] = SMALL_CHART_FACES
    island = components(direction)
    return island.astype(np.int64), direction // 2


def _xatlas():
    try:
        import xatlas
    except ImportError as error:
        raise ValueError("baking a texture needs the xatlas package (pip install xatlas) for the UV "
                         "layout") from error
    return xatlas


def _pack(atlas, chart_options, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate the atlas into one size x size texture: the split faces (m, 3) over the atlas's
    vertices, their UVs and each atlas vertex's index in the mesh that was added."""
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
    return faces.astype(np.int64), uvs.astype(np.float32), mapping.astype(np.int64)


def _xatlas_charts(mesh: TriangleMesh, size: int) -> tuple[TriangleMesh, np.ndarray, np.ndarray]:
    xatlas = _xatlas()
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(mesh.vertices, dtype=np.float32), np.ascontiguousarray(mesh.faces, dtype=np.uint32))
    options = xatlas.ChartOptions()
    options.max_iterations = 0  # no extra chart-growing passes: 30% faster, as well packed
    faces, uvs, mapping = _pack(atlas, options, size)
    return TriangleMesh(mesh.vertices[mapping], faces), uvs, mapping


def _chart_layout(mesh: TriangleMesh, chart: np.ndarray, axis: np.ndarray):
    """The charts, each projected flat along its axis, side by side on a grid: the mesh split
    along the charts' seams (faces in their order), each split vertex's original index, and its
    position in the layout (n', 2) in object units."""
    # One vertex per (vertex, chart): the charts' seams split the mesh.
    count = int(chart.max()) + 1
    keys, corner = np.unique((mesh.faces * count + chart[:, None]).reshape(-1), return_inverse=True)
    original, vertex_chart = keys // count, keys % count
    faces = corner.reshape(-1, 3)
    vertex_axis = np.empty(len(keys), dtype=np.int64)
    vertex_axis[faces.reshape(-1)] = np.repeat(axis, 3)
    # Flat on the plane of the other two axes, in object units: uniform texel density up to the
    # foreshortening of at most 2 where a normal is farthest from its axis (60 degrees).
    projected = np.take_along_axis(mesh.vertices[original], PLANES[vertex_axis], axis=1)
    # Each chart apart from the others: xatlas joins faces whose corners share a position and a
    # UV, which would weld a halved chart's two halves back together.
    low = np.full((count, 2), np.inf)
    np.minimum.at(low, vertex_chart, projected)
    projected = projected - low[vertex_chart]
    # Each chart scaled to keep its surface's area, so a tilted chart gets the texels its surface
    # needs rather than those of its smaller shadow.
    surface_area = np.bincount(chart, weights=mesh.face_areas_and_normals()[0], minlength=count)
    shadow_area = np.bincount(chart, weights=_flat_areas(projected[faces]), minlength=count)
    projected = projected * np.sqrt(surface_area / np.maximum(shadow_area, 1e-30))[vertex_chart, None]
    spacing = 1.5 * float(projected.max()) + 1e-6
    side = int(np.ceil(np.sqrt(count)))
    projected = projected + spacing * np.stack([vertex_chart % side, vertex_chart // side], axis=1)
    return TriangleMesh(mesh.vertices[original], faces), original, projected


def _texel_space(mesh: TriangleMesh, projected: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """The unpacked layout as UVs of a canvas of texels at least as fine as the packed texture's
    will be (its charts' area filling the texture at most), and that canvas's size."""
    texel = np.sqrt(_flat_areas(projected[mesh.faces]).sum()) / size
    canvas = int(np.ceil(projected.max() / texel)) + 1
    return projected / (texel * canvas), canvas


def _flat_areas(corners: np.ndarray) -> np.ndarray:
    """Areas (m,) of triangles in the plane, corners (m, 3, 2)."""
    edges = corners[:, 1:] - corners[:, :1]
    return 0.5 * np.abs(edges[:, 0, 0] * edges[:, 1, 1] - edges[:, 0, 1] * edges[:, 1, 0])


def _pack_layout(mesh: TriangleMesh, projected: np.ndarray, size: int):
    """The charts of the layout packed by xatlas into one texture (faces kept in their order):
    the packed faces, their UVs and each packed vertex's index in `mesh`."""
    xatlas = _xatlas()
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(mesh.vertices, dtype=np.float32), np.ascontiguousarray(mesh.faces, dtype=np.uint32),
                   uvs=np.ascontiguousarray(projected, dtype=np.float32))
    options = xatlas.ChartOptions()
    options.use_input_mesh_uvs = True
    return _pack(atlas, options, size)


def _overlapping_pairs(mesh: TriangleMesh, uvs: np.ndarray, size: int, faces: np.ndarray) -> np.ndarray:
    """Pairs (k, 2) of the given faces that share a texel without touching: a chart lying over
    itself (texel centres on a shared edge or corner are in both neighbours and do not count)."""
    rows, columns, triangles, _ = rasterize(TriangleMesh(mesh.vertices, mesh.faces[faces]), uvs, size)
    texels = (rows * size + columns).cpu().numpy()
    triangles = faces[triangles.cpu().numpy()]
    order = np.argsort(texels, kind="stable")
    texels, triangles = texels[order], triangles[order]
    same = np.flatnonzero(texels[1:] == texels[:-1])
    first, second = triangles[same], triangles[same + 1]
    touching = (mesh.faces[first][:, :, None] == mesh.faces[second][:, None, :]).any(axis=(1, 2))
    return np.stack([first[~touching], second[~touching]], axis=1)


def _split_folds(chart: np.ndarray, first: np.ndarray, second: np.ndarray, folds: np.ndarray):
    """Each chart with a fold cut in two between one of its overlapping pairs of faces: every face
    goes with the nearer of the two (in steps across the chart's edges), so the two halves stay
    connected and the pair is apart. Returns the new charts and the faces whose chart changed."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    _, one_per_chart = np.unique(chart[folds[:, 0]], return_index=True)
    seeds = folds[one_per_chart].reshape(-1)  # (a, b) per folded chart, side by side
    inside = chart[first] == chart[second]
    graph = coo_matrix((np.ones(int(inside.sum())), (first[inside], second[inside])), shape=(len(chart), len(chart)))
    distance, _, nearest = dijkstra(graph.tocsr(), directed=False, indices=seeds, unweighted=True, min_only=True,
                                    return_predecessors=True)
    reached = np.isfinite(distance)
    seed_rank = np.full(len(chart), -1)
    seed_rank[seeds] = np.arange(len(seeds))
    # Faces nearest to a pair's second face form the new chart of that pair.
    moved = np.flatnonzero(reached & (seed_rank[np.maximum(nearest, 0)] % 2 == 1) & (nearest >= 0))
    chart = chart.copy()
    new_ids = int(chart.max()) + 1 + seed_rank[nearest[moved]] // 2
    changed = np.isin(chart, chart[seeds[0::2]])
    chart[moved] = new_ids
    return chart, np.flatnonzero(changed)


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


def vertex_colors(colors_at, mesh: TriangleMesh, device="cpu") -> np.ndarray:
    """Per-vertex linear colours (n, 3) for `mesh` from `colors_at(points (q, 3)) -> (q, 3)`: the
    least-squares fit over the surface of colours interpolated linearly across each face (the L2
    projection onto the mesh's piecewise-linear functions), not the colours at the vertices alone.
    Where colour changes sharply inside a face (a material's edge) this is 1-2 dB closer to the
    source; where it is smooth, the same. Blender and the file formats interpolate vertex colours
    linearly, which is what this is optimal for."""
    device = torch.device(device)
    vertices = torch.as_tensor(mesh.vertices, dtype=torch.float64, device=device)
    faces = torch.as_tensor(mesh.faces, dtype=torch.int64, device=device)
    corners = vertices[faces]
    area = 0.5 * torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]).norm(dim=-1)
    rule = torch.as_tensor(QUADRATURE_POINTS, dtype=torch.float64, device=device)
    weight = torch.as_tensor(QUADRATURE_WEIGHTS, dtype=torch.float64, device=device)
    points = torch.einsum("qk,mkd->mqd", rule, corners).reshape(-1, 3)
    sampled = torch.as_tensor(np.asarray(colors_at(points.cpu().numpy()), dtype=np.float64), device=device)
    sampled = sampled.reshape(len(faces), len(rule), 3)
    # Right-hand side: the integral of each vertex's hat function times the colour.
    load = torch.einsum("m,q,qk,mqc->mkc", area, weight, rule, sampled)
    rhs = torch.zeros(len(vertices), 3, dtype=torch.float64, device=device).index_add_(
        0, faces.reshape(-1), load.reshape(-1, 3))
    # The mass matrix, never formed: a face adds area/12 * (1 + [i = j]) between its corners.
    diagonal = torch.zeros(len(vertices), dtype=torch.float64, device=device).index_add_(
        0, faces.reshape(-1), (area / 6.0).repeat_interleave(3)).clamp(min=1e-30)

    def mass(x):
        corner_values = x[faces]
        total = corner_values.sum(dim=1, keepdim=True)
        contribution = (area / 12.0)[:, None, None] * (corner_values + total)
        return torch.zeros_like(x).index_add_(0, faces.reshape(-1), contribution.reshape(-1, 3))

    # Conjugate gradients preconditioned by the diagonal, from the lumped-mass solution; the mass
    # matrix is well conditioned, so a few tens of iterations reach float32 precision.
    x = rhs / diagonal[:, None]
    residual = rhs - mass(x)
    z = residual / diagonal[:, None]
    direction = z.clone()
    rz = (residual * z).sum(dim=0)
    limit = 1e-12 * (rhs * rhs).sum(dim=0).clamp(min=1e-30)
    for _ in range(MASS_SOLVE_ITERATIONS):
        if bool(((residual * residual).sum(dim=0) <= limit).all()):
            break
        product = mass(direction)
        step = rz / (direction * product).sum(dim=0).clamp(min=1e-300)
        x = x + step * direction
        residual = residual - step * product
        z = residual / diagonal[:, None]
        rz_next = (residual * z).sum(dim=0)
        direction = z + (rz_next / rz.clamp(min=1e-300)) * direction
        rz = rz_next
    return x.clamp(0.0, 1.0).float().cpu().numpy()


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
