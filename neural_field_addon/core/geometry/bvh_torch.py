"""BVH queries in plain PyTorch, on any device: the same stackless walks as the Triton kernels
(bvh_triton.py), written as wavefronts over all points, so a machine without Triton gets the
same numbers. Each loop iteration advances every still-walking point by one node.

Per point the walk is: test the node; if it can matter, open it (go to its left child) or, at a
leaf, handle its triangles; otherwise skip its subtree (go to `escape[node]`). The closest-point
walk starts from a greedy descent to the nearest-looking leaf, so most boxes are pruned at once.
"""

from __future__ import annotations

import math

import torch

from .bruteforce import closest_point_on_triangles
from .bvh import TriangleBVH


class DeviceBVH:
    """A TriangleBVH's arrays as tensors on one device (geometry in `dtype`)."""

    def __init__(self, bvh: TriangleBVH, device="cpu", dtype=torch.float32):
        def tensor(array, kind=dtype):
            return torch.as_tensor(array, device=device).to(kind).contiguous()

        self.device, self.dtype = torch.device(device), dtype
        self.vertices = tensor(bvh.vertices)
        self.faces = tensor(bvh.faces, torch.int32)
        self.order = tensor(bvh.order, torch.int32)
        self.leaf_start = tensor(bvh.leaf_start, torch.int32)
        self.first_leaf = bvh.first_leaf
        self.max_leaf = int((bvh.leaf_start[1:] - bvh.leaf_start[:-1]).max())
        self.box_lo = tensor(bvh.box_lo)
        self.box_hi = tensor(bvh.box_hi)
        self.center = tensor(bvh.center)
        self.normal_sum = tensor(bvh.normal_sum)
        self.moment = tensor(bvh.moment)
        self.radius = tensor(bvh.radius)
        self.escape = tensor(bvh.escape, torch.int64)
        self.depth = int(round(math.log2(bvh.first_leaf + 1)))

    def leaf_triangles(self, leaf, k):
        """Corner positions of the k-th triangle of each leaf, and which leaves have one."""
        start, end = self.leaf_start[leaf].long(), self.leaf_start[leaf + 1].long()
        slot = start + k
        valid = slot < end
        face = self.order[torch.where(valid, slot, start)].long()
        corners = self.vertices[self.faces[face].long()]  # (q, 3, 3)
        return face, corners, valid


def _box_distance2(p, lo, hi):
    gap = torch.clamp(torch.maximum(lo - p, p - hi), min=0.0)
    return (gap * gap).sum(-1)


def _test_leaves(tree: DeviceBVH, lanes, leaf, p, best, best_face, best_point):
    for k in range(tree.max_leaf):
        face, corners, valid = tree.leaf_triangles(leaf, k)
        point = closest_point_on_triangles(p, corners[:, 0], corners[:, 1], corners[:, 2])
        d2 = ((point - p) ** 2).sum(-1)
        better = valid & (d2 < best[lanes])
        if better.any():
            chosen = lanes[better]
            best[chosen] = d2[better]
            best_face[chosen] = face[better]
            best_point[chosen] = point[better]


@torch.no_grad()
def closest_points(tree: DeviceBVH, points: torch.Tensor):
    """Exact (distance (q,), closest point (q, 3), face (q,)) for points (q, 3) on tree's device."""
    points = points.to(tree.dtype)
    count = len(points)
    best = torch.full((count,), math.inf, dtype=tree.dtype, device=tree.device)
    best_face = torch.full((count,), -1, dtype=torch.long, device=tree.device)
    best_point = torch.zeros_like(points)
    lanes = torch.arange(count, device=tree.device)

    # Greedy descent to a first leaf: a tight starting bound.
    node = torch.zeros(count, dtype=torch.long, device=tree.device)
    for _ in range(tree.depth):
        left, right = 2 * node + 1, 2 * node + 2
        go_right = _box_distance2(points, tree.box_lo[right], tree.box_hi[right]) < _box_distance2(
            points, tree.box_lo[left], tree.box_hi[left]
        )
        node = torch.where(go_right, right, left)
    _test_leaves(tree, lanes, node - tree.first_leaf, points, best, best_face, best_point)

    node = torch.zeros(count, dtype=torch.long, device=tree.device)
    while len(lanes):
        current, p = node[lanes], points[lanes]
        visit = _box_distance2(p, tree.box_lo[current], tree.box_hi[current]) < best[lanes]
        leaf = current >= tree.first_leaf
        at_leaf = visit & leaf
        if at_leaf.any():
            _test_leaves(
                tree, lanes[at_leaf], current[at_leaf] - tree.first_leaf, p[at_leaf], best, best_face, best_point
            )
        step = torch.where(visit & ~leaf, 2 * current + 1, tree.escape[current])
        node[lanes] = step
        lanes = lanes[step >= 0]
    return best.sqrt(), best_point, best_face


def _solid_angles(corners, p):
    a, b, c = (corners[:, k] - p for k in range(3))
    la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
    det = (a * torch.cross(b, c, dim=-1)).sum(-1)
    den = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
    return 2.0 * torch.atan2(det, den)


@torch.no_grad()
def winding_number(tree: DeviceBVH, points: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """Hierarchical generalized winding number (see bvh_cpu.py for the expansion)."""
    points = points.to(tree.dtype)
    count = len(points)
    total = torch.zeros(count, dtype=tree.dtype, device=tree.device)
    node = torch.zeros(count, dtype=torch.long, device=tree.device)
    lanes = torch.arange(count, device=tree.device)
    while len(lanes):
        current, p = node[lanes], points[lanes]
        r = tree.center[current] - p
        d2 = (r * r).sum(-1)
        far = (d2 > (beta * tree.radius[current]) ** 2) if beta > 0 else torch.zeros_like(d2, dtype=torch.bool)
        if far.any():
            rf, d2f, cf = r[far], d2[far], current[far]
            inv3 = 1.0 / (d2f * d2f.sqrt())
            moment = tree.moment[cf]
            trace = moment.diagonal(dim1=-2, dim2=-1).sum(-1)
            rcr = torch.einsum("qi,qij,qj->q", rf, moment, rf)
            dipole = (tree.normal_sum[cf] * rf).sum(-1)
            total.index_add_(0, lanes[far], (dipole + trace) * inv3 - 3.0 * rcr * inv3 / d2f)
        leaf = ~far & (current >= tree.first_leaf)
        if leaf.any():
            leaf_lanes, leaf_id, lp = lanes[leaf], current[leaf] - tree.first_leaf, p[leaf]
            for k in range(tree.max_leaf):
                _, corners, valid = tree.leaf_triangles(leaf_id, k)
                total.index_add_(0, leaf_lanes, torch.where(valid, _solid_angles(corners, lp), 0.0))
        step = torch.where(~far & ~leaf, 2 * current + 1, tree.escape[current])
        node[lanes] = step
        lanes = lanes[step >= 0]
    return total / (4.0 * math.pi)
