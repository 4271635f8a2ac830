"""Compress in real Blender: the active field becomes a small field object over the original,
within the target size, showing its bytes and its fidelity; a shape of a space is refused."""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

LOCATION = (2.0, -1.0, 0.75)
ROTATION = (0.3, -0.5, 1.1)


def _world_mesh(obj):
    from neural_field_addon.core.geometry import TriangleMesh

    bridge = importlib.import_module("bl_ext.user_default.neural_field_addon.blender.mesh_bridge")
    vertices, faces = bridge.evaluated_triangles(obj, bpy.context.evaluated_depsgraph_get())
    matrix = np.array(obj.matrix_world)
    return TriangleMesh(vertices @ matrix[:3, :3].T + matrix[:3, 3], faces)


@pytest.fixture(scope="module")
def compressed(addon):
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.mesh.primitive_torus_add(location=LOCATION, rotation=ROTATION)
    settings = bpy.context.scene.neural_field
    settings.steps, settings.resolution, settings.device, settings.evaluate = 200, 48, "CPU", False
    assert bpy.ops.neural_field.fit() == {"FINISHED"}
    settings.compress_kb = 4.0
    assert bpy.ops.neural_field.compress(steps=200) == {"FINISHED"}
    return bpy.context.active_object


def test_the_compressed_field_is_a_new_object_within_the_target(compressed):
    record = compressed.neural_field
    assert compressed.name == "Torus.field.compressed" and record.is_field
    assert 0 < record.compressed_bytes <= 4000
    path = bpy.path.abspath(record.field_path)
    assert os.path.getsize(path) == record.compressed_bytes
    assert record.chamfer > 0 and record.normal_consistency > 0.8
    assert "Torus.field" in bpy.data.objects  # the original stays


def test_it_lands_over_the_source(compressed):
    from neural_field_addon.core.surface.metrics import compare_meshes

    figures = compare_meshes(_world_mesh(bpy.data.objects["Torus"]), _world_mesh(compressed), samples=10_000)
    assert figures["chamfer_l1"] < 2e-2, figures  # a 200-step student of a 200-step field, at resolution 48


def test_it_re_extracts_like_any_field(compressed):
    bpy.context.view_layer.objects.active = compressed
    bpy.context.scene.neural_field.resolution = 32
    assert bpy.ops.neural_field.extract() == {"FINISHED"}
    assert compressed.neural_field.resolution == 32 and len(compressed.data.polygons) > 100


def test_compress_is_one_undo_step(compressed):
    # Last in this module: undo reloads the scene's data.
    count = len(bpy.data.objects)
    bpy.context.view_layer.objects.active = bpy.data.objects["Torus.field"]
    bpy.ops.ed.undo_push(message="before compress")
    assert bpy.ops.neural_field.compress("EXEC_DEFAULT", True, steps=50) == {"FINISHED"}
    assert len(bpy.data.objects) == count + 1
    bpy.ops.ed.undo()
    assert len(bpy.data.objects) == count
