"""Operators. Each is thin: it checks the input, fills the tasks of a worker job
(core/service/tasks.py), and applies the result to the scene only once the worker has succeeded,
so a failed or cancelled job leaves the scene untouched. How a job is driven (modal from the UI,
blocking from scripts) is driver.py's; what results become, field_objects.py's."""

from __future__ import annotations

import os
from dataclasses import replace

import bpy
import numpy as np

from ..core.config import MIX_WEIGHT
from ..core.service.tasks import (
    BakeTask,
    CompressTask,
    ExtractSettings,
    ExtractTask,
    FitSpaceTask,
    FitTask,
    ReconstructTask,
)
from . import colors, properties, storage
from .driver import STATE, InputError, WorkerOperator, failure_text, idle, make_task
from .field_objects import (
    fields_collection,
    new_field_object,
    new_space_object,
    record_field,
    replace_field_mesh,
    select_only,
    space_shape_count,
)
from .jobs import WorkerJob
from .live import blend_weights
from .selection import export_selected, reconstruct_input, reconstruct_inputs, selected_space_object
from .worker_env import job_device

LOSS_CURVE_IMAGE = "Neural Field Loss"


def _extract_settings(settings) -> ExtractSettings:
    """The panel's extraction settings, as the tasks take them and the new objects record them."""
    try:
        return ExtractSettings(resolution=settings.resolution, level=settings.level, normals=settings.normals,
                               sheet=settings.sheet)
    except ValueError as error:
        raise InputError(f"Cannot extract: {error}") from error


def _report_skipped(operator, skipped) -> None:
    if skipped:
        operator.report({"WARNING"}, "Skipped, no geometry to fit: " + ", ".join(skipped))


def _report_color_notes(operator, notes) -> None:
    for note in notes:
        operator.report({"WARNING"}, f"Colour: {note}")


def _field_file(obj) -> str:
    """The absolute path of the field file `obj` uses, refused unless it holds what `obj` needs."""
    path = storage.absolute_path(obj.neural_field.field_path)
    problem = storage.field_problem(path, space_shape_count(obj.neural_field))
    if problem:
        raise InputError(f"'{obj.name}': {problem} (Locate Field File points it at the file)")
    return path


def _reveal_colors(operator, objects) -> None:
    if colors.reveal_colors(objects):
        operator.report({"INFO"}, "Solid view now colours by attribute, to show the results' colours "
                                  "(Viewport Shading > Color)")


class NEURAL_FIELD_OT_fit(WorkerOperator, bpy.types.Operator):
    """Fit a neural signed-distance field to each selected mesh and add its isosurface as a new object"""

    bl_idname = "neural_field.fit"
    bl_label = "Fit Neural Field"
    bl_options = {"UNDO"}  # no REGISTER: Repeat Last would run the blocking path in the UI

    @classmethod
    def poll(cls, context):
        return idle(cls)

    def fill_job(self, context, job: WorkerJob) -> None:
        settings = context.scene.neural_field
        notes = []
        sources, mesh_files, skipped = export_selected(context, job, colors=settings.color, notes=notes)
        _report_skipped(self, skipped)
        _report_color_notes(self, notes)
        self._extract = _extract_settings(settings)
        configs = properties.fit_task_settings(settings, job_device(context))
        self._sources = []
        for index, (obj, mesh_file) in enumerate(zip(sources, mesh_files)):
            job.add_task(make_task(
                FitTask, f"Cannot fit '{obj.name}'", mesh=mesh_file, field_path=storage.new_field_path(obj.name),
                **configs, extract=self._extract, mesh_out=job.path(f"result_{index}.npz"),
                evaluate=settings.evaluate, color=None if settings.color else False))
            self._sources.append(obj.name)

    def apply(self, context, job, results, errors):
        names = self._sources
        if not results:
            self.report({"ERROR"}, f"Fit failed: {failure_text(errors, names)}")
            return {"CANCELLED"}
        collection = fields_collection(context.scene)
        created = []
        for index, result in sorted(results.items()):
            obj = new_field_object(collection, f"{names[index]}.field", result["mesh_out"],
                                   bpy.data.objects.get(names[index]))
            record_field(obj, names[index], result["field_path"], result.get("report", {}), self._extract,
                         result.get("metrics"))
            created.append(obj)
        select_only(context, created)
        _reveal_colors(self, created)
        if errors:
            self.report({"WARNING"}, f"Some fits failed: {failure_text(errors, names)}")
        summary = ", ".join(
            f"{obj.name} (Chamfer {obj.neural_field.chamfer:.2e})" if obj.neural_field.chamfer >= 0 else obj.name
            for obj in created
        )
        self.report({"INFO"}, f"Fitted {summary}")
        return {"FINISHED"}


class NEURAL_FIELD_OT_fit_shape_space(WorkerOperator, bpy.types.Operator):
    """Fit one shape space (a shared decoder and a latent code per shape) to the selected meshes and add one field object per shape"""

    bl_idname = "neural_field.fit_shape_space"
    bl_label = "Fit Shape Space"
    bl_options = {"UNDO"}

    @classmethod
    def poll(cls, context):
        return idle(cls)

    def fill_job(self, context, job: WorkerJob) -> None:
        settings = context.scene.neural_field
        notes = []
        sources, meshes, skipped = export_selected(context, job, at_least=2, colors=settings.color, notes=notes)
        _report_skipped(self, skipped)
        _report_color_notes(self, notes)
        self._sources = [obj.name for obj in sources]
        self._extract = _extract_settings(settings)
        train_config = {"seed": settings.seed, "device": job_device(context)}
        if settings.space_steps:  # 0: the device's default
            train_config["steps"] = settings.space_steps
        job.add_task(make_task(
            FitSpaceTask, "Cannot fit a shape space", meshes=meshes, names=self._sources,
            space_path=storage.new_field_path("space"), field_config={"init_seed": settings.seed},
            train_config=train_config, extract=self._extract,
            mesh_out=[job.path(f"result_{i}.npz") for i in range(len(sources))],
            mix_weight=MIX_WEIGHT if settings.smooth_blends else 0.0, color=None if settings.color else False))

    def apply(self, context, job, results, errors):
        names = self._sources
        if not results:
            self.report({"ERROR"}, f"Fit Shape Space failed: {failure_text(errors, ['space'])}")
            return {"CANCELLED"}
        result = results[0]
        collection = fields_collection(context.scene)
        created = [
            new_space_object(collection, f"{names[index]}.field", mesh_out, bpy.data.objects.get(names[index]),
                             names[index], result, index, self._extract)
            for index, mesh_out in enumerate(result["mesh_out"])
        ]
        select_only(context, created)
        _reveal_colors(self, created)
        self.report({"INFO"}, f"Fitted a shape space of {len(created)} shapes: {', '.join(names)}")
        return {"FINISHED"}


def _field_object_poll(cls, context) -> bool:
    """The poll of the operators that work on the active field object."""
    obj = context.active_object
    if obj is None or obj.type != "MESH" or not obj.neural_field.is_field:
        cls.poll_message_set("The active object is not a neural field: fit one first")
        return False
    return idle(cls)


def _changeable_field_object(context, verb: str):
    """The active field object, refused unless its mesh may be replaced (`verb`: what would)."""
    obj = context.active_object
    if obj is None or not obj.neural_field.is_field:
        raise InputError("The active object is not a neural field: fit one first")
    if obj.library is not None or obj.data.library is not None:
        raise InputError(f"'{obj.name}' is linked from a library and cannot be changed")
    if obj.mode == "EDIT":
        raise InputError(f"'{obj.name}' is in Edit Mode: switch to Object Mode to {verb}")
    return obj


def _space_choice(record) -> dict:
    """What Extract takes from a shape-space object: shape A, or the blend of A and B at `mix`."""
    try:
        weights = blend_weights(record)
    except ValueError as error:
        raise InputError(str(error)) from error
    if len(weights) == 1:
        return {"shape": next(iter(weights))}
    return {"blend": weights, "slerp": bool(record.spherical)}


class NEURAL_FIELD_OT_extract(WorkerOperator, bpy.types.Operator):
    """Re-extract the active field object's surface at the current resolution and level"""

    bl_idname = "neural_field.extract"
    bl_label = "Extract Surface"
    bl_options = {"UNDO"}  # no REGISTER: Repeat Last would run the blocking path in the UI

    @classmethod
    def poll(cls, context):
        return _field_object_poll(cls, context)

    def fill_job(self, context, job: WorkerJob) -> None:
        obj = _changeable_field_object(context, "extract")
        path = _field_file(obj)
        settings = context.scene.neural_field
        self._extract = _extract_settings(settings)
        choice = _space_choice(obj.neural_field) if obj.neural_field.space_shape >= 0 else {}
        job.add_task(make_task(
            ExtractTask, f"Cannot extract '{obj.name}'", field_path=path, mesh_out=job.path("result.npz"),
            resolution=self._extract.resolution, level=self._extract.level, normals=self._extract.normals,
            sheet=self._extract.sheet and obj.neural_field.surface == "shell", device=job_device(context), **choice))
        self._target = obj.name

    def apply(self, context, job, results, errors):
        obj = bpy.data.objects.get(self._target)
        if not results or obj is None:
            self.report({"ERROR"}, f"Extract failed: {failure_text(errors, [self._target])}")
            return {"CANCELLED"}
        vertex_count = replace_field_mesh(obj, results[0]["mesh_out"])
        obj.neural_field.resolution = self._extract.resolution
        obj.neural_field.level = self._extract.level
        obj.neural_field.sheet = bool(results[0].get("sheet"))
        _reveal_colors(self, [obj])
        self.report({"INFO"}, f"Extracted {obj.name}: {vertex_count} vertices at resolution {self._extract.resolution}")
        return {"FINISHED"}


class NEURAL_FIELD_OT_bake_texture(WorkerOperator, bpy.types.Operator):
    """Bake the active field object's colour into a texture on a Smart UV Project layout, saved beside its field file, packed into the .blend and wired into its material"""

    bl_idname = "neural_field.bake_texture"
    bl_label = "Bake Texture"
    bl_options = {"UNDO"}

    @classmethod
    def poll(cls, context):
        return _field_object_poll(cls, context)

    def fill_job(self, context, job: WorkerJob) -> None:
        obj = _changeable_field_object(context, "bake")
        if obj.neural_field.field_color_psnr < 0:
            raise InputError(f"'{obj.name}' has no colour to bake: fit it with Colour on")
        path = _field_file(obj)
        mesh = obj.data
        if not len(mesh.polygons):
            raise InputError(f"'{obj.name}' has no faces to bake onto")
        self._uvs = colors.texture_layout(mesh)  # on a copy: the object changes only once the bake succeeded
        mesh.calc_loop_triangles()
        loops = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int64)
        mesh.loop_triangles.foreach_get("loops", loops)
        faces = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int64)
        mesh.loop_triangles.foreach_get("vertices", faces)
        vertices = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
        mesh.vertices.foreach_get("co", vertices)
        mesh_file = job.path("bake.npz")
        np.savez(mesh_file, vertices=vertices.reshape(-1, 3), faces=faces.reshape(-1, 3),
                 corner_uvs=self._uvs[loops].reshape(-1, 3, 2))
        self._image = os.path.join(os.path.dirname(path), f"{os.path.splitext(os.path.basename(path))[0]}_"
                                   f"{bpy.path.clean_name(obj.name)}_colour.png")
        choice = _space_choice(obj.neural_field) if obj.neural_field.space_shape >= 0 else {}
        job.add_task(make_task(BakeTask, f"Cannot bake '{obj.name}'", field_path=path, mesh=mesh_file,
                               image_out=self._image, size=context.scene.neural_field.texture_size,
                               device=job_device(context), **choice))
        self._target = obj.name

    def apply(self, context, job, results, errors):
        obj = bpy.data.objects.get(self._target)
        if not results or obj is None:
            self.report({"ERROR"}, f"Bake Texture failed: {failure_text(errors, [self._target])}")
            return {"CANCELLED"}
        material = colors.show_texture(obj, self._uvs, self._image)
        # Packed too: the texture travels with the .blend wherever the field files are kept.
        next(node for node in material.node_tree.nodes if node.type == "TEX_IMAGE").image.pack()
        size = results[0]["size"]
        self.report({"INFO"}, f"Baked {obj.name}'s colour into a {size} x {size} texture: {self._image}")
        return {"FINISHED"}


class NEURAL_FIELD_OT_compress(WorkerOperator, bpy.types.Operator):
    """Compress the active field into a small network at the target size (for delivery) and add it as a new field object over the original, with its bytes and its fidelity to the original"""

    bl_idname = "neural_field.compress"
    bl_label = "Compress"
    bl_options = {"UNDO"}

    steps: bpy.props.IntProperty(name="Steps", description="Training steps of the small network (0: the "
                                 "device's default, 12,000 on a GPU, 6,000 on the CPU)", default=0, min=0)

    @classmethod
    def poll(cls, context):
        return _field_object_poll(cls, context)

    def fill_job(self, context, job: WorkerJob) -> None:
        obj = context.active_object
        if obj.neural_field.space_shape >= 0:
            raise InputError(f"'{obj.name}' is a shape of a space: compress the space from the command line "
                             "(compress SPACE.nfield), which keeps its one decoder")
        path = _field_file(obj)
        settings = context.scene.neural_field
        # The small network's own surface: at level 0, never a sheet (compress keeps no sheet sides).
        self._extract = replace(_extract_settings(settings), level=0.0, sheet=False)
        job.add_task(make_task(
            CompressTask, f"Cannot compress '{obj.name}'", source=path,
            out_path=storage.new_field_path(obj.name + "_compressed"), bytes=int(round(settings.compress_kb * 1000)),
            seed=settings.seed, steps=self.steps or None, device=job_device(context), extract=self._extract,
            mesh_out=job.path("result.npz")))
        self._target = obj.name

    def apply(self, context, job, results, errors):
        original = bpy.data.objects.get(self._target)
        if not results or original is None:
            self.report({"ERROR"}, f"Compress failed: {failure_text(errors, [self._target])}")
            return {"CANCELLED"}
        result = results[0]
        report = result["report"]
        obj = new_field_object(fields_collection(context.scene), f"{self._target}.compressed", result["mesh_out"],
                               original)
        record_field(obj, original.neural_field.source_name or original.name, result["field_path"],
                     {**report, "encoding": "siren", "train_seconds": report["seconds"]}, self._extract, report)
        obj.neural_field.compressed_bytes = int(report["bytes"])
        select_only(context, [obj])
        self.report({"INFO"}, f"Compressed {self._target} into {report['bytes']:,} bytes: Chamfer-L1 "
                              f"{report['chamfer_l1']:.2e} of the diagonal against the original")
        return {"FINISHED"}


class NEURAL_FIELD_OT_reconstruct(WorkerOperator, bpy.types.Operator):
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
        return idle(cls)

    def fill_job(self, context, job: WorkerJob) -> None:
        space_obj = selected_space_object(context)
        path = _field_file(space_obj)
        inputs = reconstruct_inputs(context)
        depsgraph = context.evaluated_depsgraph_get()
        settings = context.scene.neural_field
        self._extract = _extract_settings(settings)
        self._tasks = []  # (input name, name of the object whose frame the result lands in)
        for index, obj in enumerate(inputs):
            notes = [] if settings.color else None
            arrays, frame = reconstruct_input(obj, space_obj, depsgraph, self.input_mode, notes)
            _report_color_notes(self, [f"'{obj.name}': {note}" for note in notes or []])
            input_path = job.path(f"input_{index}.npz")
            np.savez(input_path, **arrays)
            job.add_task(make_task(
                ReconstructTask, f"Cannot reconstruct '{obj.name}'", space_path=path, input=input_path,
                mesh_out=job.path(f"result_{index}.npz"), name=obj.name, steps=self.steps, seed=settings.seed,
                device=job_device(context), out_space_path=storage.new_field_path(obj.name + "_space"),
                extract=self._extract))
            self._tasks.append((obj.name, frame.name))

    def apply(self, context, job, results, errors):
        names = [name for name, _ in self._tasks]
        if not results:
            self.report({"ERROR"}, f"Reconstruct failed: {failure_text(errors, names)}")
            return {"CANCELLED"}
        collection = fields_collection(context.scene)
        created = []
        for index, result in sorted(results.items()):
            name, frame_name = self._tasks[index]
            created.append(new_space_object(collection, f"{name}.reconstructed", result["mesh_out"],
                                            bpy.data.objects.get(frame_name), name, result, int(result["shape"]),
                                            self._extract))
        select_only(context, created)
        _reveal_colors(self, created)
        if errors:
            self.report({"WARNING"}, f"Some reconstructions failed: {failure_text(errors, names)}")
        self.report({"INFO"}, f"Reconstructed {', '.join(obj.name for obj in created)}")
        return {"FINISHED"}


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
        problem = storage.field_problem(path, space_shape_count(record))
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
