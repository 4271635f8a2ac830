"""Input encodings that lift field-space points (q, 3) to features a small MLP can fit.

- `PositionalEncoding`: NeRF's axis-aligned sines and cosines at octave frequencies.
- `FourierFeatures`: Gaussian random Fourier features (Tancik et al. 2020), gamma(x) =
  [sin(2 pi B x), cos(2 pi B x)] with B ~ N(0, sigma^2); sigma sets the finest detail.
- `Identity`: raw coordinates, for SIREN, whose sine layers are their own encoding.
- `HashGridEncoding` (hashgrid.py): Instant-NGP's multiresolution hash grid.
Positional and Fourier keep the raw coordinates in their output, which helps the network stay
smooth far away.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .hashgrid import HashGridEncoding

# The hash grid covers [-HASH_BOUND, HASH_BOUND]^3 in field units: the unit box plus the
# training box's padding (0.1) with a margin.
HASH_BOUND = 1.25


class PositionalEncoding(nn.Module):
    def __init__(self, frequencies: int = 6, in_dim: int = 3):
        super().__init__()
        self.register_buffer(
            "frequencies", (2.0 ** torch.arange(frequencies, dtype=torch.float32)) * math.pi
        )
        self.out_dim = in_dim * (1 + 2 * frequencies)

    def forward(self, x):
        angles = (x[..., None, :] * self.frequencies[:, None]).flatten(-2)
        return torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=-1)


class FourierFeatures(nn.Module):
    def __init__(self, features: int = 64, sigma: float = 4.0, in_dim: int = 3, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        matrix = torch.randn(features, in_dim, generator=generator) * sigma * 2.0 * math.pi
        # A buffer, so the projection is saved with the field and reloads identically.
        self.register_buffer("projection", matrix)
        self.out_dim = in_dim + 2 * features

    def forward(self, x):
        angles = x @ self.projection.T
        return torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=-1)


class Identity(nn.Module):
    def __init__(self, in_dim: int = 3):
        super().__init__()
        self.out_dim = in_dim

    def forward(self, x):
        return x


def build_encoding(config) -> nn.Module:
    if config.encoding == "positional":
        return PositionalEncoding(config.pe_frequencies)
    if config.encoding == "fourier":
        return FourierFeatures(config.fourier_features, config.fourier_sigma, seed=config.init_seed)
    if config.encoding == "siren":
        return Identity()
    if config.encoding == "hashgrid":
        return HashGridEncoding(
            config.hash_levels, config.hash_features, config.hash_log2_size, config.hash_base_resolution,
            config.hash_finest_resolution, bound=HASH_BOUND, seed=config.init_seed,
        )
    raise ValueError(f"unknown encoding {config.encoding!r}")
