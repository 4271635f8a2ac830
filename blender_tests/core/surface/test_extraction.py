"""Adaptive isosurface extraction against the dense reference: agreement, closed and welded
output, the narrow band, normals. Extraction takes anything that evaluates a field over a box
(surface.extraction.BoxField), so these tests extract the exact signed distance of a torus
(fields.analytic) instead of fitting a network first; fitted fields are extracted in the fitting
and CLI tests."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from checks import REPO_ROOT, directed_edges_unique, edge_face_counts
from neural_field_addon.core.fields.analytic import AnalyticField
from neural_field_addon.core.geometry import TriangleMesh
from neural_field_addon.core.geometry.procedural import signed_volume, torus_sdf
from neural_field_addon.core.surface.extraction import ExtractionReport, extract_isosurface, vertex_normals

RESOLUTION = 48
MAJOR, MINOR = 1.0, 0.35
LOW, HIGH = (-MAJOR - MINOR, -MAJOR - MINOR, -MINOR), (MAJOR + MINOR, MAJOR + MINOR, MINOR)


@pytest.fixture(scope="module")
def sdf_field():
    return AnalyticField.around(lambda points: torus_sdf(points, MAJOR, MINOR), LOW, HIGH)


@pytest.fixture(scope="module")
def occupancy_field():
    """An occupancy field's values: logits, steep across the surface and saturated away from it,
    as a fitted one's are (its head times 30); only their sign is a surface."""
    field = AnalyticField.around(lambda points: np.clip(torus_sdf(points, MAJOR, MINOR) * 300.0, -8.0, 8.0),
                                 LOW, HIGH)
    field.kind = "occupancy"
    return field


@pytest.fixture(params=["sdf", "occupancy"])
def field(request):
    return request.getfixturevalue(f"{request.param}_field")


def nearest_gap(a: TriangleMesh, b: TriangleMesh) -> float:
    """Largest distance from a vertex of either mesh to the nearest vertex of the other, relative
    to the diagonal."""
    gap = max(cKDTree(b.vertices).query(a.vertices)[0].max(), cKDTree(a.vertices).query(b.vertices)[0].max())
    return gap / a.diagonal


def test_adaptive_and_dense_extraction_give_the_same_mesh(field):
    adaptive = extract_isosurface(field, RESOLUTION, method="adaptive")
    dense = extract_isosurface(field, RESOLUTION, method="dense")
    assert (len(adaptive.vertices), len(adaptive.faces)) == (len(dense.vertices), len(dense.faces))
    assert nearest_gap(adaptive, dense) <= 1e-5


def test_adaptive_surface_is_closed_outward_and_welded(field):
    surface = extract_isosurface(field, RESOLUTION)
    assert np.all(edge_face_counts(surface.faces) == 2)
    assert directed_edges_unique(surface.faces)
    assert signed_volume(surface.vertices, surface.faces) > 0.0
    assert len(np.unique(surface.vertices, axis=0)) == len(surface.vertices)


def component_faces(mesh: TriangleMesh) -> tuple[np.ndarray, np.ndarray]:
    """Connected-component label of each vertex, and the face count of each component."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    edges = np.concatenate([mesh.faces[:, [0, 1]], mesh.faces[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(len(mesh.vertices),) * 2)
    _, labels = connected_components(graph, directed=False)
    return labels, np.bincount(labels[mesh.faces[:, 0]], minlength=labels.max() + 1)


def test_closure_recovers_every_surface_piece_it_touches(sdf_field):
    # A bound of ~0 keeps only cells whose corners change sign; the closure across tile faces must
    # still find the whole of every connected piece it reaches. (A detached floater that no kept
    # cell touches may be missed: finding those is the bound's job.)
    full = extract_isosurface(sdf_field, RESOLUTION)
    sparse = extract_isosurface(sdf_field, RESOLUTION, lipschitz=1e-9)
    distance, index = cKDTree(full.vertices).query(sparse.vertices)
    # Not bitwise: a sample evaluated in another batch can differ in the last bits (measured
    # 6e-8 of the diagonal with 16 CPU threads).
    assert distance.max() <= 1e-6 * full.diagonal
    labels, faces_per_piece = component_faces(full)
    reached = np.unique(labels[index])
    assert len(sparse.faces) == faces_per_piece[reached].sum()
    assert np.all(edge_face_counts(sparse.faces) == 2)


def test_adaptive_work_grows_with_the_surface_not_the_volume(sdf_field):
    evaluated = []
    for resolution in (96, 192):
        report = ExtractionReport("adaptive", resolution, 0.0)
        extract_isosurface(sdf_field, resolution, report=report)
        evaluated.append(report.evaluated)
    # Twice the resolution: 4x the samples for a band around the surface, 8x for the volume.
    # Measured 4.2x (38% of the dense grid at 192).
    assert evaluated[1] / evaluated[0] < 5.0


@pytest.mark.parametrize("tile", [4, 8])
def test_tile_size_does_not_change_the_mesh(sdf_field, tile):
    reference = extract_isosurface(sdf_field, RESOLUTION, method="dense")
    surface = extract_isosurface(sdf_field, RESOLUTION, tile=tile)
    assert len(surface.faces) == len(reference.faces)
    assert nearest_gap(surface, reference) <= 1e-5


def test_vertex_normals_follow_the_torus_gradient(sdf_field):
    surface = extract_isosurface(sdf_field, RESOLUTION)
    normals = vertex_normals(sdf_field, surface.vertices)
    step = 1e-4
    analytic = np.stack(
        [torus_sdf(surface.vertices + step * axis) - torus_sdf(surface.vertices - step * axis) for axis in np.eye(3)],
        axis=1,
    )
    analytic /= np.linalg.norm(analytic, axis=1, keepdims=True)
    agreement = np.sum(normals * analytic, axis=1)
    assert np.allclose(np.linalg.norm(normals, axis=1), 1.0)
    # Measured: median cosine 0.9998, 1st percentile 0.998.
    assert np.percentile(agreement, 1) > 0.98


def test_progress_rises_from_classification_to_the_end(sdf_field):
    fractions = []
    extract_isosurface(sdf_field, RESOLUTION, progress=fractions.append)
    assert fractions == sorted(fractions)
    assert fractions[0] <= 0.1 and fractions[-1] == 1.0
    assert len(fractions) >= 5  # every stage reports


def test_dense_extraction_refuses_a_grid_too_large_to_hold(sdf_field):
    with pytest.raises(ValueError, match="use the adaptive method"):
        extract_isosurface(sdf_field, 2048, method="dense")


def test_unknown_extraction_method_is_refused(sdf_field):
    with pytest.raises(ValueError, match="method must be one of adaptive, dense"):
        extract_isosurface(sdf_field, RESOLUTION, method="octree")


def test_occupancy_surface_stays_closed_at_high_resolution(occupancy_field):
    # Steep logits put vertices within float32 rounding of samples more often than distances do;
    # every tile must still key such a vertex alike, or the surface cracks at tile faces.
    surface = extract_isosurface(occupancy_field, 256)
    assert np.all(edge_face_counts(surface.faces) == 2)


def test_a_seed_from_a_nearby_level_gives_the_mesh_classification_gives(sdf_field):
    """The live preview's path: start the band from the surface tiles of a nearby field (here
    the next level out) and let closure follow the surface to where it is now."""
    first = ExtractionReport("adaptive", 0, 0.0)
    extract_isosurface(sdf_field, 64, 0.0, report=first)
    seeded_report = ExtractionReport("adaptive", 0, 0.0)
    seeded = extract_isosurface(sdf_field, 64, 0.06, seed=first.surface_tiles, report=seeded_report)
    full = extract_isosurface(sdf_field, 64, 0.06)
    assert len(seeded.faces) == len(full.faces)
    np.testing.assert_allclose(np.sort(seeded.vertices, axis=0), np.sort(full.vertices, axis=0), atol=1e-9)
    assert seeded_report.seconds["classify"] < 0.01 and (seeded_report.surface_tiles != first.surface_tiles).any()


def test_worker_processes_march_the_mesh_one_process_marches(sdf_field):
    from neural_field_addon.core.surface import marching

    serial = extract_isosurface(sdf_field, RESOLUTION, tile=4, workers=1)
    try:
        pooled = extract_isosurface(sdf_field, RESOLUTION, tile=4, workers=2)
        assert marching._POOL is not None and len(marching._POOL._processes) == 2  # not the fallback
    finally:
        if marching._POOL is not None:
            marching._POOL.shutdown()
            marching._POOL = None
    assert np.array_equal(serial.vertices, pooled.vertices)
    assert np.array_equal(serial.faces, pooled.faces)


def test_marching_workers_start_without_the_callers_imports(tmp_path):
    """Spawned workers would import the caller's script again, and with it torch: seconds per
    worker before the first extraction. They start without it."""
    import os
    import subprocess
    import sys

    script = tmp_path / "caller.py"
    script.write_text(
        "import torch  # noqa: F401 - what a caller of the extraction has loaded\n"
        "from neural_field_addon.core.surface import marching\n"
        "if __name__ == '__main__':\n"
        "    pool = marching._worker_pool(2)\n"
        "    print(pool.submit(eval, \"'torch' in __import__('sys').modules\").result())\n"
        "    pool.shutdown()\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": REPO_ROOT})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"
