"""Where field files live: beside the saved .blend (`//neural_fields/`, stored as a relative
path), or, for an unsaved file, in the add-on's user folder until the .blend is saved, when they
are copied beside it. Also: checking a field file from Blender (header only, no torch)."""

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


def chosen_fields_folder() -> str:
    """The Fields Folder of the add-on preferences (absolute), or '' for beside the .blend."""
    addon = bpy.context.preferences.addons.get(ADDON_PACKAGE)
    folder = getattr(addon.preferences, "fields_folder", "") if addon else ""
    return os.path.normpath(bpy.path.abspath(folder)) if folder else ""


def new_field_path(source_name: str) -> str:
    """An absolute path for a new field file of the named source: in the preferences' Fields
    Folder where one is chosen, else beside the .blend (or in the user folder until it is saved)."""
    folder = chosen_fields_folder()
    if not folder:
        folder = bpy.path.abspath("//" + FIELDS_FOLDER) if bpy.data.filepath else user_folder("fields")
    os.makedirs(folder, exist_ok=True)
    stem = bpy.path.clean_name(source_name) or "field"
    return os.path.join(folder, f"{stem}_{uuid.uuid4().hex[:8]}.nfield")


def stored_path(path: str) -> str:
    """The form kept on the object: relative to the .blend where it is saved, absolute where it
    is in the preferences' Fields Folder (that folder does not move with the .blend)."""
    if bpy.data.filepath and not _inside(path, chosen_fields_folder()):
        try:
            return bpy.path.relpath(path)
        except ValueError:  # another drive on Windows
            return path
    return path


def _inside(path: str, folder: str) -> bool:
    if not folder:
        return False
    path, folder = os.path.normcase(os.path.abspath(path)), os.path.normcase(os.path.abspath(folder))
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # different drives
        return False


def absolute_path(stored: str) -> str:
    return os.path.normpath(bpy.path.abspath(stored)) if stored else ""


# --------------------------------------------------------------------------- checking and keeping files

_PROBLEMS: dict = {}  # (path, mtime, size) -> problem, so the panel reads a header once per change


def field_problem(path: str, space_shapes: int = 0) -> str:
    """'' if `path` is a usable field file, else what is wrong with it: missing, corrupt, not a
    field, from a newer add-on, or (space_shapes > 0) not a shape space with that many shapes.
    Reads only the header, with NumPy (no torch in Blender's process)."""
    from ..core.io.fileheader import SPACE_CONTENT, FieldFileError, read_header

    if not path or not os.path.isfile(path):
        return f"Field file missing: {path or '(none)'}"
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size, space_shapes)
    if key not in _PROBLEMS:
        try:
            header = read_header(path)
            problem = ""
            is_space = header.get("content") == SPACE_CONTENT
            if space_shapes and not is_space:
                problem = f"{os.path.basename(path)} is a single field, not a shape space"
            elif space_shapes and len(header.get("names", ())) < space_shapes:
                problem = (f"{os.path.basename(path)} is a shape space of {len(header.get('names', ()))} shapes; "
                           f"this object needs {space_shapes}")
            elif not space_shapes and is_space:
                problem = f"{os.path.basename(path)} is a shape space, not a single field"
        except FieldFileError as error:
            problem = str(error)
        if len(_PROBLEMS) > 256:
            _PROBLEMS.clear()
        _PROBLEMS[key] = problem
    return _PROBLEMS[key]


def _copy_atomically(source: str, destination: str) -> None:
    import shutil

    temporary = f"{destination}.{os.getpid()}.tmp"
    try:
        shutil.copyfile(source, temporary)
        os.replace(temporary, destination)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _same_file_contents(a: str, b: str) -> bool:
    import filecmp

    return filecmp.cmp(a, b, shallow=False)


class _BlendPath:
    """The .blend the field paths are relative to: the file as it was loaded or last saved. A
    save handler may run after bpy.data.filepath has moved to the new name."""

    current = ""


def remember_blend_path() -> None:
    try:
        _BlendPath.current = bpy.data.filepath
    except AttributeError:  # bpy.data is restricted while add-ons are enabled at start-up
        _BlendPath.current = ""


def _resolve(stored: str, blend: str) -> str:
    if stored.startswith("//"):
        if not blend:
            return ""
        return os.path.normpath(os.path.join(os.path.dirname(blend), stored[2:]))
    return os.path.normpath(stored)


def keep_fields_beside(target_blend: str) -> int:
    """Before the .blend is saved as `target_blend`: copy every field file its objects use into
    `//neural_fields/` beside it (fields of a file never saved, or of a file saved elsewhere
    before), atomically and without overwriting a different file, and store relative paths.
    Fields in the preferences' Fields Folder stay there. The originals stay where they were: an
    undo step may still point at them. Returns the number of files copied."""
    target_dir = os.path.dirname(os.path.abspath(target_blend))
    folder = os.path.join(target_dir, FIELDS_FOLDER)
    chosen = chosen_fields_folder()
    placed: dict = {}
    copied = 0
    for obj in bpy.data.objects:
        record = obj.neural_field
        if obj.library is not None or not record.is_field or not record.field_path:
            continue
        source = _resolve(record.field_path, _BlendPath.current or bpy.data.filepath)
        if not source or not os.path.isfile(source):
            continue  # missing: the panel says so; nothing to copy
        if _inside(source, chosen):
            continue  # kept in the folder the preferences chose, by its absolute path
        if source not in placed:
            destination = os.path.join(folder, os.path.basename(source))
            if os.path.normcase(os.path.abspath(source)) != os.path.normcase(destination):
                os.makedirs(folder, exist_ok=True)
                stem, suffix = os.path.splitext(destination)
                counter = 1
                while os.path.exists(destination) and not _same_file_contents(source, destination):
                    destination = f"{stem}_{counter}{suffix}"
                    counter += 1
                if not os.path.exists(destination):
                    _copy_atomically(source, destination)
                    copied += 1
            placed[source] = destination
        relative = os.path.relpath(placed[source], target_dir).replace(os.sep, "/")
        if record.field_path != "//" + relative:
            record.field_path = "//" + relative
    return copied


@bpy.app.handlers.persistent
def _on_save_pre(*args):
    target = args[0] if args and isinstance(args[0], str) and args[0] else bpy.data.filepath
    if target:
        try:
            keep_fields_beside(target)
        except OSError as error:  # a full or read-only disk must not stop Blender saving the scene
            print(f"Neural Field: could not copy field files beside {target}: {error}")


@bpy.app.handlers.persistent
def _on_file_changed(*_args):
    remember_blend_path()


_HANDLERS = (("save_pre", _on_save_pre), ("save_post", _on_file_changed), ("load_post", _on_file_changed))


def register() -> None:
    remember_blend_path()
    for name, handler in _HANDLERS:
        getattr(bpy.app.handlers, name).append(handler)


def unregister() -> None:
    for name, handler in _HANDLERS:
        handlers = getattr(bpy.app.handlers, name)
        if handler in handlers:
            handlers.remove(handler)
