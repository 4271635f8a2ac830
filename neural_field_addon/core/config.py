"""Typed settings: what a field is (`FieldConfig`, saved with it) and how it is fitted
(`TrainConfig`). Both round-trip through plain dicts for the CLI, the worker and the file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

FIELD_KINDS = ("sdf",)
ENCODINGS = ("fourier", "positional")
ACTIVATIONS = ("softplus", "relu")


@dataclass
class FieldConfig:
    """Architecture of a field network. Coordinates are in field space ([-1, 1] on the longest side)."""

    kind: str = "sdf"
    encoding: str = "fourier"
    fourier_features: int = 96
    fourier_sigma: float = 1.5
    pe_frequencies: int = 6
    width: int = 128
    depth: int = 3
    activation: str = "softplus"
    init_seed: int = 0

    def validate(self) -> "FieldConfig":
        _check_choice("kind", self.kind, FIELD_KINDS)
        _check_choice("encoding", self.encoding, ENCODINGS)
        _check_choice("activation", self.activation, ACTIVATIONS)
        for name in ("fourier_features", "width", "depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.pe_frequencies < 0:
            raise ValueError(f"pe_frequencies must be at least 0, got {self.pe_frequencies}")
        if not self.fourier_sigma > 0:
            raise ValueError(f"fourier_sigma must be positive, got {self.fourier_sigma}")
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
    pool_uniform_fraction: float = 0.2
    near_scales: tuple = (0.003, 0.015, 0.06)
    box_padding: float = 0.1
    clamp: float = 0.1
    report_every: int = 25

    def validate(self) -> "TrainConfig":
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.batch < 1:
            raise ValueError(f"batch must be at least 1, got {self.batch}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.pool_size < self.batch:
            raise ValueError(f"pool_size ({self.pool_size}) must be at least batch ({self.batch})")
        if not 0.0 <= self.pool_uniform_fraction <= 1.0:
            raise ValueError("pool_uniform_fraction must lie in [0, 1]")
        _check_choice("device", self.device, ("auto", "cpu", "cuda"))
        return self


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def config_from_dict(cls, data: dict):
    """Build a config from a dict, refusing unknown keys so typos are not silently ignored."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} settings: {', '.join(unknown)}")
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
