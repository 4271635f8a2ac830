"""The geometry of sheet extraction without a fit: orienting a source's faces, the side offsets a
side network learns, and the clean-up of an extracted sheet (cutting along a line, pinholes,
crumbs). Extracting sheets of fitted shells is in core/fitting/test_shell.py."""

from __future__ import annotations

import numpy as np

from checks import edge_face_counts
from neural_field_addon.core.geometry import TriangleMesh
from neural_field_addon.core.geometry.procedural import flat_sheet, open_box
from neural_field_addon.core.geometry.query import MeshQuery
from neural_field_addon.core.geometry.sides import normal_offsets, orient_faces, welded
from neural_field_addon.core.surface.sheet import clip_below, drop_small_parts, fill_small_holes


def _directed_once(faces) -> bool:
    """Every directed edge appears once: neighbouring faces are wound alike."""
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return len(np.unique(directed, axis=0)) == len(directed)


def _moebius(segments: int = 24):
    angle = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    vertices = []
    for offset in (-0.3, 0.3):
        vertices.append(np.stack([(1 + offset * np.cos(angle / 2)) * np.cos(angle),
                                  (1 + offset * np.cos(angle / 2)) * np.sin(angle),
                                  offset * np.sin(angle / 2)], axis=1))
    vertices = np.concatenate(vertices)
    faces = []
    for i in range(segments):
        j = (i + 1) % segments
        a, b = i, i + segments
        c, d = (j, j + segments) if j else (j + segments, j)  # the half twist joins each side to the other
        faces += [[a, c, b], [b, c, d]]
    return vertices, np.array(faces)


def test_faces_flipped_at_random_are_oriented_again_across_split_creases():
    mesh = TriangleMesh(*open_box(cells=6))  # its sides are separate grids, split along the cube's edges
    faces = mesh.faces.copy()
    flip = np.random.default_rng(0).random(len(faces)) < 0.5
    faces[flip] = faces[flip][:, ::-1]
    oriented, seams = orient_faces(TriangleMesh(mesh.vertices, faces))
    assert seams == 0 and _directed_once(oriented.faces)
    assert np.allclose(oriented.triangles().mean(axis=1), mesh.triangles().mean(axis=1))  # same faces, in order


def test_a_moebius_strip_keeps_one_seam():
    _, seams = orient_faces(TriangleMesh(*_moebius()))
    assert seams == 1


def test_the_side_offset_is_the_signed_distance_over_a_face_and_the_height_past_its_edge():
    sheet = TriangleMesh(*flat_sheet(cells=4))  # the square [-1, 1]^2 at z = 0, facing +z
    oriented, _ = orient_faces(sheet)
    points = np.array([[0.2, 0.1, 0.05], [0.2, 0.1, -0.05], [1.5, 0.0, 0.05], [1.5, 0.0, -0.05]])
    _, closest, face = MeshQuery(oriented).closest_points(points)
    offsets = normal_offsets(oriented, points, closest, face)
    sign = np.sign(offsets[0])
    # Over the sheet the offset is the signed distance; past its edge the height, not +-0.5.
    assert np.allclose(offsets * sign, [0.05, -0.05, 0.05, -0.05])


def test_clipping_cuts_along_the_interpolated_line_and_keeps_the_winding():
    mesh = TriangleMesh(*flat_sheet(cells=8))
    values = mesh.vertices[:, 0] - 0.3  # keep x < 0.3
    vertices, faces = clip_below(mesh.vertices, mesh.faces, values)
    kept = TriangleMesh(vertices, faces)
    boundary = kept.boundary_edges()
    on_cut = np.isclose(vertices[boundary].mean(axis=1)[:, 0], 0.3)
    assert on_cut.any() and np.all(vertices[np.unique(faces), 0] <= 0.3 + 1e-12)
    # The cut is a straight line across the square: 2 long, not a staircase.
    cut = boundary[on_cut]
    assert np.isclose(np.linalg.norm(vertices[cut[:, 0]] - vertices[cut[:, 1]], axis=1).sum(), 2.0)
    assert np.all(edge_face_counts(faces) <= 2) and _directed_once(faces)
    assert np.isclose(kept.face_areas_and_normals()[0].sum(), 2.0 * 1.3)


def test_pinholes_are_filled_and_crumbs_dropped_but_openings_kept():
    sheet = TriangleMesh(*flat_sheet(cells=16))  # cells of 0.125
    centres = sheet.triangles().mean(axis=1)
    pinhole = np.linalg.norm(centres[:, :2] - [0.5, 0.5], axis=1) < 0.1
    opening = np.linalg.norm(centres[:, :2] - [-0.4, -0.4], axis=1) < 0.45
    faces = sheet.faces[~pinhole & ~opening]
    crumb_vertices = np.array([[3.0, 0, 0], [3.05, 0, 0], [3.0, 0.05, 0]])
    vertices = np.concatenate([sheet.vertices, crumb_vertices])
    faces = np.concatenate([faces, [[len(sheet.vertices), len(sheet.vertices) + 1, len(sheet.vertices) + 2]]])
    vertices, faces = drop_small_parts(vertices, faces, 0.01)
    before = TriangleMesh(vertices, faces).boundary_loops()
    vertices, faces = fill_small_holes(vertices, faces, 1.0)
    after = TriangleMesh(vertices, faces)
    assert before == 3 and after.boundary_loops() == 2  # outline and opening; the pinhole is closed
    assert vertices[:, 0].max() <= 1.0  # the crumb is gone
    assert _directed_once(faces) and np.all(edge_face_counts(faces) <= 2)


def test_welding_joins_coincident_vertices_only():
    mesh = TriangleMesh(*open_box(cells=2))
    merged = welded(mesh)
    assert len(merged.vertices) < len(mesh.vertices) and np.array_equal(merged.triangles(), mesh.triangles())
