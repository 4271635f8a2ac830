"""Typed settings: what a field is (`FieldConfig`, saved with it) and how it is fitted
(`TrainConfig`), the named presets the panel and the CLI offer, and the shape-space defaults.
Both configs round-trip through plain dicts for the CLI, the worker and the file. Torch-free:
Blender's side imports this module."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

FIELD_KINDS = ("sdf", "occupancy")
# 'siren' is a sine-activated MLP on raw coordinates (its own encoding, in effect).
ENCODINGS = ("fourier", "positional", "siren", "hashgrid")
ACTIVATIONS = ("softplus", "relu")
SDF_LOSSES = ("l1", "mape")
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
# How a fit takes the source's surface (TrainConfig.surface).
SURFACE_MODES = ("auto", "solid", "shell")
# A shell's default thickness, as a share of the mesh's bounding-box diagonal, and the fewest
# extraction voxels across it that still show it as a closed shell.
SHELL_THICKNESS = 0.005
SHELL_VOXELS = 2.0
# A shell's side network (fields/sides.py) sees this share of a step's batch, from a pool of points
# within a few extraction voxels of the sheet (SIDE_SCALES of a voxel); the extraction resolution
# assumed when a fit is not told one.
SIDE_BATCH_FRACTION = 0.25
SIDE_SCALES = (0.5, 1.0, 2.0)
DEFAULT_RESOLUTION = 256


def thinnest_shell(box_extent: float, resolution: int) -> float:
    """The thinnest shell an extraction at `resolution` of a box `box_extent` wide (its widest side,
    object units) still shows closed: SHELL_VOXELS voxels."""
    return SHELL_VOXELS * box_extent / resolution
# How a field file keeps its parameters (io/codecs.py): the precisions, the default, the codecs.
# Below 8 bits the integers still take a byte each in the archive: only entropy coding turns
# their fewer levels into fewer bytes, so those precisions need the codec.
# 'auto' (the default) picks by encoding: int8 for a hash grid, whose table is nearly all of a Fast
# field's bytes and loses 2% of Chamfer at int8 (12.6 MB for the bunny, against 24.4 MB at float16
# and 48.8 MB at float32; docs/BENCHMARKS.md), float16 for an MLP, whose few weights int8 would
# move more than they save (an 8-bit Fourier MLP needs quantisation-aware training: compress).
STORAGE_PRECISIONS = ("auto", "float32", "float16", "int10", "int8", "int6", "int5", "int4")
DEFAULT_PRECISION = "auto"
CODECS = (None, "lzma")


# Compress (compression/compress.py): the bits a weight may take, and the default. At equal bytes
# a narrower SIREN with finer weights wins down to 10 bits (rounding moves every pre-activation
# of the next layer; the float student is barely better): the bunny at 14 KB, Chamfer 2.21e-4 at
# 10 bits, 2.36e-4 at 8, 3.4e-4 at 6; at 38 KB 1.68e-4 at 10 and 2.84e-4 at 8; 12 bits gained
# nothing more (1.61e-4 at 38 KB, 2.3e-4 at 14 KB) (docs/BENCHMARKS.md).
COMPRESS_BITS = (10, 8, 6, 5, 4)
COMPRESS_DEFAULT_BITS = 10


def resolve_precision(precision: str, config) -> str:
    """The precision 'auto' stands for with a field of `config` (a FieldConfig); others as given."""
    if precision != "auto":
        return precision
    return "int8" if config.encoding == "hashgrid" else "float16"


def storage_bits(precision: str) -> int | None:
    """The integer bits of a quantised precision ('int6': 6), None for a float one."""
    return int(precision[3:]) if precision.startswith("int") else None


def check_storage(precision: str, codec) -> None:
    if precision not in STORAGE_PRECISIONS:
        raise ValueError(f"storage precision must be one of {', '.join(STORAGE_PRECISIONS)}; got {precision!r}")
    if codec not in CODECS:
        raise ValueError(f"codec must be 'lzma' or none; got {codec!r}")
    if (storage_bits(precision) or 8) != 8 and codec is None:
        raise ValueError(f"{precision} storage needs the lzma codec: at other than 8 bits only entropy coding "
                         f"saves bytes")


# Extraction: "adaptive", a narrow band around the surface; "dense", every grid sample (the reference).
EXTRACTION_METHODS = ("adaptive", "dense")
# Latent grids: 128^3 x 8 float32 numbers are 67 MB per shape, three times that while training.
MAX_LATENT_GRID = 128


@dataclass
class FieldConfig:
    """Architecture of a field network. Coordinates are in field space ([-1, 1] on the longest side).

    kind 'sdf': the head is the signed distance in field units (negative inside);
    kind 'occupancy': the head is the logit of being inside.
    """

    kind: str = "sdf"
    encoding: str = "fourier"
    fourier_features: int = 96
    fourier_sigma: float = 1.5
    pe_frequencies: int = 6
    siren_omega: float = 30.0
    hash_levels: int = 16
    hash_features: int = 2
    hash_log2_size: int = 19
    hash_base_resolution: int = 16
    hash_finest_resolution: int = 2048
    width: int = 128
    depth: int = 3
    # Hidden layer (1-based) that also receives the encoded input, as in DeepSDF; 0 for none.
    skip_layer: int = 0
    activation: str = "softplus"
    init_seed: int = 0
    # Length of the latent code a shape-space decoder takes beside the encoded point (DeepSDF's
    # auto-decoder); 0 for a single-shape field.
    latent_dim: int = 0
    # A shape-space decoder's latent grids (local codes, as in Deep Local Shapes): each shape also
    # has a grid of latent_grid cells a side holding latent_grid_features numbers per cell, read
    # trilinearly at the point and fed beside the code; 0 for none.
    latent_grid: int = 0
    latent_grid_features: int = 8

    def validate(self) -> "FieldConfig":
        _check_choice("kind", self.kind, FIELD_KINDS)
        _check_choice("encoding", self.encoding, ENCODINGS)
        _check_choice("activation", self.activation, ACTIVATIONS)
        for name in ("fourier_features", "width", "depth", "hash_levels", "hash_features",
                     "hash_base_resolution"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.pe_frequencies < 0:
            raise ValueError(f"pe_frequencies must be at least 0, got {self.pe_frequencies}")
        for name in ("fourier_sigma", "siren_omega"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 8 <= self.hash_log2_size <= 26:
            raise ValueError(f"hash_log2_size must lie in 8..26 (a table of 2^n entries), got {self.hash_log2_size}")
        if self.hash_finest_resolution < self.hash_base_resolution:
            raise ValueError(
                f"hash_finest_resolution ({self.hash_finest_resolution}) must be at least "
                f"hash_base_resolution ({self.hash_base_resolution})"
            )
        if self.latent_dim < 0:
            raise ValueError(f"latent_dim must be at least 0, got {self.latent_dim}")
        if self.latent_grid and not (2 <= self.latent_grid <= MAX_LATENT_GRID and self.latent_dim > 0
                                     and 1 <= self.latent_grid_features <= 64):
            raise ValueError(f"latent_grid must be 0 (none) or lie in 2..{MAX_LATENT_GRID}, with latent_dim > 0 and "
                             f"latent_grid_features in 1..64; got latent_grid {self.latent_grid}, latent_dim "
                             f"{self.latent_dim}, latent_grid_features {self.latent_grid_features}")
        if not 0 <= self.skip_layer <= self.depth:
            raise ValueError(f"skip_layer must lie in 0..depth ({self.depth}), got {self.skip_layer}")
        return self


@dataclass
class TrainConfig:
    """How a field is fitted. Distances (clamp, scales, padding) are in field units."""

    steps: int = 1500
    batch: int = 8192
    lr: float = 2e-3
    lr_final_fraction: float = 0.05
    seed: int = 0
    device: str = "auto"
    pool_size: int = 1 << 18
    # Share of the pool drawn uniformly in the box (the rest near the surface). None: 0.2 for
    # signed distance, 0.5 for occupancy, whose labels say nothing about how far the surface
    # is, so the volume needs denser samples (at 0.2, bubbles stayed inside Suzanne's head).
    pool_uniform_fraction: float | None = None
    near_scales: tuple = (0.003, 0.015, 0.06)
    box_padding: float = 0.1
    clamp: float = 0.1
    # 'l1': DeepSDF's clamped L1; 'mape': Instant-NGP's relative L1, |f - d| / (|d| + 0.01).
    sdf_loss: str = "l1"
    # Weight of IGR's eikonal term (|grad f| - 1)^2 on the batch; 0 turns it off.
    eikonal_weight: float = 0.0
    # 'auto': bf16 autocast for hash-grid fields on CUDA, fp32 otherwise.
    precision: str = "auto"
    report_every: int = 25
    # With colour: colour points per step, as a share of the batch.
    color_batch_fraction: float = 0.25
    # 'solid' (the winding number's inside), 'shell' (a closed shell `thickness` thick around the
    # surface, from the unsigned distance) or 'auto' (geometry/openness.py measures which).
    surface: str = "auto"
    # A shell's thickness in object units; None: SHELL_THICKNESS of the mesh's diagonal.
    thickness: float | None = None

    def validate(self) -> "TrainConfig":
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.batch < 1:
            raise ValueError(f"batch must be at least 1, got {self.batch}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.pool_size < self.batch:
            raise ValueError(f"pool_size ({self.pool_size}) must be at least batch ({self.batch})")
        if self.pool_uniform_fraction is not None and not 0.0 <= self.pool_uniform_fraction <= 1.0:
            raise ValueError("pool_uniform_fraction must lie in [0, 1]")
        if self.eikonal_weight < 0:
            raise ValueError(f"eikonal_weight must be at least 0, got {self.eikonal_weight}")
        if not self.clamp > 0:
            raise ValueError(f"clamp must be positive, got {self.clamp}")
        if not 0.0 < self.color_batch_fraction <= 4.0:
            raise ValueError(f"color_batch_fraction must lie in (0, 4], got {self.color_batch_fraction}")
        _check_choice("device", self.device, DEVICES)
        _check_choice("sdf_loss", self.sdf_loss, SDF_LOSSES)
        _check_choice("surface", self.surface, SURFACE_MODES)
        if self.thickness is not None and not (math.isfinite(self.thickness) and self.thickness > 0):
            raise ValueError(f"thickness must be a positive distance, got {self.thickness}")
        _check_choice("precision", self.precision, PRECISIONS)
        return self


# Presets by name. Each fixes the settings that define it; everything else keeps its default
# and stays adjustable. 'auto' picks 'fast' on CUDA and 'compact' on the CPU, where a hash grid
# in plain PyTorch is slow (FINDINGS.md: 0.5 s per 16k-point step on 2 cores).
PRESETS = {
    "fast": {
        "field": dict(encoding="hashgrid", hash_levels=16, hash_features=2, hash_log2_size=19,
                      hash_base_resolution=16, hash_finest_resolution=2048, width=64, depth=2,
                      activation="relu"),
        "train": dict(steps=1500, batch=1 << 18, lr=1e-2, pool_size=1 << 21, sdf_loss="l1",
                      color_batch_fraction=1 / 16),
    },
    "compact": {
        "field": dict(encoding="fourier", fourier_features=96, fourier_sigma=1.5, width=128, depth=3,
                      activation="softplus"),
        "train": dict(steps=1500, batch=8192, lr=2e-3, pool_size=1 << 18),
    },
    "smooth": {
        "field": dict(encoding="positional", pe_frequencies=5, width=128, depth=4, activation="softplus"),
        "train": dict(steps=2000, batch=8192, lr=2e-3, pool_size=1 << 18, eikonal_weight=0.05),
    },
}
PRESET_NAMES = ("auto", *PRESETS)


def resolve_preset(name: str, device: str) -> str:
    """The concrete preset for `name` on a resolved device ('cpu' or 'cuda')."""
    _check_choice("preset", name, PRESET_NAMES)
    if name == "auto":
        return "fast" if device == "cuda" else "compact"
    return name


def preset_configs(name: str, device: str = "cpu") -> tuple[FieldConfig, TrainConfig]:
    """Field and train configs of a preset (before any individual overrides)."""
    preset = PRESETS[resolve_preset(name, device)]
    return FieldConfig(**preset["field"]), TrainConfig(**preset["train"])


def build_configs(preset: str | None, device: str, field: dict, train: dict) -> tuple[FieldConfig, TrainConfig]:
    """Configs from a preset (None: the dataclass defaults) on a resolved device, with the given
    fields replaced (None values keep the preset's). Unknown keys are refused so typos are not
    silently ignored. A batch larger than the pool grows the pool, unless the pool was given."""
    field_config, train_config = preset_configs(preset, device) if preset else (FieldConfig(), TrainConfig())
    train = dict(train)
    if train.get("pool_size") is None:
        batch = train.get("batch") or train_config.batch
        train["pool_size"] = max(batch, train_config.pool_size)
    field_config, train_config = with_overrides(field_config, field), with_overrides(train_config, train)
    check_compatible(field_config, train_config)
    return field_config, train_config


def check_compatible(field_config: FieldConfig, train_config: TrainConfig) -> None:
    """Settings that are valid alone but not together."""
    if field_config.kind == "occupancy" and train_config.eikonal_weight > 0:
        raise ValueError(
            "the eikonal term makes a field a distance function, which an occupancy field is not: "
            "set the eikonal weight to 0, or fit a signed-distance field"
        )


def slow_configuration_warning(field_config: FieldConfig, train_config: TrainConfig, device: str) -> str:
    """A warning for settings that work but are far slower than they need be on the resolved
    device, or ''."""
    # FINDINGS.md: 0.53 s per 16k-point step of a 16-level grid on 2 cores, ~33 us per point.
    seconds_per_step = train_config.batch * 33e-6 * field_config.hash_levels / 16
    if field_config.encoding == "hashgrid" and device == "cpu" and seconds_per_step >= 1.0:
        return (f"a hash grid on the CPU runs in plain PyTorch: about {seconds_per_step:.0f} s per step at a "
                f"batch of {train_config.batch}; the Compact preset suits the CPU")
    return ""


# ----------------------------------------------------------------------------- colour
# A colour field is its own small network beside the shape's (fields/color.py): a field's
# colour then never costs its shape capacity, and a fit without colour is unchanged. Its
# architecture follows the shape's encoding: a hash grid of its own (a quarter of the shape's
# table: 2^17 entries a level for the Fast preset) where the shape has one, and Fourier features
# at a higher bandwidth otherwise (textures have finer detail than shapes). Measured on Spot with
# its texture (docs/BENCHMARKS.md, bench_color.py): 2^17 with 1/16 of the batch beat 2^18 and
# 2^19 with 1/8 to 1/2 of it, in time and in PSNR alike.
COLOR_POOL_FRACTION = 0.5  # colour pool, against the shape's pool
# A shape space's appearance code per shape, read by its colour decoder after the shape's code.
COLOR_CODE_DIM = 16


def color_config(shape: FieldConfig) -> FieldConfig:
    """The colour network's architecture for a field (or a space's decoder) of config `shape`;
    a shape space's colour decoder takes the shape's code and an appearance code, no latent grid."""
    common = dict(kind="sdf", skip_layer=0, latent_dim=shape.latent_dim + (COLOR_CODE_DIM if shape.latent_dim else 0),
                  latent_grid=0, init_seed=shape.init_seed + 1)
    if shape.encoding == "hashgrid":
        return replace(shape, hash_log2_size=max(8, min(shape.hash_log2_size - 2, 17)), width=64, depth=2,
                       activation="relu", **common).validate()
    return FieldConfig(encoding="fourier", fourier_features=128, fourier_sigma=4.0, width=128, depth=2,
                       activation="relu", **common).validate()


def side_config(shape: FieldConfig) -> FieldConfig:
    """The side network's architecture for a shell field of config `shape` (fields/sides.py): a
    distance signed by the side of the sheet, whose zero must be as sharp as the shape's finest
    detail, so a hash grid keeps the shape's levels (a smaller table) and a Fourier network
    higher frequencies than a Compact shape's."""
    common = dict(kind="sdf", skip_layer=0, latent_dim=0, latent_grid=0, init_seed=shape.init_seed + 2)
    if shape.encoding == "hashgrid":
        return replace(shape, hash_log2_size=max(8, min(shape.hash_log2_size - 2, 17)), width=64, depth=2,
                       activation="relu", **common).validate()
    return replace(shape, **common).validate()


def conditioning_width(config: FieldConfig) -> int:
    """What a decoder takes beside the encoded point: the code, and the latent grid's features."""
    return config.latent_dim + (config.latent_grid_features if config.latent_grid else 0)


def check_level(kind: str, level: float) -> None:
    """An occupancy field is extracted at probability 0.5 only: it has no distance to offset. The
    fit refuses such a level before training, extraction before evaluating anything."""
    if kind == "occupancy" and level != 0.0:
        raise ValueError(f"an occupancy field has no distance scale, so it cannot be extracted at a level "
                         f"offset ({level:g}): set the level to 0, or fit a signed-distance field")


def check_settings(cls, names) -> None:
    """Refuse names that are not settings of the config class `cls`, so typos are not silently ignored."""
    unknown = sorted(set(names) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"unknown {cls.__name__} settings: {', '.join(unknown)}")


def with_overrides(config, overrides: dict):
    """A copy of a config with the given fields replaced (None values are ignored), validated."""
    check_settings(type(config), overrides)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items() if v is not None}
    return replace(config, **values).validate()


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def config_from_dict(cls, data: dict):
    """Build a config from a dict, refusing unknown keys so typos are not silently ignored."""
    check_settings(cls, data)
    config = cls(**data)
    if isinstance(getattr(config, "near_scales", None), list):
        config.near_scales = tuple(config.near_scales)
    return config.validate()


def config_to_dict(config) -> dict:
    data = asdict(config)
    for key, value in data.items():
        if isinstance(value, tuple):
            data[key] = list(value)
    return data


# ----------------------------------------------------------------------------- shape spaces
# Kept here, torch-free, because the add-on needs them too (Blender's Python may have no torch).

# Length of a shape's latent code when a space's config leaves it 0 (DeepSDF's auto-decoder).
DEFAULT_LATENT_DIM = 64
# Weight of mixed-code supervision, the blends' loss against the shapes' own (fitting/space_fitter.py;
# the panel's Smooth Blends on); 0 fits a plain auto-decoder.
MIX_WEIGHT = 0.25
# Optimisation steps of latent inference (reconstruct) unless a task says otherwise.
INFERENCE_STEPS = 500


def space_configs(device: str = "cuda") -> tuple[FieldConfig, TrainConfig]:
    """The default shape-space configuration for a device: a DeepSDF-like decoder (softplus, skip
    into layer 2) on Fourier features of the point. On a GPU 4 x 256 with codes of 64, latent
    grids of 48^3 x 8 and 14,000 steps (ten shapes on an H100 in under a minute; without grids
    the boxiest shapes stayed 2.2-2.3x a single fit's Chamfer); on the CPU 3 x 128 with codes of
    32, no grids and half the batch, a quarter of the work per step, so a space of a few shapes
    fits in a minute or two on two cores."""
    if str(device).startswith("cuda"):
        return (
            FieldConfig(encoding="fourier", fourier_features=96, fourier_sigma=1.0, width=256, depth=4, skip_layer=2,
                        latent_dim=DEFAULT_LATENT_DIM, latent_grid=48),
            TrainConfig(steps=14000, batch=16384, lr=1e-3, pool_size=1 << 18, device="cuda"),
        )
    return (
        FieldConfig(encoding="fourier", fourier_features=96, fourier_sigma=1.0, width=128, depth=3, skip_layer=2,
                    latent_dim=32),
        TrainConfig(steps=1500, batch=8192, lr=1e-3, pool_size=1 << 17, device="cpu"),
    )


def space_task_configs(preset: str | None, device: str, field: dict, train: dict, latent_dim: int | None = None,
                       latent_grid: int | None = None) -> tuple[FieldConfig, TrainConfig]:
    """The configs of a shape-space fit on a resolved device: the space defaults (preset None or
    'auto') or a named preset, with the given settings replaced (None values keep them); then the
    code length and latent grid, unvalidated, since the fitter first gives codes of length 0 its
    default length (so --latent-grid works with any preset)."""
    if preset in (None, "auto"):
        field_config, train_config = space_configs(device)
        field_config, train_config = with_overrides(field_config, field), with_overrides(train_config, train)
        check_compatible(field_config, train_config)
    else:
        field_config, train_config = build_configs(preset, device, field, train)
    latent = {name: value for name, value in (("latent_dim", latent_dim), ("latent_grid", latent_grid))
              if value is not None}
    return replace(field_config, **latent), train_config
