"""Triangle meshes as plain arrays, their validation and the normalisation into field space.

Object space is the source's own coordinates (Blender object/local space, or the file's). Field
space is object space translated and scaled so the mesh's bounding box is centred on the origin
and its longest side spans [-1, 1]; networks only ever see field-space points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TriangleMesh:
    """Vertices (n, 3) float64 and triangle indices (m, 3) int64, validated on construction."""

    vertices: np.ndarray
    faces: np.ndarray

    def __post_init__(self):
        vertices = np.asarray(self.vertices, dtype=np.float64)
        faces = np.asarray(self.faces)
        if faces.size == 0:
            raise ValueError("the mesh has no faces: a field needs a surface to fit")
        if vertices.ndim != 2 or vertices.shape[1] != 3:
            raise ValueError(f"vertices must have shape (n, 3), got {vertices.shape}")
        if faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(
                f"faces must be triangles with shape (m, 3), got {faces.shape}; "
                "triangulate polygons first"
            )
        if faces.size and not np.issubdtype(faces.dtype, np.integer):
            raise ValueError(f"face indices must be integers, got {faces.dtype}")
        faces = faces.astype(np.int64, copy=False)
        if not np.all(np.isfinite(vertices)):
            bad = int(np.count_nonzero(~np.all(np.isfinite(vertices), axis=1)))
            raise ValueError(f"the mesh has {bad} vertices with NaN or infinite coordinates")
        low, high = int(faces.min()), int(faces.max())
        if low < 0 or high >= len(vertices):
            raise ValueError(
                f"face indices must lie in [0, {len(vertices) - 1}], found {low}..{high}"
            )
        object.__setattr__(self, "vertices", vertices)
        object.__setattr__(self, "faces", faces)

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        used = self.vertices[np.unique(self.faces)]
        return used.min(axis=0), used.max(axis=0)

    @property
    def diagonal(self) -> float:
        low, high = self.bounds
        return float(np.linalg.norm(high - low))

    def triangles(self) -> np.ndarray:
        """Corner positions, (m, 3, 3)."""
        return self.vertices[self.faces]

    def edges(self) -> np.ndarray:
        """Every face's three edges as sorted vertex pairs (3m, 2): row i is an edge of face i % m."""
        return self.edges_of(self.faces)

    @staticmethod
    def edges_of(faces: np.ndarray) -> np.ndarray:
        """`edges` of a face array (m, 3)."""
        return np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)

    def boundary_edges(self) -> np.ndarray:
        """The edges (b, 2) that belong to one face only, as sorted vertex pairs."""
        unique, counts = np.unique(self.edges(), axis=0, return_counts=True)
        return unique[counts == 1]

    def boundary_length(self) -> float:
        """Total length of the boundary edges (0 for a closed mesh)."""
        lonely = self.boundary_edges()
        return float(np.linalg.norm(self.vertices[lonely[:, 0]] - self.vertices[lonely[:, 1]], axis=1).sum())

    def boundary_loops(self) -> int:
        """How many loops (connected sets of boundary edges) the boundary has."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        lonely = self.boundary_edges()
        if not len(lonely):
            return 0
        used, inverse = np.unique(lonely, return_inverse=True)
        inverse = inverse.reshape(lonely.shape)
        graph = coo_matrix((np.ones(len(lonely)), (inverse[:, 0], inverse[:, 1])), shape=(len(used), len(used)))
        return int(connected_components(graph, directed=False)[0])

    def face_areas_and_normals(self) -> tuple[np.ndarray, np.ndarray]:
        """Areas (m,) and unit normals (m, 3); degenerate faces get area 0 and normal 0."""
        tri = self.triangles()
        cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        norm = np.linalg.norm(cross, axis=1)
        normals = np.divide(cross, norm[:, None], out=np.zeros_like(cross), where=norm[:, None] > 0)
        return 0.5 * norm, normals

    def transformed(self, transform: "FieldTransform") -> "TriangleMesh":
        return TriangleMesh(transform.to_field(self.vertices), self.faces)


@dataclass(frozen=True)
class FieldTransform:
    """Similarity from object space to field space: field = (object - center) * scale."""

    center: np.ndarray
    scale: float

    @classmethod
    def fit_unit_box(cls, mesh: TriangleMesh) -> "FieldTransform":
        low, high = mesh.bounds
        half_extent = float(np.max(high - low)) / 2.0
        if not half_extent > 0.0:
            raise ValueError("the mesh is a single point: all its vertices coincide")
        return cls(center=(low + high) / 2.0, scale=1.0 / half_extent)

    def to_field(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, dtype=np.float64) - self.center) * self.scale

    def to_object(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, dtype=np.float64) / self.scale + self.center

    def as_dict(self) -> dict:
        return {"center": [float(c) for c in self.center], "scale": float(self.scale)}

    @classmethod
    def from_dict(cls, data: dict) -> "FieldTransform":
        return cls(center=np.asarray(data["center"], dtype=np.float64), scale=float(data["scale"]))
