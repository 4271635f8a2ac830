"""Settings: `scene.neural_field` (what the next fit/extract uses, and live progress) and
`obj.neural_field` (what a field object was made from and how well it fits)."""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

DEVICE_ITEMS = (
    ("AUTO", "Auto", "CUDA when a GPU is available, otherwise the CPU"),
    ("CPU", "CPU", "Train on the CPU"),
    ("CUDA", "CUDA", "Train on the NVIDIA GPU (fails with a message if there is none)"),
)

def _relative_path_options() -> set:
    """Blender 4.5+ warns on '//' paths unless a property declares that it supports them; the
    option does not exist before 4.5 (registration would fail there)."""
    return {"PATH_SUPPORTS_BLEND_RELATIVE"} if bpy.app.version >= (4, 5, 0) else set()


ENCODING_ITEMS = (
    ("FOURIER", "Fourier Features", "Gaussian random Fourier features (Tancik et al. 2020)"),
    ("POSITIONAL", "Positional", "NeRF positional encoding: sines and cosines at octave frequencies"),
)


class NeuralFieldSceneSettings(bpy.types.PropertyGroup):
    steps: IntProperty(name="Steps", description="Training steps", default=1000, min=1, soft_max=20000)
    device: EnumProperty(name="Device", items=DEVICE_ITEMS, default="AUTO")
    seed: IntProperty(name="Seed", description="Seed for samples, batches and initialisation", default=0, min=0)
    batch: IntProperty(name="Batch", description="Points per training step", default=8192, min=256, soft_max=1 << 20)
    learning_rate: FloatProperty(name="Learning Rate", default=2e-3, min=1e-6, max=1.0, precision=4)
    encoding: EnumProperty(name="Encoding", items=ENCODING_ITEMS, default="FOURIER")
    fourier_sigma: FloatProperty(
        name="Frequency Scale", description="Standard deviation of the Fourier frequencies: "
        "higher fits finer detail, too high adds noise", default=1.5, min=0.1, soft_max=10.0)
    width: IntProperty(name="Width", description="Neurons per hidden layer", default=128, min=8, soft_max=512)
    depth: IntProperty(name="Depth", description="Hidden layers", default=3, min=1, soft_max=8)
    resolution: IntProperty(
        name="Resolution", description="Grid samples along the longest side for extraction",
        default=128, min=16, soft_max=512, max=2048)
    level: FloatProperty(
        name="Level", description="Iso-level offset in the object's units; positive grows the shape",
        default=0.0, subtype="DISTANCE", precision=4, step=0.1)
    evaluate: BoolProperty(
        name="Measure Fidelity", description="After fitting, measure Chamfer distance, normal "
        "consistency and F-score of the result against the source", default=True)


class NeuralFieldObjectSettings(bpy.types.PropertyGroup):
    is_field: BoolProperty(name="Is Field", default=False)
    field_path: StringProperty(
        name="Field File", subtype="FILE_PATH", default="", options=_relative_path_options())
    source: PointerProperty(name="Source", type=bpy.types.Object)
    source_name: StringProperty(name="Source Name", default="")
    steps: IntProperty(name="Steps", default=0)
    device: StringProperty(name="Device", default="")
    encoding: StringProperty(name="Encoding", default="")
    parameters: IntProperty(name="Parameters", default=0)
    train_seconds: FloatProperty(name="Training Time", default=0.0, unit="TIME_ABSOLUTE")
    resolution: IntProperty(name="Resolution", default=0)
    level: FloatProperty(name="Level", default=0.0, subtype="DISTANCE")
    chamfer: FloatProperty(name="Chamfer-L1", description="Point-to-surface Chamfer-L1 to the "
                           "source, as a fraction of its bounding-box diagonal", default=-1.0, precision=6)
    normal_consistency: FloatProperty(name="Normal Consistency", default=-1.0, precision=4)
    fscore: FloatProperty(name="F-score", description="F-score at 1% of the diagonal", default=-1.0, precision=4)


def field_config(settings: NeuralFieldSceneSettings) -> dict:
    return {
        "encoding": settings.encoding.lower(),
        "fourier_sigma": settings.fourier_sigma,
        "width": settings.width,
        "depth": settings.depth,
        "init_seed": settings.seed,
    }


def train_config(settings: NeuralFieldSceneSettings) -> dict:
    return {
        "steps": settings.steps,
        "batch": settings.batch,
        "lr": settings.learning_rate,
        "seed": settings.seed,
        "device": settings.device.lower(),
        "pool_size": max(1 << 18, settings.batch),
    }
