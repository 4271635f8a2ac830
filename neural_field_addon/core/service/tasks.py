"""Tasks: what the command line, the worker and the add-on ask the core to do, as typed values.

The CLI turns its arguments into tasks, the worker its job file's JSON objects (`task_from_dict`,
the protocol's keys are the fields' names), and the Blender operators fill them in; runners.py
runs them. Every rule about a task's inputs that needs neither torch nor a file is checked here,
when the task is made, so all three accept and refuse the same things; what needs the data (a
mesh's faces, what a field file holds, a config on the device it runs on) is checked once, by the
runner. Torch-free: Blender's own Python imports this module.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from typing import ClassVar

from ..config import (
    COMPRESS_BITS,
    COMPRESS_DEFAULT_BITS,
    DEFAULT_PRECISION,
    DEVICES,
    EXTRACTION_METHODS,
    INFERENCE_STEPS,
    PRESET_NAMES,
    FieldConfig,
    TrainConfig,
    check_level,
    check_settings,
    check_storage,
)

# Surface samples per direction when `eval` compares two meshes.
EVAL_SAMPLES = 50_000
# Sides of a baked texture (texels): 0 for none, else within these bounds.
TEXTURE_SIZES = (8, 16384)


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")


def _integer(name: str, value, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or int(value) != value:
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {int(value)}")
    return int(value)


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _optional_bool(name: str, value) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{name} must be true, false or null, got {value!r}")
    return value


def _set(task, name: str, value) -> None:
    object.__setattr__(task, name, value)  # frozen dataclasses normalise their own fields


@dataclass(frozen=True)
class ExtractSettings:
    """How a surface is extracted: grid samples along the longest side, the iso-level in the
    source's units (positive grows the shape), the method, vertex normals from the field, for a
    field with colour the side of a texture to bake (0: vertex colours only), and for a shell
    whether to extract its sheet (surface/sheet.py: the open single layer) instead."""

    resolution: int = 256
    level: float = 0.0
    method: str = "adaptive"
    normals: bool = False
    texture: int = 0
    sheet: bool = False

    def __post_init__(self):
        _set(self, "resolution", _integer("resolution", self.resolution))
        _set(self, "level", _number("level", self.level))
        _choice("method", self.method, EXTRACTION_METHODS)
        _set(self, "normals", bool(self.normals))
        _set(self, "texture", _texture_size(self.texture))
        _set(self, "sheet", bool(self.sheet))
        if self.sheet and self.level != 0.0:
            raise ValueError(f"a sheet has no level to offset ({self.level:g}): it is the zero set of the distance; "
                             "extract it at level 0, or the shell without --sheet")
        if self.sheet and self.method != "adaptive":
            raise ValueError("a sheet is extracted by the adaptive method only (method 'adaptive')")


def _check_shape_choice(task) -> None:
    """A task's choice of what a shape-space file gives (`shape`, `blend`, `slerp`), normalised;
    whether the file needs it is fields.shapespace.select_field's to say."""
    if task.shape is not None:
        _set(task, "shape", _integer("shape", task.shape))
    if task.blend is not None:
        _set(task, "blend", _blend_weights(task.blend))
    _set(task, "slerp", bool(task.slerp))


def _blend_weights(value) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"blend must map shape indices to weights, got {value!r}")
    try:
        return {int(index): float(weight) for index, weight in value.items()}
    except (TypeError, ValueError):
        raise ValueError(f"blend must map shape indices to weights, got {value!r}") from None


def _texture_size(value) -> int:
    size = _integer("texture", value, minimum=0)
    low, high = TEXTURE_SIZES
    if size and not low <= size <= high:
        raise ValueError(f"texture must be 0 (none) or {low}..{high} texels a side, got {size}")
    return size


def _extract_settings(value) -> ExtractSettings | None:
    if value is None or isinstance(value, ExtractSettings):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"extract must be an object of extraction settings, got {value!r}")
    _known(ExtractSettings, value, "extract")
    return ExtractSettings(**value)


def _known(cls, data: dict, what: str) -> None:
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"unknown {what} settings: {', '.join(unknown)}")


def _overrides(cls, value, name: str) -> dict:
    """A config's overrides as a dict (None: none), its keys checked against the config."""
    value = {} if value is None else value
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be an object of settings, got {value!r}")
    check_settings(cls, value)
    return dict(value)


class Task:
    """What every task shares: its protocol name (`type`), the fields that are file paths, and
    its JSON form."""

    type: ClassVar[str] = ""
    paths: ClassVar[tuple] = ()

    def relative_to(self, folder: str):
        """The task with its relative paths taken relative to `folder` (the job file's)."""
        def resolve(path):
            return path if path is None or os.path.isabs(path) else os.path.join(folder, path)

        changes = {}
        for name in self.paths:
            value = getattr(self, name)
            changes[name] = tuple(resolve(p) for p in value) if isinstance(value, tuple) else resolve(value)
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict):
        """The task a JSON object describes; unknown keys are refused, so typos are not ignored."""
        data = {key: value for key, value in data.items() if key != "type"}
        _known(cls, data, f"{cls.type} task")
        return cls(**data)

    def to_dict(self) -> dict:
        data = {"type": self.type}
        for name, value in asdict(self).items():
            if isinstance(value, tuple):
                value = list(value)
            elif name == "blend" and value is not None:
                value = {str(index): weight for index, weight in value.items()}
            data[name] = value
        return data


class _FittingTask(Task):
    """What a fit and a space fit share: a preset and config overrides, and a device in them."""

    def _check_configs(self) -> None:
        if self.preset is not None:
            _choice("preset", self.preset, PRESET_NAMES)
        _set(self, "field_config", _overrides(FieldConfig, self.field_config, "field_config"))
        _set(self, "train_config", _overrides(TrainConfig, self.train_config, "train_config"))
        _set(self, "extract", _extract_settings(self.extract))
        _choice("device", self.device, DEVICES)

    @property
    def device(self) -> str:
        return self.train_config.get("device") or "auto"

    def on_cpu(self):
        return replace(self, train_config={**self.train_config, "device": "cpu"})


@dataclass(frozen=True)
class FitTask(_FittingTask):
    """Fit a field to one mesh file and write it; with `extract`, also extract its surface to
    `mesh_out` and (with `evaluate`) measure it against the mesh. The configs start from `preset`
    (None: the dataclass defaults; 'auto': fast on CUDA, compact on the CPU) on the device the fit
    runs on, with the given settings replacing the preset's (None values keep them)."""

    type: ClassVar[str] = "fit"
    paths: ClassVar[tuple] = ("mesh", "field_path", "mesh_out")
    mesh: str
    field_path: str
    preset: str | None = None
    field_config: dict = field(default_factory=dict)
    train_config: dict = field(default_factory=dict)
    extract: ExtractSettings | None = None
    mesh_out: str | None = None
    evaluate: bool = True
    color: bool | None = None
    storage: str = DEFAULT_PRECISION
    codec: str | None = None

    def __post_init__(self):
        check_storage(self.storage, self.codec)
        self._check_configs()
        _set(self, "evaluate", bool(self.evaluate))
        _set(self, "color", _optional_bool("color", self.color))
        if self.extract is not None:
            if not self.mesh_out:
                raise ValueError("a fit that extracts its surface needs mesh_out, the file to write it to")
            # Every preset is a signed-distance field: only an explicit kind makes an occupancy one.
            check_level(self.field_config.get("kind") or "sdf", self.extract.level)


@dataclass(frozen=True)
class FitSpaceTask(_FittingTask):
    """Fit one shape space (a decoder and a code per mesh) to two or more mesh files and write it;
    with `extract`, also extract every shape, one file of `mesh_out` each. The configs are the
    space defaults of the device (preset None or 'auto'; config.space_configs) or a named preset,
    with the given settings replacing them; `latent_dim` and `latent_grid` are applied last (the
    fitter gives codes of length 0 its default length). `mix_weight` weighs mixed-code
    supervision (None: config.MIX_WEIGHT; 0: a plain auto-decoder). `color` as for FitTask: a
    colour decoder when any mesh has colours."""

    type: ClassVar[str] = "fit-space"
    paths: ClassVar[tuple] = ("meshes", "space_path", "mesh_out")
    meshes: tuple
    space_path: str
    names: tuple | None = None
    preset: str | None = None
    field_config: dict = field(default_factory=dict)
    train_config: dict = field(default_factory=dict)
    latent_dim: int | None = None
    latent_grid: int | None = None
    mix_weight: float | None = None
    extract: ExtractSettings | None = None
    mesh_out: tuple = ()
    color: bool | None = None
    storage: str = DEFAULT_PRECISION
    codec: str | None = None

    def __post_init__(self):
        check_storage(self.storage, self.codec)
        _set(self, "color", _optional_bool("color", self.color))
        _set(self, "meshes", tuple(str(path) for path in self.meshes))
        if len(self.meshes) < 2:
            raise ValueError(f"a shape space needs at least two meshes; {len(self.meshes)} given")
        if self.names is not None:
            _set(self, "names", tuple(str(name) for name in self.names))
            if len(self.names) != len(self.meshes):
                raise ValueError(f"{len(self.names)} names given for {len(self.meshes)} meshes")
        self._check_configs()
        for name in ("latent_dim", "latent_grid"):
            if getattr(self, name) is not None:
                _set(self, name, _integer(name, getattr(self, name), minimum=0))
        if self.mix_weight is not None:
            _set(self, "mix_weight", _number("mix_weight", self.mix_weight))
            if self.mix_weight < 0:
                raise ValueError(f"mix_weight must be at least 0, got {self.mix_weight:g}")
        _set(self, "mesh_out", tuple(str(path) for path in self.mesh_out))
        if self.extract is not None and len(self.mesh_out) != len(self.meshes):
            raise ValueError(f"a space that extracts its shapes needs one mesh_out per mesh: "
                             f"{len(self.mesh_out)} for {len(self.meshes)} meshes")


@dataclass(frozen=True)
class ExtractTask(Task):
    """Extract the surface of a field file to `mesh_out` (OBJ, PLY or NPZ), with vertex colours
    when the field has colour, and with `texture` > 0 a baked texture of that side; with `sheet`,
    a shell's sheet. A shape space needs
    `shape` (an index) or `blend` ({index: weight}, weights summing to 1; `slerp`: the spherical
    path between two codes); a single field takes neither (fields.shapespace.select_field)."""

    type: ClassVar[str] = "extract"
    paths: ClassVar[tuple] = ("field_path", "mesh_out")
    field_path: str
    mesh_out: str
    resolution: int = 256
    level: float = 0.0
    method: str = "adaptive"
    normals: bool = False
    device: str = "auto"
    shape: int | None = None
    blend: dict | None = None
    slerp: bool = False
    texture: int = 0
    sheet: bool = False

    def __post_init__(self):
        settings = self.settings
        for name in ("resolution", "level", "normals", "texture", "sheet"):
            _set(self, name, getattr(settings, name))
        _choice("device", self.device, DEVICES)
        _check_shape_choice(self)

    @property
    def settings(self) -> ExtractSettings:
        return ExtractSettings(self.resolution, self.level, self.method, self.normals, self.texture, self.sheet)

    def on_cpu(self) -> "ExtractTask":
        return replace(self, device="cpu")


@dataclass(frozen=True)
class ReconstructTask(Task):
    """Find the shape of a space closest to new data (`input`: a mesh, or a point cloud as an NPZ
    array `points` or a PLY, possibly partial) with the decoder frozen, and extract it to
    `mesh_out`; with `out_space_path`, also write a copy of the space with it as one more shape
    named `name` (the source space is never changed)."""

    type: ClassVar[str] = "reconstruct"
    paths: ClassVar[tuple] = ("space_path", "input", "mesh_out", "out_space_path")
    space_path: str
    input: str
    mesh_out: str
    name: str = "reconstruction"
    steps: int = INFERENCE_STEPS
    seed: int = 0
    device: str = "auto"
    out_space_path: str | None = None
    extract: ExtractSettings = field(default_factory=ExtractSettings)

    def __post_init__(self):
        _set(self, "steps", _integer("steps", self.steps, minimum=1))
        _set(self, "seed", _integer("seed", self.seed))
        _choice("device", self.device, DEVICES)
        _set(self, "extract", _extract_settings(self.extract) or ExtractSettings())

    def on_cpu(self) -> "ReconstructTask":
        return replace(self, device="cpu")


@dataclass(frozen=True)
class BakeTask(Task):
    """Bake a field's colour into a `size` x `size` texture for a mesh that has its own UV layout
    (`mesh`: an NPZ of `vertices`, `faces` and per-corner `corner_uvs` (m, 3, 2), the field's
    object coordinates), written to `image_out` as an 8-bit sRGB PNG. A shape space takes
    `shape` or `blend` as ExtractTask does."""

    type: ClassVar[str] = "bake"
    paths: ClassVar[tuple] = ("field_path", "mesh", "image_out")
    field_path: str
    mesh: str
    image_out: str
    size: int = 2048
    device: str = "auto"
    shape: int | None = None
    blend: dict | None = None
    slerp: bool = False

    def __post_init__(self):
        size = _texture_size(self.size)
        if not size:
            raise ValueError("a bake needs a texture size of at least 8 texels a side")
        _set(self, "size", size)
        _choice("device", self.device, DEVICES)
        _check_shape_choice(self)

    def on_cpu(self) -> "BakeTask":
        return replace(self, device="cpu")


@dataclass(frozen=True)
class EvalTask(Task):
    """Fidelity of a candidate mesh against a reference: point-to-surface Chamfer-L1 both ways,
    relative to the reference's bounding-box diagonal, normal consistency and F-score at 1%."""

    type: ClassVar[str] = "eval"
    paths: ClassVar[tuple] = ("reference", "candidate")
    reference: str
    candidate: str
    samples: int = EVAL_SAMPLES
    seed: int = 0

    def __post_init__(self):
        _set(self, "samples", _integer("samples", self.samples, minimum=1))
        _set(self, "seed", _integer("seed", self.seed))


@dataclass(frozen=True)
class WarmupTask(Task):
    """Compile the kernels a fit uses once, into the caches (service/caches.py): small fits of a
    closed and an open torus with extraction and fidelity on the CPU (Numba's ground truth and
    queries) and, where CUDA is there and `device` allows it, with the Fast preset on the GPU
    (Triton's kernels)."""

    type: ClassVar[str] = "warmup"
    paths: ClassVar[tuple] = ()
    device: str = "auto"

    def __post_init__(self):
        _choice("device", self.device, DEVICES)


@dataclass(frozen=True)
class SdfTask(Task):
    """Exact signed distances (negative inside, sign by the generalized winding number) of the
    points in an .npy file of shape (n, 3) to a mesh, written as an .npy of n values."""

    type: ClassVar[str] = "sdf"
    paths: ClassVar[tuple] = ("mesh", "points", "output")
    mesh: str
    points: str
    output: str
    device: str = "auto"

    def __post_init__(self):
        _choice("device", self.device, DEVICES)

    def on_cpu(self) -> "SdfTask":
        return replace(self, device="cpu")


MESH_SUFFIXES = (".obj", ".ply", ".npz")


@dataclass(frozen=True)
class CompressTask(Task):
    """Compress a field file (a single field, distilled into a small network; a shape space, its
    decoder and codes quantised together) or a mesh file (fitted directly) into `out_path` at
    `bytes` (its file no larger) or at `chamfer` (the smallest whose Chamfer-L1 to the source's
    surface is within it, relative to the diagonal); one of the two. With `extract`, a single
    field's surface is also written to `mesh_out`."""

    type: ClassVar[str] = "compress"
    paths: ClassVar[tuple] = ("source", "out_path", "mesh_out")
    source: str
    out_path: str
    bytes: int | None = None
    chamfer: float | None = None
    bits: int = COMPRESS_DEFAULT_BITS
    device: str = "auto"
    seed: int = 0
    steps: int | None = None
    extract: ExtractSettings | None = None
    mesh_out: str | None = None

    def __post_init__(self):
        if (self.bytes is None) == (self.chamfer is None):
            raise ValueError("compress needs one target: bytes (a size) or chamfer (a fidelity), not both")
        if self.bytes is not None:
            _set(self, "bytes", _integer("bytes", self.bytes, minimum=1))
        if self.chamfer is not None:
            value = _number("chamfer", self.chamfer)
            if not 0 < value < 1:
                raise ValueError(f"chamfer must lie in (0, 1) (relative to the diagonal), got {value!r}")
            _set(self, "chamfer", value)
        _set(self, "bits", _integer("bits", self.bits))
        _choice("bits", self.bits, COMPRESS_BITS)
        _set(self, "seed", _integer("seed", self.seed))
        if self.steps is not None:
            _set(self, "steps", _integer("steps", self.steps, minimum=1))
        _choice("device", self.device, DEVICES)
        _set(self, "extract", _extract_settings(self.extract))
        if self.extract is not None and not self.mesh_out:
            raise ValueError("a compress that extracts its surface needs mesh_out, the file to write it to")
        if os.path.abspath(self.source) == os.path.abspath(self.out_path):
            raise ValueError(f"the compressed field would overwrite its source {self.source}: give another output")

    @property
    def from_mesh(self) -> bool:
        return os.path.splitext(self.source)[1].lower() in MESH_SUFFIXES

    def on_cpu(self) -> "CompressTask":
        return replace(self, device="cpu")


TASKS = {cls.type: cls for cls in (FitTask, FitSpaceTask, ExtractTask, ReconstructTask, BakeTask, EvalTask,
                                   SdfTask, CompressTask, WarmupTask)}


def task_from_dict(data) -> Task:
    """The task a job file's JSON object describes ({"type": ..., fields...})."""
    if not isinstance(data, dict):
        raise ValueError(f"a task must be a JSON object, got {data!r}")
    cls = TASKS.get(data.get("type"))
    if cls is None:
        raise ValueError(f"unknown task type {data.get('type')!r}")
    return cls.from_dict(data)
