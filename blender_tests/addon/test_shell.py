"""Open sheets in Blender: Surface Auto fits a plane as a shell, the result is a closed slab over
the source, and the field object remembers the mode through save and reopen."""

from __future__ import annotations

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")


def test_a_plane_fitted_with_auto_comes_back_as_a_closed_slab_that_remembers_it(empty_scene, tmp_path):
    bpy.ops.mesh.primitive_plane_add(size=2.0, location=(0.0, 0.0, 1.0))
    source = bpy.context.active_object
    settings = bpy.context.scene.neural_field
    settings.steps, settings.resolution, settings.device, settings.thickness = 150, 48, "CPU", 0.1
    assert settings.surface == "AUTO"
    assert bpy.ops.neural_field.fit() == {"FINISHED"}
    field = bpy.data.objects[f"{source.name}.field"]
    record = field.neural_field
    assert record.surface == "shell" and "flat" in record.surface_reason and record.thickness == pytest.approx(0.1)
    mesh = field.data
    edges = np.empty(len(mesh.edges) * 2, dtype=np.int64)
    mesh.edges.foreach_get("vertices", edges)
    loops = np.empty(len(mesh.loops), dtype=np.int64)
    mesh.loops.foreach_get("edge_index", loops)
    assert np.all(np.bincount(loops, minlength=len(mesh.edges)) == 2)  # closed: every edge in two faces
    corners = np.array([field.matrix_world @ v.co for v in mesh.vertices])
    assert corners[:, 2].min() < 1.0 - 0.02 < 1.0 + 0.02 < corners[:, 2].max() < 1.0 + 0.2  # around z = 1
    name, path = field.name, str(tmp_path / "shell.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    bpy.ops.wm.open_mainfile(filepath=path)
    assert bpy.data.objects[name].neural_field.surface == "shell"


def _edge_use(obj) -> np.ndarray:
    """How many faces use each edge of the object's mesh."""
    mesh = obj.data
    loops = np.empty(len(mesh.loops), dtype=np.int64)
    mesh.loops.foreach_get("edge_index", loops)
    return np.bincount(loops, minlength=len(mesh.edges))


def test_a_sheet_extracts_open_then_as_its_shell_and_undo_brings_the_sheet_back(empty_scene):
    # A grid curved like a cloth draped over a ridge: auto takes it as a shell (it is not flat).
    bpy.ops.mesh.primitive_grid_add(x_subdivisions=16, y_subdivisions=16, size=2.0)
    source = bpy.context.active_object
    for vertex in source.data.vertices:
        vertex.co.z = 0.3 * np.cos(1.5 * vertex.co.x)
    settings = bpy.context.scene.neural_field
    settings.steps, settings.resolution, settings.device, settings.sheet = 300, 48, "CPU", True
    assert bpy.ops.neural_field.fit() == {"FINISHED"}
    field = bpy.data.objects[f"{source.name}.field"]
    assert field.neural_field.surface == "shell" and field.neural_field.sheet
    use = _edge_use(field)
    assert use.max() == 2 and (use == 1).any()  # one layer, with a boundary
    z = np.array([v.co.z for v in field.data.vertices])
    assert np.abs(z - 0.3 * np.cos(1.5 * np.array([v.co.x for v in field.data.vertices]))).max() < 0.05

    name = field.name
    bpy.context.view_layer.objects.active = field
    bpy.ops.ed.undo_push(message="before the shell")
    settings.sheet = False
    assert bpy.ops.neural_field.extract("EXEC_DEFAULT", True) == {"FINISHED"}
    field = bpy.data.objects[name]
    assert not field.neural_field.sheet and np.all(_edge_use(field) == 2)  # the closed shell
    bpy.ops.ed.undo()  # undo reloads the scene's data: look the object up again
    field = bpy.data.objects[name]
    assert field.neural_field.sheet and (_edge_use(field) == 1).any()
