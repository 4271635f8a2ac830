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
    settings.space_steps, settings.resolution, settings.device = 100, 40, "CPU"
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


def test_spherical_path_extracts_the_slerp_blend_of_the_codes(space_scene):
    from neural_field_addon.core.io.fieldfile import load_space
    from neural_field_addon.core.surface.extraction import extract_isosurface

    thin = space_scene["objects"][0]
    bpy.context.view_layer.objects.active = thin
    record = thin.neural_field
    record.shape_a, record.shape_b, record.mix, record.spherical = 0, 1, 0.5, True
    try:
        assert bpy.ops.neural_field.extract() == {"FINISHED"}
    finally:
        record.spherical = False
    space = load_space(bpy.path.abspath(record.field_path), device="cpu")
    resolution = bpy.context.scene.neural_field.resolution
    expected = {spherical: len(extract_isosurface(space.blend({0: 0.5, 1: 0.5}, spherical=spherical),
                                                  resolution, 0.0).vertices) for spherical in (True, False)}
    assert expected[True] != expected[False]  # the two paths differ for these codes
    assert len(thin.data.vertices) == expected[True]


def test_smooth_blends_are_on_by_default(addon):
    assert bpy.context.scene.neural_field.smooth_blends


def test_fit_shape_space_with_one_mesh_is_refused(space_scene):
    for obj in bpy.context.selected_objects:
        obj.select_set(False)
    bpy.data.objects["Thin"].select_set(True)
    bpy.context.view_layer.objects.active = bpy.data.objects["Thin"]
    with pytest.raises(RuntimeError, match="two or more meshes"):
        bpy.ops.neural_field.fit_shape_space()


def _live(addon):
    import importlib

    return importlib.import_module(addon.__name__ + ".blender.live")


def _select(objects, active):
    for obj in bpy.context.selected_objects:
        obj.select_set(False)
    for obj in objects:
        obj.select_set(True)
    bpy.context.view_layer.objects.active = active


def test_live_preview_follows_the_mix_and_goes_away_when_turned_off(space_scene, addon):
    live = _live(addon)
    thin, fat = space_scene["objects"]
    record = thin.neural_field
    record.shape_a, record.shape_b, record.mix = 0, 1, 0.0
    record.live_preview = True
    try:
        assert live.wait(60), live.LIVE.message
        preview = bpy.data.objects[thin.name + live.PREVIEW_SUFFIX]
        assert preview.neural_field.is_preview and not thin.visible_get()
        np.testing.assert_allclose(np.array(preview.matrix_world), np.array(thin.matrix_world), atol=1e-6)
        volumes = [_volume(preview)]
        for mix in (0.5, 1.0):
            record.mix = mix  # as a dragged slider sets it
            assert live.wait(60), live.LIVE.message
            volumes.append(_volume(preview))
        assert volumes[0] < volumes[1] < volumes[2]
        assert volumes[2] == pytest.approx(_volume(fat), rel=0.1)  # the fat shape, in the thin one's frame
    finally:
        record.live_preview = False
    assert thin.name + live.PREVIEW_SUFFIX not in bpy.data.objects
    assert thin.visible_get() and not live.LIVE.active


def test_live_preview_stops_when_its_toggle_is_cleared_behind_its_back(space_scene, addon):
    """Setting the toggle again keeps the preview; an undo step that clears the toggle (here the
    flag written without its update, as undo restores it) stops the preview and removes its object."""
    live = _live(addon)
    thin, _ = space_scene["objects"]
    thin.neural_field.live_preview = True
    try:
        assert live.wait(60), live.LIVE.message
        thin.neural_field.live_preview = True
        assert thin.neural_field.live_preview and live.LIVE.active
        thin.neural_field["live_preview"] = False
        assert not live.update()
        assert not live.LIVE.active and thin.name + live.PREVIEW_SUFFIX not in bpy.data.objects
        assert thin.visible_get()
    finally:
        thin.neural_field.live_preview = False


def test_live_preview_of_a_missing_space_file_says_so_and_stays_off(space_scene, addon, tmp_path):
    live = _live(addon)
    thin, _ = space_scene["objects"]
    stored = thin.neural_field.field_path
    thin.neural_field.field_path = str(tmp_path / "gone.nfield")
    try:
        thin.neural_field.live_preview = True
        assert not thin.neural_field.live_preview and not live.LIVE.active
        assert "missing" in live.LIVE.message
    finally:
        thin.neural_field.field_path = stored


def _torus_points(location, minor, upper_only):
    """Surface points of a torus (major radius 1) at `location`: a point-cloud mesh object."""
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, 80, endpoint=False), np.linspace(0, 2 * np.pi, 40, endpoint=False))
    ring = 1.0 + minor * np.cos(v)
    points = np.stack([ring * np.cos(u), ring * np.sin(u), minor * np.sin(v)], axis=-1).reshape(-1, 3)
    if upper_only:
        points = points[points[:, 2] > 0.0]
    mesh = bpy.data.meshes.new("scan")
    mesh.vertices.add(len(points))
    mesh.vertices.foreach_set("co", points.astype(np.float32).ravel())
    obj = bpy.data.objects.new("Scan", mesh)
    bpy.context.scene.collection.objects.link(obj)
    obj.location = location
    return obj


def test_reconstruct_completes_half_a_torus_from_its_points(space_scene):
    thin, fat = space_scene["objects"]
    scan = _torus_points((-3.0, 0.0, 0.0), 0.32, upper_only=True)  # over the thin torus's source
    _select([scan, thin], thin)
    assert bpy.ops.neural_field.reconstruct(steps=300) == {"FINISHED"}
    result = bpy.data.objects["Scan.reconstructed"]
    np.testing.assert_allclose(np.array(result.matrix_world), np.array(thin.matrix_world), atol=1e-6)
    names = json.loads(result.neural_field.space_names)
    assert names == ["Thin", "Fat", "Scan"] and result.neural_field.space_shape == 2
    assert result.neural_field.field_path != thin.neural_field.field_path  # the space file is left as it was
    volume, expected = _volume(result), 2 * np.pi**2 * 0.32**2
    assert _volume(thin) < volume < _volume(fat)
    assert volume == pytest.approx(expected, rel=0.35), (volume, expected)


def test_reconstruct_without_a_shape_space_is_refused(space_scene):
    scan = _torus_points((0.0, 6.0, 0.0), 0.3, upper_only=False)
    _select([scan], scan)
    objects = len(bpy.data.objects)
    with pytest.raises(RuntimeError, match="shape-space field object"):
        bpy.ops.neural_field.reconstruct()
    assert len(bpy.data.objects) == objects


def test_smooth_blends_off_fits_a_plain_auto_decoder(space_scene):
    from neural_field_addon.core.io.fieldfile import load_space

    settings = bpy.context.scene.neural_field
    _select([bpy.data.objects["Thin"], bpy.data.objects["Fat"]], bpy.data.objects["Thin"])
    settings.smooth_blends, steps, settings.space_steps = False, settings.space_steps, 20
    try:
        assert bpy.ops.neural_field.fit_shape_space() == {"FINISHED"}
    finally:
        settings.smooth_blends, settings.space_steps = True, steps
    plain = bpy.context.active_object
    assert plain.neural_field.field_path != space_scene["objects"][0].neural_field.field_path

    def mix_weight(obj):
        return load_space(bpy.path.abspath(obj.neural_field.field_path)).report["mix_weight"]

    assert (mix_weight(space_scene["objects"][0]), mix_weight(plain)) == (0.25, 0.0)
