"""Bad input in Blender: each is refused with a message naming the problem, and nothing in the
scene changes."""

from __future__ import annotations

import os

import pytest

bpy = pytest.importorskip("bpy")


def _scene_snapshot():
    return sorted(o.name for o in bpy.data.objects), sorted(c.name for c in bpy.data.collections)


def _fit_error() -> str:
    before = _scene_snapshot()
    with pytest.raises(RuntimeError) as error:
        bpy.ops.neural_field.fit()
    assert _scene_snapshot() == before
    assert bpy.context.scene.neural_field.is_running is False
    return str(error.value)


def test_fit_without_selection_names_the_problem(empty_scene):
    bpy.ops.mesh.primitive_monkey_add()
    bpy.ops.object.select_all(action="DESELECT")
    bpy.context.view_layer.objects.active = None
    assert "Nothing is selected" in _fit_error()


def test_fit_with_non_mesh_active_object_names_the_problem(empty_scene):
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    empty_scene.collection.objects.link(camera)
    camera.select_set(True)
    bpy.context.view_layer.objects.active = camera
    message = _fit_error()
    assert "not a mesh" in message or "None of the selected objects is a mesh" in message
    assert "camera" in message.lower()


def test_fit_with_mesh_without_faces_names_the_problem(empty_scene):
    mesh = bpy.data.meshes.new("Points")
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [])
    obj = bpy.data.objects.new("Points", mesh)
    empty_scene.collection.objects.link(obj)
    obj.select_set(True)
    bpy.context.view_layer.objects.active = obj
    message = _fit_error()
    assert "Points" in message and "no faces" in message


def test_extract_with_missing_field_file_names_the_problem(empty_scene, tmp_path):
    bpy.ops.mesh.primitive_cube_add()
    obj = bpy.context.active_object
    obj.neural_field.is_field = True
    obj.neural_field.field_path = str(tmp_path / "gone.nfield")
    mesh_before = obj.data.name
    with pytest.raises(RuntimeError, match="missing"):
        bpy.ops.neural_field.extract()
    assert obj.data.name == mesh_before
    assert not os.path.exists(tmp_path / "gone.nfield")
