"""Procedural meshes and exact signed distances: spheres, a hemisphere (open), a torus,
superquadrics, a chair of boxes, open sheets (a windowed box without a floor, a flat square, a cloth, a wall with a door), and
any implicit shape by marching cubes. For tests, benchmarks
and scripts that need shapes without files.

Meshes are (vertices (n, 3) float64, faces (m, 3) int64) tuples, ready for `TriangleMesh` or a
file; closed meshes have outward-oriented triangles (counter-clockwise seen from outside). Exact
SDFs are negative inside, in the meshes' units.
"""

from __future__ import annotations

import numpy as np

# ----------------------------------------------------------------------------- meshes


def icosphere(radius: float = 1.0, subdivisions: int = 3, center=(0.0, 0.0, 0.0)):
    """Closed, outward-oriented sphere: an icosahedron subdivided `subdivisions` times, every
    vertex projected onto the sphere (so the mesh is inscribed: faces lie just inside it)."""
    t = (1.0 + 5.0**0.5) / 2.0
    vertices = [
        (-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0),
        (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
        (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1),
    ]
    faces = [
        (0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11),
        (1, 5, 9), (5, 11, 4), (11, 10, 2), (10, 7, 6), (7, 1, 8),
        (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9),
        (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1),
    ]
    vertices = [np.asarray(v, dtype=np.float64) / np.linalg.norm(v) for v in vertices]
    for _ in range(subdivisions):
        midpoint_of = {}

        def midpoint(i, j):
            key = (min(i, j), max(i, j))
            if key not in midpoint_of:
                m = vertices[i] + vertices[j]
                vertices.append(m / np.linalg.norm(m))
                midpoint_of[key] = len(vertices) - 1
            return midpoint_of[key]

        finer = []
        for a, b, c in faces:
            ab, bc, ca = midpoint(a, b), midpoint(b, c), midpoint(c, a)
            finer += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = finer
    points = np.array(vertices) * radius + np.asarray(center, dtype=np.float64)
    return points, np.array(faces, dtype=np.int64)


def uv_sphere(radius: float = 1.0, rings: int = 24, segments: int = 48, upper_only: bool = False):
    """Latitude-longitude sphere, outward-oriented. With `upper_only` it stops at the equator,
    giving an open hemisphere (a bowl with one circular boundary)."""
    last_ring = rings // 2 if upper_only else rings - 1
    theta = np.pi * np.arange(1, last_ring + 1) / rings  # polar angle of each ring, from +z
    phi = 2.0 * np.pi * np.arange(segments) / segments
    ring_points = np.stack(
        [
            np.outer(np.sin(theta), np.cos(phi)),
            np.outer(np.sin(theta), np.sin(phi)),
            np.outer(np.cos(theta), np.ones_like(phi)),
        ],
        axis=-1,
    ).reshape(-1, 3)
    north = 0
    vertices = [np.array([[0.0, 0.0, 1.0]]), ring_points]
    ring_start = 1
    faces = []
    j = np.arange(segments)
    k = (j + 1) % segments
    # North cap: fan from the pole, counter-clockwise seen from above.
    faces.append(np.stack([np.full(segments, north), ring_start + j, ring_start + k], axis=1))
    for ring in range(last_ring - 1):
        top, bottom = ring_start + ring * segments, ring_start + (ring + 1) * segments
        faces.append(np.stack([top + j, bottom + j, bottom + k], axis=1))
        faces.append(np.stack([top + j, bottom + k, top + k], axis=1))
    if not upper_only:
        south = 1 + len(ring_points)
        vertices.append(np.array([[0.0, 0.0, -1.0]]))
        bottom = ring_start + (last_ring - 1) * segments
        faces.append(np.stack([np.full(segments, south), bottom + k, bottom + j], axis=1))
    return np.concatenate(vertices) * radius, np.concatenate(faces).astype(np.int64)


def hemisphere(radius: float = 1.0, rings: int = 24, segments: int = 48):
    """Open mesh: the upper half (z >= 0) of a UV sphere, outward-oriented, boundary at z = 0."""
    return uv_sphere(radius, rings, segments, upper_only=True)


def torus(major: float = 1.0, minor: float = 0.35, major_segments: int = 64, minor_segments: int = 32):
    """Closed, outward-oriented torus around the z axis: tube radius `minor`, centre circle
    radius `major`."""
    u = 2.0 * np.pi * np.arange(major_segments) / major_segments
    v = 2.0 * np.pi * np.arange(minor_segments) / minor_segments
    uu, vv = np.meshgrid(u, v, indexing="ij")
    ring = major + minor * np.cos(vv)
    vertices = np.stack([ring * np.cos(uu), ring * np.sin(uu), minor * np.sin(vv)], axis=-1)
    i, j = np.meshgrid(np.arange(major_segments), np.arange(minor_segments), indexing="ij")
    i2, j2 = (i + 1) % major_segments, (j + 1) % minor_segments

    def index(a, b):
        return (a * minor_segments + b).ravel()

    faces = np.concatenate(
        [
            np.stack([index(i, j), index(i2, j), index(i2, j2)], axis=1),
            np.stack([index(i, j), index(i2, j2), index(i, j2)], axis=1),
        ]
    )
    return vertices.reshape(-1, 3), faces.astype(np.int64)


def open_box(cells: int = 16, window: float = 0.5):
    """An open sheet like a car body: the sides and top of the cube [-1, 1]^3, no floor, and a
    window of `window` x half the height cut into the +x and +y sides. Faces are not welded across
    the cube's edges (each side is its own grid), as a modelled sheet often is not."""
    grid = np.linspace(-1.0, 1.0, cells + 1)
    u, v = np.meshgrid(grid, grid, indexing="ij")
    centre_u = (u[:-1, :-1] + u[1:, 1:]) / 2.0
    centre_v = (v[:-1, :-1] + v[1:, 1:]) / 2.0
    in_window = (np.abs(centre_u) < window / 2.0) & (centre_v > 0.0) & (centre_v < 0.5)
    sides = (
        (lambda a, b: (a, b, np.ones_like(a)), False),  # top
        (lambda a, b: (a, np.ones_like(a), b), True),  # +y, with a window
        (lambda a, b: (a, -np.ones_like(a), b), False),
        (lambda a, b: (np.ones_like(a), a, b), True),  # +x, with a window
        (lambda a, b: (-np.ones_like(a), a, b), False),
    )
    vertices, faces = [], []
    index = np.arange((cells + 1) ** 2).reshape(cells + 1, cells + 1)
    for place, windowed in sides:
        base = sum(len(part) for part in vertices)
        vertices.append(np.stack(place(u, v), axis=-1).reshape(-1, 3))
        a, b, c, d = index[:-1, :-1], index[1:, :-1], index[1:, 1:], index[:-1, 1:]
        keep = ~in_window if windowed else np.ones_like(in_window)
        quads = np.stack([a[keep], b[keep], c[keep], d[keep]], axis=-1) + base
        faces.append(np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]]))
    return np.concatenate(vertices).astype(np.float64), np.concatenate(faces).astype(np.int64)


def flat_sheet(cells: int = 8):
    """A flat square sheet, all z = 0: it encloses no volume."""
    grid = np.linspace(-1.0, 1.0, cells + 1)
    u, v = np.meshgrid(grid, grid, indexing="ij")
    vertices = np.stack([u, v, np.zeros_like(u)], axis=-1).reshape(-1, 3)
    index = np.arange((cells + 1) ** 2).reshape(cells + 1, cells + 1)
    quads = np.stack([index[:-1, :-1], index[1:, :-1], index[1:, 1:], index[:-1, 1:]], axis=-1).reshape(-1, 4)
    return vertices, np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]]).astype(np.int64)


def cloth(cells: int = 48, amplitude: float = 0.15):
    """A draped cloth: the square [-1, 1]^2 displaced in z by a few smooth folds; open all round."""
    vertices, faces = flat_sheet(cells)
    x, y = vertices[:, 0], vertices[:, 1]
    vertices[:, 2] = amplitude * (np.sin(2.5 * x + 0.5) * np.cos(1.5 * y) + 0.5 * np.sin(4.0 * y - x))
    return vertices, faces


def wall_with_door(cells: int = 32, door=(0.4, 1.2)):
    """A single-sided wall, the square [-1, 1]^2 in the x-z plane (y = 0), with a door of `door`
    (width, height) cut in from its bottom edge."""
    vertices, faces = flat_sheet(cells)
    centres = vertices[faces].mean(axis=1)
    keep = ~((np.abs(centres[:, 0]) < door[0] / 2) & (centres[:, 1] < -1.0 + door[1]))
    vertices = vertices[:, [0, 2, 1]]  # x, 0, z
    return vertices, faces[keep][:, [0, 2, 1]]


def implicit_mesh(inside, low, high, resolution: int = 64):
    """Closed, outward-oriented mesh of {inside(p) = 0} (negative inside) by marching cubes over
    the box [low, high], which must hold the shape with a margin."""
    from skimage.measure import marching_cubes

    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    axes = [np.linspace(low[i], high[i], resolution) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    values = np.asarray(inside(grid.reshape(-1, 3))).reshape(grid.shape[:3])
    vertices, faces, _, _ = marching_cubes(values, 0.0, spacing=tuple((high - low) / (resolution - 1)))
    vertices = vertices + low
    faces = faces.astype(np.int64)
    if signed_volume(vertices, faces) < 0:
        faces = faces[:, ::-1].copy()
    return vertices, faces


def superquadric(radii=(1.0, 1.0, 1.0), e1: float = 1.0, e2: float = 1.0, resolution: int = 64):
    """Barr's superquadric |x/a|^(2/e2) + |y/b|^(2/e2))^(e2/e1) + |z/c|^(2/e1) = 1: e1 shapes the
    profile along z, e2 the cross-section (1: round, towards 0: square, 2: diamond)."""
    radii = np.asarray(radii, dtype=np.float64)

    def inside(points):
        x, y, z = np.abs(points / radii).T
        value = (x ** (2.0 / e2) + y ** (2.0 / e2)) ** (e2 / e1) + z ** (2.0 / e1)
        return value ** (e1 / 2.0) - 1.0  # degree-1 homogeneous: a distance-like scale

    return implicit_mesh(inside, -1.2 * radii, 1.2 * radii, resolution)


def chair(seat_width: float = 1.0, seat_depth: float = 1.0, leg_height: float = 0.9, back_height: float = 1.0,
          thickness: float = 0.1, resolution: int = 80):
    """A simple chair from boxes (a seat, four legs and a back), one closed surface: the union
    of the boxes' distance fields, so no faces hide inside where boxes meet."""
    w, d, t = seat_width / 2.0, seat_depth / 2.0, thickness
    boxes = [((0.0, 0.0, leg_height + t / 2.0), (w, d, t / 2.0)),  # seat
             ((0.0, d - t / 2.0, leg_height + t + back_height / 2.0), (w, t / 2.0, back_height / 2.0))]  # back
    for x in (-w + t / 2.0, w - t / 2.0):
        for y in (-d + t / 2.0, d - t / 2.0):
            boxes.append(((x, y, leg_height / 2.0), (t / 2.0, t / 2.0, leg_height / 2.0)))

    def inside(points):
        return np.min([box_sdf(points, center, half) for center, half in boxes], axis=0)

    top = leg_height + t + back_height
    margin = 0.15
    return implicit_mesh(inside, (-w - margin, -d - margin, -margin), (w + margin, d + margin, top + margin),
                         resolution)


def signed_volume(vertices, faces) -> float:
    """Volume enclosed by a closed mesh by the divergence theorem; positive when outward."""
    tri = np.asarray(vertices)[np.asarray(faces)]
    return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0)


# ----------------------------------------------------------------------------- exact SDFs


def box_sdf(points, center, half) -> np.ndarray:
    """Exact signed distance to an axis-aligned box of half extents `half` around `center`."""
    q = np.abs(points - np.asarray(center)) - np.asarray(half)
    return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)


def sphere_sdf(points, radius: float = 1.0, center=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Exact signed distance to a sphere."""
    points = np.asarray(points, dtype=np.float64) - np.asarray(center, dtype=np.float64)
    return np.linalg.norm(points, axis=-1) - radius


def torus_sdf(points, major: float = 1.0, minor: float = 0.35) -> np.ndarray:
    """Exact signed distance to the torus of `torus(major, minor)` around the z axis (the smooth one,
    not its polygons)."""
    points = np.asarray(points, dtype=np.float64)
    ring = np.hypot(points[..., 0], points[..., 1]) - major
    return np.hypot(ring, points[..., 2]) - minor
