"""Where field files live: beside the saved .blend (`//neural_fields/`, stored as a relative
path), or, for an unsaved file, in the add-on's user folder."""

from __future__ import annotations

import os
import tempfile
import uuid

import bpy

ADDON_PACKAGE = __package__.rpartition(".")[0]
FIELDS_FOLDER = "neural_fields"


def user_folder(name: str) -> str:
    """A folder in the extension's user directory (a temporary one when not installed as an
    extension, e.g. registered straight from a source checkout)."""
    try:
        return bpy.utils.extension_path_user(ADDON_PACKAGE, path=name, create=True)
    except (ValueError, RuntimeError):
        path = os.path.join(tempfile.gettempdir(), "neural_field", name)
        os.makedirs(path, exist_ok=True)
        return path


def new_field_path(source_name: str) -> str:
    """An absolute path for a new field file of the named source."""
    if bpy.data.filepath:
        folder = bpy.path.abspath("//" + FIELDS_FOLDER)
    else:
        folder = user_folder("fields")
    os.makedirs(folder, exist_ok=True)
    stem = bpy.path.clean_name(source_name) or "field"
    return os.path.join(folder, f"{stem}_{uuid.uuid4().hex[:8]}.nfield")


def stored_path(path: str) -> str:
    """The form kept on the object: relative to the .blend where it is saved."""
    if bpy.data.filepath:
        try:
            return bpy.path.relpath(path)
        except ValueError:  # another drive on Windows
            return path
    return path


def absolute_path(stored: str) -> str:
    return os.path.normpath(bpy.path.abspath(stored)) if stored else ""
