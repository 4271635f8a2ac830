"""Field networks: an input encoding followed by an MLP with a scalar head.

For kind 'sdf' the head outputs signed distance in field units (negative inside).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import FieldConfig
from .encodings import build_encoding


def _activation(name: str) -> nn.Module:
    # Softplus with a large beta is ReLU-like but smooth, so SDF gradients (normals) are too.
    return nn.Softplus(beta=100.0) if name == "softplus" else nn.ReLU()


class FieldNetwork(nn.Module):
    def __init__(self, config: FieldConfig):
        super().__init__()
        self.config = config
        # Seeded initialisation without disturbing the caller's global random state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.init_seed)
            self.encoding = build_encoding(config)
            layers = []
            in_dim = self.encoding.out_dim
            for _ in range(config.depth):
                layers += [nn.Linear(in_dim, config.width), _activation(config.activation)]
                in_dim = config.width
            self.mlp = nn.Sequential(*layers)
            self.head = nn.Linear(in_dim, 1)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """Field values (q,) at field-space points (q, 3)."""
        return self.head(self.mlp(self.encoding(points))).squeeze(-1)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
