"""Open and thin surfaces (issue 20): shells fitted to open sheets the script builds itself, against
the targets: Chamfer-L1 to the source sheet within thickness/2 + 2e-4 of the diagonal, every edge
shared by exactly two faces, openings open; the sheet extracted from the same field (Chamfer-L1 <=
3e-4 of the diagonal, F-score@1% >= 0.99 on the car body and the cloth, boundary length within 1%
of the source's, no face spanning an opening); and the mode 'auto' picks for each, and for every
mesh of `--meshes DIR` (and Suzanne where bpy is importable).

    python scripts/bench_open.py [--device auto|cpu|cuda] [--steps N] [--resolution 256]
        [--thickness-share 0.005] [--meshes ../shared/meshes] [--auto-only] [--json out.json]

Cases: an open car-like body (the sides and top of a box, no floor, two windows), a draped cloth,
a single-sided wall with a door, and a flat outline (a square). Work = ground truth + training, as
in bench_fit.py. The table is printed last.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import benchlib  # noqa: F401 - the checkout's package on the path
from neural_field_addon.core.config import preset_configs, with_overrides
from neural_field_addon.core.devices import describe_device, resolve_device
from neural_field_addon.core.fitting.fitter import FieldFitter
from neural_field_addon.core.geometry import TriangleMesh
from neural_field_addon.core.geometry.openness import analyse_surface
from neural_field_addon.core.geometry.procedural import cloth, flat_sheet, open_box, wall_with_door
from neural_field_addon.core.geometry.query import MeshQuery
from neural_field_addon.core.geometry.sides import welded
from neural_field_addon.core.io.meshio import load_mesh
from neural_field_addon.core.surface.extraction import extract_isosurface
from neural_field_addon.core.surface.metrics import compare_meshes
from neural_field_addon.core.surface.sheet import extract_sheet

SAMPLES = 100_000
# Points that must be outside the shell: the middles of the openings.
CASES = {
    "car body": (lambda: open_box(cells=32), np.array([[0.0, 1.0, 0.25], [1.0, 0.0, 0.25]])),
    "cloth": (lambda: cloth(cells=64), np.zeros((0, 3))),
    "wall with a door": (lambda: wall_with_door(cells=48), np.array([[0.0, 0.0, -0.6]])),
    "flat outline": (lambda: flat_sheet(cells=16), np.zeros((0, 3))),
}


# A sheet face whose centre is this far from the source (share of the diagonal) spans an opening.
SPANNING = 0.01


def sheet_row(mesh: TriangleMesh, field, resolution: int) -> dict:
    """The sheet of a shell field against the source sheet."""
    start = time.perf_counter()
    sheet = extract_sheet(field, resolution)
    seconds = time.perf_counter() - start
    metrics = compare_meshes(mesh, sheet, samples=SAMPLES)
    source = welded(mesh)
    far = MeshQuery(mesh).distance(sheet.triangles().mean(axis=1)) / metrics["diagonal"]
    directed = np.concatenate([sheet.faces[:, [0, 1]], sheet.faces[:, [1, 2]], sheet.faces[:, [2, 0]]])
    _, counts = np.unique(sheet.edges(), axis=0, return_counts=True)
    return {
        "sheet_s": seconds, "sheet_chamfer": metrics["chamfer_l1"], "sheet_fscore": metrics["fscore"],
        "sheet_normal_consistency": metrics["normal_consistency"],
        "boundary_ratio": sheet.boundary_length() / max(source.boundary_length(), 1e-300),
        "loops": sheet.boundary_loops(), "source_loops": source.boundary_loops(),
        "spanning_faces": int(np.count_nonzero(far > SPANNING)),
        "oriented": len(np.unique(directed, axis=0)) == len(directed), "edges_over_two": int(np.sum(counts > 2)),
    }


def auto_modes(folder: str | None) -> dict:
    """The mode 'auto' picks for every mesh file in `folder`, and Suzanne where bpy is importable."""
    import glob
    import os

    meshes = {}
    for path in sorted(glob.glob(os.path.join(folder, "*"))) if folder else []:
        if path.lower().endswith((".obj", ".ply", ".stl", ".off")):
            try:
                meshes[os.path.basename(path)] = load_mesh(path)
            except ValueError as error:
                print(f"{path}: skipped ({error})")
    try:
        import bpy

        bpy.ops.wm.read_factory_settings(use_empty=True)
        bpy.ops.mesh.primitive_monkey_add()
        data = bpy.context.object.data
        data.calc_loop_triangles()
        vertices = np.array([v.co[:] for v in data.vertices])
        faces = np.array([t.vertices[:] for t in data.loop_triangles])
        meshes["Suzanne"] = TriangleMesh(vertices, faces)
    except ImportError:
        pass
    modes = {}
    for name, mesh in meshes.items():
        analysis = analyse_surface(mesh)
        modes[name] = {"mode": analysis.mode, "decisive_share": analysis.decisive_share, "reason": analysis.reason}
        print(name, json.dumps(modes[name]), flush=True)
    return modes


def closed_manifold(mesh: TriangleMesh) -> bool:
    """Every edge shared by exactly two faces."""
    _, counts = np.unique(mesh.edges(), axis=0, return_counts=True)
    return bool(len(mesh.faces)) and bool(np.all(counts == 2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--thickness-share", type=float, default=0.005, help="shell thickness / diagonal")
    parser.add_argument("--meshes", default=None, help="a folder of closed meshes whose 'auto' mode is measured")
    parser.add_argument("--auto-only", action="store_true", help="only measure 'auto' on --meshes and Suzanne")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)
    field_config, train_config = preset_configs("auto", device)
    train_config = with_overrides(train_config, {"device": device, "steps": args.steps})
    rows = {}
    for name, (make, openings) in ({} if args.auto_only else CASES).items():
        mesh = TriangleMesh(*make())
        thickness = args.thickness_share * mesh.diagonal
        fitter = FieldFitter(mesh, field_config, with_overrides(train_config, {"thickness": thickness}),
                             resolution=args.resolution)
        field = fitter.run()
        start = time.perf_counter()
        surface = extract_isosurface(field, args.resolution)
        extract_s = time.perf_counter() - start
        metrics = compare_meshes(mesh, surface, samples=SAMPLES)
        half = field.report.get("thickness", 0.0) / 2 / metrics["diagonal"]
        row = {
            "triangles": len(mesh.faces), "mode": field.report["surface"], "reason": field.report["surface_reason"],
            "thickness": field.report.get("thickness", 0.0), "work_s": fitter.timings["groundtruth_seconds"]
            + fitter.timings["train_seconds"], "extract_s": extract_s, "chamfer": metrics["chamfer_l1"],
            "half_thickness": half, "chamfer_target": half + 2e-4, "closed_manifold": closed_manifold(surface),
            "openings_open": bool(np.all(field.signed_distance(openings) > 0)) if len(openings) else None,
            "fscore": metrics["fscore"], "hausdorff": metrics["hausdorff"],
            **sheet_row(mesh, field, args.resolution),
        }
        rows[name] = row
        print(name, json.dumps(row), flush=True)
    print(f"\n{describe_device(device)}, {train_config.steps} steps, extraction at {args.resolution}, "
          f"thickness {args.thickness_share:g} of the diagonal")
    print("| case | triangles | auto's mode | work s | Chamfer | target (t/2 + 2e-4) | closed | openings open |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        opened = "-" if row["openings_open"] is None else ("yes" if row["openings_open"] else "NO")
        print(f"| {name} | {row['triangles']:,} | {row['mode']} | {row['work_s']:.2f} | {row['chamfer']:.3e} | "
              f"{row['chamfer_target']:.3e} | {'yes' if row['closed_manifold'] else 'NO'} | {opened} |")
    print("\n| case | sheet Chamfer | F@1% | normal consistency | boundary / source | loops (source) | spanning faces | oriented | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['sheet_chamfer']:.3e} | {row['sheet_fscore']:.4f} | {row['sheet_normal_consistency']:.4f} | "
              f"{row['boundary_ratio']:.4f} | {row['loops']} ({row['source_loops']}) | {row['spanning_faces']} | "
              f"{'yes' if row['oriented'] else 'NO'} | {row['sheet_s']:.2f} |")
    modes = auto_modes(args.meshes)
    if modes:
        print("\n| mesh | auto's mode | decisive share |")
        print("|---|---|---|")
        for name, mode in modes.items():
            print(f"| {name} | {mode['mode']} | {mode['decisive_share']:.3f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": describe_device(device), "steps": train_config.steps, "rows": rows, "auto": modes},
                      handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
