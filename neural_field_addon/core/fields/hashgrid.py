"""Multiresolution hash encoding (Müller et al. 2022, Instant-NGP), in plain PyTorch.

L levels of grids over the cube [-bound, bound]^3, resolutions growing geometrically from
`base_resolution` to `finest_resolution`. Each level holds F features per grid vertex: a dense
array where (N+1)^3 vertices fit in the table size T, otherwise a table of T entries addressed
by the spatial hash (x * 1) xor (y * 2654435761) xor (z * 805459861) mod T. A point's features
are the trilinear interpolation of its cell's eight vertices, per level, concatenated: (q, L*F).

All levels live in one parameter `table` of shape (entries, F); `level_offset[l]` is where
level l begins, so dense levels cost only what they use (as in tiny-cuda-nn). This module is
the reference, in plain PyTorch; the kernels import it: `hashgrid_triton` computes the same
function in one fused kernel on CUDA, `hashgrid_cpu` in a Numba kernel for inference on the
CPU. `encodings.HashGridEncoding` (the module a network holds) chooses among them, as
`geometry.MeshQuery` chooses among the BVH walks.
"""

from __future__ import annotations

import math

import torch

HASH_PRIMES = (1, 2654435761, 805459861)
# Corner k of a cell is offset by its bits (k & 1, k >> 1 & 1, k >> 2 & 1).
_CORNERS = [(k & 1, (k >> 1) & 1, (k >> 2) & 1) for k in range(8)]


def level_layout(levels: int, log2_size: int, base_resolution: int, finest_resolution: int):
    """Per level: (resolution N, entries, first entry in the table, dense?)."""
    growth = math.exp((math.log(finest_resolution) - math.log(base_resolution)) / max(1, levels - 1))
    size = 1 << log2_size
    layout, offset = [], 0
    for level in range(levels):
        resolution = int(math.floor(base_resolution * growth**level + 1e-6))
        dense = (resolution + 1) ** 3 <= size
        entries = (resolution + 1) ** 3 if dense else size
        layout.append((resolution, entries, offset, dense))
        offset += entries
    return layout


def vertex_index(cx, cy, cz, resolution: int, entries: int, dense: bool):
    """Table index (within a level) of integer grid vertices (int64 tensors)."""
    if dense:
        stride = resolution + 1
        return cx + cy * stride + cz * (stride * stride)
    # The low bits of int64 products equal those of uint32 ones, so this matches the kernel.
    return ((cx * HASH_PRIMES[0]) ^ (cy * HASH_PRIMES[1]) ^ (cz * HASH_PRIMES[2])) & (entries - 1)


def level_tensor(layout, device) -> torch.Tensor:
    """(levels, 4) int64 of a level_layout: resolution, entries, offset, dense flag (for the kernels)."""
    return torch.tensor([[r, e, o, int(d)] for r, e, o, d in layout], dtype=torch.int64, device=device)


def unit_coordinates(points: torch.Tensor, bound: float) -> torch.Tensor:
    """Field-space points mapped to [0, 1]^3 over the encoded cube (outside is clamped)."""
    return ((points + bound) / (2.0 * bound)).clamp(0.0, 1.0)


def encode_reference(grid, points: torch.Tensor) -> torch.Tensor:
    """Plain-PyTorch hash encoding of field-space points (q, 3) -> (q, levels * features) by a
    grid (an encodings.HashGridEncoding: its table, layout and bound); the eight corners of a
    level are handled as one (q, 8) batch of indices and weights."""
    unit = unit_coordinates(points.float(), grid.bound)
    corners = torch.tensor(_CORNERS, device=points.device)  # (8, 3)
    outputs = []
    for resolution, entries, offset, dense in grid.layout:
        position = unit * resolution
        cell = position.floor().clamp(max=resolution - 1)
        frac = position - cell
        vertex = cell.long()[:, None, :] + corners  # (q, 8, 3)
        index = vertex_index(vertex[..., 0], vertex[..., 1], vertex[..., 2], resolution, entries, dense)
        # Trilinear weights: per axis frac where the corner's bit is set, else 1 - frac.
        weight = torch.where(corners.bool(), frac[:, None, :], 1.0 - frac[:, None, :]).prod(dim=-1)
        outputs.append((weight[..., None] * grid.table[offset + index]).sum(dim=1))
    return torch.cat(outputs, dim=-1)
