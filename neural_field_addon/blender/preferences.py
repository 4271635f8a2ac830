"""Add-on preferences: the Python interpreter that runs the training worker."""

from __future__ import annotations

import os
import sys

import bpy
from bpy.props import StringProperty

from .storage import ADDON_PACKAGE, user_folder


class NeuralFieldPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_PACKAGE

    python_path: StringProperty(
        name="Python for Training",
        description="Python interpreter with PyTorch that runs the training worker; empty uses "
        "Blender's own Python with the add-on's dependency folder on its path",
        subtype="FILE_PATH",
        default="",
    )

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "python_path")
        layout.label(text=f"Worker Python: {worker_python(context)}")
        layout.label(text=f"Dependency folder: {dependency_folder()}")


def preferences(context):
    addon = context.preferences.addons.get(ADDON_PACKAGE)
    return addon.preferences if addon else None


def worker_python(context) -> str:
    prefs = preferences(context)
    if prefs and prefs.python_path:
        return bpy.path.abspath(prefs.python_path)
    return sys.executable


def dependency_folder() -> str:
    """Where `Install dependencies` puts PyTorch and friends for Blender's own Python."""
    return user_folder("deps")


def worker_paths() -> tuple[str, ...]:
    folder = dependency_folder()
    return (folder,) if os.path.isdir(folder) and os.listdir(folder) else ()
