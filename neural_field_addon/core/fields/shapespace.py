"""A shape space as a value: one decoder, a latent code per shape (DeepSDF's auto-decoder, Park et
al. 2019), optionally a latent grid per shape, and the fields between them.

Each shape has its own transform (its bounding box centred, its longest side spanning [-1, 1]):
the decoder learns shapes, not positions and sizes, and shape i extracts where its source was. A
blend of shapes gets the blend of their codes (or, for two, their slerp), of their grids, and of
their transforms (centres weighted, scales weighted geometrically). Fitting a space is
fitting/space_fitter.py; finding a new shape's code is fitting/inference.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field as dataclass_field, replace

import numpy as np
import torch

from ..config import FieldConfig
from ..geometry import FieldTransform
from .field import NeuralField
from .networks import ConditionedNetwork, FieldNetwork


def interpolate_codes(a: torch.Tensor, b: torch.Tensor, t: float, spherical: bool = False) -> torch.Tensor:
    """The code a fraction t from a to b: along the segment, or (spherical) along the great
    circle with the norm interpolated linearly, which keeps in-between codes at the norms the
    prior holds codes at instead of shrinking them through the origin."""
    if not spherical:
        return (1.0 - t) * a + t * b
    norm_a, norm_b = a.norm(), b.norm()
    if float(norm_a) == 0.0 or float(norm_b) == 0.0:
        return (1.0 - t) * a + t * b
    unit_a, unit_b = a / norm_a, b / norm_b
    angle = torch.arccos(torch.clamp((unit_a * unit_b).sum(), -1.0, 1.0))
    if float(angle) < 1e-6:
        direction = unit_a
    else:
        direction = (torch.sin((1.0 - t) * angle) * unit_a + torch.sin(t * angle) * unit_b) / torch.sin(angle)
    return direction * ((1.0 - t) * norm_a + t * norm_b)


@dataclass
class ShapeSpace:
    config: FieldConfig  # the decoder's (latent_dim > 0)
    network: FieldNetwork
    codes: torch.Tensor  # (shapes, latent_dim)
    names: list
    transforms: list  # FieldTransform per shape
    # One box in field space for every shape (the union of their padded boxes).
    box_low: np.ndarray
    box_high: np.ndarray
    report: dict = dataclass_field(default_factory=dict)
    # With FieldConfig.latent_grid: each shape's grid (shapes, R, R, R, C) over [grid_low, grid_high].
    grids: torch.Tensor | None = None
    grid_low: np.ndarray | None = None
    grid_high: np.ndarray | None = None
    # With colour: a colour decoder (fields/color.py) and its config, and an appearance code per
    # shape (shapes, COLOR_CODE_DIM); the decoder reads a shape's code followed by its appearance code.
    color_network: FieldNetwork | None = None
    color_config: FieldConfig | None = None
    color_codes: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def device(self) -> torch.device:
        return self.codes.device

    def field_for_code(self, code: torch.Tensor, transform: FieldTransform,
                       grid: torch.Tensor | None = None, color_code: torch.Tensor | None = None) -> NeuralField:
        """The field of a code (and, with latent grids, a grid: the space's mean if none is given;
        with colour, an appearance code: the space's mean if none is given)."""
        if grid is None:
            grid = self.mean_grid()
        color = color_config = None
        if self.color_network is not None:
            if color_code is None:
                color_code = self.color_codes.mean(dim=0)
            conditioning = torch.cat([code.reshape(-1).to(self.device), color_code.reshape(-1).to(self.device)])
            color = ConditionedNetwork(self.color_network, conditioning)
            color_config = replace(self.color_config, latent_dim=0)
        return NeuralField(
            config=replace(self.config, latent_dim=0, latent_grid=0),
            network=ConditionedNetwork(self.network, code.to(self.device), grid, self.grid_low, self.grid_high),
            transform=transform,
            box_low=self.box_low,
            box_high=self.box_high,
            report=dict(self.report),
            color_network=color,
            color_config=color_config,
        )

    def shape(self, index: int) -> NeuralField:
        """The field of shape `index`, in its source's coordinates."""
        self._check_index(index)
        return self.field_for_code(self.codes[index], self.transforms[index], self._grid(index),
                                   None if self.color_codes is None else self.color_codes[index])

    def blend(self, weights: dict, spherical: bool = False) -> NeuralField:
        """The field of a weighted blend {shape index: weight} (weights summing to 1): the
        weighted sum of the codes, or with `spherical` (two shapes) their slerp."""
        if not weights:
            raise ValueError("a blend needs at least one shape")
        for index, weight in weights.items():
            self._check_index(index)
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"blend weights must be finite and at least 0; shape {index} has {weight}")
        total = sum(weights.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"blend weights must sum to 1, not {total:g}")
        indices = list(weights)
        if spherical:
            if len(indices) != 2:
                raise ValueError(f"spherical interpolation is between two shapes; {len(indices)} given")
            a, b = indices
            code = interpolate_codes(self.codes[a], self.codes[b], weights[b], spherical=True)
        else:
            code = sum(weights[i] * self.codes[i] for i in indices)
        grid = color_code = None
        if self.grids is not None:  # grids mix linearly, with the blend's weights
            grid = sum(weights[i] * self.grids[i] for i in indices)
        if self.color_codes is not None:  # and so do appearance codes: colours blend with the shape
            color_code = sum(weights[i] * self.color_codes[i] for i in indices)
        return self.field_for_code(code, self._blend_transform(weights), grid, color_code)

    def with_shape(self, code: torch.Tensor, transform: FieldTransform, name: str,
                   grid: torch.Tensor | None = None, color_code: torch.Tensor | None = None) -> "ShapeSpace":
        """A new space with one more shape (a reconstruction), sharing this one's decoder; with
        latent grids, its grid (the space's mean grid if none is given); with colour, its
        appearance code (the mean one if none is given)."""
        code = code.detach().reshape(1, -1).to(self.codes)
        if code.shape[1] != self.codes.shape[1]:
            raise ValueError(f"the space's codes have {self.codes.shape[1]} dimensions; got {code.shape[1]}")
        grids = self.grids
        if grids is not None:
            grid = self.mean_grid() if grid is None else grid.detach().to(grids)
            if grid.numel() != grids[0].numel():
                raise ValueError(f"the space's grids are {tuple(grids.shape[1:])}; got {tuple(grid.shape)}")
            grids = torch.cat([grids, grid.reshape(1, *grids.shape[1:])])
        color_codes = self.color_codes
        if color_codes is not None:
            color_code = color_codes.mean(dim=0) if color_code is None else color_code.detach().to(color_codes)
            color_codes = torch.cat([color_codes, color_code.reshape(1, -1)])
        return replace(self, codes=torch.cat([self.codes, code]), names=[*self.names, name],
                       transforms=[*self.transforms, transform], report=dict(self.report), grids=grids,
                       color_codes=color_codes)

    def _grid(self, index: int) -> torch.Tensor | None:
        return None if self.grids is None else self.grids[index]

    def mean_grid(self) -> torch.Tensor | None:
        """The grid of an average shape (None without latent grids): where inference starts."""
        return None if self.grids is None else self.grids.mean(dim=0)

    def mean_transform(self) -> FieldTransform:
        """The frame of an average shape: centres averaged, scales geometrically."""
        return self._blend_transform({i: 1.0 / len(self) for i in range(len(self))})

    def _blend_transform(self, weights: dict) -> FieldTransform:
        center = sum(w * self.transforms[i].center for i, w in weights.items())
        scale = math.exp(sum(w * math.log(self.transforms[i].scale) for i, w in weights.items()))
        return FieldTransform(center=np.asarray(center, dtype=np.float64), scale=scale)

    def _check_index(self, index: int) -> None:
        if not isinstance(index, (int, np.integer)) or not 0 <= index < len(self):
            raise ValueError(f"shape index {index} is out of range: the space has shapes 0..{len(self) - 1}")


def select_field(source: NeuralField | ShapeSpace, shape: int | None = None, blend: dict | None = None,
                 slerp: bool = False, name: str = "the field") -> NeuralField:
    """The field to work on from what a field file holds (io.fieldfile.load): a single field as it
    is, or a space's shape `shape`, or its blend {index: weight} (`slerp`: the spherical path
    between two codes). A single field takes no choice; a space needs exactly one of shape and
    blend. `name` (the file) is what the messages call it."""
    if isinstance(source, NeuralField):
        if shape is not None or blend is not None or slerp:
            raise ValueError(f"{name} is a single field: --shape, --blend and --slerp are for shape spaces")
        return source
    if (shape is None) == (blend is None):
        raise ValueError(f"{name} is a shape space: give --shape I or --blend I=w,J=w (one of them)")
    if shape is not None:
        if slerp:
            raise ValueError("--slerp interpolates a --blend of two shapes")
        return source.shape(shape)
    return source.blend(blend, spherical=slerp)
