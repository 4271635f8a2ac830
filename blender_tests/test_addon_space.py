"""Shape spaces in real Blender: Fit Shape Space on two selected tori makes one field object per
shape, over its source, all referencing one space file; Extract on such an object makes the blend
its Shape A, Shape B and Mix ask for."""

from __future__ import annotations

import json

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")


@pytest.fixture(scope="module")
def space_scene(addon):
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.mesh.primitive_torus_add(major_radius=1.0, minor_radius=0.2, location=(-3.0, 0.0, 0.0))
    thin = bpy.context.active_object
    thin.name = "Thin"
    bpy.ops.mesh.primitive_torus_add(major_radius=1.0, minor_radius=0.45, location=(3.0, 1.0, 0.5),
                                     rotation=(0.3, 0.0, 0.2))
    fat = bpy.context.active_object
    fat.name = "Fat"
    thin.select_set(True)
    settings = bpy.context.scene.neural_field
    settings.steps, settings.resolution, settings.device = 100, 40, "CPU"
    result = bpy.ops.neural_field.fit_shape_space()
    return {"result": result, "objects": [bpy.data.objects.get("Thin.field"), bpy.data.objects.get("Fat.field")]}


def _volume(obj) -> float:
    mesh = obj.data
    vertices = np.empty(len(mesh.vertices) * 3)
    mesh.vertices.foreach_get("co", vertices)
    mesh.calc_loop_triangles()
    faces = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int64)
    mesh.loop_triangles.foreach_get("vertices", faces)
    triangles = vertices.reshape(-1, 3)[faces.reshape(-1, 3)]
    return float(np.einsum("ij,ij->i", triangles[:, 0], np.cross(triangles[:, 1], triangles[:, 2])).sum() / 6.0)


def test_fit_shape_space_makes_one_object_per_shape_on_one_space_file(space_scene):
    assert space_scene["result"] == {"FINISHED"}
    thin, fat = space_scene["objects"]
    assert thin is not None and fat is not None
    assert thin.neural_field.field_path == fat.neural_field.field_path
    assert (thin.neural_field.space_shape, fat.neural_field.space_shape) == (0, 1)
    assert json.loads(thin.neural_field.space_names) == ["Thin", "Fat"]
    np.testing.assert_allclose(np.array(fat.matrix_world), np.array(bpy.data.objects["Fat"].matrix_world), atol=1e-6)


def test_each_shape_object_resembles_its_source(space_scene):
    thin, fat = space_scene["objects"]
    # Volumes of a torus: 2 pi^2 R r^2 (the primitives' polygons are a little inside).
    assert _volume(thin) == pytest.approx(2 * np.pi**2 * 0.2**2, rel=0.25)
    assert _volume(fat) == pytest.approx(2 * np.pi**2 * 0.45**2, rel=0.25)


def test_extract_with_mix_makes_the_blend_between_the_shapes(space_scene):
    thin, fat = space_scene["objects"]
    endpoints = (_volume(thin), _volume(fat))
    bpy.context.view_layer.objects.active = thin
    thin.neural_field.shape_a, thin.neural_field.shape_b, thin.neural_field.mix = 0, 1, 0.5
    assert bpy.ops.neural_field.extract() == {"FINISHED"}
    assert endpoints[0] < _volume(thin) < endpoints[1]


def test_fit_shape_space_with_one_mesh_is_refused(space_scene):
    for obj in bpy.context.selected_objects:
        obj.select_set(False)
    bpy.data.objects["Thin"].select_set(True)
    bpy.context.view_layer.objects.active = bpy.data.objects["Thin"]
    with pytest.raises(RuntimeError, match="two or more meshes"):
        bpy.ops.neural_field.fit_shape_space()
