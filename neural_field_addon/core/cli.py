"""Command line: python -m neural_field_addon.core {fit,fit-space,extract,reconstruct,eval,sdf} ...

Human-readable output and the progress bar go to stderr; with --json the last line on stdout is
one JSON object. Errors print 'error: ...' and exit with status 1 (2 for usage errors).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

import numpy as np

from .config import (
    ACTIVATIONS,
    ENCODINGS,
    FIELD_KINDS,
    PRECISIONS,
    PRESET_NAMES,
    SDF_LOSSES,
    FieldConfig,
    TrainConfig,
    build_configs,
    slow_configuration_warning,
)


# Fit options that map one-to-one onto config fields: (flag, config, field, type, help).
# Their defaults are None, meaning "the preset's value".
_FIELD_FLAGS = (
    ("--kind", "field", "kind", str, "sdf (signed distance) or occupancy"),
    ("--encoding", "field", "encoding", str, "fourier, positional, siren or hashgrid"),
    ("--fourier-features", "field", "fourier_features", int, "Fourier frequencies"),
    ("--fourier-sigma", "field", "fourier_sigma", float, "std of the Fourier frequencies (field units)"),
    ("--pe-frequencies", "field", "pe_frequencies", int, "positional-encoding octaves"),
    ("--siren-omega", "field", "siren_omega", float, "SIREN's omega_0"),
    ("--hash-levels", "field", "hash_levels", int, "hash-grid levels"),
    ("--hash-features", "field", "hash_features", int, "features per hash-grid level"),
    ("--hash-log2-size", "field", "hash_log2_size", int, "log2 of the hash table size per level"),
    ("--hash-base-resolution", "field", "hash_base_resolution", int, "coarsest hash-grid resolution"),
    ("--hash-finest-resolution", "field", "hash_finest_resolution", int, "finest hash-grid resolution"),
    ("--width", "field", "width", int, "MLP hidden width"),
    ("--depth", "field", "depth", int, "MLP hidden layers"),
    ("--skip-layer", "field", "skip_layer", int, "hidden layer that sees the input again (0: none)"),
    ("--activation", "field", "activation", str, "softplus or relu (not SIREN)"),
    ("--steps", "train", "steps", int, "training steps"),
    ("--batch", "train", "batch", int, "points per step"),
    ("--lr", "train", "lr", float, "initial learning rate"),
    ("--pool-size", "train", "pool_size", int, "ground-truth points computed before training"),
    ("--loss", "train", "sdf_loss", str, "signed-distance loss: l1 (clamped, DeepSDF) or mape (Instant-NGP)"),
    ("--eikonal-weight", "train", "eikonal_weight", float, "weight of the eikonal term (0: off)"),
    ("--clamp", "train", "clamp", float, "distance clamp of the losses (field units)"),
    ("--precision", "train", "precision", str, "auto, fp32 or bf16 (CUDA)"),
)
_CHOICES = {"kind": FIELD_KINDS, "encoding": ENCODINGS, "activation": ACTIVATIONS, "sdf_loss": SDF_LOSSES,
            "precision": PRECISIONS}


def _add_fit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=PRESET_NAMES, default="auto",
                        help="starting point for every setting below: fast (hash grid), compact (Fourier "
                             "features), smooth (positional + eikonal); auto: fast on CUDA, compact on the CPU")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--seed", type=int, default=0, help="seed for samples, batches and initialisation")
    for flag, _, name, kind, text in _FIELD_FLAGS:
        parser.add_argument(flag, type=kind, default=None, choices=_CHOICES.get(name), help=text)


def configs_from_args(args, base=None) -> tuple[FieldConfig, TrainConfig]:
    """The preset's configs (for the device the fit will run on), or the given `base` pair, with
    the given flags applied."""
    from .config import check_compatible, with_overrides
    from .devices import resolve_device

    overrides = {"field": {"init_seed": args.seed}, "train": {"seed": args.seed, "device": args.device}}
    for flag, target, name, _, _ in _FIELD_FLAGS:
        overrides[target][name] = getattr(args, flag[2:].replace("-", "_"))
    if base is None:
        return build_configs(args.preset, resolve_device(args.device), overrides["field"], overrides["train"])
    field_config, train_config = with_overrides(base[0], overrides["field"]), with_overrides(base[1], overrides["train"])
    check_compatible(field_config, train_config)
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

    space = sub.add_parser("fit-space", help="fit one shape space (a decoder and a latent code per shape) to "
                                             "two or more meshes")
    space.add_argument("meshes", nargs="+", metavar="MESH")
    space.add_argument("-o", "--output", required=True, help="shape space file to write (.nfield)")
    _add_fit_options(space)
    space.add_argument("--latent-dim", type=int, default=None, help="length of each shape's latent code")
    space.add_argument("--latent-grid", type=int, default=None,
                       help="cells a side of each shape's latent grid, local codes read at the point beside the "
                       "shape's code (default 48 on CUDA, 0 on the CPU; 0: none)")
    space.add_argument("--mix-weight", type=float, default=None,
                       help="weight of mixed-code supervision, which makes blends follow the distance-field morph "
                       "of the two shapes (default 0.25; 0: a plain auto-decoder)")
    space.add_argument("--json", action="store_true", help="print a JSON object as the last line")

    extract = sub.add_parser("extract", help="extract a field's isosurface to OBJ, PLY or NPZ")
    extract.add_argument("field")
    extract.add_argument("-o", "--output", required=True)
    extract.add_argument("--resolution", type=int, default=256, help="grid samples along the longest side")
    extract.add_argument("--level", type=float, default=0.0,
                         help="iso-level in the source's units; positive grows the shape")
    extract.add_argument("--method", choices=("adaptive", "dense"), default="adaptive",
                         help="adaptive: a narrow band around the surface (default); dense: every grid sample")
    extract.add_argument("--normals", action="store_true",
                         help="write vertex normals from the field's gradient")
    extract.add_argument("--shape", type=int, default=None, help="shape space: the shape to extract (0-based)")
    extract.add_argument("--blend", default=None, metavar="I=w,J=w,...",
                         help="shape space: a weighted blend of shapes, weights summing to 1")
    extract.add_argument("--slerp", action="store_true",
                         help="shape space: interpolate two codes spherically instead of linearly")
    extract.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    extract.add_argument("--json", action="store_true")

    recon = sub.add_parser("reconstruct", help="fit a shape space's code to new data (a mesh, or a possibly "
                                               "partial point cloud: NPZ array 'points' or PLY) and extract it")
    recon.add_argument("space")
    recon.add_argument("input")
    recon.add_argument("-o", "--output", required=True, help="mesh to write (OBJ, PLY or NPZ)")
    recon.add_argument("--steps", type=int, default=500, help="optimisation steps for the code")
    recon.add_argument("--resolution", type=int, default=256, help="grid samples along the longest side")
    recon.add_argument("--seed", type=int, default=0)
    recon.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    recon.add_argument("--json", action="store_true")

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

    from .devices import resolve_device

    field_config, train_config = configs_from_args(args)
    slow = slow_configuration_warning(field_config, train_config, resolve_device(args.device))
    if slow:
        _say(f"warning: {slow}")
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


def cmd_fit_space(args) -> dict:
    import os

    from .fieldfile import save_space
    from .meshio import load_mesh
    from .progress import ProgressBar
    from .shapespace import fit_shape_space, space_configs

    if len(args.meshes) < 2:
        raise ValueError(f"fit-space needs at least two meshes; {len(args.meshes)} given")
    if args.preset == "auto":
        from .devices import resolve_device

        field_config, train_config = configs_from_args(args, base=space_configs(resolve_device(args.device)))
    else:
        field_config, train_config = configs_from_args(args)
    # Checked by the fitter, which first gives a space with codes of length 0 its default length.
    field_config = replace(field_config, **{name: getattr(args, name) for name in ("latent_dim", "latent_grid")
                                            if getattr(args, name) is not None})
    meshes = [load_mesh(path) for path in args.meshes]
    names = [os.path.splitext(os.path.basename(path))[0] for path in args.meshes]
    _say(f"fitting a space of {len(meshes)} shapes: {', '.join(names)}")
    bar = ProgressBar()
    try:
        extra = {} if args.mix_weight is None else {"mix_weight": args.mix_weight}
        space = fit_shape_space(meshes, field_config, train_config, names=names, on_progress=bar.update, **extra)
    finally:
        bar.close()
    save_space(args.output, space)
    report = space.report
    _say(f"wrote {args.output}: {report['shapes']} shapes, {report['steps']} steps on {report['device_name']}, "
         f"training {report['train_seconds']:.2f} s, final loss {report['final_loss']:.3e}")
    return {"space": args.output, "names": names, "report": report}


def _parse_blend(text: str) -> dict:
    """'0=0.25,2=0.75' -> {0: 0.25, 2: 0.75}."""
    weights = {}
    for part in text.split(","):
        index, sep, weight = part.partition("=")
        try:
            if not sep:
                raise ValueError
            weights[int(index)] = float(weight)
        except ValueError:
            raise ValueError(f"--blend takes I=w pairs separated by commas (e.g. 0=0.5,1=0.5); got {part!r}") from None
    return weights


def _load_for_extract(args, device: str):
    """The field `extract` works on: a single field, or a shape or blend of a shape space."""
    from .fieldfile import is_space, load_field, load_space

    chooses = args.shape is not None or args.blend is not None
    if not is_space(args.field):
        if chooses or args.slerp:
            raise ValueError(f"{args.field} is a single field: --shape, --blend and --slerp are for shape spaces")
        return load_field(args.field, device=device)
    if (args.shape is None) == (args.blend is None):
        raise ValueError(f"{args.field} is a shape space: give --shape I or --blend I=w,J=w (one of them)")
    space = load_space(args.field, device=device)
    if args.shape is not None:
        if args.slerp:
            raise ValueError("--slerp interpolates a --blend of two shapes")
        return space.shape(args.shape)
    return space.blend(_parse_blend(args.blend), spherical=args.slerp)


def cmd_extract(args) -> dict:
    from .devices import resolve_device
    from .extraction import ExtractionReport, extract_isosurface, vertex_normals
    from .meshio import save_mesh
    from .progress import ProgressBar

    start = time.perf_counter()
    field = _load_for_extract(args, resolve_device(args.device))
    report = ExtractionReport(args.method, args.resolution, args.level)
    bar = ProgressBar()
    try:
        mesh = extract_isosurface(
            field, resolution=args.resolution, level=args.level, method=args.method, report=report,
            progress=lambda fraction: bar.update({"phase": "extract", "step": round(100 * fraction), "steps": 100}),
        )
    finally:
        bar.close()
    normals = vertex_normals(field, mesh.vertices) if args.normals else None
    save_mesh(args.output, mesh, normals)
    seconds = time.perf_counter() - start
    _say(f"wrote {args.output}: {len(mesh.vertices)} vertices, {len(mesh.faces)} triangles in {seconds:.2f} s")
    return {
        "mesh": args.output,
        "vertices": len(mesh.vertices),
        "faces": len(mesh.faces),
        "resolution": args.resolution,
        "level": args.level,
        "method": args.method,
        "samples": list(report.samples),
        "evaluated": report.evaluated,
        "phases": report.seconds,
        "seconds": seconds,
    }


def cmd_reconstruct(args) -> dict:
    from .devices import resolve_device
    from .extraction import extract_isosurface
    from .fieldfile import load_space
    from .meshio import load_points_or_mesh, save_mesh
    from .progress import ProgressBar
    from .shapespace import reconstruct

    if args.steps < 1:
        raise ValueError(f"steps must be at least 1, got {args.steps}")
    start = time.perf_counter()
    space = load_space(args.space, device=resolve_device(args.device))
    kind, data = load_points_or_mesh(args.input)
    bar = ProgressBar()
    try:
        field = reconstruct(space, **{kind: data}, steps=args.steps, seed=args.seed, on_progress=bar.update)
    finally:
        bar.close()
    mesh = extract_isosurface(field, resolution=args.resolution)
    save_mesh(args.output, mesh)
    seconds = time.perf_counter() - start
    _say(f"wrote {args.output}: reconstructed from a {kind} of {len(data.vertices) if kind == 'mesh' else len(data)} "
         f"{'vertices' if kind == 'mesh' else 'points'}, {len(mesh.faces)} triangles in {seconds:.2f} s")
    return {"mesh": args.output, "input": kind, "vertices": len(mesh.vertices), "faces": len(mesh.faces),
            "seconds": seconds}


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


COMMANDS = {"fit": cmd_fit, "fit-space": cmd_fit_space, "extract": cmd_extract, "reconstruct": cmd_reconstruct,
            "eval": cmd_eval, "sdf": cmd_sdf}


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
