"""Command line: python -m neural_field_addon.core {fit,extract,eval,sdf} ...

Human-readable output and the progress bar go to stderr; with --json the last line on stdout is
one JSON object. Errors print 'error: ...' and exit with status 1 (2 for usage errors).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from .config import ENCODINGS, FieldConfig, TrainConfig


def _add_fit_options(parser: argparse.ArgumentParser) -> None:
    defaults_f, defaults_t = FieldConfig(), TrainConfig()
    parser.add_argument("--steps", type=int, default=defaults_t.steps, help="training steps")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--seed", type=int, default=defaults_t.seed, help="seed for samples and batches")
    parser.add_argument("--batch", type=int, default=defaults_t.batch, help="points per step")
    parser.add_argument("--lr", type=float, default=defaults_t.lr, help="initial learning rate")
    parser.add_argument("--pool-size", type=int, default=defaults_t.pool_size,
                        help="ground-truth points computed before training")
    parser.add_argument("--encoding", choices=ENCODINGS, default=defaults_f.encoding)
    parser.add_argument("--fourier-features", type=int, default=defaults_f.fourier_features)
    parser.add_argument("--fourier-sigma", type=float, default=defaults_f.fourier_sigma)
    parser.add_argument("--pe-frequencies", type=int, default=defaults_f.pe_frequencies)
    parser.add_argument("--width", type=int, default=defaults_f.width, help="MLP hidden width")
    parser.add_argument("--depth", type=int, default=defaults_f.depth, help="MLP hidden layers")


def configs_from_args(args) -> tuple[FieldConfig, TrainConfig]:
    field_config = FieldConfig(
        encoding=args.encoding,
        fourier_features=args.fourier_features,
        fourier_sigma=args.fourier_sigma,
        pe_frequencies=args.pe_frequencies,
        width=args.width,
        depth=args.depth,
        init_seed=args.seed,
    ).validate()
    train_config = TrainConfig(
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        pool_size=args.pool_size,
        seed=args.seed,
        device=args.device,
    ).validate()
    return field_config, train_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m neural_field_addon.core",
        description="Fit neural signed-distance fields to meshes and extract their isosurfaces.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    fit = sub.add_parser("fit", help="fit a field to a mesh (OBJ, PLY or NPZ)")
    fit.add_argument("mesh")
    fit.add_argument("-o", "--output", required=True, help="field file to write (.nfield)")
    _add_fit_options(fit)
    fit.add_argument("--json", action="store_true", help="print a JSON object as the last line")

    extract = sub.add_parser("extract", help="extract a field's isosurface to OBJ, PLY or NPZ")
    extract.add_argument("field")
    extract.add_argument("-o", "--output", required=True)
    extract.add_argument("--resolution", type=int, default=256, help="grid samples along the longest side")
    extract.add_argument("--level", type=float, default=0.0,
                         help="iso-level in the source's units; positive grows the shape")
    extract.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    extract.add_argument("--json", action="store_true")

    evaluate = sub.add_parser("eval", help="fidelity of CANDIDATE against REFERENCE")
    evaluate.add_argument("reference")
    evaluate.add_argument("candidate")
    evaluate.add_argument("--samples", type=int, default=50_000, help="surface samples per direction")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--json", action="store_true")

    sdf = sub.add_parser("sdf", help="exact signed distances of points (.npy, (n, 3)) to a mesh")
    sdf.add_argument("mesh")
    sdf.add_argument("points")
    sdf.add_argument("-o", "--output", required=True, help=".npy file of n distances")
    sdf.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    sdf.add_argument("--json", action="store_true")
    return parser


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_fit(args) -> dict:
    from .fieldfile import save_field
    from .meshio import load_mesh
    from .progress import ProgressBar
    from .training import fit_field

    field_config, train_config = configs_from_args(args)
    mesh = load_mesh(args.mesh)
    _say(f"fitting {args.mesh}: {len(mesh.vertices)} vertices, {len(mesh.faces)} triangles")
    bar = ProgressBar()
    try:
        field = fit_field(mesh, field_config, train_config, on_progress=bar.update)
    finally:
        bar.close()
    save_field(args.output, field)
    report = field.report
    _say(
        f"wrote {args.output}: {report['steps']} steps on {report['device_name']}, "
        f"ground truth {report['groundtruth_seconds']:.2f} s, training {report['train_seconds']:.2f} s, "
        f"final loss {report['final_loss']:.3e}"
    )
    return {"field": args.output, "report": report}


def cmd_extract(args) -> dict:
    from .devices import resolve_device
    from .extraction import extract_isosurface
    from .fieldfile import load_field
    from .meshio import save_mesh

    start = time.perf_counter()
    field = load_field(args.field, device=resolve_device(args.device))
    mesh = extract_isosurface(field, resolution=args.resolution, level=args.level)
    save_mesh(args.output, mesh)
    seconds = time.perf_counter() - start
    _say(f"wrote {args.output}: {len(mesh.vertices)} vertices, {len(mesh.faces)} triangles in {seconds:.2f} s")
    return {
        "mesh": args.output,
        "vertices": len(mesh.vertices),
        "faces": len(mesh.faces),
        "resolution": args.resolution,
        "level": args.level,
        "seconds": seconds,
    }


def cmd_eval(args) -> dict:
    from .meshio import load_mesh
    from .metrics import compare_meshes

    result = compare_meshes(
        load_mesh(args.reference), load_mesh(args.candidate), samples=args.samples, seed=args.seed
    )
    _say(
        f"Chamfer-L1 {result['chamfer_l1']:.3e} of the diagonal, "
        f"normal consistency {result['normal_consistency']:.4f}, "
        f"F-score@1% {result['fscore']:.4f}"
    )
    return result


def cmd_sdf(args) -> dict:
    from .devices import resolve_device
    from .geometry import MeshQuery
    from .meshio import load_mesh

    mesh = load_mesh(args.mesh)
    try:
        points = np.load(args.points, allow_pickle=False)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"points file not found: {args.points}") from error
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read points {args.points}: {error}") from error
    start = time.perf_counter()
    distances = MeshQuery(mesh, device=resolve_device(args.device)).signed_distance(points)
    seconds = time.perf_counter() - start
    np.save(args.output, distances)
    _say(f"wrote {args.output}: {len(distances)} signed distances in {seconds:.2f} s")
    return {"output": args.output, "points": len(distances), "seconds": seconds}


COMMANDS = {"fit": cmd_fit, "extract": cmd_extract, "eval": cmd_eval, "sdf": cmd_sdf}


def main(argv=None) -> int:
    from .fieldfile import FieldFileError

    args = build_parser().parse_args(argv)
    try:
        result = COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, FieldFileError, PermissionError, IsADirectoryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result), flush=True)
    return 0
