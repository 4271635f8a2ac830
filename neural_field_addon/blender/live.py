"""Live preview of a shape-space blend: while Shape A, Shape B or Mix change, a preview object
over the field object shows the blend, extracted by a long-lived preview worker (jobs.py,
core/service/preview.py) that keeps the space loaded.

One preview runs at a time. It lives in Python memory, like a running job: nothing of it is
undone or saved except the preview object itself, which is looked up by name every time (an undo
step or a file load may have replaced it) and removed when the preview stops. Blender's timers
drive it in the UI; `wait()` drives it from scripts and background Blender, where timers do not run.
"""

from __future__ import annotations

import json
import os
import time

import bpy

from . import mesh_bridge, storage
from .jobs import PreviewSession, WorkerError
from .redraw import redraw_areas
from .worker_env import job_device, worker_paths, worker_python

PREVIEW_SUFFIX = ".preview"
POLL_SECONDS = 0.02


class LivePreview:
    def __init__(self):
        self.session: PreviewSession | None = None
        self.owner = ""  # name of the field object being previewed
        self.preview = ""  # name of the preview object
        self.requested = -1  # id of the newest blend asked for
        self.shown = -1  # id of the blend the preview object shows
        self.message = ""  # the last problem, shown in the panel
        self.rate = 0.0  # updates per second, averaged over the recent ones
        self.owner_hidden = False  # whether the preview hid the field object (shown again on stop)
        self._last_shown_at = 0.0

    @property
    def active(self) -> bool:
        return self.session is not None


LIVE = LivePreview()


def blend_weights(record) -> dict:
    """The blend the object's Shape A, Shape B and Mix describe, as {shape index: weight}."""
    count = len(json.loads(record.space_names or "[]"))
    for name in ("shape_a", "shape_b"):
        if getattr(record, name) >= count:
            raise ValueError(f"{name.replace('_', ' ').title()} is {getattr(record, name)}, but the space has "
                             f"shapes 0..{count - 1}")
    a, b, mix = record.shape_a, record.shape_b, record.mix
    if a == b or mix <= 0.0:
        return {a: 1.0}
    if mix >= 1.0:
        return {b: 1.0}
    return {a: 1.0 - mix, b: mix}


def start(obj, context=None) -> None:
    """Start previewing the blend of the shape-space object `obj`; raises ValueError naming the
    problem if it cannot be previewed."""
    context = context or bpy.context
    record = obj.neural_field
    if not record.is_field or record.space_shape < 0:
        raise ValueError(f"'{obj.name}' is not a shape-space field: fit a shape space first")
    path = storage.absolute_path(record.field_path)
    blend_weights(record)  # checks Shape A and Shape B before anything starts
    problem = storage.field_problem(path, len(json.loads(record.space_names or "[]")))
    if problem:
        raise ValueError(f"'{obj.name}': {problem}")
    stop()
    try:
        session = PreviewSession(path, device=job_device(context),
                                 python=worker_python(context), extra_paths=worker_paths())
    except WorkerError as error:
        raise ValueError(str(error)) from error
    LIVE.session, LIVE.owner, LIVE.preview = session, obj.name, obj.name + PREVIEW_SUFFIX
    LIVE.requested, LIVE.shown, LIVE.message, LIVE.rate = -1, -1, "", 0.0
    record["live_preview"] = True  # stop() above clears it when this object was already previewing
    request(obj)
    if not bpy.app.timers.is_registered(_tick):
        bpy.app.timers.register(_tick, first_interval=POLL_SECONDS)


def request(obj) -> None:
    """Ask for the object's current blend (called whenever Shape A, Shape B or Mix change)."""
    if not LIVE.active or obj.name != LIVE.owner:
        return
    record = obj.neural_field
    try:
        weights = blend_weights(record)
        LIVE.requested = LIVE.session.request(weights, slerp=record.spherical,
                                              resolution=bpy.context.scene.neural_field.preview_resolution,
                                              level=record.level)
        LIVE.message = ""
    except (ValueError, WorkerError) as error:
        LIVE.message = str(error)


def stop() -> None:
    """Stop the preview worker and remove the preview object."""
    session, LIVE.session = LIVE.session, None
    if session is not None:
        session.close()
    preview = bpy.data.objects.get(LIVE.preview) if LIVE.preview else None
    if preview is not None and preview.neural_field.is_preview:
        mesh = preview.data
        bpy.data.objects.remove(preview)
        if mesh is not None and mesh.users == 0:
            bpy.data.meshes.remove(mesh)
    owner = bpy.data.objects.get(LIVE.owner) if LIVE.owner else None
    if owner is not None:
        if LIVE.owner_hidden:
            _set_hidden(owner, False)
        if owner.neural_field.live_preview:
            owner.neural_field["live_preview"] = False  # the flag without re-entering its update
    LIVE.owner_hidden = False
    LIVE.owner, LIVE.preview, LIVE.requested, LIVE.shown = "", "", -1, -1


def update() -> bool:
    """Apply what the preview worker has sent; returns whether the preview is still running."""
    if not LIVE.active:
        return False
    owner = bpy.data.objects.get(LIVE.owner)
    if owner is None or not owner.neural_field.live_preview:
        stop()  # the object is gone, or an undo step turned its toggle off
        return False
    newest = None
    for message in LIVE.session.poll():
        kind = message.get("type")
        if kind == "mesh":
            if newest is not None:
                _remove_quietly(newest["path"])  # overtaken before it was shown
            newest = message
        elif kind == "error":
            LIVE.message = message.get("message", "preview failed")
            if message.get("fatal"):
                stop()
                return False
    if newest is not None:
        _show(newest)
    return True


def wait(timeout: float = 30.0) -> bool:
    """Block until the newest requested blend is shown (scripts and background Blender, where
    timers do not run); False on timeout or a failure (LIVE.message says which)."""
    deadline = time.monotonic() + timeout
    while LIVE.active and time.monotonic() < deadline:
        update()
        if LIVE.shown >= LIVE.requested >= 0:
            return True
        if LIVE.message:
            return False
        time.sleep(POLL_SECONDS)
    return False


def _show(message: dict) -> None:
    owner = bpy.data.objects.get(LIVE.owner)
    if owner is None:  # deleted (or undone) while previewing
        stop()
        return
    try:
        mesh = mesh_bridge.result_mesh(LIVE.preview, message["path"])
    except (OSError, ValueError) as error:
        LIVE.message = f"cannot read the preview mesh: {error}"
        return
    finally:
        _remove_quietly(message["path"])
    preview = _preview_object(owner)
    old = preview.data
    preview.data = mesh
    if not len(mesh.materials):  # a coloured preview has the colour material already
        for material in owner.data.materials:
            preview.data.materials.append(material)
    if old is not None and old.users == 0:
        bpy.data.meshes.remove(old)
        preview.data.name = LIVE.preview
    preview.matrix_world = owner.matrix_world.copy()
    if LIVE.shown < 0 and owner.visible_get():
        _set_hidden(owner, True)  # the preview takes its place while it runs
        LIVE.owner_hidden = True
    now = time.monotonic()
    if LIVE.shown >= 0:
        # Updates per second while the blend changes (a slow first update or a pause in the
        # dragging would otherwise read as a slow preview): the newest interval, smoothed.
        rate = 1.0 / max(1e-3, now - LIVE._last_shown_at)
        LIVE.rate = rate if LIVE.rate == 0.0 else 0.7 * LIVE.rate + 0.3 * rate
    LIVE._last_shown_at = now
    LIVE.shown = message["id"]


def _set_hidden(obj, hidden: bool) -> None:
    try:
        obj.hide_set(hidden)
    except RuntimeError:  # not in the current view layer
        pass


def _preview_object(owner):
    preview = bpy.data.objects.get(LIVE.preview)
    if preview is None or not preview.neural_field.is_preview:
        preview = bpy.data.objects.new(LIVE.preview, bpy.data.meshes.new(LIVE.preview))
        preview.neural_field.is_preview = True
        collections = owner.users_collection or (bpy.context.scene.collection,)
        collections[0].objects.link(preview)
    return preview


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _tick():
    try:
        running = update()
    except Exception as error:  # noqa: BLE001 - a timer that raises is dropped silently by Blender
        LIVE.message = f"preview failed: {type(error).__name__}: {error}"
        stop()
        running = False
    if running:
        redraw_areas("VIEW_3D")
    return POLL_SECONDS if running else None


@bpy.app.handlers.persistent
def _on_load_pre(*_args):
    """A file is being replaced: the preview (and its object) belong to the old one."""
    stop()


@bpy.app.handlers.persistent
def _on_load_post(*_args):
    """A file saved while previewing holds the preview object and a set toggle: clear both."""
    for obj in list(bpy.data.objects):
        if obj.library is None and obj.neural_field.is_preview:
            mesh = obj.data
            bpy.data.objects.remove(obj)
            if mesh is not None and mesh.users == 0:
                bpy.data.meshes.remove(mesh)
        elif obj.library is None and obj.neural_field.live_preview:
            obj.neural_field["live_preview"] = False


def register() -> None:
    bpy.app.handlers.load_pre.append(_on_load_pre)
    bpy.app.handlers.load_post.append(_on_load_post)


def unregister() -> None:
    stop()
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
    for handlers, handler in ((bpy.app.handlers.load_pre, _on_load_pre), (bpy.app.handlers.load_post, _on_load_post)):
        if handler in handlers:
            handlers.remove(handler)
