"""Core geometry: exact distance (brute force vs libigl), winding numbers, signed distance, input
validation and sampling, on analytic meshes whose true answers are known. No bpy."""

from __future__ import annotations

import numpy as np
import pytest

from checks import inscribed_gap
from neural_field_addon.core.geometry import (
    DeviceSampler,
    FieldTransform,
    MeshQuery,
    TriangleMesh,
    sample_surface,
)
from neural_field_addon.core.geometry.procedural import hemisphere, icosphere, sphere_sdf, torus

pytest.importorskip("igl", reason="the libigl backend is what these tests compare against")

BACKENDS = ("bvh", "bvh-torch", "libigl", "torch")
# Brute force is every point against every triangle, so the meshes here stay small.
RADIUS = 0.8


def small_sphere() -> TriangleMesh:
    return TriangleMesh(*icosphere(RADIUS, subdivisions=2))  # 320 faces


def triangle_soup(seed: int = 3) -> TriangleMesh:
    """Random, intersecting, non-manifold triangles: every Voronoi region of a triangle is hit."""
    rng = np.random.default_rng(seed)
    faces = np.array([rng.choice(60, size=3, replace=False) for _ in range(40)])
    return TriangleMesh(rng.normal(size=(60, 3)), faces)


MESHES = {
    "sphere": small_sphere,
    "torus": lambda: TriangleMesh(*torus(1.0, 0.35, major_segments=32, minor_segments=16)),
    "hemisphere": lambda: TriangleMesh(*hemisphere(1.0, rings=12, segments=24)),
    "soup": triangle_soup,
}


def probe_points(mesh: TriangleMesh, rng, box_count=600, each_feature=150) -> np.ndarray:
    """Random points in the padded box plus points exactly on vertices, edge midpoints and
    face interiors, where the closest-feature logic has its ties and boundaries."""
    low, high = mesh.bounds
    pad = 0.25 * (high - low)
    box = rng.uniform(low - pad, high + pad, size=(box_count, 3))
    tri = mesh.triangles()
    vertices = mesh.vertices[rng.choice(len(mesh.vertices), each_feature)]
    which = rng.choice(len(tri), each_feature)
    corner = rng.integers(0, 3, each_feature)
    edge_midpoints = 0.5 * (tri[which, corner] + tri[which, (corner + 1) % 3])
    weights = rng.dirichlet((1.0, 1.0, 1.0), each_feature)
    face_points = np.einsum("ij,ijk->ik", weights, tri[rng.choice(len(tri), each_feature)])
    return np.concatenate([box, vertices, edge_midpoints, face_points])


# ----------------------------------------------------------------------------- distance


@pytest.mark.parametrize("name", sorted(MESHES))
def test_bruteforce_distance_matches_libigl_on_and_off_the_surface(name):
    mesh = MESHES[name]()
    points = probe_points(mesh, np.random.default_rng(0))
    reference = MeshQuery(mesh, backend="torch").distance(points)
    accelerated = MeshQuery(mesh, backend="libigl").distance(points)
    # Measured: at most 7e-17 of the diagonal on every mesh here.
    assert np.max(np.abs(reference - accelerated)) <= 1e-6 * mesh.diagonal


@pytest.mark.parametrize("backend", BACKENDS)
def test_distance_is_zero_at_points_on_the_surface(backend):
    mesh = MESHES["torus"]()
    rng = np.random.default_rng(1)
    on_surface = probe_points(mesh, rng, box_count=0)
    distance = MeshQuery(mesh, backend=backend).distance(on_surface)
    assert np.max(distance) <= 1e-9 * mesh.diagonal


@pytest.mark.parametrize("backend", BACKENDS)
def test_closest_point_lies_on_the_reported_face_at_the_reported_distance(backend):
    mesh = triangle_soup()
    points = np.random.default_rng(2).normal(size=(400, 3)) * 1.5
    distance, closest, face = MeshQuery(mesh, backend=backend).closest_points(points)
    assert np.allclose(np.linalg.norm(points - closest, axis=1), distance, atol=1e-12)
    # The closest point is on the reported face: its distance to that one triangle is zero.
    for index in np.unique(face):
        own = TriangleMesh(mesh.vertices, mesh.faces[index : index + 1])
        chosen = face == index
        assert np.max(MeshQuery(own, backend="libigl").distance(closest[chosen])) <= 1e-9


@pytest.mark.parametrize("backend", BACKENDS)
def test_distance_to_a_sphere_mesh_matches_the_analytic_sphere(backend):
    vertices, faces = icosphere(RADIUS, subdivisions=2)
    mesh = TriangleMesh(vertices, faces)
    points = np.random.default_rng(3).uniform(-1.5, 1.5, size=(1000, 3))
    distance = MeshQuery(mesh, backend=backend).distance(points)
    # The mesh is inscribed, so the two surfaces differ by at most the gap between them
    # (0.0142 for this coarse sphere of radius 0.8; the largest difference measured is 0.01419).
    gap = inscribed_gap(vertices, faces)
    assert np.max(np.abs(distance - np.abs(sphere_sdf(points, RADIUS)))) <= gap + 1e-12


# ----------------------------------------------------------------------------- winding number


def _inside_and_outside_sphere_points(count=500, seed=4):
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(count, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    inside = directions * rng.uniform(0.0, 0.9 * RADIUS, size=(count, 1))
    outside = directions * rng.uniform(1.1 * RADIUS, 4.0 * RADIUS, size=(count, 1))
    return inside, outside


# Measured worst deviation from 0 or 1 on these points: exact 2e-16, fast (libigl) 2.1e-3,
# bvh at beta 2 (second-order expansion; values near 0.5 are refined) 6.8e-2.
WINDING_TOLERANCE = {"torch": 1e-9, "libigl": 5e-3, "bvh": 8e-2, "bvh-torch": 8e-2}


@pytest.mark.parametrize("backend", BACKENDS)
def test_winding_number_is_one_inside_a_closed_sphere(backend):
    inside, _ = _inside_and_outside_sphere_points()
    winding = MeshQuery(small_sphere(), backend=backend).winding_number(inside)
    assert np.max(np.abs(winding - 1.0)) <= WINDING_TOLERANCE[backend]


@pytest.mark.parametrize("backend", BACKENDS)
def test_winding_number_is_zero_outside_a_closed_sphere(backend):
    _, outside = _inside_and_outside_sphere_points()
    winding = MeshQuery(small_sphere(), backend=backend).winding_number(outside)
    assert np.max(np.abs(winding)) <= WINDING_TOLERANCE[backend]


@pytest.mark.parametrize("name", sorted(MESHES))
def test_fast_winding_number_has_the_sign_of_the_exact_one_away_from_one_half(name):
    mesh = MESHES[name]()
    rng = np.random.default_rng(5)
    low, high = mesh.bounds
    pad = 0.25 * (high - low)
    box = rng.uniform(low - pad, high + pad, size=(1500, 3))
    # Also points just off the surface on both sides, where the fast expansion is least exact.
    surface, normals = sample_surface(mesh, 300, rng)
    offset = rng.choice([-1.0, 1.0], size=(300, 1)) * 1e-3 * mesh.diagonal
    points = np.concatenate([box, surface + offset * normals])
    exact = MeshQuery(mesh, backend="torch").winding_number(points)
    fast = MeshQuery(mesh, backend="libigl").winding_number(points)
    decided = np.abs(exact - 0.5) > 0.02
    assert np.count_nonzero(decided) > 0.9 * len(points)
    assert np.array_equal(exact[decided] > 0.5, fast[decided] > 0.5)


def test_winding_number_at_the_centre_of_an_open_hemispheres_rim_is_one_half():
    # The bowl subtends exactly half the sphere of directions from the centre of its opening;
    # a robust sign must see this as undecided, not as inside or outside.
    mesh = MESHES["hemisphere"]()
    winding = MeshQuery(mesh, backend="torch").winding_number(np.array([[0.0, 0.0, 0.0]]))
    assert abs(winding[0] - 0.5) <= 1e-9


# ----------------------------------------------------------------------------- signed distance


@pytest.mark.parametrize("backend", BACKENDS)
def test_signed_distance_is_negative_inside_and_positive_outside(backend):
    inside, outside = _inside_and_outside_sphere_points()
    query = MeshQuery(small_sphere(), backend=backend)
    assert np.all(query.signed_distance(inside) < 0.0)
    assert np.all(query.signed_distance(outside) > 0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_signed_distance_matches_the_analytic_sphere_sdf(backend):
    vertices, faces = icosphere(RADIUS, subdivisions=2)
    points = np.concatenate(_inside_and_outside_sphere_points(seed=6))
    sdf = MeshQuery(TriangleMesh(vertices, faces), backend=backend).signed_distance(points)
    assert np.max(np.abs(sdf - sphere_sdf(points, RADIUS))) <= inscribed_gap(vertices, faces) + 1e-12


def test_occupancy_is_true_exactly_where_signed_distance_is_negative():
    points = np.random.default_rng(7).uniform(-1.0, 1.0, size=(800, 3))
    query = MeshQuery(small_sphere())
    assert np.array_equal(query.occupancy(points), query.signed_distance(points) < 0.0)


# ----------------------------------------------------------------------------- bad input


def _good_arrays():
    return icosphere(1.0, subdivisions=0)


def test_mesh_with_nan_vertices_is_refused_naming_nan():
    vertices, faces = _good_arrays()
    vertices[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        TriangleMesh(vertices, faces)


def test_mesh_with_infinite_vertices_is_refused_naming_infinite():
    vertices, faces = _good_arrays()
    vertices[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        TriangleMesh(vertices, faces)


@pytest.mark.parametrize("bad_index", [12, -1])
def test_mesh_with_face_index_out_of_range_is_refused_naming_the_indices(bad_index):
    vertices, faces = _good_arrays()  # 12 vertices
    faces[5, 2] = bad_index
    with pytest.raises(ValueError, match="face indices"):
        TriangleMesh(vertices, faces)


def test_mesh_with_quad_faces_is_refused_asking_for_triangles():
    vertices, _ = _good_arrays()
    with pytest.raises(ValueError, match="triangle"):
        TriangleMesh(vertices, np.array([[0, 1, 2, 3]]))


def test_mesh_with_no_faces_is_refused_saying_no_faces():
    vertices, _ = _good_arrays()
    with pytest.raises(ValueError, match="no faces"):
        TriangleMesh(vertices, np.zeros((0, 3), dtype=np.int64))


def test_mesh_with_fractional_face_indices_is_refused():
    vertices, faces = _good_arrays()
    with pytest.raises(ValueError, match="integers"):
        TriangleMesh(vertices, faces + 0.5)


def test_query_points_with_nan_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        MeshQuery(small_sphere()).distance(np.array([[0.0, np.nan, 0.0]]))


def test_unknown_geometry_backend_is_refused_by_name():
    with pytest.raises(ValueError, match="'embree'"):
        MeshQuery(small_sphere(), backend="embree")


def test_mesh_whose_vertices_coincide_has_no_field_transform():
    mesh = TriangleMesh(np.ones((3, 3)), np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match="single point"):
        FieldTransform.fit_unit_box(mesh)


# ----------------------------------------------------------------------------- normalisation


def test_field_transform_maps_the_longest_side_onto_minus_one_to_one_and_back():
    vertices, faces = torus(1.0, 0.35)
    vertices = vertices * [2.0, 1.0, 0.5] + [3.0, -1.0, 7.0]
    mesh = TriangleMesh(vertices, faces)
    transform = FieldTransform.fit_unit_box(mesh)
    low, high = mesh.transformed(transform).bounds
    assert np.isclose(np.max(high - low), 2.0)
    assert np.allclose((low + high) / 2.0, 0.0, atol=1e-12)
    assert np.allclose(transform.to_object(transform.to_field(vertices)), vertices, atol=1e-12)


# ----------------------------------------------------------------------------- sampling


def test_surface_samples_are_reproducible_from_the_seed():
    mesh = MESHES["torus"]()
    first = sample_surface(mesh, 1000, np.random.default_rng(42))
    second = sample_surface(mesh, 1000, np.random.default_rng(42))
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])


def test_near_surface_and_box_samples_are_reproducible_from_the_seed():
    mesh = MESHES["torus"]()

    def draw(seed):
        sampler = DeviceSampler(mesh, seed=seed)
        near = sampler.near_surface(1000, (0.003, 0.015, 0.06)).numpy()
        box = sampler.uniform_box(*mesh.bounds, 500).numpy()
        return near, box

    (near_a, box_a), (near_b, box_b) = draw(7), draw(7)
    assert np.array_equal(near_a, near_b) and np.array_equal(box_a, box_b)


def test_different_seeds_give_different_samples():
    mesh = MESHES["torus"]()
    first, _ = sample_surface(mesh, 1000, np.random.default_rng(1))
    second, _ = sample_surface(mesh, 1000, np.random.default_rng(2))
    assert not np.allclose(first, second)


def test_surface_samples_lie_on_the_mesh_with_its_face_normals():
    vertices, faces = icosphere(RADIUS, subdivisions=2)
    mesh = TriangleMesh(vertices, faces)
    points, normals = sample_surface(mesh, 2000, np.random.default_rng(8))
    assert np.max(MeshQuery(mesh).distance(points)) <= 1e-12
    # Outward-oriented sphere: each face normal points away from the centre.
    assert np.all(np.sum(points * normals, axis=1) > 0.0)
    assert np.allclose(np.linalg.norm(normals, axis=1), 1.0)


def test_uniform_box_samples_stay_inside_the_box():
    low, high = np.array([-1.0, 0.0, 2.0]), np.array([1.0, 0.5, 5.0])
    points = DeviceSampler(MESHES["torus"](), seed=9).uniform_box(low, high, 5000).numpy()
    assert np.all(points >= low) and np.all(points <= high)
