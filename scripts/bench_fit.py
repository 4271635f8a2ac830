"""Time to quality of field fits, side by side: our default against re-implementations of the
configurations it competes with, on the same meshes and the same machine.

    python scripts/bench_fit.py [--device cuda] [--meshes stanford-bunny,fandisk,teapot]
        [--configs default,instant-ngp,siren,deepsdf] [--checkpoints 250,500,1000,2000,3000]
        [--resolution 256] [--docs docs/BENCHMARKS.md | --docs '']

Configurations:
- default: the 'auto' preset (Fast on CUDA: hash grid with the fused Triton kernel, bf16 MLP,
  fused Adam; Compact on the CPU);
- instant-ngp: Instant-NGP's published SDF configuration in plain PyTorch (16 levels x 2
  features, table 2^19, 64x2 ReLU MLP, batch 2^18, MAPE loss), fp32, no fused kernels;
- siren: SIREN's SDF architecture (3 hidden layers of 256, omega_0 30, its initialisation,
  lr 1e-4) with our losses plus an eikonal term;
- deepsdf: DeepSDF's 8x512 ReLU MLP on raw coordinates with a skip into layer 4, clamped L1.

Each fit runs its configured steps once (its learning-rate schedule spans them); at each
checkpoint the clock stops, the field is extracted at --resolution and compared with the mesh
(exact point-to-surface Chamfer-L1 relative to the diagonal, normal consistency, F-score at
0.5% of the diagonal). "Time to" a Chamfer threshold is ground truth + training up to the
first checkpoint that reaches it + one extraction. The table is printed and replaces the section
between the bench_fit markers in --docs (docs/BENCHMARKS.md unless told otherwise).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time

import torch

from bench_docs import replace_section
from benchlib import ROOT, SHARED_MESHES
from neural_field_addon.core.config import FieldConfig, TrainConfig, preset_configs
from neural_field_addon.core.devices import describe_device, resolve_device
from neural_field_addon.core.fields.networks import parameter_count
from neural_field_addon.core.fitting.fitter import FieldFitter
from neural_field_addon.core.io.fieldfile import save_field
from neural_field_addon.core.io.meshio import load_mesh
from neural_field_addon.core.surface.extraction import EmptySurfaceError, extract_isosurface
from neural_field_addon.core.surface.metrics import compare_meshes

THRESHOLDS = (1e-3, 5e-4, 2e-4)
MARK_START, MARK_END = "<!-- bench_fit:start -->", "<!-- bench_fit:end -->"


def configurations(device: str) -> dict:
    """name -> (FieldConfig, TrainConfig, plain_pytorch)."""
    return {
        "default": (*preset_configs("auto", device), False),
        "instant-ngp": (
            FieldConfig(encoding="hashgrid", hash_levels=16, hash_features=2, hash_log2_size=19,
                        hash_base_resolution=16, hash_finest_resolution=2048, width=64, depth=2,
                        activation="relu"),
            TrainConfig(steps=3000, batch=1 << 18, lr=1e-2, pool_size=1 << 21, sdf_loss="mape", precision="fp32"),
            True,
        ),
        "siren": (
            FieldConfig(encoding="siren", siren_omega=30.0, width=256, depth=3),
            TrainConfig(steps=3000, batch=1 << 16, lr=1e-4, pool_size=1 << 21, eikonal_weight=0.05),
            False,
        ),
        "deepsdf": (
            FieldConfig(encoding="positional", pe_frequencies=0, width=512, depth=8, skip_layer=4,
                        activation="relu"),
            TrainConfig(steps=3000, batch=1 << 16, lr=5e-4, pool_size=1 << 21),
            False,
        ),
    }


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bench_one(mesh, field_config, train_config, plain, checkpoints, resolution, device):
    field_config.init_seed = 0
    train_config.device = device
    fitter = FieldFitter(mesh, field_config, train_config, use_cuda_graph=not plain)
    if plain:
        fitter.network.encoding.use_kernel = False  # the plain-PyTorch reference encoding
        groups = [{"params": g["params"], "betas": g["betas"], "eps": g["eps"]} for g in fitter.optimizer.param_groups]
        fitter.optimizer = torch.optim.Adam(groups, lr=train_config.lr, fused=False)
    start = time.perf_counter()
    fitter.build_pool()
    _sync(device)
    groundtruth = time.perf_counter() - start
    train_seconds, rows = 0.0, []
    reached = [c for c in checkpoints if c <= train_config.steps] or [train_config.steps]
    for checkpoint in reached:
        start = time.perf_counter()
        while fitter.step_count < checkpoint:
            fitter.step()
        _sync(device)
        train_seconds += time.perf_counter() - start
        field = fitter.field()
        start = time.perf_counter()
        try:
            surface = extract_isosurface(field, resolution)
        except EmptySurfaceError:  # too early in the fit to have a surface at all
            surface = None
        extract_seconds = time.perf_counter() - start
        figures = (compare_meshes(mesh, surface, samples=100_000, fscore_fraction=0.005) if surface is not None
                   else {"chamfer_l1": float("inf"), "normal_consistency": 0.0, "fscore": 0.0,
                         "hausdorff": float("inf")})
        rows.append({"step": checkpoint, "train": train_seconds, "extract": extract_seconds, **figures})
        print(f"    step {checkpoint:5d}: train {train_seconds:7.2f} s, extract {extract_seconds:.2f} s, "
              f"Chamfer {figures['chamfer_l1']:.2e}, NC {figures['normal_consistency']:.4f}, "
              f"F@0.5% {figures['fscore']:.4f}, Hausdorff {figures['hausdorff']:.1e}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "f.nfield")
        save_field(path, fitter.field())
        file_bytes = os.path.getsize(path)
    return {"groundtruth": groundtruth, "rows": rows, "parameters": parameter_count(fitter.network),
            "file_bytes": file_bytes, "steps_per_second": rows[-1]["step"] / rows[-1]["train"]}


def time_to(result, threshold):
    for row in result["rows"]:
        if row["chamfer_l1"] <= threshold:
            return result["groundtruth"] + row["train"] + row["extract"]
    return None


def _tetrahedron():
    import numpy as np

    from neural_field_addon.core.geometry import TriangleMesh

    return TriangleMesh(np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]]),
                        np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]))


def warm_up(device: str) -> float:
    """Seconds of a tiny fit of the default configuration with extraction: on a machine that
    never ran one, this is Triton compiling the kernels (cached on disk for every later run), so
    the timed fits below measure what users see from the second fit on."""
    field_config, train_config = preset_configs("auto", device)
    train_config.steps, train_config.device = 10, device
    start = time.perf_counter()
    fitter = FieldFitter(_tetrahedron(), field_config, train_config)
    fitter.run()
    extract_isosurface(fitter.field(), 32)
    _sync(device)
    return time.perf_counter() - start


def throughput(device: str, batch: int, steps: int | None = None) -> tuple[float, float]:
    """Milliseconds per training step of the default configuration (forward, backward, optimizer)
    on a random pool, after warm-up: (a) steps run back to back as a fit runs them, timed as a
    whole, which is the training throughput; (b) the median of steps each followed by a
    synchronisation, which adds the host's launch time of every step (the latency of one step)."""
    steps = steps or (200 if device == "cuda" else 10)  # each way; a CPU step of 2^18 points takes seconds
    field_config, train_config = preset_configs("auto", device)
    train_config.batch, train_config.pool_size, train_config.device = batch, max(batch, 1 << 21), device
    fitter = FieldFitter(_tetrahedron(), field_config, train_config)
    fitter.build_pool()
    for _ in range(20 if device == "cuda" else 2):
        fitter.step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fitter.step()
    _sync(device)
    back_to_back = 1e3 * (time.perf_counter() - start) / steps
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fitter.step()
        _sync(device)
        times.append(1e3 * (time.perf_counter() - start))
    return back_to_back, sorted(times)[len(times) // 2]


def _fmt_time(value):
    return "-" if value is None else f"{value:.1f} s"


def markdown(results, args, device_name, step_ms, compile_seconds) -> str:
    date = datetime.date.today().isoformat()
    lines = [
        MARK_START,
        f"### Time to quality ({device_name}, {date})",
        "",
        f"Command: `python scripts/bench_fit.py --device {args.device} --meshes {args.meshes} "
        f"--configs {args.configs} --checkpoints {args.checkpoints} --resolution {args.resolution}`",
        f"(torch {torch.__version__}, Python {platform.python_version()}). Time to a Chamfer-L1 "
        "threshold = ground truth + training to the first checkpoint reaching it + one extraction at "
        f"{args.resolution}^3; '-' = not reached. Final figures at the last checkpoint; F-score at "
        "0.5% of the diagonal.",
        "",
    ]
    lines += [f"Warm-up fit before timing (a tiny mesh, default configuration): {compile_seconds:.1f} s; on a "
              "machine that never ran the kernels this is mostly Triton compiling them, once (they are "
              "cached on disk).", ""]
    if step_ms is not None:
        back_to_back, synchronised = step_ms
        lines += [f"Default configuration, training steps of 2^18 points run back to back as a fit runs them: "
                  f"{back_to_back:.2f} ms per step (**{(1 << 18) / back_to_back / 1e3:.3g} M samples/s**); "
                  f"one step followed by a synchronisation: {synchronised:.2f} ms median (the host's "
                  "launches included).", ""]
    header = ("| mesh | config | ground truth | " + " | ".join(f"to {t:.0e}" for t in THRESHOLDS)
              + " | steps/s | final Chamfer | NC | F@0.5% | Hausdorff | parameters | file |")
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for (mesh_name, config), result in results.items():
        last = result["rows"][-1]
        lines.append(
            f"| {mesh_name} | {config} | {result['groundtruth']:.2f} s | "
            + " | ".join(_fmt_time(time_to(result, t)) for t in THRESHOLDS)
            + f" | {result['steps_per_second']:.0f} | {last['chamfer_l1']:.2e} (step {last['step']}) | "
            f"{last['normal_consistency']:.4f} | {last['fscore']:.4f} | {last['hausdorff']:.1e} | {result['parameters']:,} | "
            f"{result['file_bytes'] / 2**20:.1f} MB |"
        )
    lines.append(MARK_END)
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--mesh-dir", default=SHARED_MESHES)
    parser.add_argument("--meshes", default="stanford-bunny,fandisk,teapot",
                        help="names in --mesh-dir (.obj) or paths to OBJ, PLY or NPZ files")
    parser.add_argument("--configs", default="default,instant-ngp,siren,deepsdf")
    parser.add_argument("--checkpoints", default="250,500,1000,1500,2000,3000")
    parser.add_argument("--steps", type=int, default=0, help="override every configuration's steps")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--docs", default=os.path.join(ROOT, "docs", "BENCHMARKS.md"),
                        help="markdown file whose bench_fit section is replaced ('' to write none)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    args.device = device
    checkpoints = [int(c) for c in args.checkpoints.split(",")]
    configs = configurations(device)
    compile_seconds = warm_up(device)
    print(f"warm-up (kernel compilation on a fresh machine): {compile_seconds:.1f} s", flush=True)
    results = {}
    for mesh_name in args.meshes.split(","):
        path = mesh_name if os.path.splitext(mesh_name)[1] else os.path.join(args.mesh_dir, mesh_name + ".obj")
        mesh = load_mesh(path)
        mesh_name = os.path.splitext(os.path.basename(mesh_name))[0]
        print(f"{mesh_name}: {len(mesh.faces)} triangles", flush=True)
        for name in args.configs.split(","):
            field_config, train_config, plain = configs[name]
            if args.steps:
                train_config.steps = args.steps
            print(f"  {name}", flush=True)
            results[(mesh_name, name)] = bench_one(mesh, field_config, train_config, plain, checkpoints,
                                                   args.resolution, device)
    step_ms = None if args.no_throughput else throughput(device, 1 << 18)
    section = markdown(results, args, describe_device(device), step_ms, compile_seconds)
    print(section)
    if args.docs:
        replace_section(args.docs, MARK_START, MARK_END, section, "## Fit benchmark (`scripts/bench_fit.py`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
