"""What the benchmark, demo and picture scripts share: the checkout's package on the import path
(run as `python scripts/NAME.py` from anywhere), where the shared meshes are, and benchmark
settings that tests check as well. Import it before `neural_field_addon`."""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Meshes made by others live beside the checkout (../shared/meshes), never inside it.
SHARED_MESHES = os.path.join(os.path.dirname(ROOT), "shared", "meshes")

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def shared_mesh(name: str) -> str:
    return os.path.join(SHARED_MESHES, name)


def meta_torus_benchmark(device: str):
    """bench_meta.py's setting, which its tests share: the family (tori of major radius 1, tube
    0.2-0.5), the held-out member (tube 0.35), the network, and the training settings for a
    number of steps (`train(steps)`)."""
    from neural_field_addon.core.config import FieldConfig, TrainConfig
    from neural_field_addon.core.geometry import TriangleMesh
    from neural_field_addon.core.geometry.procedural import torus

    family = [TriangleMesh(*torus(1.0, radius)) for radius in (0.2, 0.3, 0.4, 0.5)]
    held_out = TriangleMesh(*torus(1.0, 0.35))
    config = FieldConfig(width=64, depth=3, fourier_sigma=0.75)

    def train(steps):
        return TrainConfig(steps=steps, batch=4096, pool_size=1 << 15, device=device, seed=0)

    return family, held_out, config, train
