"""Input encodings that lift field-space points (q, 3) to features a small MLP can fit.

- `PositionalEncoding`: NeRF's axis-aligned sines and cosines at octave frequencies.
- `FourierFeatures`: Gaussian random Fourier features (Tancik et al. 2020), gamma(x) =
  [sin(2 pi B x), cos(2 pi B x)] with B ~ N(0, sigma^2); sigma sets the finest detail.
- `Identity`: raw coordinates, for SIREN, whose sine layers are their own encoding.
- `HashGridEncoding`: Instant-NGP's multiresolution hash grid (hashgrid.py is its reference; the
  Triton and Numba kernels are chosen here, once per call).
Positional and Fourier keep the raw coordinates in their output, which helps the network stay
smooth far away.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..devices import numba_available, triton_available
from .hashgrid import encode_reference, level_layout, level_tensor

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


class HashGridEncoding(nn.Module):
    """Instant-NGP's multiresolution hash grid over [-bound, bound]^3 (see hashgrid.py): one table
    of all levels' features. Evaluated by the Triton kernel on CUDA when no gradient with respect
    to the points is wanted, by the Numba kernel for inference on the CPU, else by the reference."""

    def __init__(self, levels: int = 16, features: int = 2, log2_size: int = 19, base_resolution: int = 16,
                 finest_resolution: int = 2048, bound: float = 1.25, seed: int = 0):
        super().__init__()
        self.levels, self.features, self.bound = levels, features, float(bound)
        self.layout = level_layout(levels, log2_size, base_resolution, finest_resolution)
        total = sum(entries for _, entries, _, _ in self.layout)
        generator = torch.Generator().manual_seed(seed)
        # Instant-NGP's initialisation: small uniform values, so the MLP first sees ~zero features.
        self.table = nn.Parameter((torch.rand(total, features, generator=generator) * 2.0 - 1.0) * 1e-4)
        self.out_dim = levels * features
        # Fused kernels where available: Triton on CUDA; Numba on the CPU for inference only.
        self.use_kernel = True

    def level_tensor(self, device) -> torch.Tensor:
        return level_tensor(self.layout, device)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        if self.use_kernel and points.is_cuda and not points.requires_grad and triton_available():
            from .hashgrid_triton import hashgrid_encode

            return hashgrid_encode(self, points)
        if self.use_kernel and self._cpu_inference(points) and numba_available():
            from .hashgrid_cpu import hashgrid_encode_cpu

            return hashgrid_encode_cpu(self, points)
        return encode_reference(self, points)

    def _cpu_inference(self, points: torch.Tensor) -> bool:
        """Whether the Numba kernel may serve this call: on the CPU, no gradient wanted (it has no
        backward, so training and field gradients keep the reference) and a float32 table (its
        output is float32; a `.double()` network keeps the reference's float64)."""
        needs_grad = torch.is_grad_enabled() and (points.requires_grad or self.table.requires_grad)
        return points.device.type == "cpu" and not needs_grad and self.table.dtype == torch.float32


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
