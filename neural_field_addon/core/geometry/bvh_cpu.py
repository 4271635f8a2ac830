"""CPU queries on a `TriangleBVH`, compiled with Numba and run in parallel over the points.

- Closest point: depth-first with a small stack, nearer child first, pruning boxes farther than
  the best distance so far. Exact (float64).
- Winding number: the hierarchical evaluation of Barill et al. (2018): a node whose centroid is
  farther than `beta` times its radius contributes its far-field expansion (to second order);
  other nodes are opened, and leaves are summed exactly (Van Oosterom-Strackee solid angles).
  Larger `beta` is more accurate and slower; beta <= 0 gives the exact sum.
- Signed distance needs both: `distance_and_winding` runs the two walks per point in one pass.
Compiled functions are cached on disk (numba's cache=True) so later processes skip compilation.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .bvh import TriangleBVH, morton_order

_CHUNK = 256
_STACK = 64
_FOUR_PI = 4.0 * math.pi
# LLVM's fast-math rewrites that keep results within rounding (reassociation, contraction into
# FMA, reciprocals); not 'nnan'/'ninf', since the walks start from an infinite best distance.
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


@njit(cache=True, inline="always")
def _dot(ax, ay, az, bx, by, bz):
    return ax * bx + ay * by + az * bz


@njit(cache=True, inline="always")
def _closest_on_triangle(px, py, pz, ax, ay, az, bx, by, bz, cx, cy, cz):
    """Ericson, Real-Time Collision Detection 5.1.5; returns the closest point."""
    abx, aby, abz = bx - ax, by - ay, bz - az
    acx, acy, acz = cx - ax, cy - ay, cz - az
    apx, apy, apz = px - ax, py - ay, pz - az
    d1 = _dot(abx, aby, abz, apx, apy, apz)
    d2 = _dot(acx, acy, acz, apx, apy, apz)
    if d1 <= 0.0 and d2 <= 0.0:
        return ax, ay, az
    bpx, bpy, bpz = px - bx, py - by, pz - bz
    d3 = _dot(abx, aby, abz, bpx, bpy, bpz)
    d4 = _dot(acx, acy, acz, bpx, bpy, bpz)
    if d3 >= 0.0 and d4 <= d3:
        return bx, by, bz
    vc = d1 * d4 - d3 * d2
    if vc <= 0.0 and d1 >= 0.0 and d3 <= 0.0:
        v = d1 / (d1 - d3)
        return ax + v * abx, ay + v * aby, az + v * abz
    cpx, cpy, cpz = px - cx, py - cy, pz - cz
    d5 = _dot(abx, aby, abz, cpx, cpy, cpz)
    d6 = _dot(acx, acy, acz, cpx, cpy, cpz)
    if d6 >= 0.0 and d5 <= d6:
        return cx, cy, cz
    vb = d5 * d2 - d1 * d6
    if vb <= 0.0 and d2 >= 0.0 and d6 <= 0.0:
        w = d2 / (d2 - d6)
        return ax + w * acx, ay + w * acy, az + w * acz
    va = d3 * d6 - d5 * d4
    if va <= 0.0 and (d4 - d3) >= 0.0 and (d5 - d6) >= 0.0:
        w = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        return bx + w * (cx - bx), by + w * (cy - by), bz + w * (cz - bz)
    denom = va + vb + vc
    if denom == 0.0:  # degenerate triangle whose edges all failed by rounding: use a vertex
        return ax, ay, az
    v = vb / denom
    w = vc / denom
    return ax + abx * v + acx * w, ay + aby * v + acy * w, az + abz * v + acz * w


@njit(cache=True, inline="always")
def _solid_angle(px, py, pz, vertices, faces, t):
    i, j, k = faces[t, 0], faces[t, 1], faces[t, 2]
    ax = vertices[i, 0] - px
    ay = vertices[i, 1] - py
    az = vertices[i, 2] - pz
    bx = vertices[j, 0] - px
    by = vertices[j, 1] - py
    bz = vertices[j, 2] - pz
    cx = vertices[k, 0] - px
    cy = vertices[k, 1] - py
    cz = vertices[k, 2] - pz
    la = math.sqrt(ax * ax + ay * ay + az * az)
    lb = math.sqrt(bx * bx + by * by + bz * bz)
    lc = math.sqrt(cx * cx + cy * cy + cz * cz)
    det = ax * (by * cz - bz * cy) - ay * (bx * cz - bz * cx) + az * (bx * cy - by * cx)
    den = la * lb * lc + _dot(ax, ay, az, bx, by, bz) * lc + _dot(bx, by, bz, cx, cy, cz) * la + _dot(cx, cy, cz, ax, ay, az) * lb
    return 2.0 * math.atan2(det, den)


@njit(cache=True, inline="always", fastmath=_FASTMATH, error_model="numpy")
def _box_distance2(px, py, pz, boxes, node):
    dx = max(boxes[node, 0] - px, 0.0, px - boxes[node, 3])
    dy = max(boxes[node, 1] - py, 0.0, py - boxes[node, 4])
    dz = max(boxes[node, 2] - pz, 0.0, pz - boxes[node, 5])
    return dx * dx + dy * dy + dz * dz


@njit(cache=True, inline="always", fastmath=_FASTMATH, error_model="numpy")
def _triangle_closest(px, py, pz, vertices, faces, t):
    i, j, k = faces[t, 0], faces[t, 1], faces[t, 2]
    return _closest_on_triangle(
        px, py, pz,
        vertices[i, 0], vertices[i, 1], vertices[i, 2],
        vertices[j, 0], vertices[j, 1], vertices[j, 2],
        vertices[k, 0], vertices[k, 1], vertices[k, 2],
    )


@njit(cache=True, inline="always", fastmath=_FASTMATH, error_model="numpy")
def _nearest_slot(px, py, pz, vertices, leaf_faces, leaf_start, first_leaf, boxes, stack, stack_d2):
    """Squared distance to the nearest triangle and its leaf slot: depth first, nearer child first,
    pruning subtrees whose box is no nearer than the best so far. Each stack entry keeps the box
    distance computed when it was pushed, so a pop only compares it with the (smaller) best."""
    best = np.inf
    best_slot = -1
    stack[0] = 0
    stack_d2[0] = 0.0
    top = 1
    while top > 0:
        top -= 1
        node = stack[top]
        if stack_d2[top] >= best:
            continue
        if node >= first_leaf:
            leaf = node - first_leaf
            for slot in range(leaf_start[leaf], leaf_start[leaf + 1]):
                cx, cy, cz = _triangle_closest(px, py, pz, vertices, leaf_faces, slot)
                d2 = (cx - px) ** 2 + (cy - py) ** 2 + (cz - pz) ** 2
                if d2 < best:
                    best, best_slot = d2, slot
        else:
            left = 2 * node + 1
            dl = _box_distance2(px, py, pz, boxes, left)
            dr = _box_distance2(px, py, pz, boxes, left + 1)
            # Push the farther child first so the nearer one is visited next.
            near, far, d_near, d_far = (left, left + 1, dl, dr) if dl <= dr else (left + 1, left, dr, dl)
            if d_far < best:
                stack[top] = far
                stack_d2[top] = d_far
                top += 1
            if d_near < best:
                stack[top] = near
                stack_d2[top] = d_near
                top += 1
    return best, best_slot


@njit(cache=True, inline="always", fastmath=_FASTMATH, error_model="numpy")
def _winding_at(px, py, pz, vertices, leaf_faces, leaf_start, first_leaf, expansion, escape, beta):
    """Hierarchical winding number at one point: a stackless walk over the escape table."""
    total = 0.0
    node = 0
    reach = beta * beta if beta > 0.0 else -1.0
    while node >= 0:
        e = expansion[node]
        rx = e[0] - px
        ry = e[1] - py
        rz = e[2] - pz
        d2 = rx * rx + ry * ry + rz * rz
        if d2 > reach * e[3] * e[3] and reach > 0.0:
            # Far field to second order: N.r/|r|^3 + tr(C)/|r|^3 - 3 r^T S r/|r|^5, with
            # r = center - q and S the symmetric part of C = sum a_t n_t (c_t - center)^T.
            inv3 = 1.0 / (d2 * math.sqrt(d2))
            rsr = (e[8] * rx * rx + e[9] * ry * ry + e[10] * rz * rz
                   + 2.0 * (e[11] * rx * ry + e[12] * rx * rz + e[13] * ry * rz))
            dipole = e[4] * rx + e[5] * ry + e[6] * rz
            total += (dipole + e[7]) * inv3 - 3.0 * rsr * inv3 / d2
            node = escape[node]
        elif node >= first_leaf:
            leaf = node - first_leaf
            for slot in range(leaf_start[leaf], leaf_start[leaf + 1]):
                total += _solid_angle(px, py, pz, vertices, leaf_faces, slot)
            node = escape[node]
        else:
            node = 2 * node + 1
    return total / _FOUR_PI


@njit(cache=True, parallel=True, fastmath=_FASTMATH, error_model="numpy")
def _closest_kernel(points, vertices, leaf_faces, order, leaf_start, first_leaf, boxes, out_distance, out_face, out_closest):
    n = points.shape[0]
    for chunk in prange((n + _CHUNK - 1) // _CHUNK):
        stack = np.empty(_STACK, dtype=np.int64)
        stack_d2 = np.empty(_STACK, dtype=np.float64)
        for q in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            px, py, pz = points[q, 0], points[q, 1], points[q, 2]
            _, slot = _nearest_slot(px, py, pz, vertices, leaf_faces, leaf_start, first_leaf, boxes, stack, stack_d2)
            cx, cy, cz = _triangle_closest(px, py, pz, vertices, leaf_faces, slot)
            out_distance[q] = math.sqrt((cx - px) ** 2 + (cy - py) ** 2 + (cz - pz) ** 2)
            out_face[q] = order[slot]
            out_closest[q, 0], out_closest[q, 1], out_closest[q, 2] = cx, cy, cz


@njit(cache=True, parallel=True, fastmath=_FASTMATH, error_model="numpy")
def _winding_kernel(points, vertices, leaf_faces, leaf_start, first_leaf, expansion, escape, beta, out):
    for q in prange(points.shape[0]):
        out[q] = _winding_at(points[q, 0], points[q, 1], points[q, 2], vertices, leaf_faces, leaf_start,
                             first_leaf, expansion, escape, beta)


@njit(cache=True, parallel=True, fastmath=_FASTMATH, error_model="numpy")
def _signed_kernel(points, vertices, leaf_faces, leaf_start, first_leaf, boxes, expansion, escape, beta,
                   out_distance, out_winding):
    """Distance and winding number of each point in one pass: one sort, one parallel loop, and
    the second walk finds the first one's nodes and triangles still in cache."""
    n = points.shape[0]
    for chunk in prange((n + _CHUNK - 1) // _CHUNK):
        stack = np.empty(_STACK, dtype=np.int64)
        stack_d2 = np.empty(_STACK, dtype=np.float64)
        for q in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            px, py, pz = points[q, 0], points[q, 1], points[q, 2]
            d2, _ = _nearest_slot(px, py, pz, vertices, leaf_faces, leaf_start, first_leaf, boxes, stack, stack_d2)
            out_distance[q] = math.sqrt(d2)
            out_winding[q] = _winding_at(px, py, pz, vertices, leaf_faces, leaf_start, first_leaf, expansion,
                                         escape, beta)


def _sorted(bvh: TriangleBVH, points: np.ndarray):
    """Points in Morton order over the tree's box (and the order): neighbouring queries then
    walk the same nodes while they are in cache (measured 1.6x on the bunny)."""
    points = np.ascontiguousarray(points, dtype=np.float64)
    order = morton_order(points, bvh.box_lo[0], bvh.box_hi[0])
    return np.ascontiguousarray(points[order]), order


def _unsorted(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    out = np.empty_like(values)
    out[order] = values
    return out


def closest_points(bvh: TriangleBVH, points: np.ndarray):
    """Exact (distance (q,), closest point (q, 3), original face index (q,)) in float64."""
    sorted_points, order = _sorted(bvh, points)
    distance = np.empty(len(points))
    face = np.empty(len(points), dtype=np.int64)
    closest = np.empty((len(points), 3))
    if len(points):
        _closest_kernel(sorted_points, bvh.vertices, bvh.leaf_faces, bvh.order, bvh.leaf_start, bvh.first_leaf,
                        bvh.boxes, distance, face, closest)
    return _unsorted(distance, order), _unsorted(closest, order), _unsorted(face, order)


def winding_number(bvh: TriangleBVH, points: np.ndarray, beta: float = 2.0) -> np.ndarray:
    sorted_points, order = _sorted(bvh, points)
    out = np.empty(len(points))
    if len(points):
        _winding_kernel(sorted_points, bvh.vertices, bvh.leaf_faces, bvh.leaf_start, bvh.first_leaf,
                        bvh.expansion, bvh.escape, float(beta), out)
    return _unsorted(out, order)


def distance_and_winding(bvh: TriangleBVH, points: np.ndarray, beta: float = 2.0):
    """Exact distance (q,) and hierarchical winding number (q,) of each point, in one pass."""
    sorted_points, order = _sorted(bvh, points)
    distance = np.empty(len(points))
    winding = np.empty(len(points))
    if len(points):
        _signed_kernel(sorted_points, bvh.vertices, bvh.leaf_faces, bvh.leaf_start, bvh.first_leaf,
                       bvh.boxes, bvh.expansion, bvh.escape, float(beta), distance, winding)
    return _unsorted(distance, order), _unsorted(winding, order)
