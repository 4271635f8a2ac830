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
    ("CUDA", "CUDA", "Train on the NVIDIA GPU (fails with a message if there is none, unless the "
     "preferences allow falling back to the CPU)"),
)
SCENE_DEVICE_ITEMS = (
    ("PREFERENCES", "Preferences", "The Compute Device chosen in the add-on preferences"),
    *DEVICE_ITEMS,
)

def _relative_path_options() -> set:
    """Blender 4.5+ warns on '//' paths unless a property declares that it supports them; the
    option does not exist before 4.5 (registration would fail there)."""
    return {"PATH_SUPPORTS_BLEND_RELATIVE"} if bpy.app.version >= (4, 5, 0) else set()


ENCODING_ITEMS = (
    ("HASHGRID", "Hash Grid", "Multiresolution hash grid (Instant-NGP): fastest on a GPU, large files"),
    ("FOURIER", "Fourier Features", "Gaussian random Fourier features (Tancik et al. 2020)"),
    ("SIREN", "SIREN", "Sine activations (Sitzmann et al. 2020): compact, smooth"),
    ("POSITIONAL", "Positional", "NeRF positional encoding: sines and cosines at octave frequencies"),
)
PRESET_ITEMS = (
    ("AUTO", "Auto", "Fast on a CUDA GPU, Compact on the CPU; the network settings below are not used"),
    ("FAST", "Fast", "Hash grid with a small MLP: seconds on a GPU, larger files"),
    ("COMPACT", "Compact", "Fourier features with a 3x128 MLP: small files, good on the CPU"),
    ("SMOOTH", "Smooth", "Positional encoding with an eikonal term: smooth surfaces, fewer details"),
    ("CUSTOM", "Custom", "The network and training settings below, as set"),
)
KIND_ITEMS = (
    ("SDF", "Signed Distance", "The network predicts the distance to the surface (negative inside)"),
    ("OCCUPANCY", "Occupancy", "The network predicts inside/outside (extracted at probability 0.5)"),
)
ACTIVATION_ITEMS = (
    ("SOFTPLUS", "Softplus", "Smooth ReLU: smooth normals"),
    ("RELU", "ReLU", "Plain ReLU: cheapest"),
)
LOSS_ITEMS = (
    ("L1", "Clamped L1", "DeepSDF's clamped L1 on signed distance"),
    ("MAPE", "Relative L1", "Instant-NGP's relative error: weighs the surface more"),
)
PRECISION_ITEMS = (
    ("AUTO", "Auto", "bf16 for hash grids on CUDA, fp32 otherwise"),
    ("FP32", "fp32", "Full precision"),
    ("BF16", "bf16", "bfloat16 mixed precision on CUDA"),
)

# Scene properties that are FieldConfig fields of the same name, and scene property -> TrainConfig
# field. Enum identifiers are the core's names in upper case.
_FIELD_SETTINGS = (
    "kind", "encoding", "fourier_features", "fourier_sigma", "pe_frequencies", "siren_omega", "hash_levels",
    "hash_features", "hash_log2_size", "hash_base_resolution", "hash_finest_resolution", "width", "depth",
    "skip_layer", "activation",
)
_TRAIN_SETTINGS = {
    "batch": "batch", "learning_rate": "lr", "pool_size": "pool_size", "sdf_loss": "sdf_loss",
    "eikonal_weight": "eikonal_weight", "precision": "precision", "steps": "steps",
}


def _apply_preset(settings, context):
    """Choosing a named preset writes all of its settings (its defaults included, so nothing of
    the previous choice lingers) into the panel's, which the fit then uses and the user may
    adjust. The field kind stays the user's; an occupancy field gets no eikonal term."""
    if settings.preset in ("AUTO", "CUSTOM"):
        return
    from ..core.config import preset_configs

    field_config, train_config = preset_configs(settings.preset.lower())
    for prop in _FIELD_SETTINGS:
        if prop != "kind":
            setattr(settings, prop, _blender_value(getattr(field_config, prop)))
    for prop, key in _TRAIN_SETTINGS.items():
        setattr(settings, prop, _blender_value(getattr(train_config, key)))
    if settings.kind == "OCCUPANCY":
        settings.eikonal_weight = 0.0


def _blender_value(value):
    return value.upper() if isinstance(value, str) else value


class NeuralFieldSceneSettings(bpy.types.PropertyGroup):
    preset: EnumProperty(name="Preset", items=PRESET_ITEMS, default="AUTO", update=_apply_preset,
                         description="Network and training settings by name")
    steps: IntProperty(name="Steps", description="Training steps", default=1500, min=1, soft_max=20000)
    space_steps: IntProperty(
        name="Space Steps", description="Training steps of Fit Shape Space (0: the device's default, "
        "14,000 on a GPU and 1,500 on the CPU; a space needs more steps than one field)", default=0, min=0,
        soft_max=50000)
    smooth_blends: BoolProperty(
        name="Smooth Blends", default=True,
        description="Fit Shape Space also trains the blends between shapes to follow the morph of their "
        "distance fields: smooth, one-piece in-betweens, at a small cost in fidelity at the shapes themselves")
    device: EnumProperty(name="Device", items=SCENE_DEVICE_ITEMS, default="PREFERENCES",
                         description="Where this scene's fits and extractions run")
    seed: IntProperty(name="Seed", description="Seed for samples, batches and initialisation", default=0, min=0)
    kind: EnumProperty(name="Field", items=KIND_ITEMS, default="SDF")
    batch: IntProperty(name="Batch", description="Points per training step", default=8192, min=256, soft_max=1 << 20)
    learning_rate: FloatProperty(name="Learning Rate", default=2e-3, min=1e-6, max=1.0, precision=4)
    pool_size: IntProperty(name="Sample Pool", description="Ground-truth points computed before training",
                           default=1 << 18, min=1024, soft_max=1 << 22)
    sdf_loss: EnumProperty(name="Loss", items=LOSS_ITEMS, default="L1")
    eikonal_weight: FloatProperty(name="Eikonal Weight", description="Weight of the eikonal term "
                                  "|grad f| = 1 (0: off); smooths the field, costs a second backward pass",
                                  default=0.0, min=0.0, soft_max=1.0, precision=3)
    precision: EnumProperty(name="Precision", items=PRECISION_ITEMS, default="AUTO")
    encoding: EnumProperty(name="Encoding", items=ENCODING_ITEMS, default="FOURIER")
    fourier_features: IntProperty(name="Frequencies", default=96, min=1, soft_max=512)
    fourier_sigma: FloatProperty(
        name="Frequency Scale", description="Standard deviation of the Fourier frequencies: "
        "higher fits finer detail, too high adds noise", default=1.5, min=0.1, soft_max=10.0)
    pe_frequencies: IntProperty(name="Octaves", description="Positional-encoding octaves", default=6, min=0, max=16)
    siren_omega: FloatProperty(name="Omega", description="SIREN's frequency factor omega_0", default=30.0,
                               min=0.1, soft_max=100.0)
    hash_levels: IntProperty(name="Levels", default=16, min=1, max=32)
    hash_features: IntProperty(name="Features per Level", default=2, min=1, max=8)
    hash_log2_size: IntProperty(name="Table Size (log2)", default=19, min=8, max=26)
    hash_base_resolution: IntProperty(name="Coarsest Resolution", default=16, min=1, soft_max=128)
    hash_finest_resolution: IntProperty(name="Finest Resolution", default=2048, min=1, soft_max=8192)
    width: IntProperty(name="Width", description="Neurons per hidden layer", default=128, min=8, soft_max=512)
    depth: IntProperty(name="Depth", description="Hidden layers", default=3, min=1, soft_max=8)
    skip_layer: IntProperty(name="Skip Layer", description="Hidden layer that sees the encoded input "
                            "again, as in DeepSDF (0: none)", default=0, min=0, max=16)
    activation: EnumProperty(name="Activation", items=ACTIVATION_ITEMS, default="SOFTPLUS")
    resolution: IntProperty(
        name="Resolution", description="Grid samples along the longest side for extraction",
        default=128, min=16, soft_max=512, max=2048)
    level: FloatProperty(
        name="Level", description="Iso-level offset in the object's units; positive grows the shape",
        default=0.0, subtype="DISTANCE", precision=4, step=0.1)
    preview_resolution: IntProperty(
        name="Preview Resolution", description="Grid samples along the longest side of the live preview",
        default=64, min=16, soft_max=128, max=256)
    normals: BoolProperty(
        name="Field Normals", description="Shade the extracted surface smooth with vertex normals "
        "from the field's gradient", default=False)
    sheet: BoolProperty(
        name="Sheet", description="For fields fitted as shells: extract the open sheet inside the shell (one "
        "layer, with the source's boundaries and openings) instead of the closed shell; solids extract as "
        "always", default=False)
    color: BoolProperty(
        name="Colour", description="Fit the sources' colours with their shape (image textures, colour "
        "attributes, materials' Base Colors) and show them on the result; sources without colours fit "
        "their shape alone", default=True)
    surface: EnumProperty(
        name="Surface", description="How a fit takes the source's surface", default="AUTO",
        items=[("AUTO", "Auto", "Solid where the mesh encloses a volume decisively, a shell where it is an open "
                "sheet (measured; the fit's report says which and why)"),
               ("SOLID", "Solid", "The inside of the mesh (its winding number): closed and nearly closed meshes"),
               ("SHELL", "Shell", "A closed thin shell of the given thickness around the surface: open sheets, "
                "cloth, walls, car bodies")])
    thickness: FloatProperty(
        name="Thickness", description="A shell's thickness in the object's units (0: 0.5% of the object's "
        "diagonal); never thinner than the extraction resolution shows", default=0.0, min=0.0,
        subtype="DISTANCE", precision=4, step=0.1)
    texture_size: IntProperty(
        name="Texture Size", description="Texels a side of the texture Bake Texture makes of a field's colour",
        default=2048, min=64, max=8192)
    compress_kb: FloatProperty(
        name="Target Size", description="Compress: the compressed field file's size at most, in kilobytes "
        "(1,000 bytes)", default=15.0, min=2.0, soft_max=200.0, precision=1)
    evaluate: BoolProperty(
        name="Measure Fidelity", description="After fitting, measure Chamfer distance, normal "
        "consistency and F-score of the result against the source", default=True)


def _blend_changed(record, context):
    if record.live_preview:
        from . import live

        live.request(record.id_data)


def _toggle_live_preview(record, context):
    from . import live

    obj = record.id_data
    if not record.live_preview:
        if live.LIVE.owner == obj.name:
            live.stop()
        return
    try:
        live.start(obj, context)
    except ValueError as error:
        record["live_preview"] = False  # without re-entering this update
        live.LIVE.message = str(error)


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
    color_psnr: FloatProperty(name="Colour PSNR", description="sRGB PSNR (dB) of the result's vertex colours "
                              "against the source's colours (-1: not measured)", default=-1.0, precision=2)
    field_color_psnr: FloatProperty(name="Field Colour PSNR", description="sRGB PSNR (dB) of the colour field "
                                    "at points of the source (-1: no colour)", default=-1.0, precision=2)
    surface: StringProperty(name="Surface", description="How the fit took the source's surface: solid or "
                            "shell (empty: fitted before surface modes)", default="")
    surface_reason: StringProperty(name="Surface Reason", description="Why the fit took it so", default="")
    thickness: FloatProperty(name="Thickness", description="A shell's thickness in the object's units (0: a "
                             "solid)", default=0.0, subtype="DISTANCE", precision=4)
    sheet: BoolProperty(name="Sheet", description="The mesh shows the shell's open sheet, not the closed shell",
                        default=False)
    compressed_bytes: IntProperty(name="Compressed Size", description="A compressed field's file size in bytes "
                                  "(-1: not a compressed field)", default=-1, min=-1)
    # Shape spaces: every shape's object references the one space file.
    space_shape: IntProperty(name="Shape in Space", description="This object's shape in its shape space "
                             "(-1: a single field)", default=-1, min=-1)
    space_names: StringProperty(name="Shapes", description="Names of the space's shapes (JSON list)", default="")
    shape_a: IntProperty(name="Shape A", description="First shape of the blend Extract makes", default=0, min=0,
                         update=_blend_changed)
    shape_b: IntProperty(name="Shape B", description="Second shape of the blend Extract makes", default=0, min=0,
                         update=_blend_changed)
    mix: FloatProperty(name="Mix", description="0: shape A, 1: shape B, between: a blend of their codes",
                       default=0.0, min=0.0, max=1.0, subtype="FACTOR", update=_blend_changed)
    spherical: BoolProperty(
        name="Spherical Path", description="Blend along the arc between the two codes (slerp), keeping their "
        "length, instead of the straight line; between very different shapes it often leaves fewer fragments",
        default=False, update=_blend_changed)
    live_preview: BoolProperty(
        name="Live Preview", description="Show the blend in a preview object that follows Shape A, Shape B "
        "and Mix as they change (a worker keeps the space loaded)", default=False, update=_toggle_live_preview)
    is_preview: BoolProperty(name="Is Preview", description="A live preview's object (removed when it stops)",
                             default=False)


def fit_task_settings(settings: NeuralFieldSceneSettings, device: str) -> dict:
    """The panel's network and training settings as FitTask's `preset`, `field_config` and
    `train_config` (core/service/tasks.py), for `FitTask(**fit_task_settings(...), ...)`. With
    the Auto preset the worker picks Fast or Compact for the device it finds, and only steps,
    seed and device come from the panel."""
    field = {"init_seed": settings.seed}
    train = {"steps": settings.steps, "seed": settings.seed, "device": device, "surface": settings.surface.lower()}
    if settings.thickness > 0:
        train["thickness"] = settings.thickness
    if settings.preset == "AUTO":
        return {"preset": "auto", "field_config": field, "train_config": train}
    for prop in _FIELD_SETTINGS:
        field[prop] = _core_value(getattr(settings, prop))
    for prop, key in _TRAIN_SETTINGS.items():
        train[key] = _core_value(getattr(settings, prop))
    train["pool_size"] = max(train["pool_size"], train["batch"])
    if settings.kind == "OCCUPANCY":
        train["eikonal_weight"] = 0.0  # not shown for occupancy: a distance-only term
    return {"preset": None, "field_config": field, "train_config": train}


def _core_value(value):
    return value.lower() if isinstance(value, str) else value
