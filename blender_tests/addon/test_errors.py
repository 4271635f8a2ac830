"""Bad input in Blender: each is refused with a message naming the problem, and nothing in the
scene changes."""

from __future__ import annotations

import importlib

import pytest

bpy = pytest.importorskip("bpy")


def _driver():
    return importlib.import_module("bl_ext.user_default.neural_field_addon.blender.driver")


def _scene_snapshot():
    return sorted(o.name for o in bpy.data.objects), sorted(c.name for c in bpy.data.collections)


def _fit_error() -> str:
    before = _scene_snapshot()
    with pytest.raises(RuntimeError) as error:
        bpy.ops.neural_field.fit()
    assert _scene_snapshot() == before
    assert not _driver().STATE.running
    return str(error.value)


def test_fit_without_selection_names_the_problem(empty_scene):
    bpy.ops.mesh.primitive_monkey_add()
    bpy.ops.object.select_all(action="DESELECT")
    bpy.context.view_layer.objects.active = None
    assert "Nothing is selected" in _fit_error()


def _add_camera(scene):
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    return camera


def test_fit_with_only_a_camera_selected_names_the_problem(empty_scene):
    camera = _add_camera(empty_scene)
    camera.select_set(True)
    bpy.context.view_layer.objects.active = camera
    message = _fit_error()
    assert "None of the selected objects is a mesh" in message and "camera" in message


def test_fit_with_unselected_non_mesh_active_object_names_the_problem(empty_scene):
    camera = _add_camera(empty_scene)
    camera.select_set(False)
    bpy.context.view_layer.objects.active = camera
    message = _fit_error()
    assert "'Camera' is a camera, not a mesh" in message


def test_fit_with_mesh_without_faces_names_the_problem(empty_scene):
    mesh = bpy.data.meshes.new("Points")
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [])
    obj = bpy.data.objects.new("Points", mesh)
    empty_scene.collection.objects.link(obj)
    obj.select_set(True)
    bpy.context.view_layer.objects.active = obj
    message = _fit_error()
    assert "Points" in message and "no faces" in message


def test_fit_of_an_occupancy_field_at_a_level_offset_is_refused_before_any_job(empty_scene):
    bpy.ops.mesh.primitive_cube_add()
    settings = empty_scene.neural_field
    settings.preset, settings.kind, settings.level = "CUSTOM", "OCCUPANCY", 0.05
    message = _fit_error()  # the fit task refuses it before the worker starts
    assert "Cannot fit 'Cube'" in message and "occupancy field" in message


def test_extract_with_missing_field_file_names_the_problem(empty_scene, tmp_path):
    bpy.ops.mesh.primitive_cube_add()
    obj = bpy.context.active_object
    obj.neural_field.is_field = True
    obj.neural_field.field_path = str(tmp_path / "gone.nfield")
    mesh_before = obj.data
    with pytest.raises(RuntimeError, match="missing") as error:
        bpy.ops.neural_field.extract()
    assert "gone.nfield" in str(error.value)
    assert obj.data == mesh_before


def test_extract_in_edit_mode_is_refused_and_changes_nothing(empty_scene, tmp_path):
    bpy.ops.mesh.primitive_cube_add()
    obj = bpy.context.active_object
    obj.neural_field.is_field = True
    field_file = tmp_path / "cube.nfield"
    field_file.write_bytes(b"not read: the mode check comes first")
    obj.neural_field.field_path = str(field_file)
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        with pytest.raises(RuntimeError, match="Edit Mode"):
            bpy.ops.neural_field.extract()
        assert obj.neural_field.resolution == 0
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")


def test_extract_on_a_non_field_object_explains_why_it_is_unavailable(empty_scene):
    bpy.ops.mesh.primitive_cube_add()
    with pytest.raises(RuntimeError, match="not a neural field"):
        bpy.ops.neural_field.extract()


def test_progress_text_reports_step_loss_and_times_per_task():
    fraction, text = _driver().progress_text(
        {"task": 1, "phase": "train", "step": 50, "steps": 200, "loss": 0.0123, "elapsed": 10.0, "remaining": 30.0},
        task_count=2,
    )
    assert fraction == pytest.approx((1 + 0.25) / 2)
    assert text == "[2/2] Training 50/200, loss 1.23e-02, 10 s elapsed, 30 s left"


def test_a_second_job_is_refused_while_one_runs(empty_scene):
    bpy.ops.mesh.primitive_monkey_add()
    driver = _driver()
    jobs = importlib.import_module("bl_ext.user_default.neural_field_addon.blender.jobs")
    driver.STATE.begin(jobs.WorkerJob())  # a job in flight (its worker not needed here)
    try:
        with pytest.raises(RuntimeError, match="job is running"):
            bpy.ops.neural_field.fit()
    finally:
        driver.STATE.end()
    assert not driver.STATE.running
