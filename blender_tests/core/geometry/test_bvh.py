"""The BVH and its CPU (Numba) queries against the brute-force reference: exact distance
everywhere, including points on vertices, edges and faces; hierarchical winding-number signs
equal to the exact ones wherever the exact value is decisive; bounded memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from checks import suzanne
from neural_field_addon.core.geometry import MeshQuery, TriangleMesh
from neural_field_addon.core.geometry.bruteforce import closest_point_on_triangles
from neural_field_addon.core.geometry.procedural import hemisphere, torus

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


MESHES = {
    "torus": lambda shared: TriangleMesh(*torus(1.0, 0.35, 48, 24)),
    "hemisphere": lambda shared: TriangleMesh(*hemisphere(1.0)),
    "suzanne": lambda shared: TriangleMesh(*suzanne()),
    "teapot": lambda shared: __import__("neural_field_addon.core.io.meshio", fromlist=["load_mesh"]).load_mesh(
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


def test_a_points_results_do_not_depend_on_the_rest_of_its_batch(mesh):
    """Points walk the tree in packets of lanes (padded at the end of a batch); one point's
    distance, closest point and winding number come out the same whatever its packet-mates; its
    closest face too, up to ties (a point nearest to a vertex or edge that faces share)."""
    bvh = build_bvh(mesh)
    points = _probe_points(mesh, 600, seed=5)
    distance, closest, face = bvh_cpu.closest_points(bvh, points)
    winding = bvh_cpu.winding_number(bvh, points)
    both = bvh_cpu.distance_and_winding(bvh, points)
    for subset in (np.arange(1), np.arange(3, 70), np.arange(599, 0, -7)):
        sub_distance, sub_closest, sub_face = bvh_cpu.closest_points(bvh, points[subset])
        # Tied faces give the same closest point up to rounding.
        assert np.abs(sub_distance - distance[subset]).max() <= 1e-12 * mesh.diagonal
        assert np.abs(sub_closest - closest[subset]).max() <= 1e-12 * mesh.diagonal
        tied = sub_face != face[subset]
        tri = torch.as_tensor(mesh.triangles()[sub_face[tied]])
        on_face = closest_point_on_triangles(torch.as_tensor(points[subset][tied]), tri[:, 0], tri[:, 1], tri[:, 2])
        assert np.abs(on_face.numpy() - closest[subset][tied]).max(initial=0.0) <= 1e-12 * mesh.diagonal
        assert np.array_equal(bvh_cpu.winding_number(bvh, points[subset]), winding[subset])
        sub_both = bvh_cpu.distance_and_winding(bvh, points[subset])
        assert np.array_equal(sub_both[0], both[0][subset]) and np.array_equal(sub_both[1], both[1][subset])


def test_hierarchical_winding_sign_matches_exact_where_decisive(mesh):
    rng = np.random.default_rng(11)
    low, high = mesh.bounds
    points = rng.uniform(low - 0.1 * (high - low), high + 0.1 * (high - low), size=(1000, 3))
    exact = MeshQuery(mesh, backend="torch").winding_number(points)
    fast = bvh_cpu.winding_number(build_bvh(mesh), points, beta=2.0)
    distance = MeshQuery(mesh, backend="torch").distance(points)
    decisive = (np.abs(exact - 0.5) > 0.02) & (distance > 1e-3 * mesh.diagonal)
    assert np.array_equal(fast[decisive] > 0.5, exact[decisive] > 0.5)
    # Overall, ambiguous points (the plane of a hole) included, after MeshQuery's refinement.
    refined = MeshQuery(mesh, backend="bvh").winding_number(points)
    assert np.mean((refined > 0.5) == (exact > 0.5)) >= 0.999


def test_signed_distance_sign_on_the_bunny_matches_exact_where_decisive(shared_mesh):
    from neural_field_addon.core.io.meshio import load_mesh

    bunny = load_mesh(shared_mesh("stanford-bunny.obj"))  # open: holes in its base
    points = _probe_points(bunny, 400, seed=13)[:100]  # uniform box points only
    near = np.random.default_rng(14).normal(scale=0.01 * bunny.diagonal, size=(200, 3))
    points = np.concatenate([points, bunny.vertices[::180][:200] + near])
    exact = MeshQuery(bunny, backend="torch").winding_number(points)
    query = MeshQuery(bunny, backend="bvh")
    sdf = query.signed_distance(points)
    decisive = (np.abs(exact - 0.5) > 0.02) & (np.abs(sdf) > 1e-3 * bunny.diagonal)
    assert decisive.sum() > 200
    assert np.array_equal(sdf[decisive] < 0, exact[decisive] > 0.5)


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


@pytest.mark.parametrize("backend", ["bvh", "bvh-torch"])
def test_mesh_far_from_the_origin_keeps_full_precision(backend):
    base = TriangleMesh(*torus(1.0, 0.35, 48, 24))
    offset = np.array([1e6, -2e6, 3e6])
    far = TriangleMesh(base.vertices + offset, base.faces)
    points = _probe_points(base, 400, seed=21)
    near_distance = MeshQuery(base, backend="torch").distance(points)
    far_distance = MeshQuery(far, backend=backend).distance(points + offset)
    assert np.abs(far_distance - near_distance).max() <= 1e-6 * base.diagonal
    inside = MeshQuery(far, backend=backend).occupancy(np.array([[1.0, 0.0, 0.0]]) + offset)
    assert inside.tolist() == [True]


@pytest.mark.parametrize("backend", ["bvh", "bvh-torch"])
def test_single_triangle_distance_is_exact(backend):
    mesh = TriangleMesh(np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]), np.array([[0, 1, 2]]))
    points = np.array([[0.2, 0.2, 0.5], [2.0, 0.0, 0.0], [-1.0, -1.0, 0.0], [0.5, 0.5, -1.0]])
    expected = [0.5, 1.0, np.sqrt(2.0), np.sqrt(1.0)]
    assert np.allclose(MeshQuery(mesh, backend=backend).distance(points), expected, atol=1e-12)


@pytest.mark.parametrize("backend", ["bvh", "bvh-torch"])
def test_zero_area_triangles_do_not_change_the_result(backend):
    clean = TriangleMesh(*torus(1.0, 0.35, 32, 16))
    degenerate = np.array([[0, 0, 0], [5, 5, 9], [7, 7, 7], [1, 2, 1]])  # a point, a segment, ...
    dirty = TriangleMesh(clean.vertices, np.concatenate([clean.faces, degenerate]))
    points = _probe_points(clean, 400, seed=22)
    reference = MeshQuery(dirty, backend="torch").distance(points)
    assert np.abs(MeshQuery(dirty, backend=backend).distance(points) - reference).max() <= 1e-9
    assert np.array_equal(
        MeshQuery(dirty, backend=backend).occupancy(points), MeshQuery(clean, backend=backend).occupancy(points)
    )


def test_signed_distance_tensor_equals_the_numpy_path():
    mesh = TriangleMesh(*torus(1.0, 0.35, 48, 24))
    points = _probe_points(mesh, 400, seed=23)
    query = MeshQuery(mesh, device="cpu", backend="bvh-torch")
    on_device = query.signed_distance_tensor(torch.as_tensor(points, dtype=torch.float32)).numpy()
    assert np.abs(on_device - MeshQuery(mesh, backend="bvh").signed_distance(points)).max() < 1e-6


def test_device_sampler_is_reproducible_and_area_weighted():
    from neural_field_addon.core.geometry import DeviceSampler

    # Two squares side by side, the right one four times the area of the left.
    vertices = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [3, 0, 0], [3, 2, 0], [1, 2, 0]], float)
    faces = np.array([[0, 1, 2], [0, 2, 3], [1, 4, 5], [1, 5, 6]])
    mesh = TriangleMesh(vertices, faces)
    first, normals = DeviceSampler(mesh, seed=4).surface(20_000)
    second, _ = DeviceSampler(mesh, seed=4).surface(20_000)
    assert torch.equal(first, second)
    assert abs(float((first[:, 0] > 1.0).float().mean()) - 0.8) < 0.02
    assert torch.allclose(normals.abs(), torch.tensor([0.0, 0.0, 1.0]))
    near = DeviceSampler(mesh, seed=5).near_surface(30_000, (0.01, 0.1))
    assert abs(float(near[:15_000, 2].std()) - 0.01) < 0.002
    assert abs(float(near[15_000:, 2].std()) - 0.1) < 0.01
