"""The two sides of a sheet: a consistent orientation of its faces, and which side a point is on.

A sheet extraction (surface/sheet.py) needs, near the sheet, a sign that flips across it: the
unsigned distance alone has none, and its gradient, which flips too, is unreliable right at the
zero set, where a learned distance has its kink smoothed. The sign comes from the source instead:
its faces are oriented consistently (breadth first over the edges two faces share once
coincident vertices are welded, each connected part on its own), and a point's side is the sign
of its offset along its closest face's normal. That offset, not the distance signed by the side,
is what a side network learns: the signed distance jumps across the extension of a face past a
boundary edge (from +r to -r, r the distance to the edge), and a Fourier network's fit of that
jump rang over whole faces (holes three voxels wide in a flat top); the offset is the height over
the face's plane there, continuous, and zero on the extension, which the extraction trims.
"""

from __future__ import annotations

import numpy as np

from .mesh import TriangleMesh

# Vertices closer than this share of the diagonal are one for the orientation.
WELD_TOLERANCE = 1e-7


def _edge_keys(mesh: TriangleMesh) -> np.ndarray:
    """One int64 key per face edge (3m,), row i an edge of face i % m (as TriangleMesh.edges)."""
    edges = mesh.edges()
    return edges[:, 0] * np.int64(len(mesh.vertices)) + edges[:, 1]


def welded(mesh: TriangleMesh, tolerance: float = WELD_TOLERANCE) -> TriangleMesh:
    """The mesh with coincident vertices (within `tolerance` of the diagonal) made one, faces in
    the same order: modelled sheets are often split along their creases and seams."""
    step = tolerance * max(mesh.diagonal, 1e-300)
    keys = np.round(mesh.vertices / step).astype(np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return TriangleMesh(mesh.vertices[first], inverse.reshape(-1)[mesh.faces])


def orient_faces(mesh: TriangleMesh) -> tuple[TriangleMesh, int]:
    """The mesh welded (`welded`) with its faces flipped so that every edge two faces share is
    traversed in opposite directions by them, part by part; and the number of shared edges that
    still disagree (0 for an orientable sheet; a Moebius strip keeps one seam). Face order and
    positions are the source's, so its closest-face queries still apply."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import breadth_first_order, connected_components

    mesh = welded(mesh)
    faces = mesh.faces
    m = len(faces)
    starts = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])  # the directed edge's first vertex
    keys = _edge_keys(mesh)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    # Edges shared by exactly two faces (a key seen twice, not three times).
    run_start = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    run_length = np.diff(np.r_[run_start, len(keys)])
    pairs = run_start[run_length == 2]
    first, second = order[pairs], order[pairs + 1]
    face_a, face_b = first % m, second % m
    # Same direction in both faces: one of them must flip relative to the other.
    disagree = (starts[first] == starts[second]).astype(np.int8)
    graph = coo_matrix((disagree + 1, (face_a, face_b)), shape=(m, m)).tocsr()
    graph = graph + graph.T
    flips = [False] * m
    _, labels = connected_components(graph, directed=False)
    for root in np.unique(labels, return_index=True)[1]:
        visit, parent = breadth_first_order(graph, int(root), directed=False, return_predecessors=True)
        children = visit[1:]
        if not len(children):
            continue
        relative = np.asarray(graph[children, parent[children]]).ravel() == 2
        # Breadth-first order: a face's parent is settled before it.
        for child, parent_face, change in zip(children.tolist(), parent[children].tolist(), relative.tolist()):
            flips[child] = flips[parent_face] != change
    flip = np.asarray(flips, dtype=bool)
    oriented = faces.copy()
    oriented[flip] = oriented[flip][:, ::-1]
    seams = int(np.count_nonzero((disagree == 1) != (flip[face_a] != flip[face_b])))
    return TriangleMesh(mesh.vertices, oriented), seams


def normal_offsets(oriented: TriangleMesh, points: np.ndarray, closest: np.ndarray, face: np.ndarray) -> np.ndarray:
    """Each point's offset (q,) along the normal of its closest face of the oriented sheet, given
    its closest points (q, 3) and faces (q,): the signed distance where the closest point is
    inside a face, and continuous everywhere near the sheet, also past a boundary (there it is the
    height over the face's plane)."""
    _, normals = oriented.face_areas_and_normals()
    return np.einsum("ij,ij->i", points - closest, normals[face])
