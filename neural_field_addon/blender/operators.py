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
from .jobs import WorkerError, WorkerJob, redraw_areas
from .preferences import job_device, job_options, worker_paths, worker_python

FIELDS_COLLECTION = "Neural Fields"
# Mixed-code supervision's weight with Smooth Blends on (core.shapespace.MIX_WEIGHT, kept here so
# that Blender's process does not import torch).
MIX_WEIGHT = 0.25
# Surface points taken from a mesh reconstructed as points.
POINT_SAMPLES = 20_000
PHASE_LABELS = {
    "groundtruth": "Computing ground truth",
    "train": "Training",
    "reconstruct": "Fitting the code",
    "extract": "Extracting surface",
    "evaluate": "Measuring fidelity",
}


class InputError(Exception):
    """Bad input found before any job starts; the message is reported as it is."""


class JobState:
    """The one running job, in Python memory: never saved in the .blend and not touched by undo,
    so a crash, a save during a fit or Ctrl+Z cannot leave a stale 'running' flag behind."""

    def __init__(self):
        self.job: WorkerJob | None = None
        self.progress = 0.0
        self.status = ""
        self.cancel_requested = False
        # The training losses of the last job, per task: [(step, loss)], kept after it ends for
        # the loss-curve picture.
        self.losses: dict[int, list] = {}
        self.total_steps = 0
        self.curve_path = ""
        self._curve_drawn = 0.0

    @property
    def running(self) -> bool:
        return self.job is not None

    def begin(self, job: WorkerJob) -> None:
        self.job, self.progress, self.status, self.cancel_requested = job, 0.0, "Starting worker", False
        self.losses, self.total_steps, self._curve_drawn = {}, 0, 0.0

    def end(self) -> None:
        if self.job is not None:
            self.job.cleanup()
            self.draw_curve(force=True)
        self.job, self.progress, self.status, self.cancel_requested = None, 0.0, "", False

    def add_loss(self, message: dict) -> None:
        if "loss" not in message or message.get("phase") not in ("train", "reconstruct"):
            return
        self.losses.setdefault(message.get("task") or 0, []).append((message.get("step", 0), message["loss"]))
        self.total_steps = max(self.total_steps, message.get("steps", 0))
        self.draw_curve()

    def draw_curve(self, force: bool = False) -> None:
        """Redraw the loss-curve PNG, at most once a second while training."""
        if not self.losses or (not force and time.monotonic() - self._curve_drawn < 1.0):
            return
        from ..core.plot import loss_curve, write_png

        self._curve_drawn = time.monotonic()
        path = os.path.join(storage.user_folder("progress"), "loss_curve.png")
        try:
            write_png(path, loss_curve([self.losses[task] for task in sorted(self.losses)], self.total_steps))
        except OSError as error:
            print(f"Neural Field: could not write the loss curve: {error}")
            return
        self.curve_path = path

    @property
    def last_loss(self) -> float | None:
        latest = [curve[-1][1] for curve in self.losses.values() if curve]
        return latest[-1] if latest else None


STATE = JobState()


class _WorkerOperator:
    """Shared modal/blocking driver. Subclasses implement fill_job() and apply()."""

    _timer = None
    _workspace = None

    # --- to implement -------------------------------------------------------------------
    def fill_job(self, context, job: WorkerJob) -> None:
        """Check the input (raise InputError), add the job's tasks and input files, and keep a
        copy of the settings that apply() will record (they may change while the job runs)."""
        raise NotImplementedError

    def apply(self, context, job: WorkerJob, results: dict, errors: list) -> set:
        raise NotImplementedError

    # --- driving ------------------------------------------------------------------------
    def _start(self, context) -> bool:
        if STATE.running:
            self.report({"ERROR"}, "A Neural Field job is already running; cancel it or wait")
            return False
        job = WorkerJob(python=worker_python(context), extra_paths=worker_paths(), options=job_options(context))
        try:
            self.fill_job(context, job)
            job.start()
        except (InputError, WorkerError) as error:
            job.cleanup()
            self.report({"ERROR"}, str(error))
            return False
        except Exception as error:  # noqa: BLE001 - never leave a traceback and a job folder behind
            job.cleanup()
            self.report({"ERROR"}, f"Neural Field could not start: {type(error).__name__}: {error}")
            return False
        STATE.begin(job)
        self._results, self._errors = {}, []
        return True

    def _handle(self, messages) -> None:
        for message in messages:
            kind = message.get("type")
            if kind == "progress":
                STATE.progress, STATE.status = _progress_text(message, len(STATE.job.tasks))
                STATE.add_loss(message)
            elif kind == "result":
                self._results[message["task"]] = message
            elif kind == "error":
                self._errors.append(message)
            elif kind == "warning":
                self.report({"WARNING"}, message.get("message", ""))

    def _finish(self, context) -> set:
        job = STATE.job
        try:
            return self.apply(context, job, self._results, self._errors)
        finally:
            STATE.end()

    def execute(self, context):
        if not self._start(context):
            return {"CANCELLED"}
        last_print, last_status = 0.0, ""
        try:
            while not STATE.job.done:
                self._handle(STATE.job.wait_messages(timeout=0.25))
                if STATE.cancel_requested:  # neural_field.cancel from another thread or a timer
                    STATE.end()
                    self.report({"WARNING"}, "Neural Field job cancelled; the scene is unchanged")
                    return {"CANCELLED"}
                if STATE.status != last_status and time.monotonic() - last_print > 2.0:
                    print(f"Neural Field: {STATE.status}", flush=True)
                    last_print, last_status = time.monotonic(), STATE.status
        except BaseException:
            # Interrupted (Ctrl+C in a script): stop the worker and leave the scene as it was.
            STATE.end()
            raise
        return self._finish(context)

    def invoke(self, context, event):
        if bpy.app.background or context.window is None:
            return self.execute(context)
        if not self._start(context):
            return {"CANCELLED"}
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        self._workspace = context.workspace
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        try:
            if (event.type == "ESC" and event.value == "PRESS") or STATE.cancel_requested:
                self.cancel(context)
                self.report({"WARNING"}, "Neural Field job cancelled; the scene is unchanged")
                return {"CANCELLED"}
            if event.type == "TIMER":
                self._handle(STATE.job.poll())
                if self._workspace is not None:
                    self._workspace.status_text_set(f"Neural Field: {STATE.status}  (Esc to cancel)")
                redraw_areas("VIEW_3D")
                if STATE.job.done:
                    self._stop_modal(context)
                    return self._finish(context)
            return {"PASS_THROUGH"}
        except Exception as error:  # noqa: BLE001 - a modal handler must never stay half-alive
            self.cancel(context)
            self.report({"ERROR"}, f"Neural Field job failed: {type(error).__name__}: {error}")
            return {"CANCELLED"}

    def cancel(self, context):
        """Called by Blender when it drops the modal operator (new file, quit), and on Esc."""
        self._stop_modal(context)
        STATE.end()

    def _stop_modal(self, context):
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        if self._workspace is not None:
            self._workspace.status_text_set(None)
            self._workspace = None
        redraw_areas("VIEW_3D")


def _progress_text(message: dict, task_count: int) -> tuple[float, str]:
    task = message.get("task") or 0
    phase = message.get("phase", "")
    label = PHASE_LABELS.get(phase, phase)
    fraction = 0.0
    if phase in ("train", "reconstruct"):
        step, steps = message.get("step", 0), max(1, message.get("steps", 1))
        fraction = step / steps
        label += (
            f" {step}/{steps}, loss {message.get('loss', 0.0):.2e}, "
            f"{message.get('elapsed', 0.0):.0f} s elapsed, {message.get('remaining', 0.0):.0f} s left"
        )
    elif phase == "extract" and message.get("steps", 0) > 1:
        fraction = message.get("step", 0) / message["steps"]
        label += f" {100 * fraction:.0f}%"
    elif phase in ("extract", "evaluate"):
        fraction = 1.0
    if task_count > 1:
        label = f"[{task + 1}/{task_count}] {label}"
    return (task + fraction) / max(1, task_count), label


def _fields_collection(scene) -> bpy.types.Collection:
    collection = bpy.data.collections.get(FIELDS_COLLECTION)
    if collection is None or collection.library is not None:
        collection = bpy.data.collections.new(FIELDS_COLLECTION)
    if collection.name not in scene.collection.children:
        scene.collection.children.link(collection)
    return collection


def _load_arrays(path: str):
    """The worker's result mesh (NPZ written by core.meshio): vertices, faces and the vertex
    normals, or None where they were not asked for."""
    from ..core.meshio import load_mesh

    mesh = load_mesh(path)
    with np.load(path, allow_pickle=False) as data:
        normals = np.asarray(data["normals"]) if "normals" in data else None
    return mesh.vertices, mesh.faces, normals


def _new_field_object(collection, name: str, mesh_out: str, frame):
    """A new object holding the worker's mesh, linked into `collection`, placed like `frame` (the
    object whose coordinates the mesh is in) where it still exists."""
    vertices, faces, normals = _load_arrays(mesh_out)
    obj = bpy.data.objects.new(name, mesh_bridge.mesh_from_arrays(name, vertices, faces, normals))
    collection.objects.link(obj)
    if frame is not None:
        obj.matrix_world = frame.matrix_world.copy()
    return obj


def _extract_settings(settings) -> dict:
    return {"resolution": settings.resolution, "level": settings.level, "normals": settings.normals}


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
    bl_options = {"UNDO"}  # no REGISTER: Repeat Last would run the blocking path in the UI

    @classmethod
    def poll(cls, context):
        return _idle(cls)

    def fill_job(self, context, job: WorkerJob) -> None:
        settings = context.scene.neural_field
        sources, mesh_files, skipped = _export_selected(context, job)
        _report_skipped(self, skipped)
        self._sources = []
        for index, (obj, mesh_file) in enumerate(zip(sources, mesh_files)):
            job.add_task(
                {
                    "type": "fit",
                    "mesh": mesh_file,
                    "field_path": storage.new_field_path(obj.name),
                    **properties.fit_task_settings(settings, job_device(context)),
                    "extract": _extract_settings(settings),
                    "mesh_out": job.path(f"result_{index}.npz"),
                    "evaluate": settings.evaluate,
                }
            )
            self._sources.append(obj.name)
        self._record = {
            "resolution": settings.resolution,
            "level": settings.level,
        }

    def apply(self, context, job, results, errors):
        names = self._sources
        if not results:
            self.report({"ERROR"}, f"Fit failed: {_failure_text(errors, names)}")
            return {"CANCELLED"}
        collection = _fields_collection(context.scene)
        created = []
        for index, result in sorted(results.items()):
            source = bpy.data.objects.get(names[index])
            obj = _new_field_object(collection, f"{names[index]}.field", result["mesh_out"], source)
            _record_fit(obj, source, names[index], result, self._record)
            created.append(obj)
        _select_only(context, created)
        if errors:
            self.report({"WARNING"}, f"Some fits failed: {_failure_text(errors, names)}")
        summary = ", ".join(
            f"{obj.name} (Chamfer {obj.neural_field.chamfer:.2e})" if obj.neural_field.chamfer >= 0 else obj.name
            for obj in created
        )
        self.report({"INFO"}, f"Fitted {summary}")
        return {"FINISHED"}


def _idle(operator_class) -> bool:
    """Poll of the operators that start a job: one job at a time."""
    if STATE.running:
        operator_class.poll_message_set("A Neural Field job is running")
        return False
    return True


def _export_selected(context, job: WorkerJob, at_least: int = 1):
    """The selected objects' evaluated triangles, checked and written into the job folder; returns
    the source objects, their NPZ paths and the names of selected objects without geometry.
    Nothing is written if any of them is refused."""
    from ..core.geometry import TriangleMesh

    sources, skipped = _selected_sources(context)
    if len(sources) < at_least:
        raise InputError(f"A shape space needs two or more meshes; {len(sources)} is selected")
    if context.mode == "EDIT_MESH":
        for obj in sources:
            if obj.mode == "EDIT":
                obj.update_from_editmode()
    depsgraph = context.evaluated_depsgraph_get()
    exported = []
    for obj in sources:
        vertices, faces = mesh_bridge.evaluated_triangles(obj, depsgraph)
        if len(faces) == 0 and obj.type != "MESH":
            what = ("instances no geometry with faces" if mesh_bridge.is_collection_instance(obj)
                    else f"is a {obj.type.lower()} without faces (give it a bevel, extrusion or fill, or deselect it)")
            raise InputError(f"Cannot fit '{obj.name}': it {what}")
        try:
            TriangleMesh(vertices, faces)
        except ValueError as error:
            raise InputError(f"Cannot fit '{obj.name}': {error}") from error
        exported.append((vertices, faces))
    paths = []
    for index, (vertices, faces) in enumerate(exported):
        paths.append(job.path(f"mesh_{index}.npz"))
        np.savez(paths[-1], vertices=vertices, faces=faces)
    return sources, paths, skipped


def _report_skipped(operator, skipped) -> None:
    if skipped:
        operator.report({"WARNING"}, "Skipped, no geometry to fit: " + ", ".join(skipped))


def _selected_sources(context) -> tuple[list, list]:
    """The selected objects that have geometry to fit (meshes, text, curves, surfaces, metaballs,
    and empties instancing a collection) and the names of those skipped (cameras, lights, ...)."""
    selected = list(context.selected_objects)
    active = context.active_object
    if not selected:
        if active is not None and active.type != "MESH":
            raise InputError(f"The active object '{active.name}' is a {active.type.lower()}, not a mesh: select one or more mesh objects")
        raise InputError("Nothing is selected: select one or more mesh objects to fit")
    sources = [obj for obj in selected
               if obj.type in mesh_bridge.GEOMETRY_TYPES or mesh_bridge.is_collection_instance(obj)]
    if not sources:
        kinds = ", ".join(sorted({obj.type.lower() for obj in selected}))
        raise InputError(f"None of the selected objects is a mesh (found: {kinds}); select a mesh object")
    skipped = [f"{obj.name} ({obj.type.lower()})" for obj in selected if obj not in sources]
    return sources, skipped


def _select_only(context, objects) -> None:
    """Make the new objects the selection, where that is possible: in Object mode, and only for
    objects in the view layer (the collection may be excluded)."""
    if context.mode != "OBJECT":
        return
    visible = [obj for obj in objects if context.view_layer.objects.get(obj.name) is obj]
    if not visible:
        return
    for obj in context.selected_objects:
        obj.select_set(False)
    for obj in visible:
        obj.select_set(True)
    context.view_layer.objects.active = visible[-1]


def _record_fit(obj, source, source_name, result, record_settings):
    record = obj.neural_field
    report = result.get("report", {})
    record.is_field = True
    record.field_path = storage.stored_path(result["field_path"])
    record.source = source
    record.source_name = source_name
    record.steps = int(report.get("steps", 0))
    record.device = str(report.get("device_name", ""))
    record.encoding = str(report.get("encoding", ""))
    record.parameters = int(report.get("parameters", 0))
    record.train_seconds = float(report.get("train_seconds", 0.0))
    record.resolution = record_settings["resolution"]
    record.level = record_settings["level"]
    metrics = result.get("metrics")
    if metrics:
        record.chamfer = metrics["chamfer_l1"]
        record.normal_consistency = metrics["normal_consistency"]
        record.fscore = metrics["fscore"]


class NEURAL_FIELD_OT_fit_shape_space(_WorkerOperator, bpy.types.Operator):
    """Fit one shape space (a shared decoder and a latent code per shape) to the selected meshes and add one field object per shape"""

    bl_idname = "neural_field.fit_shape_space"
    bl_label = "Fit Shape Space"
    bl_options = {"UNDO"}

    @classmethod
    def poll(cls, context):
        return _idle(cls)

    def fill_job(self, context, job: WorkerJob) -> None:
        settings = context.scene.neural_field
        sources, meshes, skipped = _export_selected(context, job, at_least=2)
        _report_skipped(self, skipped)
        self._sources = [obj.name for obj in sources]
        job.add_task(
            {
                "type": "fit-space",
                "meshes": meshes,
                "names": self._sources,
                "space_path": storage.new_field_path("space"),
                "field_config": {"init_seed": settings.seed},
                "train_config": {"seed": settings.seed, "device": job_device(context),
                                 **({"steps": settings.space_steps} if settings.space_steps else {})},
                "extract": _extract_settings(settings),
                "mesh_out": [job.path(f"result_{i}.npz") for i in range(len(sources))],
                "mix_weight": MIX_WEIGHT if settings.smooth_blends else 0.0,
            }
        )
        self._record = {"resolution": settings.resolution, "level": settings.level}

    def apply(self, context, job, results, errors):
        import json

        names = self._sources
        if not results:
            self.report({"ERROR"}, f"Fit Shape Space failed: {_failure_text(errors, ['space'])}")
            return {"CANCELLED"}
        result = results[0]
        collection = _fields_collection(context.scene)
        created = []
        for index, mesh_out in enumerate(result["mesh_out"]):
            source = bpy.data.objects.get(names[index])
            obj = _new_field_object(collection, f"{names[index]}.field", mesh_out, source)
            _record_fit(obj, source, names[index], {"field_path": result["space_path"], "report": result["report"]},
                        self._record)
            record = obj.neural_field
            record.space_shape, record.shape_a, record.shape_b, record.mix = index, index, index, 0.0
            record.space_names = json.dumps(result["names"])
            created.append(obj)
        _select_only(context, created)
        self.report({"INFO"}, f"Fitted a shape space of {len(created)} shapes: {', '.join(names)}")
        return {"FINISHED"}


def _space_choice(record) -> dict:
    """What Extract takes from a shape-space object: shape A, or the blend of A and B at `mix`."""
    from .live import blend_weights

    try:
        weights = blend_weights(record)
    except ValueError as error:
        raise InputError(str(error)) from error
    if len(weights) == 1:
        return {"shape": next(iter(weights))}
    return {"blend": {str(index): weight for index, weight in weights.items()}, "slerp": bool(record.spherical)}


class NEURAL_FIELD_OT_extract(_WorkerOperator, bpy.types.Operator):
    """Re-extract the active field object's surface at the current resolution and level"""

    bl_idname = "neural_field.extract"
    bl_label = "Extract Surface"
    bl_options = {"UNDO"}  # no REGISTER: Repeat Last would run the blocking path in the UI

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        if obj is None or obj.type != "MESH" or not obj.neural_field.is_field:
            cls.poll_message_set("The active object is not a neural field: fit one first")
            return False
        if STATE.running:
            cls.poll_message_set("A Neural Field job is running")
            return False
        return True

    def fill_job(self, context, job: WorkerJob) -> None:
        obj = context.active_object
        if obj is None or not obj.neural_field.is_field:
            raise InputError("The active object is not a neural field: fit one first")
        if obj.library is not None or obj.data.library is not None:
            raise InputError(f"'{obj.name}' is linked from a library and cannot be changed")
        if obj.mode == "EDIT":
            raise InputError(f"'{obj.name}' is in Edit Mode: switch to Object Mode to extract")
        path = storage.absolute_path(obj.neural_field.field_path)
        problem = storage.field_problem(path, _space_shape_count(obj.neural_field))
        if problem:
            raise InputError(f"'{obj.name}': {problem} (Locate Field File points it at the file)")
        settings = context.scene.neural_field
        job.add_task(
            {
                "type": "extract",
                "field_path": path,
                "device": job_device(context),
                **_extract_settings(settings),
                **(_space_choice(obj.neural_field) if obj.neural_field.space_shape >= 0 else {}),
                "mesh_out": job.path("result.npz"),
            }
        )
        self._target = obj.name
        self._record = {"resolution": settings.resolution, "level": settings.level}

    def apply(self, context, job, results, errors):
        obj = bpy.data.objects.get(self._target)
        if not results or obj is None:
            self.report({"ERROR"}, f"Extract failed: {_failure_text(errors, [self._target])}")
            return {"CANCELLED"}
        vertices, faces, normals = _load_arrays(results[0]["mesh_out"])
        old = obj.data
        name = old.name
        mesh = mesh_bridge.mesh_from_arrays(name, vertices, faces, normals)
        for material in old.materials:
            mesh.materials.append(material)
        obj.data = mesh
        if old.users == 0:
            bpy.data.meshes.remove(old)
            mesh.name = name  # keep "X.field" rather than "X.field.001"
        obj.neural_field.resolution = self._record["resolution"]
        obj.neural_field.level = self._record["level"]
        self.report({"INFO"}, f"Extracted {obj.name}: {len(vertices)} vertices at resolution {self._record['resolution']}")
        return {"FINISHED"}


class NEURAL_FIELD_OT_reconstruct(_WorkerOperator, bpy.types.Operator):
    """Fit a code of the selected shape space to the selected mesh or point cloud (shape completion from partial data) and add the result as a new field object"""

    bl_idname = "neural_field.reconstruct"
    bl_label = "Reconstruct from Shape Space"
    bl_options = {"UNDO"}

    input_mode: bpy.props.EnumProperty(
        name="Input", default="AUTO",
        items=(("AUTO", "Auto", "A mesh with faces as a surface, vertices or a point cloud as surface points"),
               ("MESH", "Surface", "The mesh's faces: signed distances around a closed surface"),
               ("POINTS", "Points", "Only the vertices, as points on the surface (partial scans, open meshes)")))
    steps: bpy.props.IntProperty(name="Steps", description="Optimisation steps for the code", default=500, min=1,
                                 soft_max=5000)

    @classmethod
    def poll(cls, context):
        return _idle(cls)

    def fill_job(self, context, job: WorkerJob) -> None:
        space_obj = _selected_space_object(context)
        path = storage.absolute_path(space_obj.neural_field.field_path)
        problem = storage.field_problem(path, _space_shape_count(space_obj.neural_field))
        if problem:
            raise InputError(f"'{space_obj.name}': {problem} (Locate Field File points it at the file)")
        inputs = [obj for obj in context.selected_objects
                  if obj.type in ("MESH", "POINTCLOUD") and not obj.neural_field.is_field]
        if not inputs:
            raise InputError("Select the mesh or point cloud to reconstruct together with the shape-space object")
        if context.mode == "EDIT_MESH":
            for obj in inputs:
                obj.update_from_editmode()
        depsgraph = context.evaluated_depsgraph_get()
        settings = context.scene.neural_field
        self._tasks = []
        for index, obj in enumerate(inputs):
            arrays, frame = self._input_arrays(obj, space_obj, depsgraph)
            input_path = job.path(f"input_{index}.npz")
            np.savez(input_path, **arrays)
            job.add_task({
                "type": "reconstruct", "space_path": path, "input": input_path, "name": obj.name,
                "steps": self.steps, "seed": settings.seed, "device": job_device(context),
                "out_space_path": storage.new_field_path(obj.name + "_space"),
                "extract": _extract_settings(settings), "mesh_out": job.path(f"result_{index}.npz"),
            })
            self._tasks.append((obj.name, frame.name))
        self._record = {"resolution": settings.resolution, "level": settings.level}

    def _input_arrays(self, obj, space_obj, depsgraph):
        """The input as the worker takes it, and the object whose frame the result lands in: a
        surface in the input's own coordinates (the reconstruction finds its frame), or points
        in the space object's coordinates (a partial cloud cannot say where its shape's centre is,
        so it is read in the frame of the space's shapes)."""
        from ..core.geometry import TriangleMesh

        if obj.type == "MESH":
            vertices, faces = mesh_bridge.evaluated_triangles(obj, depsgraph)
        else:
            vertices, faces = mesh_bridge.evaluated_points(obj, depsgraph), np.zeros((0, 3), dtype=np.int64)
        as_surface = self.input_mode == "MESH" or (self.input_mode == "AUTO" and len(faces) > 0)
        if as_surface:
            if len(faces) == 0:
                raise InputError(f"'{obj.name}' has no faces to use as a surface: reconstruct it from its points")
            try:
                TriangleMesh(vertices, faces)
            except ValueError as error:
                raise InputError(f"Cannot reconstruct '{obj.name}': {error}") from error
            return {"vertices": vertices, "faces": faces}, obj
        if len(faces):  # the surface, sampled evenly, rather than its vertices bunched where detail is
            from ..core.geometry.sampling import sample_surface

            try:
                vertices, _ = sample_surface(TriangleMesh(vertices, faces), POINT_SAMPLES, np.random.default_rng(0))
            except ValueError as error:
                raise InputError(f"Cannot reconstruct '{obj.name}': {error}") from error
        to_space = np.array(space_obj.matrix_world.inverted() @ obj.matrix_world)
        points = vertices @ to_space[:3, :3].T + to_space[:3, 3]
        if len(points) < 16:
            raise InputError(f"'{obj.name}' has {len(points)} points; a reconstruction needs at least 16")
        if not np.all(np.isfinite(points)):
            raise InputError(f"'{obj.name}' has NaN or infinite coordinates")
        return {"points": points}, space_obj

    def apply(self, context, job, results, errors):
        import json

        names = [name for name, _ in self._tasks]
        if not results:
            self.report({"ERROR"}, f"Reconstruct failed: {_failure_text(errors, names)}")
            return {"CANCELLED"}
        collection = _fields_collection(context.scene)
        created = []
        for index, result in sorted(results.items()):
            name, frame_name = self._tasks[index]
            source, frame = bpy.data.objects.get(name), bpy.data.objects.get(frame_name)
            obj = _new_field_object(collection, f"{name}.reconstructed", result["mesh_out"], frame)
            _record_fit(obj, source, name, {"field_path": result["space_path"], "report": result["report"]},
                        self._record)
            record = obj.neural_field
            shape = int(result["shape"])
            record.space_shape, record.shape_a, record.shape_b, record.mix = shape, shape, shape, 0.0
            record.space_names = json.dumps(result["names"])
            created.append(obj)
        _select_only(context, created)
        if errors:
            self.report({"WARNING"}, f"Some reconstructions failed: {_failure_text(errors, names)}")
        self.report({"INFO"}, f"Reconstructed {', '.join(obj.name for obj in created)}")
        return {"FINISHED"}


def _selected_space_object(context):
    """The one shape-space field object among the selected and active objects."""
    candidates = {obj for obj in context.selected_objects if obj.neural_field.space_shape >= 0}
    active = context.active_object
    if active is not None and active.neural_field.space_shape >= 0:
        candidates.add(active)
    spaces = {storage.absolute_path(obj.neural_field.field_path) for obj in candidates}
    if not candidates:
        raise InputError("Select a shape-space field object (made by Fit Shape Space) together with the input")
    if len(spaces) > 1:
        raise InputError(f"The selection holds objects of {len(spaces)} different shape spaces: select one")
    if active in candidates:
        return active
    return sorted(candidates, key=lambda obj: obj.name)[0]


def _space_shape_count(record) -> int:
    """How many shapes the object's space must hold (0: a single field)."""
    import json

    return len(json.loads(record.space_names or "[]")) if record.space_shape >= 0 else 0


class NEURAL_FIELD_OT_locate_field(bpy.types.Operator):
    """Point the active field object, and every object that used the same file, at its field file where it is now"""

    bl_idname = "neural_field.locate_field"
    bl_label = "Locate Field File"
    bl_options = {"REGISTER", "UNDO"}

    filepath: bpy.props.StringProperty(name="Field File", subtype="FILE_PATH")
    filter_glob: bpy.props.StringProperty(default="*.nfield", options={"HIDDEN"})

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        if obj is None or not obj.neural_field.is_field:
            cls.poll_message_set("The active object is not a neural field")
            return False
        return True

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        obj = context.active_object
        record = obj.neural_field
        path = os.path.normpath(bpy.path.abspath(self.filepath)) if self.filepath else ""
        problem = storage.field_problem(path, _space_shape_count(record))
        if problem:
            self.report({"ERROR"}, f"Cannot use it for '{obj.name}': {problem}")
            return {"CANCELLED"}
        old = storage.absolute_path(record.field_path)
        users = [other for other in bpy.data.objects if other.library is None and other.neural_field.is_field
                 and storage.absolute_path(other.neural_field.field_path) == old] if old else []
        for other in users or [obj]:
            other.neural_field.field_path = storage.stored_path(path)
        self.report({"INFO"}, f"{len(users or [obj])} object(s) now use {path}")
        return {"FINISHED"}


class NEURAL_FIELD_OT_cancel(bpy.types.Operator):
    """Stop the running Neural Field job; the scene stays as it was"""

    bl_idname = "neural_field.cancel"
    bl_label = "Cancel"
    bl_options = {"INTERNAL"}

    @classmethod
    def poll(cls, context):
        return STATE.running

    def execute(self, context):
        STATE.cancel_requested = True
        return {"FINISHED"}


class NEURAL_FIELD_OT_show_loss_curve(bpy.types.Operator):
    """Open the training loss curve of the last job in an Image Editor window"""

    bl_idname = "neural_field.show_loss_curve"
    bl_label = "Open Loss Curve"

    @classmethod
    def poll(cls, context):
        if not (STATE.curve_path and os.path.isfile(STATE.curve_path)):
            cls.poll_message_set("No job has reported a training loss yet")
            return False
        return True

    def execute(self, context):
        image = bpy.data.images.get(LOSS_CURVE_IMAGE)
        if image is None or bpy.path.abspath(image.filepath) != STATE.curve_path:
            image = bpy.data.images.load(STATE.curve_path)
            image.name = LOSS_CURVE_IMAGE
        else:
            image.reload()
        if context.window is not None and not bpy.app.background:
            _show_in_new_window(context, image)
        return {"FINISHED"}


LOSS_CURVE_IMAGE = "Neural Field Loss"


def _show_in_new_window(context, image) -> None:
    """A new window whose one area is an Image Editor showing `image`."""
    before = set(context.window_manager.windows)
    bpy.ops.wm.window_new()
    window = next((w for w in context.window_manager.windows if w not in before), None)
    if window is None:
        return
    area = window.screen.areas[0]
    area.type = "IMAGE_EDITOR"
    area.spaces.active.image = image
