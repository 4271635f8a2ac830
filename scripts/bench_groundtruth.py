"""Speed of ground-truth queries: exact distance, winding number and signed distance per backend.

    python scripts/bench_groundtruth.py [--mesh PATH] [--points N] [--backends libigl,torch] [--device cpu|cuda]

Points are uniform in the mesh's bounding box padded by 10% of its size on each side, seed 0.
The torch brute force is run on at most --reference-points points (it is the slow reference).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from benchlib import shared_mesh
from neural_field_addon.core.geometry import MeshQuery, TriangleMesh
from neural_field_addon.core.io.meshio import load_mesh


def subdivide(mesh: TriangleMesh) -> TriangleMesh:
    """Midpoint subdivision: every triangle into four (same surface, 4x the triangles)."""
    faces = mesh.faces
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    unique, inverse = np.unique(edges, axis=0, return_inverse=True)
    mid = len(mesh.vertices) + inverse.reshape(3, -1).T  # midpoints of edges 01, 12, 20
    vertices = np.concatenate([mesh.vertices, mesh.vertices[unique].mean(axis=1)])
    a, b, c = faces.T
    ab, bc, ca = mid.T
    new_faces = np.concatenate([np.stack(f, axis=1) for f in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])
    return TriangleMesh(vertices, new_faces)


def timed(function, *args):
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mesh", default=shared_mesh("stanford-bunny.obj"))
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--reference-points", type=int, default=2_000)
    parser.add_argument("--backends", default="bvh,libigl,torch")
    parser.add_argument("--subdivide", type=int, default=0, help="midpoint-subdivide the mesh this many times (x4 triangles each)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--kernel-points", type=int, default=1 << 22, help="points for the CUDA kernel-only timing")
    args = parser.parse_args()

    mesh = load_mesh(args.mesh)
    for _ in range(args.subdivide):
        mesh = subdivide(mesh)
    low, high = mesh.bounds
    pad = 0.1 * (high - low)
    rng = np.random.default_rng(0)
    print(f"{os.path.basename(args.mesh)}: {len(mesh.faces)} triangles, device {args.device}")
    print(f"{'backend':8} {'points':>8} {'distance q/s':>14} {'winding q/s':>14} {'signed q/s':>14}  structure")
    for backend in args.backends.split(","):
        count = args.points if backend != "torch" else min(args.points, args.reference_points)
        points = rng.uniform(low - pad, high + pad, size=(count, 3))
        query = MeshQuery(mesh, device=args.device, backend=backend)
        structure = ""
        if backend in ("bvh", "triton", "bvh-torch"):
            build = timed(lambda: query.bvh)
            structure = f"build {build:.3f} s, {query.bvh.nbytes / len(mesh.faces):.1f} bytes/triangle"
        query.signed_distance(points[:16])  # warm-up: compilation or loading of cached kernels
        rates = [count / timed(f, points) for f in (query.distance, query.winding_number, query.signed_distance)]
        print(f"{backend:8} {count:8d} " + " ".join(f"{r:14,.0f}" for r in rates) + f"  {structure}")
    if args.device == "cuda":
        kernel_rates(mesh, low, high, pad, args.kernel_points)
    return 0


def kernel_rates(mesh, low, high, pad, count: int) -> None:
    """Device-only throughput of the Triton walks (points and results stay on the GPU)."""
    import torch

    query = MeshQuery(mesh, device="cuda", backend="triton")
    tree = query.device_bvh
    generator = torch.Generator(device="cuda").manual_seed(0)
    low_t = torch.as_tensor(low - pad, device="cuda", dtype=torch.float32)
    span = torch.as_tensor(high - low + 2 * pad, device="cuda", dtype=torch.float32)
    sets = [low_t + torch.rand(count, 3, device="cuda", generator=generator) * span for _ in range(3)]
    variants = [(32, 1, True)]
    if os.environ.get("BENCH_SWEEP"):
        variants = [(b, w, s) for b, w in ((32, 1), (64, 2), (128, 4)) for s in (False, True)]
    for block, warps, sort in variants:
        tree.block, tree.num_warps, tree.sort_points = block, warps, sort
        print(f"block {block}, {warps} warps, Morton-sorted points: {sort}")
        time_walks(tree, sets, count)


def time_walks(tree, sets, count) -> None:
    import torch

    def signed(p):
        # Distance and sign together, as fitting needs them (sign from the winding number).
        distance = tree.closest_points(p)[0]
        return torch.where(tree.winding_number(p, 2.0) > 0.5, -distance, distance)

    walks = (("distance", lambda p: tree.closest_points(p)), ("winding", lambda p: tree.winding_number(p, 2.0)),
             ("signed", signed))
    for name, run in walks:
        run(sets[0])
        torch.cuda.synchronize()
        times = []
        for repeat in range(6):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run(sets[repeat % 3])
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
        median = sorted(times)[len(times) // 2]
        print(f"triton kernel {name:9} {count:,} points: {median * 1e3:.2f} ms, {count / median / 1e6:,.1f} M queries/s")


if __name__ == "__main__":
    sys.exit(main())
