"""Unusual input in Blender, each with a correct result or CANCELLED with a message naming the
problem and the scene unchanged: mixed selections (text, curves, cameras, empties), a single
triangle, NaN coordinates, linked duplicates, instanced collections, parented and negatively
scaled objects, edit mode, library-linked objects, a worker killed mid-job, and a mesh of over a
million triangles. Also: Fit, Fit Shape Space and Reconstruct are each one undo step."""

from __future__ import annotations

import importlib
import threading

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

SMALL = {"steps": 40, "resolution": 24, "evaluate": False, "device": "CPU"}


def _driver():
    return importlib.import_module("bl_ext.user_default.neural_field_addon.blender.driver")


@pytest.fixture
def scene(addon):
    bpy.ops.wm.read_homefile(use_empty=True)
    settings = bpy.context.scene.neural_field
    for name, value in SMALL.items():
        setattr(settings, name, value)
    return bpy.context.scene


def _snapshot():
    return (sorted(o.name for o in bpy.data.objects), sorted(m.name for m in bpy.data.meshes),
            sorted(c.name for c in bpy.data.collections))


def _refused(operator=None) -> str:
    """Run the operator (Fit by default), expect CANCELLED with an error; returns the message."""
    before = _snapshot()
    with pytest.raises(RuntimeError) as error:
        (operator or bpy.ops.neural_field.fit)()
    assert _snapshot() == before
    assert not _driver().STATE.running
    return str(error.value)


def _select(*objects):
    bpy.ops.object.select_all(action="DESELECT")
    for obj in objects:
        obj.select_set(True)
    bpy.context.view_layer.objects.active = objects[-1]


def _world_bounds(obj, percentile=1.0):
    """Bounds of the object's evaluated vertices in world space, per axis between the given
    percentiles (so that a stray fragment of a short test fit does not decide them)."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    points = np.array([evaluated.matrix_world @ v.co for v in mesh.vertices])
    evaluated.to_mesh_clear()
    return np.percentile(points, percentile, axis=0), np.percentile(points, 100 - percentile, axis=0)


def _lands_over(field, source, tolerance=0.15):
    (low_f, high_f), (low_s, high_s) = _world_bounds(field), _world_bounds(source)
    size = np.linalg.norm(high_s - low_s)
    assert np.abs(low_f - low_s).max() < tolerance * size and np.abs(high_f - high_s).max() < tolerance * size, \
        (low_f, high_f, low_s, high_s)


# --------------------------------------------------------------------------- selections


def test_text_in_a_mixed_selection_is_fitted_and_cameras_and_empties_are_skipped(scene):
    bpy.ops.object.text_add()
    text = bpy.context.active_object
    text.data.extrude = 0.2
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    empty = bpy.data.objects.new("Empty", None)
    for obj in (camera, empty):
        scene.collection.objects.link(obj)
    _select(camera, empty, text)
    assert bpy.ops.neural_field.fit() == {"FINISHED"}
    assert "Text.field" in bpy.data.objects
    assert not any(name.startswith(("Camera.", "Empty.")) for name in bpy.data.objects.keys())
    _lands_over(bpy.data.objects["Text.field"], text, tolerance=0.2)


def test_a_curve_without_faces_is_named_and_nothing_is_fitted(scene):
    bpy.ops.mesh.primitive_cube_add()
    cube = bpy.context.active_object
    bpy.ops.curve.primitive_bezier_curve_add(location=(3, 0, 0))
    curve = bpy.context.active_object
    _select(cube, curve)
    message = _refused()
    assert curve.name in message and "curve without faces" in message


def test_a_single_triangle_is_refused_as_a_solid_enclosing_no_volume(scene):
    scene.neural_field.surface = "SOLID"
    mesh = bpy.data.meshes.new("Triangle")
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    obj = bpy.data.objects.new("Triangle", mesh)
    scene.collection.objects.link(obj)
    _select(obj)
    message = _refused()
    assert "Triangle" in message and "encloses no volume" in message


def test_nan_coordinates_are_named_and_nothing_changes(scene):
    bpy.ops.mesh.primitive_cube_add()
    cube = bpy.context.active_object
    cube.data.vertices[3].co = (float("nan"), 0.0, 0.0)
    message = _refused()
    assert "Cube" in message and "NaN" in message


# --------------------------------------------------------------------------- placement


def test_linked_duplicates_each_get_a_field_over_their_own_object(scene):
    bpy.ops.mesh.primitive_monkey_add()
    first = bpy.context.active_object
    second = bpy.data.objects.new("Twin", first.data)
    scene.collection.objects.link(second)
    second.location, second.rotation_euler, second.scale = (4, 1, 0), (0.3, 0.0, 1.2), (0.5, 0.5, 0.5)
    _select(first, second)
    assert bpy.ops.neural_field.fit() == {"FINISHED"}
    for field, source in ((bpy.data.objects["Suzanne.field"], first), (bpy.data.objects["Twin.field"], second)):
        # Same placement, and in its own space the field has the shared mesh's shape.
        assert np.allclose(np.array(field.matrix_world), np.array(source.matrix_world), atol=1e-6)
        fitted = np.array([v.co for v in field.data.vertices])
        shared = np.array([v.co for v in source.data.vertices])
        size = np.linalg.norm(shared.max(axis=0) - shared.min(axis=0))
        assert np.abs(fitted.min(axis=0) - shared.min(axis=0)).max() < 0.15 * size
        assert np.abs(fitted.max(axis=0) - shared.max(axis=0)).max() < 0.15 * size
    assert bpy.data.objects["Suzanne.field"].data != bpy.data.objects["Twin.field"].data


def test_an_instanced_collection_is_fitted_as_the_geometry_it_shows(scene):
    parts = bpy.data.collections.new("Parts")
    bpy.ops.mesh.primitive_cube_add(location=(0, 0, 0))
    cube = bpy.context.active_object
    bpy.ops.mesh.primitive_uv_sphere_add(location=(2.5, 0, 0))
    sphere = bpy.context.active_object
    for obj in (cube, sphere):
        scene.collection.objects.unlink(obj)
        parts.objects.link(obj)
    instance = bpy.data.objects.new("Instance", None)
    instance.instance_type, instance.instance_collection = "COLLECTION", parts
    instance.location, instance.rotation_euler = (0, 5, 1), (0, 0, 0.7)
    scene.collection.objects.link(instance)
    _select(instance)
    assert bpy.ops.neural_field.fit() == {"FINISHED"}
    field = bpy.data.objects["Instance.field"]
    low, high = _world_bounds(field)
    import mathutils

    # The cube spans -1..1 and the sphere 1.5..3.5 in x, both -1..1 in y and z, in the empty's space.
    corners = np.array([instance.matrix_world @ mathutils.Vector(c) for c in
                        [(x, y, z) for x in (-1, 3.5) for y in (-1, 1) for z in (-1, 1)]])
    expected_low, expected_high = corners.min(axis=0), corners.max(axis=0)
    size = np.linalg.norm(expected_high - expected_low)
    assert np.abs(low - expected_low).max() < 0.1 * size and np.abs(high - expected_high).max() < 0.1 * size


def test_a_parented_negatively_scaled_object_gets_its_field_exactly_over_it(scene):
    bpy.ops.mesh.primitive_monkey_add()
    monkey = bpy.context.active_object
    parent = bpy.data.objects.new("Rig", None)
    scene.collection.objects.link(parent)
    parent.location, parent.rotation_euler, parent.scale = (1, -2, 0.5), (0.4, 0.2, 0.9), (1.5, 1.5, 1.5)
    monkey.parent = parent
    monkey.scale = (-1.0, 0.7, 1.2)
    _select(monkey)
    assert bpy.ops.neural_field.fit() == {"FINISHED"}
    field = bpy.data.objects["Suzanne.field"]
    assert np.allclose(np.array(field.matrix_world), np.array(monkey.matrix_world), atol=1e-6)
    _lands_over(field, monkey)


def test_fit_in_edit_mode_uses_the_edits_made_so_far(scene):
    import bmesh

    bpy.ops.mesh.primitive_cube_add()
    cube = bpy.context.active_object
    bpy.ops.object.mode_set(mode="EDIT")
    edited = bmesh.from_edit_mesh(cube.data)
    for vertex in edited.verts:
        vertex.co.x *= 3.0  # not yet written to the mesh: only the edit-mode copy has it
    bmesh.update_edit_mesh(cube.data)
    assert bpy.ops.neural_field.fit() == {"FINISHED"}
    bpy.ops.object.mode_set(mode="OBJECT")
    low, high = _world_bounds(bpy.data.objects["Cube.field"])
    assert high[0] - low[0] > 4.5  # the stretched cube, 6 wide, not the 2-wide original


def test_a_library_linked_object_is_fitted_and_the_library_is_untouched(scene, tmp_path):
    bpy.ops.mesh.primitive_monkey_add()
    library = tmp_path / "library.blend"
    bpy.data.libraries.write(str(library), {bpy.context.active_object})
    bpy.ops.wm.read_homefile(use_empty=True)
    for name, value in SMALL.items():
        setattr(bpy.context.scene.neural_field, name, value)
    with bpy.data.libraries.load(str(library), link=True) as (source, target):
        target.objects = ["Suzanne"]
    linked = target.objects[0]
    bpy.context.scene.collection.objects.link(linked)
    before = library.stat().st_mtime_ns
    _select(linked)
    assert bpy.ops.neural_field.fit() == {"FINISHED"}
    field = bpy.data.objects["Suzanne.field"]
    assert field.library is None and linked.library is not None
    _lands_over(field, linked)
    assert library.stat().st_mtime_ns == before


def test_a_worker_killed_mid_job_is_reported_and_changes_nothing(scene):
    bpy.ops.mesh.primitive_monkey_add()
    bpy.context.scene.neural_field.steps = 100_000
    state = _driver().STATE

    def kill_when_training():
        for _ in range(600):
            job = state.job
            if job is not None and job.process is not None and "Training" in state.status:
                job.process.kill()
                return
            threading.Event().wait(0.05)

    killer = threading.Thread(target=kill_when_training, daemon=True)
    killer.start()
    message = _refused()
    killer.join(timeout=5)
    assert "stopped unexpectedly" in message and "-9" in message


def test_a_mesh_of_over_a_million_triangles_is_fitted_with_progress(scene, capsys):
    bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=9, radius=1.0)
    sphere = bpy.context.active_object
    sphere.data.calc_loop_triangles()
    assert len(sphere.data.loop_triangles) > 1_000_000
    settings = bpy.context.scene.neural_field
    settings.steps = 30
    assert bpy.ops.neural_field.fit() == {"FINISHED"}
    printed = capsys.readouterr().out
    assert "Neural Field: Computing ground truth" in printed or "Neural Field: Training" in printed
    _lands_over(bpy.data.objects["Icosphere.field"], sphere)


# --------------------------------------------------------------------------- undo


def _undoable(run):
    """Push an undo step, run, and check one undo restores the scene exactly as it was."""
    bpy.ops.ed.undo_push(message="before")
    before = _snapshot()
    assert run() == {"FINISHED"}
    after = _snapshot()
    assert after != before
    bpy.ops.ed.undo()
    assert _snapshot() == before
    return after


def test_fit_is_one_undo_step(scene):
    bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=2)
    _undoable(lambda: bpy.ops.neural_field.fit("EXEC_DEFAULT", True))


def _two_tori():
    bpy.ops.mesh.primitive_torus_add(major_radius=1.0, minor_radius=0.25)
    first = bpy.context.active_object
    bpy.ops.mesh.primitive_torus_add(major_radius=0.8, minor_radius=0.45, location=(3, 0, 0))
    _select(first, bpy.context.active_object)


def test_fit_shape_space_is_one_undo_step(scene):
    _two_tori()
    bpy.context.scene.neural_field.space_steps = 40
    _undoable(lambda: bpy.ops.neural_field.fit_shape_space("EXEC_DEFAULT", True))


def test_reconstruct_is_one_undo_step(scene):
    _two_tori()
    bpy.context.scene.neural_field.space_steps = 40
    assert bpy.ops.neural_field.fit_shape_space() == {"FINISHED"}
    bpy.ops.mesh.primitive_torus_add(major_radius=0.9, minor_radius=0.35, location=(0, 3, 0))
    target = bpy.context.active_object
    space_object = bpy.data.objects["Torus.field"]
    _select(target, space_object)
    bpy.context.view_layer.objects.active = space_object
    _undoable(lambda: bpy.ops.neural_field.reconstruct("EXEC_DEFAULT", True, steps=20))
