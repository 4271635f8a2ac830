"""Shape spaces: fit time, endpoint fidelity against single fits, and reconstruction of held-out
family members.

    python scripts/bench_space.py --set ten [--device cuda] [--steps N] [--save SPACE.nfield]
    python scripts/bench_space.py --set cpu3 --device cpu
    python scripts/bench_space.py --set tori|superquadrics|chairs|chairs9 [--device D]

Sets (procedural shapes from blender_tests/analytic.py; the animals from ../shared/meshes, or a
folder given with --meshes):
- ten: bunny, spot and cow, three tori, two superquadrics and two chairs (issue 6: on one H100
  the endpoints reach their fidelity in at most 60 s);
- cpu3: a torus, a superquadric and a chair of a few thousand triangles each (on two CPU cores,
  at most 3 minutes);
- tori, superquadrics, chairs: four members of one family and a held-out fifth, reconstructed
  from its mesh and from the points of its upper half (shape completion); chairs9: nine chairs
  (a 3 x 3 grid of leg and back heights) and a held-out tenth.

Fidelity is the point-to-surface Chamfer-L1 relative to the diagonal (extraction at --resolution),
with normal consistency and F-score; each endpoint is compared with a single-shape fit of the
same network (without the code) and the same steps: the target is at most twice its Chamfer.
The fit time counts the ground truth and the training, as a user waits for both.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

import numpy as np

from benchlib import SHARED_MESHES
from neural_field_addon.core.config import space_configs
from neural_field_addon.core.devices import describe_device, resolve_device
from neural_field_addon.core.fitting.fitter import fit_field
from neural_field_addon.core.fitting.inference import reconstruct
from neural_field_addon.core.fitting.space_fitter import fit_shape_space
from neural_field_addon.core.geometry import TriangleMesh
from neural_field_addon.core.geometry.procedural import chair, superquadric, torus
from neural_field_addon.core.geometry.sampling import sample_surface
from neural_field_addon.core.io.fieldfile import save_space
from neural_field_addon.core.io.meshio import load_mesh
from neural_field_addon.core.service.progress import ProgressBar
from neural_field_addon.core.surface.extraction import extract_isosurface
from neural_field_addon.core.surface.metrics import compare_meshes

FAMILIES = {
    # (training members, held-out member), each a (name, builder) pair
    "tori": ([(f"torus r={r}", lambda r=r: torus(1.0, r)) for r in (0.15, 0.25, 0.4, 0.55)],
             ("torus r=0.32", lambda: torus(1.0, 0.32))),
    "superquadrics": ([(f"superquadric e={e}", lambda e=e: superquadric((1.0, 0.8, 0.6), e, e, 48))
                       for e in (0.3, 0.7, 1.2, 1.8)],
                      ("superquadric e=0.95", lambda: superquadric((1.0, 0.8, 0.6), 0.95, 0.95, 48))),
    "chairs": ([(f"chair legs={h} back={b}", lambda h=h, b=b: chair(leg_height=h, back_height=b))
                for h, b in ((0.5, 0.6), (0.9, 0.6), (0.5, 1.3), (0.9, 1.3))],
               ("chair legs=0.7 back=0.95", lambda: chair(leg_height=0.7, back_height=0.95))),
    # Two proportions need more than the four corners of their range: a 3 x 3 grid, and a held-out
    # chair off the grid's values.
    "chairs9": ([(f"chair legs={h} back={b}", lambda h=h, b=b: chair(leg_height=h, back_height=b))
                 for h in (0.5, 0.7, 0.9) for b in (0.6, 0.95, 1.3)],
                ("chair legs=0.62 back=1.1", lambda: chair(leg_height=0.62, back_height=1.1))),
}


def build_set(name: str, meshes_folder: str):
    """[(name, TriangleMesh)] for training, and the held-out (name, mesh) or None."""
    if name in FAMILIES:
        members, (held_name, held_builder) = FAMILIES[name]
        return [(n, TriangleMesh(*b())) for n, b in members], (held_name, TriangleMesh(*held_builder()))
    if name == "cpu3":
        return [("torus", TriangleMesh(*torus(1.0, 0.35, 48, 24))),
                ("superquadric", TriangleMesh(*superquadric((1.0, 0.8, 0.6), 0.4, 0.4, 32))),
                ("chair", TriangleMesh(*chair(resolution=40)))], None
    if name == "ten":
        shapes = []
        for animal in ("stanford-bunny", "spot", "cow"):
            path = os.path.join(meshes_folder, animal + ".obj")
            if os.path.isfile(path):
                shapes.append((animal, load_mesh(path)))
        shapes += [(f"torus r={r}", TriangleMesh(*torus(1.0, r))) for r in (0.2, 0.35, 0.5)]
        shapes += [(f"superquadric e={e}", TriangleMesh(*superquadric((1.0, 0.8, 0.6), e, e, 48))) for e in (0.3, 1.5)]
        shapes += [("chair low", TriangleMesh(*chair(leg_height=0.5, back_height=1.3))),
                   ("chair high", TriangleMesh(*chair(leg_height=0.9, back_height=0.7)))]
        extra = [(f"superquadric e={e}", TriangleMesh(*superquadric((1.0, 0.6, 0.9), e, 1.0, 48))) for e in (0.6, 1.0, 1.9)]
        return (shapes + extra)[:10], None
    raise SystemExit(f"unknown set {name!r}")


def fidelity(mesh, field, resolution: int) -> dict:
    return compare_meshes(mesh, extract_isosurface(field, resolution), samples=20_000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="cpu3")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=None, help="default: the device's space configuration")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--precision", default=None, choices=("auto", "fp32", "bf16"),
                        help="the space fit's (the single-shape references train in fp32)")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--depth", type=int, default=None)
    parser.add_argument("--latent-dim", type=int, default=None)
    parser.add_argument("--latent-grid", type=int, default=None, help="cells a side of the latent grids (0: none)")
    parser.add_argument("--code-regularization", type=float, default=None)
    parser.add_argument("--mix-weight", type=float, default=None,
                        help="weight of mixed-code supervision (0: a plain auto-decoder; default 0.25)")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--no-reference", action="store_true", help="skip the single-shape fits")
    parser.add_argument("--reference-shapes", default="", help="single-shape fits for these indices only "
                        "(comma-separated; default all)")
    parser.add_argument("--meshes", default=SHARED_MESHES)
    parser.add_argument("--save", default="", help="write the fitted space here")
    args = parser.parse_args()
    device = resolve_device(args.device)
    field_config, train_config = space_configs(device)
    train_config = replace(train_config, device=device)
    if args.steps:
        train_config = replace(train_config, steps=args.steps)
    if args.precision:
        train_config = replace(train_config, precision=args.precision)
    if args.batch:
        train_config = replace(train_config, batch=args.batch, pool_size=max(train_config.pool_size, args.batch))
    for name in ("width", "depth", "latent_dim", "latent_grid"):
        if getattr(args, name) is not None:
            field_config = replace(field_config, **{name: getattr(args, name)})
    shapes, held_out = build_set(args.set, args.meshes)
    names, meshes = [n for n, _ in shapes], [m for _, m in shapes]
    print(f"{describe_device(device)}: space of {len(meshes)} shapes ({', '.join(names)}), "
          f"triangles {min(len(m.faces) for m in meshes)}-{max(len(m.faces) for m in meshes)}")
    print(f"decoder {field_config.depth}x{field_config.width}, codes {field_config.latent_dim}, latent grids "
          f"{field_config.latent_grid}^3 x {field_config.latent_grid_features if field_config.latent_grid else 0}, "
          f"{train_config.steps} steps of {train_config.batch}")

    bar = ProgressBar()
    start = time.perf_counter()
    try:
        extra = {} if args.code_regularization is None else {"code_regularization": args.code_regularization}
        if args.mix_weight is not None:
            extra["mix_weight"] = args.mix_weight
        space = fit_shape_space(meshes, field_config, train_config, names=names, on_progress=bar.update, **extra)
    finally:
        bar.close()
    fit_seconds = time.perf_counter() - start
    if args.save:
        save_space(args.save, space)
    print(f"space fit: {fit_seconds:.1f} s (ground truth {space.report.get('groundtruth_seconds', 0):.1f} s, "
          f"training {space.report['train_seconds']:.1f} s)")

    single_config = replace(field_config, latent_dim=0, latent_grid=0)
    single_train = replace(train_config, precision="fp32")
    worst = 0.0
    print("| shape | space Chamfer | NC | F | single fit Chamfer | ratio |")
    print("|---|---|---|---|---|---|")
    referenced = {int(i) for i in args.reference_shapes.split(",") if i} or set(range(len(shapes)))
    for index, (name, mesh) in enumerate(shapes):
        ours = fidelity(mesh, space.shape(index), args.resolution)
        reference = "" if args.no_reference or index not in referenced else fidelity(mesh, fit_field(mesh, single_config, single_train),
                                                           args.resolution)
        ratio = ours["chamfer_l1"] / reference["chamfer_l1"] if reference else float("nan")
        worst = max(worst, ratio) if reference else worst
        print(f"| {name} | {ours['chamfer_l1']:.2e} | {ours['normal_consistency']:.3f} | {ours['fscore']:.3f} | "
              f"{reference['chamfer_l1']:.2e} | {ratio:.2f} |" if reference else
              f"| {name} | {ours['chamfer_l1']:.2e} | {ours['normal_consistency']:.3f} | {ours['fscore']:.3f} | - | - |")
    if not args.no_reference:
        print(f"worst endpoint ratio {worst:.2f} (target at most 2) after {fit_seconds:.1f} s")

    if held_out is not None:
        name, mesh = held_out
        nearest = min(compare_meshes(mesh, m, samples=20_000)["chamfer_l1"] for m in meshes)
        from_mesh = fidelity(mesh, reconstruct(space, mesh=mesh), args.resolution)
        points, _ = sample_surface(mesh, 20_000, np.random.default_rng(1))
        middle = 0.5 * (mesh.bounds[0][2] + mesh.bounds[1][2])
        upper = points[points[:, 2] > middle]
        from_half = fidelity(mesh, reconstruct(space, points=upper), args.resolution)
        print(f"held-out {name}: reconstruction Chamfer from its mesh {from_mesh['chamfer_l1']:.2e}, "
              f"from its upper half {from_half['chamfer_l1']:.2e}; nearest training shape {nearest:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
