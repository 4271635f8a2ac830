"""The hash encoding of `hashgrid.encode_reference` as one Numba kernel, for inference on the CPU.

The reference gathers each level's eight corners as (q, 8) tensors; building those temporaries,
not the arithmetic, dominates a CPU evaluation of a field. Here a point's corners, weights and
sums stay in registers, in parallel over the points, one level after the other.

No gradients: training and field gradients keep the reference, which autograd differentiates.
Results equal the reference's to float32 rounding of the sums: the cell and its fraction are
computed with the same float32 operations (no fast-math), because at 2048 cells a different
rounding of the position would move the fraction by ~1e-4.

Numba is imported when the kernel is first needed, so importing this module costs nothing
where Numba is absent; compiled code is cached on disk (cache=True) for later processes.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch

from .hashgrid import HASH_PRIMES


@functools.lru_cache(maxsize=None)
def _kernel():
    from numba import njit, prange

    prime_y, prime_z = HASH_PRIMES[1], HASH_PRIMES[2]  # HASH_PRIMES[0] is 1

    # The helpers are defined inside the kernel, where Numba inlines them: jitted helpers outside
    # it would be closure variables of the kernel, whose pickles differ between processes and
    # so would defeat the on-disk cache.
    @njit(cache=True, parallel=True, error_model="numpy")
    def encode(points, table, layout, bound, span, out):
        def cell_and_fraction(coordinate, scale, last_cell):
            """Cell index and the fraction within it along one axis, with the reference's float32
            operations. A NaN coordinate reads cell 0 and gives a NaN fraction: NaN features
            rather than a read outside the table."""
            unit = (coordinate + bound) / span
            if unit < np.float32(0.0):
                unit = np.float32(0.0)
            elif unit > np.float32(1.0):
                unit = np.float32(1.0)
            position = unit * scale
            cell = np.floor(position)
            if cell > last_cell:  # the far face belongs to the last cell
                cell = last_cell
            return (np.int64(cell) if cell >= np.float32(0.0) else np.int64(0)), position - cell

        def table_row(x, y, z, offset, dense, stride, mask):
            if dense:
                return offset + x + y * stride + z * (stride * stride)
            # int64 products masked to the (power of two) table: the low bits of uint32 hashing.
            return offset + ((x ^ (y * prime_y) ^ (z * prime_z)) & mask)

        features = table.shape[1]
        one = np.float32(1.0)
        for level in range(layout.shape[0]):
            resolution, entries, offset, dense = layout[level, 0], layout[level, 1], layout[level, 2], layout[level, 3]
            scale, last_cell = np.float32(resolution), np.float32(resolution - 1)
            stride, mask, column = resolution + 1, entries - 1, level * features
            for q in prange(points.shape[0]):
                x, fx = cell_and_fraction(points[q, 0], scale, last_cell)
                y, fy = cell_and_fraction(points[q, 1], scale, last_cell)
                z, fz = cell_and_fraction(points[q, 2], scale, last_cell)
                gx, gy, gz = one - fx, one - fy, one - fz
                # The eight corners in the reference's order (corner k offset by the bits of k:
                # x first), as tuples so that each feature's sum stays in a register (summing
                # into `out` directly ran at half the speed).
                rows = (
                    table_row(x, y, z, offset, dense, stride, mask),
                    table_row(x + 1, y, z, offset, dense, stride, mask),
                    table_row(x, y + 1, z, offset, dense, stride, mask),
                    table_row(x + 1, y + 1, z, offset, dense, stride, mask),
                    table_row(x, y, z + 1, offset, dense, stride, mask),
                    table_row(x + 1, y, z + 1, offset, dense, stride, mask),
                    table_row(x, y + 1, z + 1, offset, dense, stride, mask),
                    table_row(x + 1, y + 1, z + 1, offset, dense, stride, mask),
                )
                weights = (gx * gy * gz, fx * gy * gz, gx * fy * gz, fx * fy * gz,
                           gx * gy * fz, fx * gy * fz, gx * fy * fz, fx * fy * fz)
                for f in range(features):
                    total = np.float32(0.0)
                    for k in range(8):
                        total += weights[k] * table[rows[k], f]
                    out[q, column + f] = total

    # Compile (or load from the disk cache) now, on one point of a one-level grid. Numba's first
    # dispatch imports SciPy, whose import evaluates np.finfo; after the field's
    # flush_denormals() NumPy warns that the smallest subnormal is zero, noise for the user.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The value of the smallest subnormal")
        encode(np.zeros((1, 3), np.float32), np.zeros((8, 1), np.float32), np.array([[1, 8, 0, 1]], np.int64),
               np.float32(1.0), np.float32(2.0), np.empty((1, 1), np.float32))
    return encode


def hashgrid_encode_cpu(grid, points: torch.Tensor) -> torch.Tensor:
    """Hash encoding of CPU field-space points (q, 3) -> (q, levels * features) float32, without
    gradients; `grid` is a `HashGridEncoding` whose table is float32."""
    points = points.detach().float().contiguous().numpy()
    table = grid.table.detach().contiguous().numpy()
    layout = grid.level_tensor("cpu").numpy()
    out = np.empty((len(points), grid.out_dim), dtype=np.float32)
    if len(points):
        # float32 bound and span, as PyTorch casts Python scalars to the tensor's type.
        _kernel()(points, table, layout, np.float32(grid.bound), np.float32(2.0 * grid.bound), out)
    return torch.from_numpy(out)
