"""A fit's 'auto' surface mode: solids and open sheets told apart by measurement."""

from __future__ import annotations

import glob
import os

import pytest

from checks import SHARED_MESHES
from neural_field_addon.core.geometry import TriangleMesh
from neural_field_addon.core.geometry.openness import analyse_surface
from neural_field_addon.core.geometry.procedural import flat_sheet, hemisphere, icosphere, open_box, torus


@pytest.mark.parametrize("make", [lambda: icosphere(1.0, 3), lambda: torus(1.0, 0.35, 48, 24)], ids=["sphere", "torus"])
def test_a_closed_mesh_is_a_solid(make):
    analysis = analyse_surface(TriangleMesh(*make()))
    assert analysis.mode == "solid" and analysis.decisive_share > 0.99 and analysis.boundary_ratio == 0.0


def test_an_open_body_with_windows_and_no_floor_is_a_shell():
    analysis = analyse_surface(TriangleMesh(*open_box()))
    assert analysis.mode == "shell" and analysis.decisive_share < 0.5 and analysis.boundary_ratio > 1.0
    assert "open sheet" in analysis.reason


def test_a_flat_mesh_is_a_shell_because_it_has_no_thickness():
    analysis = analyse_surface(TriangleMesh(*flat_sheet()))
    assert analysis.mode == "shell" and analysis.thinnest_extent == 0.0 and "flat" in analysis.reason


def test_an_open_bowl_is_a_shell_and_its_report_names_the_mode_and_why():
    report = analyse_surface(TriangleMesh(*hemisphere())).as_report()
    assert report["surface"] == "shell" and report["surface_reason"] and "surface_decisive_share" in report


@pytest.mark.skipif(not os.path.isdir(SHARED_MESHES), reason="../shared/meshes is not beside the checkout")
def test_every_shared_mesh_is_a_solid():
    from neural_field_addon.core.io.meshio import load_mesh

    paths = sorted(glob.glob(os.path.join(SHARED_MESHES, "*.obj")))
    assert paths
    for path in paths:
        analysis = analyse_surface(load_mesh(path))
        assert analysis.mode == "solid", (path, analysis.reason)
