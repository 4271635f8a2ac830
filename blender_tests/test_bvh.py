"""The BVH and its CPU (Numba) queries against the brute-force reference: exact distance
everywhere, including points on vertices, edges and faces; hierarchical winding-number signs
equal to the exact ones wherever the exact value is decisive; bounded memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analytic import hemisphere, torus
from neural_field_addon.core.geometry import MeshQuery, TriangleMesh
from neural_field_addon.core.geometry.bruteforce import closest_point_on_triangles

pytest.importorskip("numba")
from neural_field_addon.core.geometry import bvh_cpu  # noqa: E402
from neural_field_addon.core.geometry.bvh import build_bvh  # noqa: E402


def _probe_points(mesh: TriangleMesh, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    low, high = mesh.bounds
    pad = 0.1 * (high - low)
    tri = mesh.triangles()
    pick = rng.integers(0, len(tri), size=count // 4)
    bary = rng.dirichlet((1.0, 1.0, 1.0), size=len(pick))
    return np.concatenate(
        [
            rng.uniform(low - pad, high + pad, size=(count // 4, 3)),
            mesh.vertices[rng.integers(0, len(mesh.vertices), size=count // 4)],
            0.5 * (tri[pick, 0] + tri[pick, 1]),  # edge midpoints
            np.einsum("ij,ijk->ik", bary, tri[pick]),  # face interiors
        ]
    )


def _suzanne() -> TriangleMesh:
    bpy = pytest.importorskip("bpy")
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.mesh.primitive_monkey_add()
    mesh = bpy.context.active_object.data
    mesh.calc_loop_triangles()
    return TriangleMesh(
        np.array([v.co[:] for v in mesh.vertices]), np.array([t.vertices[:] for t in mesh.loop_triangles])
    )


MESHES = {
    "torus": lambda shared: TriangleMesh(*torus(1.0, 0.35, 48, 24)),
    "hemisphere": lambda shared: TriangleMesh(*hemisphere(1.0)),
    "suzanne": lambda shared: _suzanne(),
    "teapot": lambda shared: __import__("neural_field_addon.core.meshio", fromlist=["load_mesh"]).load_mesh(
        shared("teapot.obj")
    ),
}


@pytest.fixture(params=sorted(MESHES))
def mesh(request, shared_mesh):
    return MESHES[request.param](shared_mesh)


@pytest.mark.parametrize("leaf_size", [2, 3, 8])
def test_bvh_distance_equals_brute_force_on_and_off_the_surface(mesh, leaf_size):
    points = _probe_points(mesh, 800, seed=leaf_size)
    distance, closest, face = bvh_cpu.closest_points(build_bvh(mesh, leaf_size), points)
    reference = MeshQuery(mesh, backend="torch").distance(points)
    assert np.abs(distance - reference).max() <= 1e-6 * mesh.diagonal
    # The closest point is at the reported distance and is the reported face's closest point.
    assert np.allclose(np.linalg.norm(closest - points, axis=1), distance, atol=1e-9 * mesh.diagonal)
    tri = torch.as_tensor(mesh.triangles()[face])
    on_face = closest_point_on_triangles(torch.as_tensor(points), tri[:, 0], tri[:, 1], tri[:, 2]).numpy()
    assert np.abs(on_face - closest).max() <= 1e-6 * mesh.diagonal


def test_hierarchical_winding_sign_matches_exact_where_decisive(mesh):
    rng = np.random.default_rng(11)
    low, high = mesh.bounds
    points = rng.uniform(low - 0.1 * (high - low), high + 0.1 * (high - low), size=(1000, 3))
    exact = MeshQuery(mesh, backend="torch").winding_number(points)
    fast = bvh_cpu.winding_number(build_bvh(mesh), points, beta=2.0)
    distance = MeshQuery(mesh, backend="torch").distance(points)
    decisive = (np.abs(exact - 0.5) > 0.02) & (distance > 1e-3 * mesh.diagonal)
    assert np.array_equal(fast[decisive] > 0.5, exact[decisive] > 0.5)


def test_winding_accuracy_improves_with_beta_and_is_exact_at_zero(mesh):
    rng = np.random.default_rng(12)
    low, high = mesh.bounds
    points = rng.uniform(low, high, size=(600, 3))
    exact = MeshQuery(mesh, backend="torch").winding_number(points)
    bvh = build_bvh(mesh)
    errors = [np.abs(bvh_cpu.winding_number(bvh, points, beta) - exact).max() for beta in (1.5, 4.0)]
    assert errors[1] < errors[0]
    assert np.abs(bvh_cpu.winding_number(bvh, points, beta=0.0) - exact).max() < 1e-9


def test_bvh_memory_is_at_most_64_bytes_per_triangle(mesh):
    assert build_bvh(mesh).nbytes <= 64 * len(mesh.faces)
