"""The hash encoding of hashgrid.py as fused Triton kernels for CUDA.

Both kernels launch one program per (block of points, level), level-major: the programs running
at a time then touch one level's slice of the table (a few MB, L2-resident) rather than all of it.
Forward: a lane per point finds its cell, hashes (or densely indexes) the eight corners, gathers
their F features and interpolates them. Backward: the same walk scatters grad_output * trilinear
weight into the table's gradient with atomic adds. Training batches arrive in Morton order, so
at coarse levels runs of consecutive points share a cell and thousands of lanes hit the same few
addresses: there a segmented scan sums each run's contributions and one lane per run adds them
(1.8x faster on an H100; per-level timings in docs/BENCHMARKS.md). No gradient flows to the
points (fits that need one, for an eikonal term, use the plain-PyTorch reference). Tested
against `hashgrid.encode_reference` on random inputs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .hashgrid import encode_reference


@triton.jit
def _corner_address(cx, cy, cz, dx: tl.constexpr, dy: tl.constexpr, dz: tl.constexpr, resolution, entries,
                    offset, dense):
    ix = (cx + dx).to(tl.int64)
    iy = (cy + dy).to(tl.int64)
    iz = (cz + dz).to(tl.int64)
    stride = (resolution + 1).to(tl.int64)
    dense_index = ix + iy * stride + iz * stride * stride
    # int64 products: their low bits equal the uint32 ones the hash is defined with.
    hashed = (ix ^ (iy * 2654435761) ^ (iz * 805459861)) & (entries - 1)
    return offset + tl.where(dense != 0, dense_index, hashed)


@triton.jit
def _weight(fx, fy, fz, dx: tl.constexpr, dy: tl.constexpr, dz: tl.constexpr):
    wx = fx if dx else 1.0 - fx
    wy = fy if dy else 1.0 - fy
    wz = fz if dz else 1.0 - fz
    return wx * wy * wz


@triton.jit
def _cell(points_ptr, offs, mask, bound, resolution):
    scale = resolution.to(tl.float32)
    x = tl.load(points_ptr + offs * 3 + 0, mask=mask, other=0.0)
    y = tl.load(points_ptr + offs * 3 + 1, mask=mask, other=0.0)
    z = tl.load(points_ptr + offs * 3 + 2, mask=mask, other=0.0)
    x = tl.minimum(tl.maximum((x + bound) / (2.0 * bound), 0.0), 1.0) * scale
    y = tl.minimum(tl.maximum((y + bound) / (2.0 * bound), 0.0), 1.0) * scale
    z = tl.minimum(tl.maximum((z + bound) / (2.0 * bound), 0.0), 1.0) * scale
    cx = tl.minimum(tl.floor(x), scale - 1.0)
    cy = tl.minimum(tl.floor(y), scale - 1.0)
    cz = tl.minimum(tl.floor(z), scale - 1.0)
    return cx.to(tl.int32), cy.to(tl.int32), cz.to(tl.int32), x - cx, y - cy, z - cz


@triton.jit
def _level(levels_ptr, level):
    """A level's resolution, table entries, first entry and dense flag (hashgrid.level_layout)."""
    return (tl.load(levels_ptr + level * 4 + 0), tl.load(levels_ptr + level * 4 + 1),
            tl.load(levels_ptr + level * 4 + 2), tl.load(levels_ptr + level * 4 + 3))


@triton.jit(do_not_specialize=["count"])
def encode_kernel(points_ptr, count, table_ptr, levels_ptr, out_ptr, bound,
                  LEVELS: tl.constexpr, F: tl.constexpr, BLOCK: tl.constexpr):
    level = tl.program_id(1)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < count
    feature = tl.arange(0, F)
    mask2 = mask[:, None] & (feature[None, :] < F)
    resolution, entries, offset, dense = _level(levels_ptr, level)
    cx, cy, cz, fx, fy, fz = _cell(points_ptr, offs, mask, bound, resolution)
    acc = tl.zeros((BLOCK, F), tl.float32)
    for corner in tl.static_range(8):
        address = _corner_address(cx, cy, cz, corner & 1, (corner >> 1) & 1, (corner >> 2) & 1,
                                  resolution, entries, offset, dense)
        values = tl.load(table_ptr + address[:, None] * F + feature[None, :], mask=mask2, other=0.0)
        acc += _weight(fx, fy, fz, corner & 1, (corner >> 1) & 1, (corner >> 2) & 1)[:, None] * values
    tl.store(out_ptr + offs[:, None] * (LEVELS * F) + level * F + feature[None, :], acc, mask=mask2)


@triton.jit
def _segmented_sum(head_a, sum_a, head_b, sum_b):
    """Combine of a segmented inclusive scan: a run restarts where a head flag is set."""
    return head_a | head_b, tl.where(head_b != 0, sum_b, sum_a + sum_b)


@triton.jit
def _key(cx, cy, cz, resolution):
    """One number per cell of a level (int64: resolution comes from the int64 level table)."""
    return cx + (cy + cz * resolution) * resolution


@triton.jit
def _cell_key(points_ptr, offs, mask, bound, resolution):
    cx, cy, cz, _, _, _ = _cell(points_ptr, offs, mask, bound, resolution)
    return _key(cx, cy, cz, resolution)


@triton.jit(do_not_specialize=["count", "segment_resolution"])
def encode_backward_kernel(points_ptr, count, grad_out_ptr, grad_table_ptr, levels_ptr, bound, segment_resolution,
                           LEVELS: tl.constexpr, F: tl.constexpr, BLOCK: tl.constexpr):
    level = tl.program_id(1)
    start = tl.program_id(0) * BLOCK
    offs = start + tl.arange(0, BLOCK)
    mask = offs < count
    feature = tl.arange(0, F)
    mask2 = mask[:, None] & (feature[None, :] < F)
    resolution, entries, offset, dense = _level(levels_ptr, level)
    cx, cy, cz, fx, fy, fz = _cell(points_ptr, offs, mask, bound, resolution)
    grad = tl.load(grad_out_ptr + offs[:, None] * (LEVELS * F) + level * F + feature[None, :],
                   mask=mask2, other=0.0)
    if resolution <= segment_resolution:
        # Runs of consecutive points in one cell: heads and tails from the neighbours' cells.
        key = _key(cx, cy, cz, resolution)
        previous = _cell_key(points_ptr, offs - 1, mask & (offs > 0), bound, resolution)
        following = _cell_key(points_ptr, offs + 1, (offs + 1) < count, bound, resolution)
        head = ((key != previous) | (offs == start)).to(tl.int32)
        tail = (key != following) | (offs == start + BLOCK - 1) | (offs == count - 1)
        head = tl.broadcast_to(head[:, None], (BLOCK, F))
        add_mask = mask2 & tail[:, None]
        for corner in tl.static_range(8):
            address = _corner_address(cx, cy, cz, corner & 1, (corner >> 1) & 1, (corner >> 2) & 1,
                                      resolution, entries, offset, dense)
            contribution = _weight(fx, fy, fz, corner & 1, (corner >> 1) & 1, (corner >> 2) & 1)[:, None] * grad
            _, run_sum = tl.associative_scan((head, contribution), 0, _segmented_sum)
            tl.atomic_add(grad_table_ptr + address[:, None] * F + feature[None, :], run_sum, mask=add_mask,
                          sem="relaxed")
    else:
        for corner in tl.static_range(8):
            address = _corner_address(cx, cy, cz, corner & 1, (corner >> 1) & 1, (corner >> 2) & 1,
                                      resolution, entries, offset, dense)
            contribution = _weight(fx, fy, fz, corner & 1, (corner >> 1) & 1, (corner >> 2) & 1)[:, None] * grad
            tl.atomic_add(grad_table_ptr + address[:, None] * F + feature[None, :], contribution, mask=mask2,
                          sem="relaxed")


BLOCK = 128
# Levels up to this resolution sum runs of points in one cell before their atomic adds (above it
# runs are short and the scan costs more than it saves; 60, 160 and 300 measured alike).
SEGMENT_RESOLUTION = 256


class _HashEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, points, table, levels, bound, n_levels, features):
        count = len(points)
        out = torch.empty(count, n_levels * features, dtype=torch.float32, device=points.device)
        if count:
            encode_kernel[(triton.cdiv(count, BLOCK), n_levels)](points, count, table, levels, out, bound,
                                                                  LEVELS=n_levels, F=features, BLOCK=BLOCK)
        ctx.save_for_backward(points, levels)
        ctx.meta = (bound, n_levels, features, table.shape)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        points, levels = ctx.saved_tensors
        bound, n_levels, features, shape = ctx.meta
        grad_table = torch.zeros(shape, dtype=torch.float32, device=points.device)
        count = len(points)
        if count:
            encode_backward_kernel[(triton.cdiv(count, BLOCK), n_levels)](
                points, count, grad_out.float().contiguous(), grad_table, levels, bound, SEGMENT_RESOLUTION,
                LEVELS=n_levels, F=features, BLOCK=BLOCK,
            )
        return None, grad_table, None, None, None, None


def supports(features: int) -> bool:
    """The kernels vectorise over features, which Triton needs to be a power of two."""
    return features >= 1 and features & (features - 1) == 0


def hashgrid_encode(grid, points: torch.Tensor) -> torch.Tensor:
    """Fused encoding of field-space points (q, 3) on CUDA -> (q, levels * features) float32."""
    if not supports(grid.features):
        return encode_reference(grid, points)
    levels = getattr(grid, "_levels_cuda", None)
    if levels is None or levels.device != points.device:
        levels = grid.level_tensor(points.device)
        grid._levels_cuda = levels
    return _HashEncode.apply(points.float().contiguous(), grid.table, levels, grid.bound, grid.levels,
                             grid.features)
