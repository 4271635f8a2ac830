"""The sidebar panel: 3D View > Sidebar > Neural Field."""

from __future__ import annotations

import bpy

from . import live
from .driver import STATE, prewarm
from .field_objects import space_shape_count
from .storage import absolute_path, field_problem


def _prewarm(context) -> None:
    """The panel is drawn: a job is likely soon, so the warm worker starts loading (a cheap check
    once it runs; a Python that cannot run jobs is not retried)."""
    try:
        prewarm(context)
    except Exception as error:  # noqa: BLE001 - drawing must go on; the job will report the problem
        print(f"Neural Field: could not start the worker: {error}")


class VIEW3D_PT_neural_field(bpy.types.Panel):
    bl_label = "Neural Field"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Neural Field"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.neural_field
        _prewarm(context)

        if STATE.running:
            box = layout.box()
            box.progress(factor=STATE.progress, type="BAR", text=STATE.status or "Working")
            box.operator("neural_field.cancel", icon="CANCEL")
        if STATE.curve_path:
            _draw_loss_curve(layout.box() if not STATE.running else box)

        col = layout.column(align=True)
        col.label(text="Fit", icon="MOD_REMESH")
        col.prop(settings, "steps")
        col.prop(settings, "device")
        col.prop(settings, "seed")
        col.prop(settings, "surface")
        if settings.surface != "SOLID":
            col.prop(settings, "thickness")
        col.prop(settings, "color")
        col.prop(settings, "evaluate")
        col.operator("neural_field.fit", icon="PLAY")
        row = col.row(align=True)
        row.operator("neural_field.fit_shape_space", icon="MOD_INSTANCE")
        row.prop(settings, "space_steps", text="Steps")
        col.prop(settings, "smooth_blends")

        col = layout.column(align=True)
        col.label(text="Extraction", icon="MESH_ICOSPHERE")
        col.prop(settings, "resolution")
        col.prop(settings, "level")
        col.prop(settings, "normals")
        if settings.surface != "SOLID":
            col.prop(settings, "sheet")
        col.operator("neural_field.extract", icon="FILE_REFRESH")

        obj = context.active_object
        if obj is not None and obj.neural_field.is_field:
            self._draw_field(layout, obj, context)

    @staticmethod
    def _draw_field(layout, obj, context):
        record = obj.neural_field
        box = layout.box()
        box.label(text=f"Field of {record.source_name or '?'}", icon="OUTLINER_DATA_META")
        path = absolute_path(record.field_path)
        problem = field_problem(path, space_shape_count(record))
        if problem:
            box.label(text=problem, icon="ERROR")
            box.operator("neural_field.locate_field", icon="FILEBROWSER")
        else:
            box.label(text=f"File: {bpy.path.basename(path)}")
        box.label(text=f"{record.encoding or 'field'}: {record.steps} steps, {record.parameters:,} parameters, "
                       f"{record.train_seconds:.1f} s")
        box.label(text=f"Device: {record.device}")
        box.label(text=f"Extracted at {record.resolution}, level {record.level:g}")
        if record.space_shape >= 0:
            import json

            names = json.loads(record.space_names or "[]")
            space = layout.box()
            space.label(text=f"Shape space: {len(names)} shapes", icon="MOD_INSTANCE")
            for index, name in enumerate(names):
                space.label(text=f"{index}: {name}", icon="DOT" if index != record.space_shape else "RIGHTARROW")
            space.prop(record, "shape_a")
            space.prop(record, "shape_b")
            space.prop(record, "mix", slider=True)
            space.prop(record, "spherical")
            row = space.row(align=True)
            row.prop(record, "live_preview", toggle=True, icon="HIDE_OFF")
            row.prop(context.scene.neural_field, "preview_resolution", text="")
            if live.LIVE.owner == obj.name and live.LIVE.active:
                state = f"{live.LIVE.rate:.1f} updates/s" if live.LIVE.rate else "Loading the space..."
                space.label(text=f"Preview: {state}", icon="TIME")
            if live.LIVE.message and (live.LIVE.owner in ("", obj.name)):
                space.label(text=live.LIVE.message, icon="ERROR")
            space.operator("neural_field.extract", text="Extract Blend", icon="FILE_REFRESH")
            space.operator("neural_field.reconstruct", icon="MOD_SHRINKWRAP")
        if record.surface == "shell":
            shown = "its open sheet" if record.sheet else "closed"
            box.label(text=f"Shell, {record.thickness:.4g} thick, shown {shown}", icon="MOD_SOLIDIFY")
        if record.surface_reason:
            box.label(text=record.surface_reason.capitalize())
        if record.chamfer >= 0:
            box.label(text=f"Chamfer-L1 {record.chamfer:.2e} of diagonal")
            box.label(text=f"Normal consistency {record.normal_consistency:.3f}, F-score {record.fscore:.3f}")
        if record.color_psnr >= 0 or record.field_color_psnr >= 0:
            parts = []
            if record.color_psnr >= 0:
                parts.append(f"mesh {record.color_psnr:.1f} dB")
            if record.field_color_psnr >= 0:
                parts.append(f"field {record.field_color_psnr:.1f} dB")
            box.label(text="Colour PSNR " + ", ".join(parts))
        if record.field_color_psnr >= 0:
            row = box.row(align=True)
            row.operator("neural_field.bake_texture", icon="TEXTURE")
            row.prop(context.scene.neural_field, "texture_size", text="")
        if record.compressed_bytes >= 0:
            box.label(text=f"Compressed: {record.compressed_bytes / 1000:.1f} KB, measured against the original",
                      icon="PACKAGE")
        elif record.space_shape < 0:
            row = box.row(align=True)
            row.operator("neural_field.compress", icon="PACKAGE")
            row.prop(context.scene.neural_field, "compress_kb", text="KB")


_PREVIEWS = {}  # "collection": bpy.utils.previews collection holding the loss-curve thumbnail


def _draw_loss_curve(layout) -> None:
    import os

    import bpy.utils.previews

    try:
        key = str(os.stat(STATE.curve_path).st_mtime_ns)
    except OSError:
        return
    previews = _PREVIEWS.get("collection")
    if previews is None:
        previews = _PREVIEWS["collection"] = bpy.utils.previews.new()
    if key not in previews:
        previews.clear()  # one picture: the newest
        previews.load(key, STATE.curve_path, "IMAGE", force_reload=True)
    row = layout.row()
    row.template_icon(icon_value=previews[key].icon_id, scale=5.0)
    col = row.column()
    col.label(text="Loss")
    if STATE.last_loss is not None:
        col.label(text=f"{STATE.last_loss:.2e}")
    col.operator("neural_field.show_loss_curve", text="", icon="FULLSCREEN_ENTER")


def unregister() -> None:
    import bpy.utils.previews

    previews = _PREVIEWS.pop("collection", None)
    if previews is not None:
        bpy.utils.previews.remove(previews)


class VIEW3D_PT_neural_field_network(bpy.types.Panel):
    bl_label = "Network"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Neural Field"
    bl_parent_id = "VIEW3D_PT_neural_field"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        settings = context.scene.neural_field
        layout = self.layout
        layout.prop(settings, "preset")
        if settings.preset == "AUTO":
            layout.label(text="Fast on a CUDA GPU, Compact on the CPU", icon="INFO")
            return
        col = layout.column(align=True)
        col.prop(settings, "kind")
        col.prop(settings, "encoding")
        encoding = settings.encoding
        if encoding == "FOURIER":
            col.prop(settings, "fourier_features")
            col.prop(settings, "fourier_sigma")
        elif encoding == "POSITIONAL":
            col.prop(settings, "pe_frequencies")
        elif encoding == "SIREN":
            col.prop(settings, "siren_omega")
        else:
            for name in ("hash_levels", "hash_features", "hash_log2_size", "hash_base_resolution",
                         "hash_finest_resolution"):
                col.prop(settings, name)
        col = layout.column(align=True)
        col.prop(settings, "width")
        col.prop(settings, "depth")
        col.prop(settings, "skip_layer")
        if encoding != "SIREN":
            col.prop(settings, "activation")
        col = layout.column(align=True)
        col.prop(settings, "batch")
        col.prop(settings, "learning_rate")
        col.prop(settings, "pool_size")
        if settings.kind == "SDF":
            col.prop(settings, "sdf_loss")
            col.prop(settings, "eikonal_weight")
        col.prop(settings, "precision")
