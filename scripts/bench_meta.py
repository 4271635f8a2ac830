"""Meta-learned fast fitting against training from scratch on a held-out member of a family.

    python scripts/bench_meta.py [--device auto] [--budgets 50,100,200] [--head-steps 4000] [--solve-steps 300]

The family is procedural: tori of tube radius 0.2, 0.3, 0.4, 0.5 (major radius 1); the held-out
member has tube radius 0.35 and is never trained on. For each budget N, a from-scratch fit of N
steps gives a Chamfer-L1 (point-to-surface, relative to the diagonal, at extraction resolution
64); the table gives the fewest steps (from a ladder) with which a fit from the meta-learned
start (core/fitting/metalearning.py: meta-learned body, head solved in closed form) reaches it. Every
step, from scratch or not, reads one batch of 4,096 points of the held-out torus's pool.
Issue 6's target: at most N/10.
"""

from __future__ import annotations

import argparse
import sys
import time

from benchlib import meta_torus_benchmark
from neural_field_addon.core.devices import describe_device, resolve_device
from neural_field_addon.core.fitting.fitter import fit_field
from neural_field_addon.core.fitting.metalearning import fit_from_initialization, meta_learn_initialization
from neural_field_addon.core.surface.extraction import extract_isosurface
from neural_field_addon.core.surface.metrics import compare_meshes

LADDER = (1, 2, 3, 5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 200, 300, 400)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--budgets", default="50,100,200")
    parser.add_argument("--head-steps", type=int, default=4000)
    parser.add_argument("--solve-steps", type=int, default=300)
    args = parser.parse_args()
    device = resolve_device(args.device)
    family, held_out, config, train = meta_torus_benchmark(device)

    def chamfer(init, steps):
        if init is None:
            field = fit_field(held_out, config, train(steps))
        else:
            field = fit_from_initialization(held_out, init, train(steps))
        return compare_meshes(held_out, extract_isosurface(field, 64), samples=10_000)["chamfer_l1"]

    start = time.perf_counter()
    init = meta_learn_initialization(family, config, train(1), head_steps=args.head_steps,
                                     solve_steps=args.solve_steps)
    meta_seconds = time.perf_counter() - start
    meta_curve = {}
    rows = []
    for budget in (int(b) for b in args.budgets.split(",")):
        target = chamfer(None, budget)
        needed = None
        for steps in LADDER:
            if steps not in meta_curve:
                meta_curve[steps] = chamfer(init, steps)
            if meta_curve[steps] <= target:
                needed = steps
                break
        rows.append((budget, target, needed))
        print(f"scratch {budget} steps: {target:.2e}; meta reaches it in {needed} steps", flush=True)
    print(f"\nMeta-learning on {describe_device(device)}: {args.head_steps} multi-head steps and "
          f"{args.solve_steps} through the solve, {meta_seconds:.1f} s\n")
    print("| scratch steps N | scratch Chamfer-L1 | steps from the meta-learned start | N/10 |")
    print("|---|---|---|---|")
    for budget, target, needed in rows:
        print(f"| {budget} | {target:.2e} | {needed if needed else '> ' + str(LADDER[-1])} | {budget // 10} |")
    for steps in (1, 5, 10, 20):  # the curve beyond what the table needed
        if steps not in meta_curve:
            meta_curve[steps] = chamfer(init, steps)
    print("\nmeta-learned start at each step count: " + ", ".join(f"{s}: {c:.2e}" for s, c in sorted(meta_curve.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
