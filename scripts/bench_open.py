"""Open and thin surfaces (issue 20): shells fitted to open sheets the script builds itself, against
the targets: Chamfer-L1 to the source sheet within thickness/2 + 2e-4 of the diagonal, every edge
shared by exactly two faces, openings open; and the mode 'auto' picks for each.

    python scripts/bench_open.py [--device auto|cpu|cuda] [--steps N] [--resolution 256]
        [--thickness-share 0.005] [--json out.json]

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
from neural_field_addon.core.geometry.procedural import cloth, flat_sheet, open_box, wall_with_door
from neural_field_addon.core.surface.extraction import extract_isosurface
from neural_field_addon.core.surface.metrics import compare_meshes

SAMPLES = 100_000
# Points that must be outside the shell: the middles of the openings.
CASES = {
    "car body": (lambda: open_box(cells=32), np.array([[0.0, 1.0, 0.25], [1.0, 0.0, 0.25]])),
    "cloth": (lambda: cloth(cells=64), np.zeros((0, 3))),
    "wall with a door": (lambda: wall_with_door(cells=48), np.array([[0.0, 0.0, -0.6]])),
    "flat outline": (lambda: flat_sheet(cells=16), np.zeros((0, 3))),
}


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
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)
    field_config, train_config = preset_configs("auto", device)
    train_config = with_overrides(train_config, {"device": device, "steps": args.steps})
    rows = {}
    for name, (make, openings) in CASES.items():
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
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": describe_device(device), "steps": train_config.steps, "rows": rows}, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
