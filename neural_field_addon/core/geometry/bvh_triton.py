"""BVH queries as Triton kernels for CUDA: one lane per point, each walking the tree with the
stackless escape table of bvh.py (bvh_torch.py is the same walk in plain PyTorch, and the
reference these kernels are tested against). float32 throughout.

A program handles BLOCK points and loops until all its lanes have finished their walks; lanes
that are done are masked. Each iteration is one unit of work per lane (a node, or one triangle
of a leaf), so lanes at leaves and lanes at inner nodes stay in step.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from .bvh import morton_order_tensor
from .bvh_torch import DeviceBVH


@triton.jit
def _closest_on_triangle(px, py, pz, ax, ay, az, bx, by, bz, cx, cy, cz):
    """Branch-free Ericson closest point (all lanes compute every region, then select)."""
    abx = bx - ax
    aby = by - ay
    abz = bz - az
    acx = cx - ax
    acy = cy - ay
    acz = cz - az
    apx = px - ax
    apy = py - ay
    apz = pz - az
    d1 = abx * apx + aby * apy + abz * apz
    d2 = acx * apx + acy * apy + acz * apz
    bpx = px - bx
    bpy = py - by
    bpz = pz - bz
    d3 = abx * bpx + aby * bpy + abz * bpz
    d4 = acx * bpx + acy * bpy + acz * bpz
    cpx = px - cx
    cpy = py - cy
    cpz = pz - cz
    d5 = abx * cpx + aby * cpy + abz * cpz
    d6 = acx * cpx + acy * cpy + acz * cpz
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    denom = va + vb + vc
    denom = tl.where(denom == 0.0, 1.0, denom)
    v = vb / denom
    w = vc / denom
    qx = ax + abx * v + acx * w
    qy = ay + aby * v + acy * w
    qz = az + abz * v + acz * w
    # Edge BC
    den_bc = (d4 - d3) + (d5 - d6)
    w_bc = (d4 - d3) / tl.where(den_bc == 0.0, 1.0, den_bc)
    on = (va <= 0.0) & (d4 - d3 >= 0.0) & (d5 - d6 >= 0.0)
    qx = tl.where(on, bx + (cx - bx) * w_bc, qx)
    qy = tl.where(on, by + (cy - by) * w_bc, qy)
    qz = tl.where(on, bz + (cz - bz) * w_bc, qz)
    # Edge AC
    den_ac = d2 - d6
    w_ac = d2 / tl.where(den_ac == 0.0, 1.0, den_ac)
    on = (vb <= 0.0) & (d2 >= 0.0) & (d6 <= 0.0)
    qx = tl.where(on, ax + acx * w_ac, qx)
    qy = tl.where(on, ay + acy * w_ac, qy)
    qz = tl.where(on, az + acz * w_ac, qz)
    # Edge AB
    den_ab = d1 - d3
    v_ab = d1 / tl.where(den_ab == 0.0, 1.0, den_ab)
    on = (vc <= 0.0) & (d1 >= 0.0) & (d3 <= 0.0)
    qx = tl.where(on, ax + abx * v_ab, qx)
    qy = tl.where(on, ay + aby * v_ab, qy)
    qz = tl.where(on, az + abz * v_ab, qz)
    # Vertices
    on = (d6 >= 0.0) & (d5 <= d6)
    qx = tl.where(on, cx, qx)
    qy = tl.where(on, cy, qy)
    qz = tl.where(on, cz, qz)
    on = (d3 >= 0.0) & (d4 <= d3)
    qx = tl.where(on, bx, qx)
    qy = tl.where(on, by, qy)
    qz = tl.where(on, bz, qz)
    on = (d1 <= 0.0) & (d2 <= 0.0)
    qx = tl.where(on, ax, qx)
    qy = tl.where(on, ay, qy)
    qz = tl.where(on, az, qz)
    return qx, qy, qz


@triton.jit
def _box_distance2(px, py, pz, lo_ptr, hi_ptr, node, mask):
    lx = tl.load(lo_ptr + node * 3 + 0, mask=mask, other=0.0)
    ly = tl.load(lo_ptr + node * 3 + 1, mask=mask, other=0.0)
    lz = tl.load(lo_ptr + node * 3 + 2, mask=mask, other=0.0)
    hx = tl.load(hi_ptr + node * 3 + 0, mask=mask, other=0.0)
    hy = tl.load(hi_ptr + node * 3 + 1, mask=mask, other=0.0)
    hz = tl.load(hi_ptr + node * 3 + 2, mask=mask, other=0.0)
    dx = tl.maximum(tl.maximum(lx - px, px - hx), 0.0)
    dy = tl.maximum(tl.maximum(ly - py, py - hy), 0.0)
    dz = tl.maximum(tl.maximum(lz - pz, pz - hz), 0.0)
    return dx * dx + dy * dy + dz * dz


@triton.jit
def _vertex(vert_ptr, index, axis, mask):
    return tl.load(vert_ptr + index * 3 + axis, mask=mask, other=0.0)


@triton.jit
def _test_triangle(px, py, pz, slot, valid, best, best_face, bx, by, bz, vert_ptr, face_ptr, order_ptr):
    """Closest point on the triangle in leaf slot `slot`; keeps it where it beats `best`."""
    t = tl.load(order_ptr + slot, mask=valid, other=0)
    i = tl.load(face_ptr + t * 3 + 0, mask=valid, other=0)
    j = tl.load(face_ptr + t * 3 + 1, mask=valid, other=0)
    l = tl.load(face_ptr + t * 3 + 2, mask=valid, other=0)
    qx, qy, qz = _closest_on_triangle(
        px, py, pz,
        _vertex(vert_ptr, i, 0, valid), _vertex(vert_ptr, i, 1, valid), _vertex(vert_ptr, i, 2, valid),
        _vertex(vert_ptr, j, 0, valid), _vertex(vert_ptr, j, 1, valid), _vertex(vert_ptr, j, 2, valid),
        _vertex(vert_ptr, l, 0, valid), _vertex(vert_ptr, l, 1, valid), _vertex(vert_ptr, l, 2, valid),
    )
    d2 = (qx - px) * (qx - px) + (qy - py) * (qy - py) + (qz - pz) * (qz - pz)
    better = valid & (d2 < best)
    best = tl.where(better, d2, best)
    best_face = tl.where(better, t, best_face)
    bx = tl.where(better, qx, bx)
    by = tl.where(better, qy, by)
    bz = tl.where(better, qz, bz)
    return best, best_face, bx, by, bz


@triton.jit
def _test_leaf(px, py, pz, leaf, mask, best, best_face, bx, by, bz,
               vert_ptr, face_ptr, order_ptr, leaf_start_ptr, MAX_LEAF: tl.constexpr):
    start = tl.load(leaf_start_ptr + leaf, mask=mask, other=0)
    end = tl.load(leaf_start_ptr + leaf + 1, mask=mask, other=0)
    for k in tl.static_range(MAX_LEAF):
        best, best_face, bx, by, bz = _test_triangle(
            px, py, pz, start + k, mask & (start + k < end), best, best_face, bx, by, bz,
            vert_ptr, face_ptr, order_ptr,
        )
    return best, best_face, bx, by, bz


# Sizes vary per call: no specialisation on them, so one compiled kernel serves every call.
@triton.jit(do_not_specialize=["count", "first_leaf", "depth"])
def _closest_kernel(points_ptr, count, vert_ptr, face_ptr, order_ptr, leaf_start_ptr, lo_ptr, hi_ptr,
                    escape_ptr, first_leaf, depth, out_d2_ptr, out_face_ptr, out_point_ptr,
                    MAX_LEAF: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    lane = offs < count
    px = tl.load(points_ptr + offs * 3 + 0, mask=lane, other=0.0)
    py = tl.load(points_ptr + offs * 3 + 1, mask=lane, other=0.0)
    pz = tl.load(points_ptr + offs * 3 + 2, mask=lane, other=0.0)
    best = tl.full((BLOCK,), float("inf"), tl.float32)
    best_face = tl.full((BLOCK,), -1, tl.int32)
    bx = tl.zeros((BLOCK,), tl.float32)
    by = tl.zeros((BLOCK,), tl.float32)
    bz = tl.zeros((BLOCK,), tl.float32)

    # Greedy descent to a first leaf for a tight starting bound.
    node = tl.zeros((BLOCK,), tl.int32)
    for _ in range(depth):
        left = 2 * node + 1
        dl = _box_distance2(px, py, pz, lo_ptr, hi_ptr, left, lane)
        dr = _box_distance2(px, py, pz, lo_ptr, hi_ptr, left + 1, lane)
        node = tl.where(dr < dl, left + 1, left)
    best, best_face, bx, by, bz = _test_leaf(px, py, pz, node - first_leaf, lane, best, best_face, bx, by, bz,
                                             vert_ptr, face_ptr, order_ptr, leaf_start_ptr, MAX_LEAF)

    # The walk advances one unit of work per iteration: a node test, or one triangle of the
    # leaf a lane is in (slot < slot_end), so lanes at leaves and at inner nodes cost the same.
    node = tl.zeros((BLOCK,), tl.int32)
    slot = tl.zeros((BLOCK,), tl.int32)
    slot_end = tl.zeros((BLOCK,), tl.int32)
    active = lane
    while tl.max(active.to(tl.int32), axis=0) > 0:
        in_leaf = active & (slot < slot_end)
        best, best_face, bx, by, bz = _test_triangle(
            px, py, pz, slot, in_leaf, best, best_face, bx, by, bz, vert_ptr, face_ptr, order_ptr
        )
        slot = tl.where(in_leaf, slot + 1, slot)

        at_node = active & (~in_leaf)
        visit = at_node & (_box_distance2(px, py, pz, lo_ptr, hi_ptr, node, at_node) < best)
        leaf = node >= first_leaf
        enter = visit & leaf
        slot = tl.where(enter, tl.load(leaf_start_ptr + node - first_leaf, mask=enter, other=0), slot)
        slot_end = tl.where(enter, tl.load(leaf_start_ptr + node - first_leaf + 1, mask=enter, other=0), slot_end)
        # Leave a node (or a finished leaf) through its escape link; open an inner node.
        leaving = (at_node & ~visit) | (in_leaf & (slot >= slot_end))
        escape = tl.load(escape_ptr + node, mask=leaving, other=-1)
        node = tl.where(visit & (~leaf), 2 * node + 1, tl.where(leaving, escape, node))
        active = active & (node >= 0)
        node = tl.where(active, node, 0)

    tl.store(out_d2_ptr + offs, best, mask=lane)
    tl.store(out_face_ptr + offs, best_face, mask=lane)
    tl.store(out_point_ptr + offs * 3 + 0, bx, mask=lane)
    tl.store(out_point_ptr + offs * 3 + 1, by, mask=lane)
    tl.store(out_point_ptr + offs * 3 + 2, bz, mask=lane)


@triton.jit
def _solid_angle(px, py, pz, vert_ptr, i, j, l, mask):
    ax = _vertex(vert_ptr, i, 0, mask) - px
    ay = _vertex(vert_ptr, i, 1, mask) - py
    az = _vertex(vert_ptr, i, 2, mask) - pz
    bx = _vertex(vert_ptr, j, 0, mask) - px
    by = _vertex(vert_ptr, j, 1, mask) - py
    bz = _vertex(vert_ptr, j, 2, mask) - pz
    cx = _vertex(vert_ptr, l, 0, mask) - px
    cy = _vertex(vert_ptr, l, 1, mask) - py
    cz = _vertex(vert_ptr, l, 2, mask) - pz
    la = tl.sqrt(ax * ax + ay * ay + az * az)
    lb = tl.sqrt(bx * bx + by * by + bz * bz)
    lc = tl.sqrt(cx * cx + cy * cy + cz * cz)
    det = ax * (by * cz - bz * cy) - ay * (bx * cz - bz * cx) + az * (bx * cy - by * cx)
    den = la * lb * lc + (ax * bx + ay * by + az * bz) * lc + (bx * cx + by * cy + bz * cz) * la \
        + (cx * ax + cy * ay + cz * az) * lb
    return 2.0 * _atan2(det, den)


@triton.jit
def _atan2(y, x):
    return libdevice.atan2(y, x)


@triton.jit(do_not_specialize=["count", "first_leaf", "beta"])
def _winding_kernel(points_ptr, count, vert_ptr, face_ptr, order_ptr, leaf_start_ptr, center_ptr,
                    normal_ptr, moment_ptr, radius_ptr, escape_ptr, first_leaf, beta, out_ptr,
                    BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    lane = offs < count
    px = tl.load(points_ptr + offs * 3 + 0, mask=lane, other=0.0)
    py = tl.load(points_ptr + offs * 3 + 1, mask=lane, other=0.0)
    pz = tl.load(points_ptr + offs * 3 + 2, mask=lane, other=0.0)
    total = tl.zeros((BLOCK,), tl.float32)
    node = tl.zeros((BLOCK,), tl.int32)
    slot = tl.zeros((BLOCK,), tl.int32)
    slot_end = tl.zeros((BLOCK,), tl.int32)
    active = lane
    while tl.max(active.to(tl.int32), axis=0) > 0:
        # One triangle of the current leaf (exact solid angle) ...
        in_leaf = active & (slot < slot_end)
        t = tl.load(order_ptr + slot, mask=in_leaf, other=0)
        i = tl.load(face_ptr + t * 3 + 0, mask=in_leaf, other=0)
        j = tl.load(face_ptr + t * 3 + 1, mask=in_leaf, other=0)
        l = tl.load(face_ptr + t * 3 + 2, mask=in_leaf, other=0)
        total += tl.where(in_leaf, _solid_angle(px, py, pz, vert_ptr, i, j, l, in_leaf), 0.0)
        slot = tl.where(in_leaf, slot + 1, slot)

        # ... or one node: its far-field expansion, or opening it.
        at_node = active & (~in_leaf)
        rx = tl.load(center_ptr + node * 3 + 0, mask=at_node, other=0.0) - px
        ry = tl.load(center_ptr + node * 3 + 1, mask=at_node, other=0.0) - py
        rz = tl.load(center_ptr + node * 3 + 2, mask=at_node, other=0.0) - pz
        radius = tl.load(radius_ptr + node, mask=at_node, other=0.0)
        d2 = rx * rx + ry * ry + rz * rz
        far = at_node & (beta > 0.0) & (d2 > (beta * radius) * (beta * radius))
        # Second-order far field (see bvh_cpu.py).
        d2s = tl.where(far, d2, 1.0)
        inv3 = 1.0 / (d2s * tl.sqrt(d2s))
        m = moment_ptr + node * 9
        c00 = tl.load(m + 0, mask=far, other=0.0)
        c01 = tl.load(m + 1, mask=far, other=0.0)
        c02 = tl.load(m + 2, mask=far, other=0.0)
        c10 = tl.load(m + 3, mask=far, other=0.0)
        c11 = tl.load(m + 4, mask=far, other=0.0)
        c12 = tl.load(m + 5, mask=far, other=0.0)
        c20 = tl.load(m + 6, mask=far, other=0.0)
        c21 = tl.load(m + 7, mask=far, other=0.0)
        c22 = tl.load(m + 8, mask=far, other=0.0)
        rcr = rx * (c00 * rx + c01 * ry + c02 * rz) + ry * (c10 * rx + c11 * ry + c12 * rz) \
            + rz * (c20 * rx + c21 * ry + c22 * rz)
        nx = tl.load(normal_ptr + node * 3 + 0, mask=far, other=0.0)
        ny = tl.load(normal_ptr + node * 3 + 1, mask=far, other=0.0)
        nz = tl.load(normal_ptr + node * 3 + 2, mask=far, other=0.0)
        expansion = (nx * rx + ny * ry + nz * rz + c00 + c11 + c22) * inv3 - 3.0 * rcr * inv3 / d2s
        total += tl.where(far, expansion, 0.0)

        leaf = node >= first_leaf
        enter = at_node & (~far) & leaf
        slot = tl.where(enter, tl.load(leaf_start_ptr + node - first_leaf, mask=enter, other=0), slot)
        slot_end = tl.where(enter, tl.load(leaf_start_ptr + node - first_leaf + 1, mask=enter, other=0), slot_end)
        leaving = far | (in_leaf & (slot >= slot_end))
        escape = tl.load(escape_ptr + node, mask=leaving, other=-1)
        node = tl.where(at_node & (~far) & (~leaf), 2 * node + 1, tl.where(leaving, escape, node))
        active = active & (node >= 0)
        node = tl.where(active, node, 0)
    tl.store(out_ptr + offs, total * (1.0 / (4.0 * math.pi)), mask=lane)


class TritonBVH(DeviceBVH):
    """A DeviceBVH on CUDA (float32) whose queries run as Triton kernels."""

    def __init__(self, bvh, device="cuda", block: int = 32, num_warps: int = 1, sort_points: bool = True):
        super().__init__(bvh, device, torch.float32)
        self.escape32 = self.escape.to(torch.int32)
        # A fixed bound (8 for default trees) rather than this mesh's largest leaf, so the
        # compiled kernels are reused across meshes instead of recompiled (10-20 s each).
        self.kernel_leaf = max(8, 1 << (self.max_leaf - 1).bit_length())
        self.block, self.num_warps, self.sort_points = block, num_warps, sort_points
        self.low = self.box_lo[0]
        self.high = self.box_hi[0]

    def _grid(self, count):
        return (triton.cdiv(count, self.block),)

    def _prepare(self, points):
        points = points.to(device=self.device, dtype=torch.float32).contiguous()
        if not self.sort_points or len(points) < 2 * self.block:
            return points, None
        order = morton_order_tensor(points, self.low, self.high)
        return points[order].contiguous(), order

    @staticmethod
    def _unsort(values, order):
        if order is None:
            return values
        out = torch.empty_like(values)
        out[order] = values
        return out

    @torch.no_grad()
    def closest_points(self, points: torch.Tensor):
        points, order = self._prepare(points)
        count = len(points)
        d2 = torch.empty(count, dtype=torch.float32, device=self.device)
        face = torch.empty(count, dtype=torch.int32, device=self.device)
        closest = torch.empty_like(points)
        if count:
            _closest_kernel[self._grid(count)](
                points, count, self.vertices, self.faces, self.order, self.leaf_start, self.box_lo,
                self.box_hi, self.escape32, self.first_leaf, self.depth, d2, face, closest,
                MAX_LEAF=self.kernel_leaf, BLOCK=self.block, num_warps=self.num_warps,
            )
        return self._unsort(d2.sqrt(), order), self._unsort(closest, order), self._unsort(face.long(), order)

    @torch.no_grad()
    def winding_number(self, points: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
        points, order = self._prepare(points)
        count = len(points)
        out = torch.empty(count, dtype=torch.float32, device=self.device)
        if count:
            _winding_kernel[self._grid(count)](
                points, count, self.vertices, self.faces, self.order, self.leaf_start, self.center,
                self.normal_sum, self.moment, self.radius, self.escape32, self.first_leaf, float(beta),
                out, BLOCK=self.block, num_warps=self.num_warps,
            )
        return self._unsort(out, order)
