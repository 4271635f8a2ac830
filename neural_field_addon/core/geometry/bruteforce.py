"""Exact point-to-mesh queries by brute force in PyTorch: every point against every triangle.

This is the reference the accelerated paths are tested against, and the path used on CUDA and
wherever no accelerated backend is installed. Work is split into chunks of points so memory
stays bounded (about `pairs_per_chunk` point-triangle pairs alive at once).
"""

from __future__ import annotations

import math

import torch


def closest_point_on_triangles(p, a, b, c):
    """Closest point to p on each triangle (a, b, c); all arguments broadcast, last dim 3.

    Region classification after Ericson, Real-Time Collision Detection, 5.1.5. Degenerate
    triangles fall into an edge or vertex region and so still give an exact answer.
    """
    ab, ac, ap = b - a, c - a, p - a
    d1 = (ab * ap).sum(-1)
    d2 = (ac * ap).sum(-1)
    bp = p - b
    d3 = (ab * bp).sum(-1)
    d4 = (ac * bp).sum(-1)
    cp = p - c
    d5 = (ab * cp).sum(-1)
    d6 = (ac * cp).sum(-1)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2

    def ratio(num, den):
        return num / torch.where(den == 0, torch.ones_like(den), den)

    denom = va + vb + vc
    v_face = ratio(vb, denom)
    w_face = ratio(vc, denom)
    result = a + ab * v_face[..., None] + ac * w_face[..., None]
    # Later assignments take priority, so edges and vertices are applied last-wins in
    # reverse order of Ericson's early exits.
    w_bc = ratio(d4 - d3, (d4 - d3) + (d5 - d6))
    on_bc = (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0)
    result = torch.where(on_bc[..., None], b + (c - b) * w_bc[..., None], result)
    w_ac = ratio(d2, d2 - d6)
    on_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
    result = torch.where(on_ac[..., None], a + ac * w_ac[..., None], result)
    v_ab = ratio(d1, d1 - d3)
    on_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
    result = torch.where(on_ab[..., None], a + ab * v_ab[..., None], result)
    on_c = (d6 >= 0) & (d5 <= d6)
    result = torch.where(on_c[..., None], c.expand_as(result), result)
    on_b = (d3 >= 0) & (d4 <= d3)
    result = torch.where(on_b[..., None], b.expand_as(result), result)
    on_a = (d1 <= 0) & (d2 <= 0)
    result = torch.where(on_a[..., None], a.expand_as(result), result)
    return result


def _chunks(num_points: int, num_faces: int, pairs_per_chunk: int):
    step = max(1, pairs_per_chunk // max(1, num_faces))
    for start in range(0, num_points, step):
        yield slice(start, min(num_points, start + step))


def closest_points(vertices, faces, points, pairs_per_chunk: int = 1 << 22):
    """Exact unsigned distance, closest point and closest face for each point.

    vertices (n, 3), faces (m, 3) long, points (q, 3), all torch tensors on one device.
    Returns (distance (q,), closest (q, 3), face (q,) long).
    """
    tri = vertices[faces]
    a, b, c = tri[None, :, 0], tri[None, :, 1], tri[None, :, 2]
    distance = torch.empty(len(points), dtype=points.dtype, device=points.device)
    closest = torch.empty_like(points)
    face = torch.empty(len(points), dtype=torch.long, device=points.device)
    for chunk in _chunks(len(points), len(faces), pairs_per_chunk):
        p = points[chunk, None, :]
        candidate = closest_point_on_triangles(p, a, b, c)
        sq = ((candidate - p) ** 2).sum(-1)
        best_sq, best = sq.min(dim=1)
        distance[chunk] = best_sq.sqrt()
        face[chunk] = best
        closest[chunk] = candidate[torch.arange(len(best), device=best.device), best]
    return distance, closest, face


def winding_number(vertices, faces, points, pairs_per_chunk: int = 1 << 22):
    """Exact generalized winding number (Jacobson et al. 2013): sum of signed solid angles / 4 pi.

    Solid angles by Van Oosterom and Strackee's formula. About 1 inside a closed, outward
    oriented surface, 0 outside, and a smooth value in between near holes of open meshes.
    """
    tri = vertices[faces]
    result = torch.empty(len(points), dtype=points.dtype, device=points.device)
    # Each pair holds nine coordinates here, so take a quarter of the pairs per chunk.
    for chunk in _chunks(len(points), len(faces), pairs_per_chunk // 4):
        rel = tri[None] - points[chunk, None, None, :]  # (q, m, 3 corners, 3)
        a, b, c = rel[..., 0, :], rel[..., 1, :], rel[..., 2, :]
        la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
        det = (a * torch.cross(b, c, dim=-1)).sum(-1)
        den = (
            la * lb * lc
            + (a * b).sum(-1) * lc
            + (b * c).sum(-1) * la
            + (c * a).sum(-1) * lb
        )
        result[chunk] = torch.atan2(det, den).sum(dim=1) * (2.0 / (4.0 * math.pi))
    return result
