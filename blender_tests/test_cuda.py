"""The CUDA paths (marked `cuda`; skipped where PyTorch sees no GPU, run on a CUDA machine before
resolving GPU work)."""

from __future__ import annotations

import numpy as np
import pytest

from analytic import icosphere, torus

pytestmark = pytest.mark.cuda


def test_bruteforce_distance_and_winding_on_cuda_match_the_cpu_reference():
    from neural_field_addon.core.geometry import MeshQuery, TriangleMesh

    mesh = TriangleMesh(*torus(1.0, 0.35, 48, 24))
    points = np.random.default_rng(5).uniform(-1.6, 1.6, size=(4000, 3))
    cpu = MeshQuery(mesh, device="cpu", backend="torch")
    cuda = MeshQuery(mesh, device="cuda", backend="torch")
    # float32 on the GPU: within 1e-6 of the diagonal.
    assert np.abs(cuda.distance(points) - cpu.distance(points)).max() < 1e-6 * mesh.diagonal
    w_cpu, w_cuda = cpu.winding_number(points), cuda.winding_number(points)
    decisive = np.abs(w_cpu - 0.5) > 0.02
    assert np.array_equal(w_cpu[decisive] > 0.5, w_cuda[decisive] > 0.5)


def test_fit_on_cuda_reaches_the_cpu_bound_on_a_sphere():
    from neural_field_addon.core.config import FieldConfig, TrainConfig
    from neural_field_addon.core.extraction import extract_isosurface
    from neural_field_addon.core.geometry import TriangleMesh
    from neural_field_addon.core.metrics import compare_meshes
    from neural_field_addon.core.training import fit_field

    mesh = TriangleMesh(*icosphere(0.75, subdivisions=4))
    field = fit_field(
        mesh,
        FieldConfig(width=64, fourier_sigma=0.25),
        TrainConfig(steps=300, batch=8192, pool_size=1 << 16, device="cuda"),
    )
    assert field.report["device"] == "cuda"
    figures = compare_meshes(mesh, extract_isosurface(field, 64), samples=10_000)
    assert figures["chamfer_l1"] < 6e-4
