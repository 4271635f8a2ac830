"""Fields kept with the .blend: a field fitted before the file was first saved is copied beside
it on save and stored as a relative path; the .blend moved together with its field folder still
extracts; Save As elsewhere takes the fields along; a missing, corrupt or newer field file is
named in the panel's terms and Locate Field File points the object at the file."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

FIELD = "Icosphere.field"


@pytest.fixture
def fitted(addon, tmp_path):
    """A fresh unsaved scene with one fitted field; returns the field file's first path."""
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=2)
    settings = bpy.context.scene.neural_field
    settings.steps, settings.resolution, settings.device, settings.evaluate = 60, 24, "CPU", False
    assert bpy.ops.neural_field.fit() == {"FINISHED"}
    return bpy.data.objects[FIELD].neural_field.field_path


def _extract():
    bpy.context.view_layer.objects.active = bpy.data.objects[FIELD]
    return bpy.ops.neural_field.extract()


def test_fields_of_an_unsaved_file_go_beside_it_on_save_and_travel_with_it(fitted, tmp_path):
    assert os.path.isabs(fitted) and os.path.isfile(fitted)
    name = os.path.basename(fitted)
    saved = tmp_path / "first" / "scene.blend"
    saved.parent.mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(saved))
    assert bpy.data.objects[FIELD].neural_field.field_path == f"//neural_fields/{name}"
    assert (saved.parent / "neural_fields" / name).is_file()

    moved = tmp_path / "moved"
    shutil.copytree(saved.parent, moved)
    shutil.rmtree(saved.parent)
    bpy.ops.wm.open_mainfile(filepath=str(moved / "scene.blend"))
    assert bpy.data.objects[FIELD].neural_field.field_path == f"//neural_fields/{name}"
    assert _extract() == {"FINISHED"}


def test_save_as_into_another_folder_takes_the_fields_along(fitted, tmp_path):
    first = tmp_path / "a" / "scene.blend"
    first.parent.mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(first))
    second = tmp_path / "b" / "copy.blend"
    second.parent.mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(second))
    name = os.path.basename(fitted)
    assert (second.parent / "neural_fields" / name).is_file()
    shutil.rmtree(first.parent)
    bpy.ops.wm.open_mainfile(filepath=str(second))
    assert _extract() == {"FINISHED"}


def test_a_missing_field_is_named_and_locate_points_the_object_at_it(fitted, tmp_path):
    moved = tmp_path / "elsewhere.nfield"
    shutil.move(fitted, moved)
    with pytest.raises(RuntimeError, match="missing"):
        _extract()
    assert bpy.ops.neural_field.locate_field(filepath=str(moved)) == {"FINISHED"}
    assert os.path.normpath(bpy.data.objects[FIELD].neural_field.field_path) == os.path.normpath(str(moved))
    assert _extract() == {"FINISHED"}


def _header_file(path, header):
    data = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    with open(path, "wb") as handle:
        np.savez(handle, __header__=data)


@pytest.mark.parametrize("content, message", [
    (b"not a zip at all", "corrupt or not a field file"),
    ({"format": "neural-field", "version": 99}, "newer Neural Field"),
    ({"format": "something-else", "version": 1}, "not a Neural Field file"),
])
def test_locate_refuses_a_file_that_is_not_a_usable_field_and_changes_nothing(fitted, tmp_path, content, message):
    candidate = tmp_path / "candidate.nfield"
    if isinstance(content, bytes):
        candidate.write_bytes(content)
    else:
        _header_file(candidate, content)
    bpy.context.view_layer.objects.active = bpy.data.objects[FIELD]
    with pytest.raises(RuntimeError, match=message):
        bpy.ops.neural_field.locate_field(filepath=str(candidate))
    assert bpy.data.objects[FIELD].neural_field.field_path == fitted
