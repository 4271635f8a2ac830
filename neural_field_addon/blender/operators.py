"""Operators. Each is thin: it checks the input, hands a job to the worker (jobs.py), and applies
the result to the scene only once the worker has succeeded, so a failed or cancelled job leaves
the scene untouched.

From the UI (invoke) the operator is modal: a timer drains the worker's messages, progress shows
in the status bar and the panel, ESC or the panel's Cancel stops the worker. From scripts and
`blender -b` (execute) the same job runs blocking and the operator returns FINISHED or CANCELLED.
"""

from __future__ import annotations

import os
import time

import bpy
import numpy as np

from . import mesh_bridge, properties, storage
from .jobs import WorkerError, WorkerJob
from .preferences import worker_paths, worker_python

FIELDS_COLLECTION = "Neural Fields"
PHASE_LABELS = {
    "groundtruth": "Computing ground truth",
    "train": "Training",
    "extract": "Extracting surface",
    "evaluate": "Measuring fidelity",
}


class InputError(Exception):
    """Bad input found before any job starts; the message is reported as it is."""


class _WorkerOperator:
    """Shared modal/blocking driver. Subclasses implement fill_job() and apply()."""

    _job: WorkerJob | None = None
    _timer = None

    # --- to implement -------------------------------------------------------------------
    def fill_job(self, context, job: WorkerJob) -> None:
        """Check the input (raise InputError) and add the job's tasks and input files."""
        raise NotImplementedError

    def apply(self, context, job: WorkerJob, results: dict, errors: list) -> set:
        raise NotImplementedError

    # --- driving ------------------------------------------------------------------------
    def _start(self, context) -> WorkerJob | None:
        job = WorkerJob(python=worker_python(context), extra_paths=worker_paths())
        try:
            self.fill_job(context, job)
            job.start()
        except (InputError, WorkerError, ValueError, OSError) as error:
            job.cleanup()
            self.report({"ERROR"}, str(error))
            return None
        settings = context.scene.neural_field
        settings.is_running = True
        settings.cancel_requested = False
        settings.progress = 0.0
        settings.status = "Starting worker"
        self._results, self._errors = {}, []
        return job

    def _handle(self, context, messages) -> None:
        settings = context.scene.neural_field
        for message in messages:
            kind = message.get("type")
            if kind == "progress":
                settings.progress, settings.status = _progress_text(message, len(self._job.tasks))
            elif kind == "result":
                self._results[message["task"]] = message
            elif kind == "error":
                self._errors.append(message)
            elif kind == "warning":
                self.report({"WARNING"}, message.get("message", ""))

    def _finish(self, context) -> set:
        job, self._job = self._job, None
        settings = context.scene.neural_field
        settings.is_running = False
        settings.cancel_requested = False
        settings.progress = 0.0
        settings.status = ""
        try:
            return self.apply(context, job, self._results, self._errors)
        finally:
            job.cleanup()

    def execute(self, context):
        self._job = self._start(context)
        if self._job is None:
            return {"CANCELLED"}
        last_print, last_status = 0.0, ""
        try:
            while not self._job.done:
                self._handle(context, self._job.wait_messages(timeout=0.25))
                status = context.scene.neural_field.status
                if status != last_status and time.monotonic() - last_print > 2.0:
                    print(f"Neural Field: {status}", flush=True)
                    last_print, last_status = time.monotonic(), status
        except BaseException:
            # Interrupted (Ctrl+C in a script): stop the worker and leave the scene as it was.
            self._abandon(context)
            raise
        return self._finish(context)

    def _abandon(self, context) -> None:
        self._job.cleanup()
        self._job = None
        settings = context.scene.neural_field
        settings.is_running = False
        settings.cancel_requested = False
        settings.status = ""

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        self._job = self._start(context)
        if self._job is None:
            return {"CANCELLED"}
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        settings = context.scene.neural_field
        if event.type == "ESC" or settings.cancel_requested:
            self._stop_modal(context)
            self._abandon(context)
            self.report({"WARNING"}, "Neural Field job cancelled; the scene is unchanged")
            return {"CANCELLED"}
        if event.type == "TIMER":
            self._handle(context, self._job.poll())
            context.workspace.status_text_set(f"Neural Field: {settings.status}  (Esc to cancel)")
            _redraw_sidebars(context)
            if self._job.done:
                self._stop_modal(context)
                return self._finish(context)
        return {"PASS_THROUGH"}

    def _stop_modal(self, context):
        context.window_manager.event_timer_remove(self._timer)
        context.workspace.status_text_set(None)
        _redraw_sidebars(context)


def _progress_text(message: dict, task_count: int) -> tuple[float, str]:
    task = message.get("task") or 0
    phase = message.get("phase", "")
    label = PHASE_LABELS.get(phase, phase)
    fraction = 0.0
    if phase == "train":
        step, steps = message.get("step", 0), max(1, message.get("steps", 1))
        fraction = step / steps
        label += (
            f" {step}/{steps}, loss {message.get('loss', 0.0):.2e}, "
            f"{message.get('elapsed', 0.0):.0f} s elapsed, {message.get('remaining', 0.0):.0f} s left"
        )
    elif phase in ("extract", "evaluate"):
        fraction = 1.0
    if task_count > 1:
        label = f"[{task + 1}/{task_count}] {label}"
    return (task + fraction) / max(1, task_count), label


def _redraw_sidebars(context):
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


def _fields_collection(scene) -> bpy.types.Collection:
    collection = bpy.data.collections.get(FIELDS_COLLECTION)
    if collection is None or collection.library is not None:
        collection = bpy.data.collections.new(FIELDS_COLLECTION)
    if collection.name not in scene.collection.children:
        scene.collection.children.link(collection)
    return collection


def _load_arrays(path: str):
    with np.load(path, allow_pickle=False) as data:
        return data["vertices"], data["faces"]


def _failure_text(errors, names) -> str:
    parts = []
    for error in errors:
        task = error.get("task")
        where = f"{names[task]}: " if task is not None and task < len(names) else ""
        parts.append(where + error.get("message", "unknown error"))
    return "; ".join(parts)


class NEURAL_FIELD_OT_fit(_WorkerOperator, bpy.types.Operator):
    """Fit a neural signed-distance field to each selected mesh and add its isosurface as a new object"""

    bl_idname = "neural_field.fit"
    bl_label = "Fit Neural Field"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return not context.scene.neural_field.is_running

    def fill_job(self, context, job: WorkerJob) -> None:
        from ..core.geometry import TriangleMesh

        sources = _selected_meshes(context)
        settings = context.scene.neural_field
        if context.mode == "EDIT_MESH":
            for obj in sources:
                obj.update_from_editmode()
        depsgraph = context.evaluated_depsgraph_get()
        exported = []
        for obj in sources:
            vertices, faces = mesh_bridge.evaluated_triangles(obj, depsgraph)
            try:
                TriangleMesh(vertices, faces)
            except ValueError as error:
                raise InputError(f"Cannot fit '{obj.name}': {error}") from error
            exported.append((obj, vertices, faces))
        self._sources = []
        for index, (obj, vertices, faces) in enumerate(exported):
            mesh_file = job.path(f"mesh_{index}.npz")
            np.savez(mesh_file, vertices=vertices, faces=faces)
            job.add_task(
                {
                    "type": "fit",
                    "mesh": mesh_file,
                    "field_path": storage.new_field_path(obj.name),
                    "field_config": properties.field_config(settings),
                    "train_config": properties.train_config(settings),
                    "extract": {"resolution": settings.resolution, "level": settings.level},
                    "mesh_out": job.path(f"result_{index}.npz"),
                    "evaluate": settings.evaluate,
                }
            )
            self._sources.append(obj.name)

    def apply(self, context, job, results, errors):
        names = self._sources
        if not results:
            self.report({"ERROR"}, f"Fit failed: {_failure_text(errors, names)}")
            return {"CANCELLED"}
        collection = _fields_collection(context.scene)
        created = []
        settings = context.scene.neural_field
        for index, result in sorted(results.items()):
            source = bpy.data.objects.get(names[index])
            vertices, faces = _load_arrays(result["mesh_out"])
            mesh = mesh_bridge.mesh_from_arrays(f"{names[index]}.field", vertices, faces)
            obj = bpy.data.objects.new(f"{names[index]}.field", mesh)
            collection.objects.link(obj)
            if source is not None:
                obj.matrix_world = source.matrix_world.copy()
            _record_fit(obj, source, names[index], result, settings)
            created.append(obj)
        for obj in context.selected_objects:
            obj.select_set(False)
        for obj in created:
            obj.select_set(True)
        context.view_layer.objects.active = created[-1]
        if errors:
            self.report({"WARNING"}, f"Some fits failed: {_failure_text(errors, names)}")
        summary = ", ".join(
            f"{obj.name} (Chamfer {obj.neural_field.chamfer:.2e})" if obj.neural_field.chamfer >= 0 else obj.name
            for obj in created
        )
        self.report({"INFO"}, f"Fitted {summary}")
        return {"FINISHED"}


def _selected_meshes(context) -> list:
    selected = list(context.selected_objects)
    active = context.active_object
    if not selected:
        if active is not None and active.type != "MESH":
            raise InputError(f"The active object '{active.name}' is a {active.type.lower()}, not a mesh: select one or more mesh objects")
        raise InputError("Nothing is selected: select one or more mesh objects to fit")
    meshes = [obj for obj in selected if obj.type == "MESH"]
    if not meshes:
        kinds = ", ".join(sorted({obj.type.lower() for obj in selected}))
        raise InputError(f"None of the selected objects is a mesh (found: {kinds}); select a mesh object")
    return meshes


def _record_fit(obj, source, source_name, result, settings):
    record = obj.neural_field
    report = result.get("report", {})
    record.is_field = True
    record.field_path = storage.stored_path(result["field_path"])
    record.source = source
    record.source_name = source_name
    record.steps = int(report.get("steps", 0))
    record.device = str(report.get("device_name", ""))
    record.encoding = settings.encoding
    record.parameters = int(report.get("parameters", 0))
    record.train_seconds = float(report.get("train_seconds", 0.0))
    record.resolution = settings.resolution
    record.level = settings.level
    metrics = result.get("metrics")
    if metrics:
        record.chamfer = metrics["chamfer_l1"]
        record.normal_consistency = metrics["normal_consistency"]
        record.fscore = metrics["fscore"]


class NEURAL_FIELD_OT_extract(_WorkerOperator, bpy.types.Operator):
    """Re-extract the active field object's surface at the current resolution and level"""

    bl_idname = "neural_field.extract"
    bl_label = "Extract Surface"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return (
            obj is not None
            and obj.type == "MESH"
            and obj.neural_field.is_field
            and not context.scene.neural_field.is_running
        )

    def fill_job(self, context, job: WorkerJob) -> None:
        obj = context.active_object
        if obj is None or not obj.neural_field.is_field:
            raise InputError("The active object is not a neural field: fit one first")
        path = storage.absolute_path(obj.neural_field.field_path)
        if not os.path.isfile(path):
            raise InputError(f"The field file of '{obj.name}' is missing: {path}")
        if obj.library is not None or obj.data.library is not None:
            raise InputError(f"'{obj.name}' is linked from a library and cannot be changed")
        settings = context.scene.neural_field
        job.add_task(
            {
                "type": "extract",
                "field_path": path,
                "device": settings.device.lower(),
                "resolution": settings.resolution,
                "level": settings.level,
                "mesh_out": job.path("result.npz"),
            }
        )
        self._target = obj.name

    def apply(self, context, job, results, errors):
        obj = bpy.data.objects.get(self._target)
        if not results or obj is None:
            self.report({"ERROR"}, f"Extract failed: {_failure_text(errors, [self._target])}")
            return {"CANCELLED"}
        vertices, faces = _load_arrays(results[0]["mesh_out"])
        old = obj.data
        mesh = mesh_bridge.mesh_from_arrays(old.name, vertices, faces)
        for material in old.materials:
            mesh.materials.append(material)
        obj.data = mesh
        if old.users == 0:
            bpy.data.meshes.remove(old)
        settings = context.scene.neural_field
        obj.neural_field.resolution = settings.resolution
        obj.neural_field.level = settings.level
        self.report({"INFO"}, f"Extracted {obj.name}: {len(vertices)} vertices at resolution {settings.resolution}")
        return {"FINISHED"}


class NEURAL_FIELD_OT_cancel(bpy.types.Operator):
    """Stop the running Neural Field job; the scene stays as it was"""

    bl_idname = "neural_field.cancel"
    bl_label = "Cancel"
    bl_options = {"INTERNAL"}

    @classmethod
    def poll(cls, context):
        return context.scene.neural_field.is_running

    def execute(self, context):
        context.scene.neural_field.cancel_requested = True
        return {"FINISHED"}
