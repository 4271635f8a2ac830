"""CPU queries on a `TriangleBVH`, compiled with Numba and run in parallel over packets of points.

Points are sorted along a Morton curve, and each packet of consecutive points (a small patch of
space) walks the tree together: a node's arithmetic runs over all lanes of the packet as SIMD
vectors, and its record is loaded once for all of them. Measured on the bunny (2 cores): 2.4x
the rate of walking one point at a time (docs/BENCHMARKS.md).
- Closest point: depth first with a small stack, the nearer child first, pruning a subtree once
  its box is no nearer than the best so far for every lane. At a leaf only the lanes that need
  it are tested (gathered into a dense run), with a branch-free form of Ericson's point-triangle
  test. Exact (float64).
- Winding number: the hierarchical evaluation of Barill et al. (2018): a node whose centroid is
  farther than `beta` times its radius contributes its far-field expansion (to second order);
  other nodes are opened, and leaves are summed exactly (Van Oosterom-Strackee solid angles).
  Larger `beta` is more accurate and slower; beta <= 0 gives the exact sum. In a packet each
  lane takes the far field at its own nodes; the walk opens a node while some lane needs it.
- Signed distance needs both: `distance_and_winding` runs the two walks per packet in one pass.
Compiled functions are cached on disk (numba's cache=True) so later processes skip compilation.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .bvh import TriangleBVH, morton_order

# Points per packet. LLVM vectorises lane loops of 16 or more (not 8). Measured on the bunny, one
# thread, 200k uniform points: the distance walk takes 1.50 us a point at 64 lanes (1.9 at 32,
# about 1.45 at 96-128); the winding walk 0.92 us at 16 lanes (0.95 at 32).
DISTANCE_LANES = 64
WINDING_LANES = 16  # DISTANCE_LANES must be a multiple of it (the signed kernel splits packets)
_VECTOR = 4  # a leaf's dense run of lanes is padded to a multiple of this (4 float64 per AVX2 op)
_STACK = 64  # deeper than any tree: depth is log2(triangles / 2)
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
def _triangle_closest(px, py, pz, vertices, faces, t):
    i, j, k = faces[t, 0], faces[t, 1], faces[t, 2]
    return _closest_on_triangle(
        px, py, pz,
        vertices[i, 0], vertices[i, 1], vertices[i, 2],
        vertices[j, 0], vertices[j, 1], vertices[j, 2],
        vertices[k, 0], vertices[k, 1], vertices[k, 2],
    )


@njit(cache=True, inline="always", fastmath=_FASTMATH, error_model="numpy")
def _box_distances2(px, py, pz, boxes, node, out):
    """Squared distance from each lane's point to a node's box."""
    lx, ly, lz = boxes[node, 0], boxes[node, 1], boxes[node, 2]
    hx, hy, hz = boxes[node, 3], boxes[node, 4], boxes[node, 5]
    for lane in range(DISTANCE_LANES):
        dx = max(lx - px[lane], 0.0, px[lane] - hx)
        dy = max(ly - py[lane], 0.0, py[lane] - hy)
        dz = max(lz - pz[lane], 0.0, pz[lane] - hz)
        out[lane] = dx * dx + dy * dy + dz * dz


@njit(cache=True, inline="always", fastmath=_FASTMATH, error_model="numpy")
def _leaf_distances2(px, py, pz, count, vertices, leaf_faces, first_slot, end_slot, best, best_slot):
    """The first `count` lanes against a leaf's triangles, keeping each lane's nearest. Ericson's region
    cascade (as in `_closest_on_triangle`) made branch-free so the lanes vectorise: all regions'
    barycentric coordinates are evaluated and the cascade's first match wins (regions applied in
    reverse order, so earlier ones overwrite later ones)."""
    for slot in range(first_slot, end_slot):
        i, j, k = leaf_faces[slot, 0], leaf_faces[slot, 1], leaf_faces[slot, 2]
        ax, ay, az = vertices[i, 0], vertices[i, 1], vertices[i, 2]
        abx, aby, abz = vertices[j, 0] - ax, vertices[j, 1] - ay, vertices[j, 2] - az
        acx, acy, acz = vertices[k, 0] - ax, vertices[k, 1] - ay, vertices[k, 2] - az
        ab_ab = _dot(abx, aby, abz, abx, aby, abz)
        ab_ac = _dot(abx, aby, abz, acx, acy, acz)
        ac_ac = _dot(acx, acy, acz, acx, acy, acz)
        for lane in range(count):
            apx, apy, apz = px[lane] - ax, py[lane] - ay, pz[lane] - az
            d1 = _dot(abx, aby, abz, apx, apy, apz)
            d2 = _dot(acx, acy, acz, apx, apy, apz)
            d3 = d1 - ab_ab  # the same products taken from b and c (Ericson's d3..d6)
            d4 = d2 - ab_ac
            d5 = d1 - ab_ac
            d6 = d2 - ac_ac
            va = d3 * d6 - d5 * d4
            vb = d5 * d2 - d1 * d6
            vc = d1 * d4 - d3 * d2
            denom = va + vb + vc
            # Each region's barycentric (v, w) as numerators over one denominator, so a lane
            # divides once (divisions dominated the test when each region divided).
            nv, nw, den = (vb, vc, denom) if denom != 0.0 else (0.0, 0.0, 1.0)  # interior
            e43 = d4 - d3
            e56 = d5 - d6
            if va <= 0.0 and e43 >= 0.0 and e56 >= 0.0:  # edge bc
                nv, nw, den = e56, e43, e43 + e56
            if vb <= 0.0 and d2 >= 0.0 and d6 <= 0.0:  # edge ac
                nv, nw, den = 0.0, d2, d2 - d6
            if d6 >= 0.0 and d5 <= d6:  # vertex c
                nv, nw, den = 0.0, 1.0, 1.0
            if vc <= 0.0 and d1 >= 0.0 and d3 <= 0.0:  # edge ab
                nv, nw, den = d1, 0.0, d1 - d3
            if d3 >= 0.0 and d4 <= d3:  # vertex b
                nv, nw, den = 1.0, 0.0, 1.0
            if d1 <= 0.0 and d2 <= 0.0:  # vertex a
                nv, nw, den = 0.0, 0.0, 1.0
            inverse = 1.0 / den
            v = nv * inverse
            w = nw * inverse
            qx = apx - v * abx - w * acx
            qy = apy - v * aby - w * acy
            qz = apz - v * abz - w * acz
            d = qx * qx + qy * qy + qz * qz
            nearer = d < best[lane]
            best[lane] = d if nearer else best[lane]
            best_slot[lane] = slot if nearer else best_slot[lane]


@njit(cache=True, inline="always", fastmath=_FASTMATH, error_model="numpy")
def _push(stack, stack_d2, top, node, d2):
    stack[top] = node
    for lane in range(DISTANCE_LANES):
        stack_d2[top, lane] = d2[lane]
    return top + 1


@njit(cache=True, inline="always", fastmath=_FASTMATH, error_model="numpy")
def _nearest_slots(px, py, pz, vertices, leaf_faces, leaf_start, first_leaf, boxes, walk):
    """Squared distance to the nearest triangle and its leaf slot for a packet of lanes, walked
    together: depth first, the child nearer on average first, skipping a subtree once its box is
    no nearer than the best so far for every lane. Each stack entry keeps its box distances, so
    a pop only compares them with the (smaller) best."""
    best, best_slot, stack, stack_d2, left_d2, right_d2, lanes, dx, dy, dz, dense_best, dense_slot = walk
    for lane in range(DISTANCE_LANES):
        best[lane] = np.inf
        best_slot[lane] = -1
        stack_d2[0, lane] = 0.0
    stack[0] = 0
    top = 1
    while top > 0:
        top -= 1
        node = stack[top]
        if node >= first_leaf:
            # Only the lanes that need this leaf (a third of them on average) are tested: they are
            # gathered into a dense run, padded by repeating the last to a whole number of
            # vectors, and their results scattered back.
            count = 0
            for lane in range(DISTANCE_LANES):
                if stack_d2[top, lane] < best[lane]:
                    lanes[count] = lane
                    count += 1
            if count == 0:
                continue
            padded = min(DISTANCE_LANES, (count + _VECTOR - 1) // _VECTOR * _VECTOR)
            for dense in range(padded):
                lane = lanes[min(dense, count - 1)]
                dx[dense], dy[dense], dz[dense] = px[lane], py[lane], pz[lane]
                dense_best[dense], dense_slot[dense] = best[lane], best_slot[lane]
            leaf = node - first_leaf
            _leaf_distances2(dx, dy, dz, padded, vertices, leaf_faces, leaf_start[leaf], leaf_start[leaf + 1],
                             dense_best, dense_slot)
            for dense in range(count):
                best[lanes[dense]], best_slot[lanes[dense]] = dense_best[dense], dense_slot[dense]
            continue
        needed = 0
        for lane in range(DISTANCE_LANES):
            needed += stack_d2[top, lane] < best[lane]
        if needed == 0:
            continue
        left = 2 * node + 1
        _box_distances2(px, py, pz, boxes, left, left_d2)
        _box_distances2(px, py, pz, boxes, left + 1, right_d2)
        left_needed = 0
        right_needed = 0
        left_sum = 0.0
        right_sum = 0.0
        for lane in range(DISTANCE_LANES):
            left_needed += left_d2[lane] < best[lane]
            right_needed += right_d2[lane] < best[lane]
            left_sum += left_d2[lane]
            right_sum += right_d2[lane]
        # Push the farther child first so the nearer one is visited next.
        if left_sum <= right_sum:
            if right_needed:
                top = _push(stack, stack_d2, top, left + 1, right_d2)
            if left_needed:
                top = _push(stack, stack_d2, top, left, left_d2)
        else:
            if left_needed:
                top = _push(stack, stack_d2, top, left, left_d2)
            if right_needed:
                top = _push(stack, stack_d2, top, left + 1, right_d2)


@njit(cache=True, inline="always", fastmath=_FASTMATH, error_model="numpy")
def _winding_numbers(px, py, pz, vertices, leaf_faces, leaf_start, first_leaf, expansion, beta, walk, total):
    """Hierarchical winding number of a packet of lanes, walked together in depth-first order:
    a lane takes a node's far field when the node is far from it, and the walk opens the node
    while some lane still needs it. `active[depth]` holds which lanes still need the node being
    visited at that depth (its ancestors were all opened for them); the walk is stackless, since
    in a perfect heap-ordered tree the next node after a subtree follows from the index alone."""
    active, opened = walk[0], walk[1]
    reach = beta * beta if beta > 0.0 else -1.0
    for lane in range(WINDING_LANES):
        total[lane] = 0.0
        active[0, lane] = 1.0
    node = 0
    depth = 0
    while True:
        # The record in locals: loads inside the lane loop would have to be repeated, since
        # stores to `total` might alias them.
        e = expansion[node]
        cx, cy, cz, radius2 = e[0], e[1], e[2], reach * e[3] * e[3] if reach > 0.0 else np.inf
        nx, ny, nz, trace = e[4], e[5], e[6], e[7]
        s00, s11, s22, s01, s02, s12 = e[8], e[9], e[10], e[11], e[12], e[13]
        opening = 0.0
        for lane in range(WINDING_LANES):
            rx = cx - px[lane]
            ry = cy - py[lane]
            rz = cz - pz[lane]
            d2 = rx * rx + ry * ry + rz * rz
            # Far field to second order: N.r/|r|^3 + tr(C)/|r|^3 - 3 r^T S r/|r|^5, with
            # r = center - q and S the symmetric part of C = sum a_t n_t (c_t - center)^T.
            inv = 1.0 / math.sqrt(d2)  # one root and one division per lane: they bound the walk's rate
            inv2 = inv * inv
            inv3 = inv2 * inv
            rsr = s00 * rx * rx + s11 * ry * ry + s22 * rz * rz + 2.0 * (s01 * rx * ry + s02 * rx * rz + s12 * ry * rz)
            far_field = (nx * rx + ny * ry + nz * rz + trace - 3.0 * rsr * inv2) * inv3
            far = d2 > radius2
            total[lane] += far_field if far and active[depth, lane] > 0.0 else 0.0
            opened[lane] = 0.0 if far else active[depth, lane]
            opening += opened[lane]
        descend = False
        if opening:
            if node >= first_leaf:
                leaf = node - first_leaf
                for lane in range(WINDING_LANES):
                    if opened[lane] > 0.0:
                        for slot in range(leaf_start[leaf], leaf_start[leaf + 1]):
                            total[lane] += _solid_angle(px[lane], py[lane], pz[lane], vertices, leaf_faces, slot)
            else:
                for lane in range(WINDING_LANES):
                    active[depth + 1, lane] = opened[lane]
                descend = True
        if descend:
            node = 2 * node + 1
            depth += 1
        else:
            # Next node after this subtree: climb while a right child (odd in 1-based heap
            # numbering), then step to the right sibling; climbing past the root ends the walk.
            k = node + 1
            while k & 1:
                k >>= 1
                depth -= 1
            if k == 0:
                break
            node = k
    for lane in range(WINDING_LANES):
        total[lane] /= _FOUR_PI


@njit(cache=True, inline="always")
def _load_packet(points, start, lanes, px, py, pz):
    """Lanes take consecutive points from `start`; past the end they repeat the last point."""
    n = points.shape[0]
    for lane in range(lanes):
        q = min(start + lane, n - 1)
        px[lane], py[lane], pz[lane] = points[q, 0], points[q, 1], points[q, 2]


@njit(cache=True, inline="always")
def _nearest_walk():
    """Per-thread scratch of `_nearest_slots`."""
    lanes = DISTANCE_LANES
    return (np.empty(lanes), np.empty(lanes, dtype=np.int64), np.empty(_STACK, dtype=np.int64),
            np.empty((_STACK, lanes)), np.empty(lanes), np.empty(lanes), np.empty(lanes, dtype=np.int64),
            np.empty(lanes), np.empty(lanes), np.empty(lanes), np.empty(lanes), np.empty(lanes, dtype=np.int64))


@njit(cache=True, inline="always")
def _winding_walk():
    """Per-thread scratch of `_winding_packet`: the walk's masks, then the lanes' points and sums."""
    lanes = WINDING_LANES
    return (np.empty((_STACK, lanes)), np.empty(lanes), np.empty(lanes), np.empty(lanes), np.empty(lanes),
            np.empty(lanes))


@njit(cache=True, inline="always", fastmath=_FASTMATH, error_model="numpy")
def _nearest_packet(points, start, vertices, leaf_faces, leaf_start, first_leaf, boxes):
    """The closest-point walk of the packet of points from `start`: each lane's squared distance
    to its nearest triangle and that triangle's leaf slot."""
    px, py, pz = np.empty(DISTANCE_LANES), np.empty(DISTANCE_LANES), np.empty(DISTANCE_LANES)
    walk = _nearest_walk()
    _load_packet(points, start, DISTANCE_LANES, px, py, pz)
    _nearest_slots(px, py, pz, vertices, leaf_faces, leaf_start, first_leaf, boxes, walk)
    return walk[0], walk[1]


@njit(cache=True, inline="always", fastmath=_FASTMATH, error_model="numpy")
def _winding_packet(points, start, vertices, leaf_faces, leaf_start, first_leaf, expansion, beta, walk, out):
    """Winding numbers of the packet of points from `start`, written to `out` at their indices."""
    px, py, pz, total = walk[2], walk[3], walk[4], walk[5]
    _load_packet(points, start, WINDING_LANES, px, py, pz)
    _winding_numbers(px, py, pz, vertices, leaf_faces, leaf_start, first_leaf, expansion, beta, walk, total)
    for q in range(start, min(points.shape[0], start + WINDING_LANES)):
        out[q] = total[q - start]


@njit(cache=True, parallel=True, fastmath=_FASTMATH, error_model="numpy")
def _closest_kernel(points, vertices, leaf_faces, order, leaf_start, first_leaf, boxes, out_distance, out_face, out_closest):
    n = points.shape[0]
    for packet in prange((n + DISTANCE_LANES - 1) // DISTANCE_LANES):
        start = packet * DISTANCE_LANES
        _, best_slot = _nearest_packet(points, start, vertices, leaf_faces, leaf_start, first_leaf, boxes)
        for q in range(start, min(n, start + DISTANCE_LANES)):
            slot = best_slot[q - start]
            x, y, z = points[q, 0], points[q, 1], points[q, 2]
            cx, cy, cz = _triangle_closest(x, y, z, vertices, leaf_faces, slot)
            out_distance[q] = math.sqrt((cx - x) ** 2 + (cy - y) ** 2 + (cz - z) ** 2)
            out_face[q] = order[slot]
            out_closest[q, 0], out_closest[q, 1], out_closest[q, 2] = cx, cy, cz


@njit(cache=True, parallel=True, fastmath=_FASTMATH, error_model="numpy")
def _winding_kernel(points, vertices, leaf_faces, leaf_start, first_leaf, expansion, beta, out):
    for packet in prange((points.shape[0] + WINDING_LANES - 1) // WINDING_LANES):
        _winding_packet(points, packet * WINDING_LANES, vertices, leaf_faces, leaf_start, first_leaf, expansion, beta,
                        _winding_walk(), out)


@njit(cache=True, parallel=True, fastmath=_FASTMATH, error_model="numpy")
def _signed_kernel(points, vertices, leaf_faces, leaf_start, first_leaf, boxes, expansion, beta,
                   out_distance, out_winding):
    """Distance and winding number of each point in one pass: one sort, one parallel loop, and
    the winding walks find the distance walk's points, nodes and triangles still in cache."""
    n = points.shape[0]
    for packet in prange((n + DISTANCE_LANES - 1) // DISTANCE_LANES):
        start = packet * DISTANCE_LANES
        best, _ = _nearest_packet(points, start, vertices, leaf_faces, leaf_start, first_leaf, boxes)
        for q in range(start, min(n, start + DISTANCE_LANES)):
            out_distance[q] = math.sqrt(best[q - start])
        walk = _winding_walk()
        for part in range(start, min(n, start + DISTANCE_LANES), WINDING_LANES):
            _winding_packet(points, part, vertices, leaf_faces, leaf_start, first_leaf, expansion, beta, walk,
                            out_winding)


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
                        bvh.expansion, float(beta), out)
    return _unsorted(out, order)


def distance_and_winding(bvh: TriangleBVH, points: np.ndarray, beta: float = 2.0):
    """Exact distance (q,) and hierarchical winding number (q,) of each point, in one pass."""
    sorted_points, order = _sorted(bvh, points)
    distance = np.empty(len(points))
    winding = np.empty(len(points))
    if len(points):
        _signed_kernel(sorted_points, bvh.vertices, bvh.leaf_faces, bvh.leaf_start, bvh.first_leaf,
                       bvh.boxes, bvh.expansion, float(beta), distance, winding)
    return _unsorted(distance, order), _unsorted(winding, order)
