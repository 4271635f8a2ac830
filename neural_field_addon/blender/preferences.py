"""Add-on preferences (Edit > Preferences > Add-ons > Neural Field): the compute device and what
to do when CUDA fails, where new field files go, the Python interpreter that runs the worker,
and the dependency folder with its Install Dependencies button and what was found there. What
the settings mean for a job (the worker's Python, paths, device, options) is worker_env.py's."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from . import dependencies
from .properties import DEVICE_ITEMS
from .storage import ADDON_PACKAGE
from .worker_env import DEFAULT_IDLE_MINUTES, dependency_folder, worker_python


class NeuralFieldPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_PACKAGE

    device: EnumProperty(name="Compute Device", items=DEVICE_ITEMS, default="AUTO",
                         description="Where fits, extractions and the live preview run, unless the panel's "
                         "Device names one")
    cpu_fallback: BoolProperty(
        name="Fall Back to the CPU",
        description="When CUDA runs out of memory (or there is no usable GPU), run the job again on the CPU "
        "instead of stopping with a message. The CPU is many times slower",
        default=False)
    gpu_memory_limit: FloatProperty(
        name="GPU Memory Limit", subtype="FACTOR", min=0.05, max=1.0, default=1.0,
        description="Largest share of the GPU's memory the worker may use; lower it to leave room for "
        "Blender's viewport and Cycles on the same GPU")
    worker_idle_minutes: IntProperty(
        name="Keep Worker Warm", min=0, max=24 * 60, default=DEFAULT_IDLE_MINUTES,
        description="Minutes the training worker stays loaded after a job, so the next one starts at "
        "once (it holds no GPU memory but its context while it waits); 0 starts a fresh worker for every job")
    fields_folder: StringProperty(
        name="Fields Folder", subtype="DIR_PATH", default="",
        description="Where new field files are written; empty keeps them beside the .blend in "
        "//neural_fields/ (moved there when an unsaved file is first saved)")
    python_path: StringProperty(
        name="Python for Training", subtype="FILE_PATH", default="",
        description="Python interpreter with PyTorch that runs the training worker; empty uses "
        "Blender's own Python with the add-on's dependency folder on its path")
    wheel_folder: StringProperty(
        name="Offline Packages", subtype="DIR_PATH", default="",
        description="Install dependencies from the wheel files in this folder instead of from the "
        "internet (for machines without a connection); empty uses the Python Package Index")

    def draw(self, context):
        layout = self.layout
        col = layout.column()
        col.label(text="Computing", icon="SETTINGS")
        col.prop(self, "device")
        col.prop(self, "cpu_fallback")
        col.prop(self, "gpu_memory_limit", slider=True)
        col.prop(self, "worker_idle_minutes")

        col = layout.column()
        col.label(text="Storage", icon="FILE_FOLDER")
        col.prop(self, "fields_folder")

        box = layout.box()
        box.label(text="Training Python", icon="SCRIPT")
        box.prop(self, "python_path")
        box.label(text=f"Worker Python: {worker_python(context)}")
        box.label(text=f"Dependency folder: {dependency_folder()}")
        dependencies.draw_status(box, context)
        row = box.row(align=True)
        row.enabled = not dependencies.INSTALL.running
        row.operator("neural_field.install_dependencies", icon="IMPORT")
        row.operator("neural_field.check_dependencies", icon="FILE_REFRESH")
        box.prop(self, "wheel_folder")

