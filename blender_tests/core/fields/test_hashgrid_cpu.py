"""The CPU (Numba) hash encoding against the plain-PyTorch reference: equal within 1e-6 on
random points inside and outside the cube and on grid vertices (the far faces included), with
dense and hashed levels and two or four features; HashGridEncoding uses it for inference only."""

from __future__ import annotations

import pytest
import torch

from neural_field_addon.core.fields import encodings
from neural_field_addon.core.fields.encodings import HashGridEncoding
from neural_field_addon.core.fields.hashgrid import encode_reference

pytest.importorskip("numba")
from neural_field_addon.core.fields.hashgrid_cpu import hashgrid_encode_cpu  # noqa: E402

TOLERANCE = 1e-6


def _grid(features: int, finest_resolution: int = 2048, bound: float = 1.25) -> HashGridEncoding:
    """Six levels over a 2^12 table, the first two dense and the rest hashed; the default finest
    resolution is the presets' 2048, where a position rounded differently from the reference's
    would show. Table values of order one, so a wrong corner or weight would show too."""
    grid = HashGridEncoding(levels=6, features=features, log2_size=12, base_resolution=4,
                            finest_resolution=finest_resolution, bound=bound, seed=1)
    assert [dense for _, _, _, dense in grid.layout] == [True, True, False, False, False, False]
    with torch.no_grad():
        grid.table.uniform_(-1.0, 1.0, generator=torch.Generator().manual_seed(2))
    return grid


@pytest.mark.parametrize("features", [2, 4])
def test_kernel_equals_the_reference_on_random_points_inside_and_outside_the_cube(features):
    grid = _grid(features)
    generator = torch.Generator().manual_seed(3)
    points = torch.rand(20_000, 3, generator=generator) * 3.6 - 1.8  # a third of each axis is outside
    with torch.no_grad():
        reference = encode_reference(grid, points)
    encoded = hashgrid_encode_cpu(grid, points)
    assert encoded.shape == reference.shape == (20_000, 6 * features) and encoded.dtype == torch.float32
    assert (encoded - reference).abs().max() <= TOLERANCE


@pytest.mark.parametrize("features", [2, 4])
def test_kernel_equals_the_reference_on_grid_vertices(features):
    # Resolutions 4, 8, ..., 128 and bound 0.5, so the cube maps to [0, 1]^3 exactly and k / 128
    # is a vertex of every level that k allows: whole-number positions, and the far face
    # (k = 128), whose cell is clamped to the last one, are both exercised.
    grid = _grid(features, finest_resolution=128, bound=0.5)
    assert [resolution for resolution, _, _, _ in grid.layout] == [4, 8, 16, 32, 64, 128]
    k = torch.randint(0, 129, (20_000, 3), generator=torch.Generator().manual_seed(4))
    k[:8] = torch.tensor([[i & 1, i >> 1 & 1, i >> 2 & 1] for i in range(8)]) * 128  # the cube's corners
    points = k.float() / 128.0 - 0.5
    with torch.no_grad():
        reference = encode_reference(grid, points)
    assert (hashgrid_encode_cpu(grid, points) - reference).abs().max() <= TOLERANCE


def test_forward_uses_the_kernel_without_gradients(monkeypatch):
    def no_reference(grid, points):
        raise AssertionError("the reference was called")

    monkeypatch.setattr(encodings, "encode_reference", no_reference)
    grid = _grid(2)
    points = torch.rand(1000, 3, generator=torch.Generator().manual_seed(5)) * 2.5 - 1.25
    with torch.no_grad():
        encoded = grid(points)
    assert torch.equal(encoded, hashgrid_encode_cpu(grid, points))


def test_forward_keeps_the_differentiable_reference_when_gradients_are_needed():
    grid = _grid(2)
    points = torch.rand(1000, 3, generator=torch.Generator().manual_seed(6)) * 2.5 - 1.25
    grid(points).square().sum().backward()
    assert grid.table.grad is not None and grid.table.grad.abs().sum() > 0
