"""Where a training step and the ground truth of the default configuration spend their time.

    python scripts/profile_step.py [--mesh PATH] [--batch 262144] [--steps 30]

Prints the phases of `build_pool` (seconds, synchronised) and a torch.profiler table of the
kernels of `--steps` training steps, sorted by device time. For finding the next bottleneck,
not for reporting: bench_fit.py measures what docs/BENCHMARKS.md records.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from benchlib import shared_mesh
from neural_field_addon.core.config import preset_configs
from neural_field_addon.core.devices import resolve_device
from neural_field_addon.core.fitting.fitter import FieldFitter
from neural_field_addon.core.geometry import DeviceSampler, MeshQuery
from neural_field_addon.core.io.meshio import load_mesh


def timed(label, function):
    torch.cuda.synchronize()
    start = time.perf_counter()
    value = function()
    torch.cuda.synchronize()
    print(f"{label:40s} {time.perf_counter() - start:8.3f} s", flush=True)
    return value


def kernel_times(batch: int) -> None:
    """Encoding forward and backward alone, for grids whose levels are all coarse (dense, heavy
    atomic contention), all fine (hashed) or the default mix; sorted and unsorted points."""
    from neural_field_addon.core.fields.encodings import HashGridEncoding
    from neural_field_addon.core.geometry.bvh import morton_order_tensor

    points = torch.rand(batch, 3, device="cuda") * 2.0 - 1.0
    ordered = points[morton_order_tensor(points, [-1.0] * 3, [1.0] * 3)].contiguous()
    grids = {"default": (16, 2048), "all coarse (16)": (16, 16), "all fine (2048)": (2048, 2048)}
    for name, (base, finest) in grids.items():
        grid = HashGridEncoding(16, 2, 19, base, finest).cuda()
        for label, p in (("random", points), ("sorted", ordered)):
            upstream = torch.randn(batch, 32, device="cuda")
            for _ in range(3):
                (grid(p) * upstream).sum().backward()
            start, middle, end = (torch.cuda.Event(enable_timing=True) for _ in range(3))
            start.record()
            out = grid(p)
            middle.record()
            out.backward(upstream)
            end.record()
            end.synchronize()
            print(f"{name:18s} {label}: forward {start.elapsed_time(middle):.3f} ms, "
                  f"backward {middle.elapsed_time(end):.3f} ms", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mesh", default=shared_mesh("stanford-bunny.obj"))
    parser.add_argument("--batch", type=int, default=1 << 18)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--kernels", action="store_true", help="also time the encoding kernels alone")
    args = parser.parse_args()
    if args.kernels:
        kernel_times(args.batch)
    device = resolve_device("cuda")
    mesh = load_mesh(args.mesh)
    field_config, train_config = preset_configs("fast", device)
    train_config.batch = args.batch
    fitter = FieldFitter(mesh, field_config, train_config)
    cfg = train_config
    for repeat in range(2):
        print(f"ground truth, pass {repeat + 1}")
        sampler = timed("  sampler", lambda: DeviceSampler(fitter.field_mesh, device, cfg.seed))
        near = timed("  near-surface samples", lambda: sampler.near_surface(cfg.pool_size, cfg.near_scales))
        query = timed("  MeshQuery + BVH build (host)", lambda: MeshQuery(fitter.field_mesh, device=device))
        timed("  BVH to the device", lambda: query.device_bvh)
        timed("  signed distance", lambda: query.signed_distance_tensor(near))
        tree = query.device_bvh
        local = near - torch.as_tensor(query._origin, dtype=near.dtype, device=near.device)
        timed("    distance walk", lambda: tree.closest_points(local))
        winding = timed("    winding walk", lambda: tree.winding_number(local, query.beta))
        doubtful = ((winding - 0.5).abs() < 0.3)
        print(f"    doubtful (refined): {int(doubtful.sum())} of {len(near)}")
        timed("  build_pool (all of it)", fitter.build_pool)
    for _ in range(10):
        fitter.step()
    torch.cuda.synchronize()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(args.steps):
            fitter.step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25))
    return 0


if __name__ == "__main__":
    sys.exit(main())
