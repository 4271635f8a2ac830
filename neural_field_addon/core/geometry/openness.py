"""Whether a mesh encloses a volume or is an open sheet, measured: the choice behind a fit's
'auto' surface mode.

Across any triangle the generalized winding number jumps by one, so what tells a solid from a sheet
is not the jump but where it starts: on a closed surface the two sides sit at 1 (inside) and 0
(outside), decisively; beside an open sheet (a car body without a floor, a cloth, a wall) they sit
at w and w - 1 for some w between, the sheet's solid angle seen from there. A mesh is taken as a
solid when nearly all of its surface separates the two sides decisively, as a shell otherwise,
and as a flat sheet when it has no thickness at all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .mesh import TriangleMesh
from .query import MeshQuery
from .sampling import sample_surface_barycentric
from .sides import welded

# Surface points probed, and how far off the surface (relative to the bounding-box diagonal).
PROBES = 2048
PROBE_OFFSET = 1e-3
# A side is decisively inside above this winding number, decisively outside below 1 minus it.
DECISIVE_WINDING = 0.85
# Solid when at least this share of the surface separates inside from outside decisively.
SOLID_SHARE = 0.9
# Flat when the thinnest principal extent is below this share of the diagonal.
FLAT_EXTENT = 1e-4


@dataclass(frozen=True)
class SurfaceAnalysis:
    """The measured properties and the mode 'auto' takes from them, with the reason in words."""

    mode: str
    reason: str
    decisive_share: float  # share of the surface with one side decisively inside, the other outside
    boundary_ratio: float  # boundary length / sqrt(area): 0 for a closed mesh
    thinnest_extent: float  # the thinnest principal extent, relative to the diagonal

    def as_report(self) -> dict:
        return {f"surface_{key}" if key != "mode" else "surface": value for key, value in asdict(self).items()}


def analyse_surface(mesh: TriangleMesh, query: MeshQuery | None = None, seed: int = 0) -> SurfaceAnalysis:
    """Measure `mesh` and choose 'solid' or 'shell' for it (see the module's docstring)."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    diagonal = mesh.diagonal
    if not diagonal > 0:
        raise ValueError("the mesh has no extent: all its vertices are at one point")
    thinnest = _thinnest_extent(vertices) / diagonal
    areas, face_normals = mesh.face_areas_and_normals()
    boundary = welded(mesh).boundary_length() / np.sqrt(max(float(areas.sum()), 1e-300))
    if thinnest < FLAT_EXTENT:
        return SurfaceAnalysis("shell", "it is flat (it encloses no volume): a thin slab around it", 0.0, boundary,
                               thinnest)
    points, _, face, _ = sample_surface_barycentric(mesh, PROBES, np.random.default_rng(seed))
    offset = PROBE_OFFSET * diagonal * face_normals[face]
    query = query or MeshQuery(mesh)
    winding = query.distance_and_winding(np.concatenate([points + offset, points - offset]))[1].reshape(2, -1)
    high, low = winding.max(axis=0), winding.min(axis=0)
    decisive = float(np.mean((high > DECISIVE_WINDING) & (low < 1.0 - DECISIVE_WINDING)))
    if decisive >= SOLID_SHARE:
        return SurfaceAnalysis("solid", f"it encloses a volume: {decisive:.0%} of its surface has its inside on one "
                               "side and its outside on the other", decisive, boundary, thinnest)
    return SurfaceAnalysis("shell", f"it is an open sheet: only {decisive:.0%} of its surface has a decisive inside "
                           "and outside (a solid has at least 90%)", decisive, boundary, thinnest)


def _thinnest_extent(vertices: np.ndarray) -> float:
    """The extent of the vertices along their least principal direction."""
    centred = vertices - vertices.mean(axis=0)
    _, _, axes = np.linalg.svd(centred[:: max(1, len(centred) // 100_000)], full_matrices=False)
    along = centred @ axes[-1]
    return float(along.max() - along.min())
