"""Presets and network settings in the panel (scene.neural_field), and a fit through the add-on
with settings chosen there: the worker receives them and the field object records them."""

from __future__ import annotations

import pytest

bpy = pytest.importorskip("bpy")


def test_choosing_the_fast_preset_writes_hash_grid_settings(empty_scene):
    settings = empty_scene.neural_field
    settings.preset = "FAST"
    assert (settings.encoding, settings.hash_levels, settings.hash_log2_size, settings.width, settings.depth,
            settings.activation, settings.batch) == ("HASHGRID", 16, 19, 64, 2, "RELU", 1 << 18)
    settings.preset = "SMOOTH"
    assert settings.encoding == "POSITIONAL" and settings.eikonal_weight > 0


def test_a_new_preset_leaves_nothing_of_the_previous_one(empty_scene):
    settings = empty_scene.neural_field
    settings.preset = "SMOOTH"
    settings.skip_layer = 4
    settings.preset = "FAST"
    # Smooth's eikonal term would disable Fast's kernels; its skip layer exceeds Fast's depth.
    assert (settings.eikonal_weight, settings.skip_layer, settings.sdf_loss) == (0.0, 0, "L1")


def test_fit_uses_the_panel_settings_of_a_chosen_preset(empty_scene):
    bpy.ops.mesh.primitive_torus_add()
    settings = empty_scene.neural_field
    settings.preset = "FAST"
    # Small enough for the plain-PyTorch hash grid on two CPU cores.
    settings.hash_levels, settings.hash_log2_size, settings.hash_finest_resolution = 4, 12, 64
    settings.batch, settings.pool_size, settings.steps, settings.resolution = 1024, 8192, 20, 32
    settings.device, settings.evaluate = "CPU", False
    assert bpy.ops.neural_field.fit() == {"FINISHED"}
    record = bpy.data.objects["Torus.field"].neural_field
    assert record.encoding == "hashgrid" and record.steps == 20


def test_auto_preset_fit_on_the_cpu_uses_the_compact_network(empty_scene):
    bpy.ops.mesh.primitive_torus_add()
    settings = empty_scene.neural_field
    settings.preset = "AUTO"
    settings.steps, settings.resolution, settings.device, settings.evaluate = 10, 32, "CPU", False
    assert bpy.ops.neural_field.fit() == {"FINISHED"}
    assert bpy.data.objects["Torus.field"].neural_field.encoding == "fourier"
