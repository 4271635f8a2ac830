"""Colour fitted with the shape: an analytic sphere coloured by a known function of position, its
field and extracted colours measured in sRGB PSNR, kept in the field file, baked into a texture,
and the command line's --color and --texture.

Bounds were measured on a 2-core CPU (torch 2.13, seed 0) with a margin of 2-4 dB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from checks import REPO_ROOT, RecordedEvents
from neural_field_addon.core.appearance.surface_colors import SurfaceColors
from neural_field_addon.core.config import preset_configs, with_overrides
from neural_field_addon.core.fitting.fitter import fit_field
from neural_field_addon.core.geometry import TriangleMesh
from neural_field_addon.core.geometry.procedural import icosphere
from neural_field_addon.core.io.fieldfile import load_field, save_field
from neural_field_addon.core.io.fileheader import COLOR_VERSION, FIELD_VERSION, read_header
from neural_field_addon.core.io.meshio import MeshAppearance, save_mesh
from neural_field_addon.core.surface.baking import bake_texture, unwrap
from neural_field_addon.core.surface.extraction import extract_isosurface
from neural_field_addon.core.surface.metrics import compare_colors

STEPS = 150
TRAIN = {"steps": STEPS, "batch": 4096, "pool_size": 1 << 16, "device": "cpu"}


def sphere_color(points: np.ndarray) -> np.ndarray:
    """Linear RGB varying smoothly over the unit sphere."""
    x, y, z = points.T
    return np.stack([0.5 + 0.4 * np.sin(2 * x), 0.5 + 0.4 * np.cos(2 * y), 0.5 + 0.4 * z], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def sphere():
    mesh = TriangleMesh(*icosphere(1.0, 4))
    return mesh, SurfaceColors.from_vertex_colors(mesh.faces, sphere_color(mesh.vertices))


@pytest.fixture(scope="module")
def colored_field(sphere):
    mesh, colors = sphere
    field_config, train_config = preset_configs("compact", "cpu")
    return fit_field(mesh, field_config, with_overrides(train_config, TRAIN), colors=colors)


def test_an_analytic_sphere_colour_is_fitted_to_25_db(sphere, colored_field):
    mesh, colors = sphere
    assert colored_field.has_color and colored_field.report["color_parameters"] > 0
    assert compare_colors(mesh, colors, field_colors=colored_field.colors)["field_color_psnr"] >= 25.0


def test_the_extracted_mesh_takes_the_field_colour_at_its_vertices(sphere, colored_field):
    mesh, colors = sphere
    surface = extract_isosurface(colored_field, 64)
    vertex_colors = SurfaceColors.from_vertex_colors(surface.faces, colored_field.colors(surface.vertices))
    assert compare_colors(mesh, colors, surface, vertex_colors)["color_psnr"] >= 24.0


def test_a_baked_texture_holds_the_field_colour(sphere, colored_field):
    mesh, colors = sphere
    surface, uvs, vmapping = unwrap(extract_isosurface(colored_field, 48), 256)
    assert len(uvs) == len(surface.vertices) and vmapping.max() < len(surface.vertices)
    texture = bake_texture(colored_field.colors, surface, uvs, 256)
    baked = SurfaceColors(np.ones((len(surface.faces), 3, 3)), uvs[surface.faces], np.zeros(len(surface.faces)),
                          (texture,))
    assert compare_colors(mesh, colors, surface, baked)["color_psnr"] >= 23.0


def test_a_field_file_keeps_the_colour_and_says_so_in_its_version(tmp_path, colored_field):
    path = tmp_path / "colored.nfield"
    save_field(path, colored_field, "float32")  # float32: the version that says colour, nothing more
    assert read_header(path)["version"] == COLOR_VERSION
    back = load_field(path)
    points = np.random.default_rng(0).normal(size=(100, 3))
    assert np.allclose(back.colors(points), colored_field.colors(points), atol=1e-6)
    assert back.color_config == colored_field.color_config


def test_a_field_without_colour_keeps_its_earlier_version(tmp_path, sphere):
    mesh, _ = sphere
    field_config, train_config = preset_configs("compact", "cpu")
    field = fit_field(mesh, field_config, with_overrides(train_config, {**TRAIN, "steps": 2}))
    save_field(tmp_path / "plain.nfield", field, "float32")
    assert read_header(tmp_path / "plain.nfield")["version"] == FIELD_VERSION
    assert not load_field(tmp_path / "plain.nfield").has_color


def run_cli(*args):
    result = subprocess.run([sys.executable, "-m", "neural_field_addon.core", *map(str, args), "--json"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    return result.returncode, (json.loads(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else None), \
        result.stderr


def test_the_command_line_fits_colour_bakes_a_texture_and_measures_it(tmp_path, sphere):
    mesh, colors = sphere
    source = tmp_path / "sphere.ply"
    save_mesh(source, mesh, appearance=MeshAppearance(colors=sphere_color(mesh.vertices)))
    code, fit, err = run_cli("fit", source, "-o", tmp_path / "s.nfield", "--steps", 60, "--batch", 4096,
                             "--pool-size", 1 << 15, "--device", "cpu")
    assert code == 0, err
    assert fit["report"]["color"] and fit["report"]["field_color_psnr"] > 15.0
    code, extract, err = run_cli("extract", tmp_path / "s.nfield", "-o", tmp_path / "out.obj", "--resolution", 40,
                                 "--texture", 128)
    assert code == 0, err
    assert extract["color"] == "texture"
    assert sorted(os.path.basename(p) for p in extract["files"]) == ["out.mtl", "out.obj", "out.png"]
    code, metrics, err = run_cli("eval", source, tmp_path / "out.obj", "--samples", 5000)
    assert code == 0, err
    assert metrics["color_psnr"] > 15.0


def test_the_command_line_refuses_a_texture_for_a_field_without_colour(tmp_path, sphere):
    mesh, _ = sphere
    save_mesh(tmp_path / "plain.ply", mesh)
    code, _, err = run_cli("fit", tmp_path / "plain.ply", "-o", tmp_path / "p.nfield", "--steps", 2, "--device", "cpu",
                           "--pool-size", 1 << 14, "--batch", 1024)
    assert code == 0, err
    code, _, err = run_cli("extract", tmp_path / "p.nfield", "-o", tmp_path / "p.obj", "--resolution", 32,
                           "--texture", 64)
    assert code == 1 and "has no colour to bake" in err
    assert not os.path.exists(tmp_path / "p.obj")


RED, BLUE = (0.8, 0.1, 0.1), (0.1, 0.2, 0.8)


@pytest.fixture(scope="module")
def colored_space():
    from neural_field_addon.core.config import space_configs
    from neural_field_addon.core.fitting.space_fitter import fit_shape_space
    from neural_field_addon.core.geometry.procedural import torus

    ball, ring = TriangleMesh(*icosphere(1.0, 3)), TriangleMesh(*torus(1.0, 0.4, 48, 24))
    colors = [SurfaceColors.from_vertex_colors(mesh.faces, np.tile([color], (len(mesh.vertices), 1)))
              for mesh, color in ((ball, RED), (ring, BLUE))]
    field_config, train_config = space_configs("cpu")
    space = fit_shape_space([ball, ring], field_config, with_overrides(train_config, {"steps": 200, "device": "cpu"}),
                            colors=colors)
    return space, [ball, ring], colors


def test_a_space_keeps_each_shapes_colour_and_blends_it_with_the_shape(colored_space, tmp_path):
    from neural_field_addon.core.io.fieldfile import load_space, save_space

    space, meshes, colors = colored_space
    for index in range(2):
        fidelity = compare_colors(meshes[index], colors[index], field_colors=space.shape(index).colors, samples=5000)
        assert fidelity["field_color_psnr"] >= 25.0
    # Half way, the colour is half way too: red and blue channels both near their mean.
    middle = space.blend({0: 0.5, 1: 0.5}).colors(np.array([[0.0, 0.0, 1.0]]))[0]
    assert abs(middle[0] - 0.45) < 0.15 and abs(middle[2] - 0.45) < 0.15
    save_space(tmp_path / "space.nfield", space, "float32")  # exact: float16 is tested in io/test_storage.py
    back = load_space(tmp_path / "space.nfield")
    assert np.allclose(back.shape(1).colors(meshes[1].vertices[:50]), space.shape(1).colors(meshes[1].vertices[:50]),
                       atol=1e-6)


def test_a_reconstruction_from_coloured_points_takes_their_colour(colored_space):
    from neural_field_addon.core.fitting.inference import reconstruct
    from neural_field_addon.core.geometry import sample_surface

    space, meshes, _ = colored_space
    points, _ = sample_surface(meshes[1], 2000, np.random.default_rng(0))
    red = np.tile([RED], (len(points), 1))
    coloured = reconstruct(space, points=points, colors=red, steps=150)
    plain = reconstruct(space, points=points, steps=150)
    assert coloured.report["color_fitted"] and not plain.report["color_fitted"]
    probe = points[:200]
    assert np.abs(coloured.colors(probe) - RED).mean() < 0.5 * np.abs(plain.colors(probe) - RED).mean()


def test_points_without_colours_reconstruct_with_a_warning_and_the_spaces_mean_appearance(colored_space, tmp_path):
    from neural_field_addon.core.geometry import sample_surface
    from neural_field_addon.core.io.fieldfile import save_space
    from neural_field_addon.core.service.runners import run_task
    from neural_field_addon.core.service.tasks import ExtractSettings, ReconstructTask

    space, meshes, _ = colored_space
    save_space(tmp_path / "space.nfield", space)
    points, _ = sample_surface(meshes[1], 1000, np.random.default_rng(0))
    np.savez(tmp_path / "scan.npz", points=points)
    events = RecordedEvents()
    result = run_task(ReconstructTask(space_path=str(tmp_path / "space.nfield"), input=str(tmp_path / "scan.npz"),
                                      mesh_out=str(tmp_path / "out.ply"), steps=20, device="cpu",
                                      extract=ExtractSettings(resolution=32)), events)
    assert any("scan.npz has no colours" in message and "mean appearance" in message for message in events.warnings)
    assert result["faces"] > 0
