"""A field given by a formula instead of a network: the exact signed distance of an analytic shape
(geometry/procedural.py has spheres, tori, boxes). It evaluates like a fitted field, so extraction,
normals and metrics take it as they are; tests use it to check extraction against exact surfaces
without fitting a network first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..geometry import FieldTransform

# Padding of the box around the shape's bounds, in field units (as a fitted field's).
BOX_PADDING = 0.1


@dataclass
class AnalyticField:
    """`distance(points)`: signed distances (n,) in object units, negative inside, at object-space
    points (n, 3) float64. The field space is the bounds' unit box, as a fit would make it."""

    distance: Callable[[np.ndarray], np.ndarray]
    transform: FieldTransform
    box_low: np.ndarray
    box_high: np.ndarray
    kind: str = "sdf"
    device: torch.device = torch.device("cpu")

    @classmethod
    def around(cls, distance: Callable[[np.ndarray], np.ndarray], low, high, padding: float = BOX_PADDING,
               device: str = "cpu") -> "AnalyticField":
        """The field of `distance` over the object-space bounds [low, high] of its surface."""
        low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        half_extent = float(np.max(high - low)) / 2.0
        if not half_extent > 0.0:
            raise ValueError("the bounds of an analytic field must have a positive extent")
        transform = FieldTransform(center=(low + high) / 2.0, scale=1.0 / half_extent)
        return cls(distance, transform, transform.to_field(low) - padding, transform.to_field(high) + padding,
                   device=torch.device(device))

    @torch.no_grad()
    def evaluate_field_space(self, points: torch.Tensor, chunk: int = 1 << 18) -> torch.Tensor:
        """Distances in field units at field-space points (q, 3)."""
        object_points = self.transform.to_object(points.detach().double().cpu().numpy())
        values = np.asarray(self.distance(object_points), dtype=np.float64) * self.transform.scale
        return torch.as_tensor(values, dtype=torch.float32, device=points.device)
