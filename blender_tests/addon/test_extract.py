"""Extraction in real Blender: the surface lands exactly over a rotated, scaled, translated and
mirrored source; Extract keeps the object's materials and modifiers, applies field normals, says
so when there is no surface, and is one undo step."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

STEPS = 200
RESOLUTION = 48
# A mirrored (negative x scale), rotated, non-uniformly scaled and moved source.
LOCATION = (2.0, -1.0, 0.75)
ROTATION = (0.3, -0.5, 1.1)
SCALE = (-1.3, 0.7, 1.1)


def _world_mesh(obj):
    from neural_field_addon.core.geometry import TriangleMesh

    bridge = importlib.import_module("bl_ext.user_default.neural_field_addon.blender.mesh_bridge")
    vertices, faces = bridge.evaluated_triangles(obj, bpy.context.evaluated_depsgraph_get())
    matrix = np.array(obj.matrix_world)
    return TriangleMesh(vertices @ matrix[:3, :3].T + matrix[:3, 3], faces)


@pytest.fixture(scope="module")
def scene(addon):
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.mesh.primitive_monkey_add(location=LOCATION, rotation=ROTATION)
    source = bpy.context.active_object
    source.scale = SCALE
    settings = bpy.context.scene.neural_field
    settings.steps = STEPS
    settings.resolution = RESOLUTION
    settings.device = "CPU"
    settings.evaluate = False
    assert bpy.ops.neural_field.fit() == {"FINISHED"}
    return {"source": source.name, "field": "Suzanne.field"}


def test_surface_lands_over_a_mirrored_rotated_scaled_moved_source(scene):
    from neural_field_addon.core.surface.metrics import compare_meshes

    source = _world_mesh(bpy.data.objects[scene["source"]])
    surface = _world_mesh(bpy.data.objects[scene["field"]])
    figures = compare_meshes(source, surface, samples=20_000)
    # Measured 1.0e-3 of the diagonal and NC 0.94 in world space (200 steps, resolution 48); a misplaced or
    # unmirrored surface is off by a large fraction of it.
    assert figures["chamfer_l1"] < 4e-3, figures
    assert figures["normal_consistency"] > 0.9, figures


def test_extract_keeps_materials_and_modifiers(scene):
    obj = bpy.data.objects[scene["field"]]
    material = bpy.data.materials.new("Kept")
    obj.data.materials.clear()
    obj.data.materials.append(material)
    modifier = obj.modifiers.new("Smooth", "SMOOTH")
    bpy.context.view_layer.objects.active = obj
    bpy.context.scene.neural_field.resolution = 40
    assert bpy.ops.neural_field.extract() == {"FINISHED"}
    assert list(obj.data.materials) == [material]
    assert [m.name for m in obj.modifiers] == [modifier.name]
    obj.modifiers.remove(obj.modifiers[modifier.name])


def test_field_normals_are_set_as_smooth_custom_normals(scene):
    obj = bpy.data.objects[scene["field"]]
    bpy.context.view_layer.objects.active = obj
    settings = bpy.context.scene.neural_field
    settings.normals = True
    try:
        assert bpy.ops.neural_field.extract() == {"FINISHED"}
    finally:
        settings.normals = False
    mesh = obj.data
    assert mesh.has_custom_normals
    assert all(polygon.use_smooth for polygon in mesh.polygons)
    # Custom normals agree with the faces they belong to (outward, not flipped).
    corner = np.empty(len(mesh.corner_normals) * 3)
    mesh.corner_normals.foreach_get("vector", corner)
    face = np.empty(len(mesh.polygons) * 3)
    mesh.polygons.foreach_get("normal", face)
    loop_face = np.repeat(np.arange(len(mesh.polygons)), 3)
    agreement = np.sum(corner.reshape(-1, 3) * face.reshape(-1, 3)[loop_face], axis=1)
    assert np.median(agreement) > 0.9


def test_extract_without_surface_at_the_level_says_so_and_changes_nothing(scene):
    obj = bpy.data.objects[scene["field"]]
    bpy.context.view_layer.objects.active = obj
    settings = bpy.context.scene.neural_field
    mesh_before, level_before = obj.data, obj.neural_field.level
    settings.level = 100.0
    try:
        with pytest.raises(RuntimeError, match="no surface at level 100"):
            bpy.ops.neural_field.extract()
    finally:
        settings.level = 0.0
    assert obj.data == mesh_before
    assert obj.neural_field.level == level_before


def test_extract_is_one_undo_step(scene):
    # Last in this module: undo reloads the scene's data.
    def state():
        obj = bpy.data.objects[scene["field"]]
        return len(obj.data.vertices), obj.neural_field.resolution

    bpy.context.view_layer.objects.active = bpy.data.objects[scene["field"]]
    bpy.ops.ed.undo_push(message="before extract")
    states = [state()]
    for resolution in (32, 24):
        bpy.context.scene.neural_field.resolution = resolution
        assert bpy.ops.neural_field.extract("EXEC_DEFAULT", True) == {"FINISHED"}
        states.append(state())
    assert len(set(states)) == 3
    bpy.ops.ed.undo()
    assert state() == states[1]
    bpy.ops.ed.undo()
    assert state() == states[0]
