"""A fitted field: network, the object-to-field transform, the box it was fitted in, its report, and
optionally its colour network (fields/color.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import FieldConfig
from ..devices import flush_denormals
from ..geometry import FieldTransform
from .color import linear_color
from .networks import FieldNetwork


@dataclass
class NeuralField:
    config: FieldConfig
    network: FieldNetwork
    transform: FieldTransform
    # Axis-aligned box in field space that holds the surface (the source's bounds, padded).
    box_low: np.ndarray
    box_high: np.ndarray
    report: dict = field(default_factory=dict)
    # The colour network and its config (None: a shape without colour).
    color_network: torch.nn.Module | None = None
    color_config: FieldConfig | None = None
    # A shell's side network and its config (fields/sides.py; None: no sheet to extract).
    side_network: torch.nn.Module | None = None
    side_config: FieldConfig | None = None

    @property
    def has_color(self) -> bool:
        return self.color_network is not None

    @property
    def has_sides(self) -> bool:
        return self.side_network is not None

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def evaluate_field_space(self, points: torch.Tensor, chunk: int = 1 << 18) -> torch.Tensor:
        """Field values at field-space points (q, 3), in chunks to bound memory: negative inside,
        zero on the surface (signed distance in field units, or the negated occupancy logit)."""
        return _chunked(self.network, self.network.field_value, points, chunk, ())

    def side_field_space(self, points: torch.Tensor, chunk: int = 1 << 18) -> torch.Tensor:
        """The side network's signed distances (q,) at field-space points: positive in front of the sheet."""
        if self.side_network is None:
            raise ValueError("this field has no sheet sides: fit it as a shell (surface 'shell' or 'auto')")
        return _chunked(self.side_network, self.side_network, points, chunk, ())

    def signed_distance(self, points_object: np.ndarray) -> np.ndarray:
        """Predicted signed distance in object units at object-space points (q, 3)."""
        if self.config.kind != "sdf":
            raise ValueError(f"a {self.config.kind} field predicts no distances")
        points = torch.as_tensor(
            self.transform.to_field(points_object), dtype=torch.float32, device=self.device
        )
        return self.evaluate_field_space(points).double().cpu().numpy() / self.transform.scale

    def color_field_space(self, points: torch.Tensor, chunk: int = 1 << 18) -> torch.Tensor:
        """Linear RGB (q, 3) at field-space points (q, 3)."""
        if self.color_network is None:
            raise ValueError("this field has no colour: fit it with colour (--color)")
        return _chunked(self.color_network, lambda x: linear_color(self.color_network(x)), points, chunk, (3,))

    def colors(self, points_object: np.ndarray) -> np.ndarray:
        """Linear RGB (q, 3) float32 at object-space points (q, 3): an extracted mesh's vertex
        colours, a baked texture's texels."""
        points = torch.as_tensor(self.transform.to_field(points_object), dtype=torch.float32, device=self.device)
        return self.color_field_space(points).cpu().numpy()


@torch.no_grad()
def _chunked(network: torch.nn.Module, evaluate, points: torch.Tensor, chunk: int, channels: tuple) -> torch.Tensor:
    """`evaluate` (a function of `network`) at points (q, 3) in chunks, as float32 (q, *channels)."""
    flush_denormals()
    network.eval()
    out = torch.empty((len(points), *channels), dtype=torch.float32, device=points.device)
    for start in range(0, len(points), chunk):
        out[start : start + chunk] = evaluate(points[start : start + chunk]).float()
    return out
