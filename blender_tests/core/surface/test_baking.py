"""The UV layout of a bake: projection charts packed by xatlas, never overlapping, and a texture
baked through it that holds the colour it was baked from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neural_field_addon.core.appearance.surface_colors import SurfaceColors
from neural_field_addon.core.fields.analytic import AnalyticField
from neural_field_addon.core.geometry import TriangleMesh
from neural_field_addon.core.geometry.procedural import torus_sdf
from neural_field_addon.core.surface.baking import bake_texture, projection_charts, rasterize, unwrap, vertex_colors
from neural_field_addon.core.surface.extraction import extract_isosurface
from neural_field_addon.core.surface.metrics import compare_colors

pytest.importorskip("xatlas")

SIZE = 512


@pytest.fixture(scope="module")
def torus_surface() -> TriangleMesh:
    field = AnalyticField.around(lambda points: torus_sdf(points, 1.0, 0.35), (-1.35, -1.35, -0.35), (1.35, 1.35, 0.35))
    return extract_isosurface(field, 64)


def doubled_texels(mesh: TriangleMesh, uvs: np.ndarray, size: int) -> int:
    """Texels that lie in more than one triangle of the layout."""
    rows, columns, _, _ = rasterize(mesh, uvs, size)
    texels = rows * size + columns
    return len(texels) - len(torch.unique(texels))


def test_an_isosurface_unwraps_into_few_charts_that_never_overlap(torus_surface):
    charts, _ = projection_charts(torus_surface)
    assert charts.max() + 1 < len(torus_surface.faces) / 50
    split, uvs, original = unwrap(torus_surface, SIZE)
    assert np.array_equal(split.vertices, torus_surface.vertices[original])
    assert uvs.min() >= 0.0 and uvs.max() <= 1.0
    assert doubled_texels(split, uvs, SIZE) <= 16  # centres exactly on a shared edge, no more


def test_each_chart_faces_the_axis_it_is_projected_along(torus_surface):
    charts, axis = projection_charts(torus_surface)
    corners = torus_surface.vertices[torus_surface.faces]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    along = np.abs(normals[np.arange(len(normals)), axis])
    assert along.min() >= 0.5 - 1e-9  # within 60 degrees: at most 2x foreshortened
    for chart in np.unique(charts):
        members = charts == chart
        assert len(np.unique(axis[members])) == 1
        assert len(np.unique(np.sign(normals[members, axis[members][0]]))) == 1


def helicoid(turns: float = 1.5, steps: int = 96, rings: int = 6) -> TriangleMesh:
    """A spiral ramp of 1.5 turns: every face looks up (+z), so its one projection chart lies
    over itself after a turn."""
    angle = np.linspace(0.0, 2.0 * np.pi * turns, steps)
    radius = np.linspace(0.5, 1.0, rings)
    a, r = np.meshgrid(angle, radius, indexing="ij")
    vertices = np.stack([r * np.cos(a), r * np.sin(a), 0.05 * a], axis=-1).reshape(-1, 3)
    index = np.arange(steps * rings).reshape(steps, rings)
    quads = np.stack([index[:-1, :-1], index[1:, :-1], index[1:, 1:], index[:-1, 1:]], axis=-1).reshape(-1, 4)
    faces = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    return TriangleMesh(vertices, faces)


def test_a_surface_whose_projection_lies_over_itself_still_gets_a_layout_without_overlaps():
    ramp = helicoid()
    charts, _ = projection_charts(ramp)
    assert charts.max() == 0  # one chart, which its projection would fold over itself
    split, uvs, original = unwrap(ramp, SIZE)
    assert np.array_equal(split.vertices, ramp.vertices[original])
    assert doubled_texels(split, uvs, SIZE) <= 16


def test_a_texture_baked_through_the_layout_holds_the_colour_it_was_baked_from(torus_surface):
    def colour(points):
        return np.clip(0.5 + 0.4 * np.sin(2.0 * np.asarray(points, dtype=np.float64)), 0.0, 1.0)

    split, uvs, _ = unwrap(torus_surface, SIZE)
    texture = bake_texture(colour, split, uvs, SIZE)
    baked = SurfaceColors(np.ones((len(split.faces), 3, 3)), uvs[split.faces], np.zeros(len(split.faces)), (texture,))
    exact = SurfaceColors.from_vertex_colors(torus_surface.faces, colour(torus_surface.vertices))
    assert compare_colors(torus_surface, exact, split, baked, samples=20000)["color_psnr"] >= 40.0


def test_vertex_colours_reproduce_a_colour_linear_in_position_exactly(torus_surface):
    def linear(points):
        return 0.5 + 0.2 * np.asarray(points, dtype=np.float64) @ np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])

    assert np.allclose(vertex_colors(linear, torus_surface), linear(torus_surface.vertices), atol=1e-5)


def test_vertex_colours_fit_a_sharp_edge_better_than_the_colours_at_the_vertices(torus_surface):
    def halves(points):
        return np.where((np.asarray(points) @ np.array([1.0, 0.6, 0.3]) > 0.1)[:, None], (0.8, 0.1, 0.1), (0.1, 0.2, 0.8))

    field = AnalyticField.around(lambda points: torus_sdf(points, 1.0, 0.35), (-1.35, -1.35, -0.35), (1.35, 1.35, 0.35))
    fine = extract_isosurface(field, 160)  # the reference: the step on faces far smaller than the candidate's
    exact = SurfaceColors.from_face_colors(halves(fine.vertices[fine.faces].mean(axis=1)))
    coarse = torus_surface
    fitted = SurfaceColors.from_vertex_colors(coarse.faces, vertex_colors(halves, coarse))
    sampled = SurfaceColors.from_vertex_colors(coarse.faces, halves(coarse.vertices))
    fitted_psnr = compare_colors(fine, exact, coarse, fitted, samples=50000)["color_psnr"]
    sampled_psnr = compare_colors(fine, exact, coarse, sampled, samples=50000)["color_psnr"]
    assert fitted_psnr >= sampled_psnr + 0.5
