"""Fixtures of the add-on's tests: the extension built with Blender's own tool and installed the
way Blender installs it, and a fresh scene. Every test in this folder is marked `blender`."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def addon(tmp_path_factory):
    """The extension built with Blender's tool and installed the way Blender installs it;
    returns the installed package (bl_ext.user_default.neural_field_addon)."""
    import importlib

    bpy = pytest.importorskip("bpy")
    import build_extension

    zip_path = build_extension.build(str(tmp_path_factory.mktemp("dist")))
    bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    return importlib.import_module("bl_ext.user_default.neural_field_addon")


@pytest.fixture
def empty_scene(addon):
    """A fresh, empty scene with the add-on enabled."""
    import bpy

    bpy.ops.wm.read_homefile(use_empty=True)
    return bpy.context.scene


@pytest.fixture
def quick_scene(addon):
    """A fresh, empty scene whose fits are quick: 30 steps on the CPU, extraction at 24, no
    fidelity measurement."""
    import bpy

    bpy.ops.wm.read_homefile(use_empty=True)
    settings = bpy.context.scene.neural_field
    settings.steps, settings.resolution, settings.evaluate, settings.device = 30, 24, False, "CPU"
    return bpy.context.scene
