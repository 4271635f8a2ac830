"""Colour fields: linear RGB at field-space points, beside a shape's distance field.

A colour network is a FieldNetwork with three outputs (config.color_config: its own encoding and
a small trunk); its outputs are logits, and sigmoid maps them into [0, 1], the range of a Base
Color. It is trained on points on and near the source's surface, each taking the colour of its
closest source point (fitting/fitter.py), so colour is defined wherever the extracted surface
lies, not only on the source's triangles.
"""

from __future__ import annotations

import torch

from ..config import FieldConfig
from .networks import FieldNetwork

COLOR_CHANNELS = 3


def color_network(config: FieldConfig) -> FieldNetwork:
    return FieldNetwork(config, outputs=COLOR_CHANNELS)


def linear_color(logits: torch.Tensor) -> torch.Tensor:
    """Linear RGB in [0, 1] from a colour network's outputs."""
    return torch.sigmoid(logits.float())
