"""Sheet extraction: the single-layer open surface inside a shell field, with its boundary loops.

A shell field f is an unsigned distance u less half the thickness; the sheet is u's zero set, where
u has no sign change for marching cubes to find, and where a learned u's gradient (which flips
across the sheet) is least reliable, its kink smoothed. The side network (fields/sides.py) holds
the sign instead: near the sheet, s = side * u changes sign across the sheet and nowhere else
but across the extension of the sheet past its boundary, where u is the distance to the boundary.

1. Marching cubes on s, through the adaptive extraction (extraction.py), with s = +u wherever u
   is more than BAND_VOXELS voxels: the side means nothing far from the sheet. Its zero set is
   the sheet, the sheet's extension past its boundary, and the band's far side.
2. Coarse trim: everything farther than COARSE_TRIM_VOXELS from the sheet (by u, and by the side
   network's offset, which knows the far side best) is cut away, along a line interpolated
   inside the faces (clip_below), so cuts are lines, not staircases of faces.
3. Projection: each vertex moves along its normal to the minimum of u, found from u's two values
   at +-a: for a distance |s - s0| along the normal, s0 = (u(-a) - u(+a)) / 2 whatever the smoothing
   at its bottom, so the vertices lie on the sheet, not where the linear interpolation of a
   kinked function put them.
4. Boundary trim: past a boundary by r, u is sqrt(r^2 + floor^2), the floor being what a learned
   distance keeps at the sheet (a low quantile of u around each vertex). The extension is cut
   where r reaches TRIM_VOXELS; only patches that run on to the band's edge count as extension,
   so noise inside the sheet opens no holes.
5. Clean-up: the boundary loops smoothed (their length would otherwise count the trim's
   ripples), the boundary cut back by OFFSET_VOXELS (the trim leaves it that far past the
   source's: measured), crumbs of the cuts dropped, pinholes filled, one more projection.
Marching cubes on a signed function orients the faces consistently: they face the front side.
"""

from __future__ import annotations

import numpy as np
import torch

from ..geometry import TriangleMesh
from .extraction import EmptySurfaceError, ExtractionReport, extract_isosurface, grid_axes

# The side decides the sign within this many voxels of the sheet.
BAND_VOXELS = 3.0
# The sheet ends where its reach (how far past the sheet's boundary, along it) is this share of a
# voxel; first everything farther than COARSE_TRIM_VOXELS from the sheet goes.
TRIM_VOXELS = 0.35
COARSE_TRIM_VOXELS = 1.25
# Projection steps along the normal, as shares of a voxel (one coarse, one fine).
PROJECTION_STEPS = (1.0, 0.5)
# The floor of the learned distance at the sheet, per vertex: this quantile of its neighbours'.
FLOOR_NEIGHBOURS = 64
FLOOR_QUANTILE = 0.1
# Parts of less area than a square this many voxels a side are crumbs of the trim (its cut through
# the band's far side or an extension where the learned distance is noisy): dropped.
FLOATER_VOXELS = 4.0
# Boundary loops shorter than this many voxels are pinholes (where the learned distance's floor
# rose past the trim, at a crease of an undertrained field): filled. An opening of the source
# narrower than about two voxels is below what the resolution shows anyway.
HOLE_VOXELS = 12.0
# The trimmed boundary lies this many voxels past the source's (measured on the GPU: the trim's
# threshold and the rounding of the learned distance at an edge): it is cut back by as much.
OFFSET_VOXELS = 0.65
# Smoothing passes over the boundary loops.
BOUNDARY_SMOOTHING = 8
# A Lipschitz bound for the classification: s is a distance up to its sign.
SHEET_LIPSCHITZ = 1.5


class SheetError(ValueError):
    """The field has no sheet to extract."""


class _SignedSheet:
    """A BoxField whose values are side * u near the sheet and u elsewhere (field units)."""

    kind = "sdf"

    def __init__(self, field, half_thickness: float, band: float):
        self.field, self.half_thickness, self.band = field, half_thickness, band
        self.transform, self.box_low, self.box_high = field.transform, field.box_low, field.box_high

    @property
    def device(self) -> torch.device:
        return self.field.device

    def distance(self, points: torch.Tensor, chunk: int = 1 << 18) -> torch.Tensor:
        """u (field units) at field-space points: the shell field plus half its thickness, at least 0."""
        return (self.field.evaluate_field_space(points, chunk=chunk) + self.half_thickness).clamp_(min=0.0)

    def evaluate_field_space(self, points: torch.Tensor, chunk: int = 1 << 18) -> torch.Tensor:
        u = self.distance(points, chunk)
        front = self.field.side_field_space(points, chunk=chunk) > 0
        return torch.where((u < self.band) & ~front, -u, u)


def half_thickness_of(field) -> float:
    """A shell field's half thickness in field units (its report keeps the thickness in object units)."""
    thickness = field.report.get("thickness")
    if field.report.get("surface") != "shell" or not isinstance(thickness, (int, float)):
        raise SheetError("this field is not a shell, so it has no sheet: fit the open mesh with surface 'shell' "
                         "or 'auto', or extract the solid without --sheet")
    return 0.5 * float(thickness) * field.transform.scale


def extract_sheet(field, resolution: int = 256, *, workers: int | None = None, progress=None,
                  report: ExtractionReport | None = None) -> TriangleMesh:
    """The sheet of a shell field (a NeuralField with a side network) as an open, consistently
    oriented triangle mesh in object coordinates (see the module's docstring)."""
    half = half_thickness_of(field)
    if not field.has_sides:
        raise SheetError("this shell field was fitted before sheets could be extracted (it has no side network): "
                         "fit it again to extract its sheet")
    _, h = grid_axes(field.box_low, field.box_high, resolution)
    signed = _SignedSheet(field, half, BAND_VOXELS * h)
    stage = (lambda done: progress(0.85 * done)) if progress else None
    try:
        marched = extract_isosurface(signed, resolution, 0.0, lipschitz=SHEET_LIPSCHITZ, workers=workers,
                                     progress=stage, report=report)
    except EmptySurfaceError as error:
        raise SheetError(f"the field has no sheet inside its box ({error})") from error
    transform = field.transform
    vertices, faces = transform.to_field(marched.vertices), marched.faces
    # What bounds the band (its far side, BAND_VOXELS off the sheet) goes before the projection,
    # which would pull it onto the sheet as a second layer: the side network's offset tells it
    # best (the learned distance is least exact away from the sheet).
    offset = np.abs(_side(signed, vertices))
    vertices, faces = clip_below(vertices, faces, np.maximum(_distance(signed, vertices), offset)
                                 - COARSE_TRIM_VOXELS * h)
    if len(faces) == 0:
        raise SheetError("the field has no sheet: nothing it extracts lies on the zero set of its distance")
    vertices, faces = _drop_unused(vertices, faces)
    for step in PROJECTION_STEPS:
        vertices = _project(signed, vertices, faces, step * h)
    # How far past the sheet's boundary each vertex is: its distance is sqrt(r^2 + floor^2), the
    # floor being what the learned distance keeps at the sheet (its kink smoothed: up to half a
    # voxel of a Compact field), read as a low quantile of the distances around it.
    bottom = _distance(signed, vertices)
    floor = _local_floor(vertices, bottom)
    reach = np.sqrt(np.maximum(bottom**2 - floor**2, 0.0)) - TRIM_VOXELS * h
    vertices, faces = clip_below(vertices, faces, np.where(_past_boundary(faces, reach > 0.0), reach, -1.0))
    if len(faces) == 0:
        raise SheetError("the field has no sheet: nothing it extracts lies on the zero set of its distance")
    vertices, faces = _drop_unused(vertices, faces)
    vertices = smooth_boundary(vertices, faces, BOUNDARY_SMOOTHING)
    vertices, faces = offset_boundary(vertices, faces, OFFSET_VOXELS * h)
    vertices, faces = drop_small_parts(vertices, faces, (FLOATER_VOXELS * h) ** 2)
    vertices, faces = fill_small_holes(vertices, faces, HOLE_VOXELS * h)
    vertices = _project(signed, vertices, faces, PROJECTION_STEPS[-1] * h)
    if progress:
        progress(1.0)
    return TriangleMesh(transform.to_object(vertices), faces)


def _distance(signed: _SignedSheet, points: np.ndarray) -> np.ndarray:
    tensor = torch.as_tensor(points, dtype=torch.float32, device=signed.device)
    return signed.distance(tensor).double().cpu().numpy()


def _side(signed: _SignedSheet, points: np.ndarray) -> np.ndarray:
    tensor = torch.as_tensor(points, dtype=torch.float32, device=signed.device)
    return signed.field.side_field_space(tensor).double().cpu().numpy()


def _project(signed: _SignedSheet, vertices: np.ndarray, faces: np.ndarray, step: float) -> np.ndarray:
    """Vertices moved along their normals to the minimum of u, by at most `step` (module
    docstring, step 3)."""
    normals = vertex_normals(vertices, faces)
    values = _distance(signed, np.concatenate([vertices - step * normals, vertices + step * normals]))
    behind, ahead = values[: len(vertices)], values[len(vertices) :]
    shift = np.clip(0.5 * (behind - ahead), -step, step)
    return vertices + shift[:, None] * normals


def _past_boundary(faces: np.ndarray, beyond: np.ndarray) -> np.ndarray:
    """The vertices of `beyond` that are past the sheet's boundary: those of its connected patches
    that reach the band's own edge. A boundary's extension always runs on to that edge (it ends
    only where the coarse trim cut it); a patch inside the sheet where the distance's noise
    lifted the reach is surrounded by sheet, and is kept."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    count = len(beyond)
    unique, _, multiplicity = unique_edges(TriangleMesh.edges_of(faces), count)
    edge_of_band = np.zeros(count, dtype=bool)
    edge_of_band[unique[multiplicity == 1].reshape(-1)] = True
    inner = unique[beyond[unique[:, 0]] & beyond[unique[:, 1]]]
    graph = coo_matrix((np.ones(len(inner)), (inner[:, 0], inner[:, 1])), shape=(count, count))
    _, labels = connected_components(graph, directed=False)
    reaching = np.zeros(labels.max() + 1, dtype=bool)
    reaching[labels[beyond & edge_of_band]] = True
    return beyond & reaching[labels]


def _local_floor(vertices: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per vertex, the FLOOR_QUANTILE of the values at its FLOOR_NEIGHBOURS nearest vertices: low
    enough that the vertices past a boundary nearby (at most about half of them) do not raise it."""
    from scipy.spatial import cKDTree

    count = min(FLOOR_NEIGHBOURS, len(vertices))
    _, neighbours = cKDTree(vertices).query(vertices, k=count, workers=-1)
    return np.quantile(values[neighbours.reshape(len(vertices), count)], FLOOR_QUANTILE, axis=1)


def drop_small_parts(vertices: np.ndarray, faces: np.ndarray, smallest: float) -> tuple[np.ndarray, np.ndarray]:
    """The mesh without its connected parts of less area than `smallest` (unused vertices
    dropped too)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    vertices, faces = _drop_unused(vertices, faces)
    edges = TriangleMesh.edges_of(faces)
    count = len(vertices)
    parts, label = connected_components(coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])),
                                                   shape=(count, count)), directed=False)
    tri = vertices[faces]
    areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    part_area = np.bincount(label[faces[:, 0]], weights=areas, minlength=parts)
    return _drop_unused(vertices, faces[part_area[label[faces[:, 0]]] >= smallest])


def boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """The simple boundary loops of a triangle mesh, each as its vertices in the order its faces
    traverse them; loops through a vertex where two loops touch are left out."""
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    count = int(faces.max()) + 1
    pairs, inverse, counts = unique_edges(np.sort(directed, axis=1), count)
    lonely = directed[counts[inverse] == 1]
    if not len(lonely):
        return []
    outgoing = np.bincount(lonely[:, 0], minlength=count)
    following = np.full(count, -1, dtype=np.int64)
    following[lonely[:, 0]] = lonely[:, 1]
    seen = np.zeros(count, dtype=bool)
    loops = []
    for start in lonely[:, 0].tolist():
        if seen[start]:
            continue
        loop, vertex, simple = [], start, True
        while not seen[vertex]:
            seen[vertex] = True
            loop.append(vertex)
            simple &= outgoing[vertex] == 1
            vertex = int(following[vertex])
            if vertex < 0:
                simple = False
                break
        if simple and vertex == start and len(loop) >= 3:
            loops.append(np.asarray(loop))
    return loops


def fill_small_holes(vertices: np.ndarray, faces: np.ndarray, longest: float) -> tuple[np.ndarray, np.ndarray]:
    """Boundary loops shorter than `longest` closed by a fan around their centre, wound as the faces
    around them are (a loop runs a -> b along its faces, so the fan's triangles run b -> a)."""
    fans, centres = [], []
    for loop in boundary_loops(faces):
        ring = vertices[loop]
        if np.linalg.norm(ring - np.roll(ring, -1, axis=0), axis=1).sum() >= longest:
            continue
        centre = len(vertices) + len(centres)
        centres.append(ring.mean(axis=0))
        fans.append(np.stack([np.roll(loop, -1), loop, np.full(len(loop), centre)], axis=1))
    if not fans:
        return vertices, faces
    return np.concatenate([vertices, np.asarray(centres)]), np.concatenate([faces, *fans])


def smooth_boundary(vertices: np.ndarray, faces: np.ndarray, iterations: int) -> np.ndarray:
    """Vertices with those on boundary loops moved halfway to the mean of their two loop
    neighbours, `iterations` times: the trim's line follows noise in the distance a tenth of a
    voxel deep, which a boundary's length would otherwise count."""
    unique, _, counts = unique_edges(TriangleMesh.edges_of(faces), len(vertices))
    boundary = unique[counts == 1]
    if not len(boundary):
        return vertices
    ends = boundary.reshape(-1)
    degree = np.bincount(ends, minlength=len(vertices))
    simple = degree == 2  # vertices with one loop through them
    keep = simple[boundary[:, 0]] & simple[boundary[:, 1]]
    boundary = boundary[keep]
    vertices = vertices.copy()
    for _ in range(iterations):
        total = np.zeros_like(vertices)
        np.add.at(total, boundary[:, 0], vertices[boundary[:, 1]])
        np.add.at(total, boundary[:, 1], vertices[boundary[:, 0]])
        count = np.bincount(boundary.reshape(-1), minlength=len(vertices))
        moving = count == 2
        vertices[moving] = 0.5 * vertices[moving] + 0.25 * total[moving]
    return vertices


def offset_boundary(vertices: np.ndarray, faces: np.ndarray, distance: float) -> tuple[np.ndarray, np.ndarray]:
    """The mesh cut back along its boundary by `distance` (a clip along the line that far from the
    boundary, which is smooth where the boundary is): the trim leaves the boundary that far past
    the source's, by its threshold and by the learned distance's rounding at an edge."""
    from scipy.spatial import cKDTree

    boundary = TriangleMesh.edges_of(faces)
    pairs, _, counts = unique_edges(boundary, len(vertices))
    lonely = pairs[counts == 1]
    if not len(lonely) or distance <= 0.0:
        return vertices, faces
    start, end = vertices[lonely[:, 0]], vertices[lonely[:, 1]]
    # Points along the boundary a quarter of the distance apart, each edge cut into its own count.
    pieces = np.maximum(1, np.ceil(np.linalg.norm(end - start, axis=1) / (0.25 * distance)).astype(np.int64))
    edge = np.repeat(np.arange(len(lonely)), pieces + 1)
    first = np.repeat(np.cumsum(pieces + 1) - (pieces + 1), pieces + 1)
    t = ((np.arange(len(edge)) - first) / pieces[edge])[:, None]
    samples = start[edge] + t * (end[edge] - start[edge])
    near, _ = cKDTree(samples).query(vertices, workers=-1)
    return _drop_unused(*clip_below(vertices, faces, distance - near))


def sheet_normals(mesh: TriangleMesh) -> np.ndarray:
    """A sheet's vertex normals (q, 3), from its faces (which face the front side)."""
    return vertex_normals(mesh.vertices, mesh.faces)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals of a triangle mesh (0 where a vertex has no area)."""
    tri = vertices[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = np.zeros_like(vertices)
    for corner in range(3):
        np.add.at(normals, faces[:, corner], cross)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.divide(normals, length, out=np.zeros_like(normals), where=length > 0)


def clip_below(vertices: np.ndarray, faces: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The part of a triangle mesh where the per-vertex `values`, interpolated linearly, are below
    zero: faces wholly below kept, faces wholly above dropped, the rest cut along the zero line
    (a new vertex per cut edge, shared by the faces on both sides, so the result stays welded)."""
    below = values < 0.0
    count = below[faces].sum(axis=1)
    kept = [faces[count == 3]]
    mixed = faces[(count == 1) | (count == 2)]
    if not len(mixed):
        return vertices, kept[0]
    # Rotate each mixed face so its odd corner (the one alone on its side) comes first.
    odd_is_below = below[mixed].sum(axis=1) == 1
    lone = np.where(odd_is_below[:, None], below[mixed], ~below[mixed])
    shift = np.argmax(lone, axis=1)
    rotated = np.take_along_axis(mixed, (shift[:, None] + np.arange(3)[None]) % 3, axis=1)
    a, b, c = rotated[:, 0], rotated[:, 1], rotated[:, 2]
    edges = np.sort(np.concatenate([np.stack([a, b], axis=1), np.stack([a, c], axis=1)]), axis=1)
    unique, inverse, _ = unique_edges(edges, len(vertices))
    v0, v1 = values[unique[:, 0]], values[unique[:, 1]]
    t = v0 / (v0 - v1)
    cut = vertices[unique[:, 0]] + t[:, None] * (vertices[unique[:, 1]] - vertices[unique[:, 0]])
    first = len(vertices)
    ab, ac = first + inverse[: len(mixed)], first + inverse[len(mixed) :]
    # Odd corner below: the triangle (a, ab, ac). Odd corner above: the quad (ab, b, c, ac).
    lone_below = odd_is_below
    kept.append(np.stack([a, ab, ac], axis=1)[lone_below])
    quad = ~lone_below
    kept.append(np.stack([ab[quad], b[quad], c[quad]], axis=1))
    kept.append(np.stack([ab[quad], c[quad], ac[quad]], axis=1))
    return np.concatenate([vertices, cut]), np.concatenate(kept)


def unique_edges(edges: np.ndarray, vertex_count: int):
    """Unique rows of sorted vertex pairs (e, 2), the inverse map and the counts, through 1-D keys
    (np.unique along an axis sorts rows, several times slower)."""
    keys = edges[:, 0].astype(np.int64) * np.int64(vertex_count) + edges[:, 1]
    unique, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    pairs = np.stack([unique // vertex_count, unique % vertex_count], axis=1)
    return pairs, inverse.reshape(-1), counts


def _drop_unused(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    used, inverse = np.unique(faces, return_inverse=True)
    return vertices[used], inverse.reshape(faces.shape)
