"""Command line: python -m neural_field_addon.core {fit,fit-space,extract,reconstruct,compress,eval,sdf} ...

It turns arguments into tasks (tasks.py) and runs them (runners.py), as the worker does with its
job files, so both accept and refuse the same things. Human-readable output and the progress bar
go to stderr; with --json the last line on stdout is one JSON object. Errors print 'error: ...'
and exit with status 1 (2 for usage errors).
"""

from __future__ import annotations

import argparse
import json
import sys

from ..config import (
    ACTIVATIONS,
    COMPRESS_BITS,
    COMPRESS_DEFAULT_BITS,
    DEFAULT_PRECISION,
    DEVICES,
    ENCODINGS,
    EXTRACTION_METHODS,
    FIELD_KINDS,
    INFERENCE_STEPS,
    PRECISIONS,
    PRESET_NAMES,
    SDF_LOSSES,
    STORAGE_PRECISIONS,
    SURFACE_MODES,
)
from .tasks import (
    EVAL_SAMPLES,
    CompressTask,
    EvalTask,
    ExtractSettings,
    ExtractTask,
    FitSpaceTask,
    FitTask,
    ReconstructTask,
    SdfTask,
    Task,
    WarmupTask,
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
    ("--surface", "train", "surface", str, "auto (measured: solid where the mesh encloses a volume decisively, "
     "shell where it is an open sheet), solid (the winding number's inside) or shell (a closed shell around the "
     "surface; shape spaces fit solids only)"),
    ("--thickness", "train", "thickness", float, "a shell's thickness in object units (default 0.5%% of the "
     "diagonal, and at least 2 voxels of the extraction)"),
)
_CHOICES = {"kind": FIELD_KINDS, "encoding": ENCODINGS, "activation": ACTIVATIONS, "sdf_loss": SDF_LOSSES,
            "precision": PRECISIONS, "surface": SURFACE_MODES}


def _add_fit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=PRESET_NAMES, default="auto",
                        help="starting point for every setting below: fast (hash grid), compact (Fourier "
                             "features), smooth (positional + eikonal); auto: fast on CUDA, compact on the CPU")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--seed", type=int, default=0, help="seed for samples, batches and initialisation")
    for flag, _, name, kind, text in _FIELD_FLAGS:
        parser.add_argument(flag, type=kind, default=None, choices=_CHOICES.get(name), help=text)
    parser.add_argument("--storage", choices=STORAGE_PRECISIONS, default=DEFAULT_PRECISION,
                        help="how the file keeps the parameters: auto (default: int8 for a hash grid, float16 for an "
                             "MLP), float16, int8 (a scale per block of 64: a quarter of float32), int6/int5/int4 "
                             "(with --lzma), or float32 (as trained)")
    parser.add_argument("--lzma", action="store_true",
                        help="also entropy-code the file (LZMA, in the packed container)")


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
    fit.add_argument("--color", action=argparse.BooleanOptionalAction, default=None,
                     help="fit the mesh's colours too (OBJ materials and textures, PLY or NPZ vertex colours); "
                          "default: when it has any")
    fit.add_argument("--extract", default=None, metavar="MESH_OUT",
                     help="also write the fitted surface here (OBJ, PLY or NPZ), in the same process")
    fit.add_argument("--resolution", type=int, default=256, help="with --extract: grid samples along the longest side")
    fit.add_argument("--evaluate", action=argparse.BooleanOptionalAction, default=True,
                     help="with --extract: measure the surface against the mesh (Chamfer, normal consistency, F-score)")
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
    space.add_argument("--color", action=argparse.BooleanOptionalAction, default=None,
                       help="fit the meshes' colours too, an appearance code per shape; default: when any has colours")
    space.add_argument("--json", action="store_true", help="print a JSON object as the last line")

    extract = sub.add_parser("extract", help="extract a field's isosurface to OBJ, PLY or NPZ")
    extract.add_argument("field")
    extract.add_argument("-o", "--output", required=True)
    extract.add_argument("--resolution", type=int, default=256, help="grid samples along the longest side")
    extract.add_argument("--level", type=float, default=0.0,
                         help="iso-level in the source's units; positive grows the shape")
    extract.add_argument("--method", choices=EXTRACTION_METHODS, default="adaptive",
                         help="adaptive: a narrow band around the surface (default); dense: every grid sample")
    extract.add_argument("--normals", action="store_true",
                         help="write vertex normals from the field's gradient")
    extract.add_argument("--texture", type=int, default=0, metavar="SIZE",
                         help="a field with colour: also bake a SIZE x SIZE texture (OBJ + MTL + PNG; PLY with UVs "
                              "and a PNG); vertex colours are written either way")
    extract.add_argument("--sheet", action="store_true",
                         help="a field fitted as a shell: extract the open sheet inside it (one layer, with the "
                              "source's boundaries) instead of the closed shell")
    extract.add_argument("--shape", type=int, default=None, help="shape space: the shape to extract (0-based)")
    extract.add_argument("--blend", default=None, metavar="I=w,J=w,...",
                         help="shape space: a weighted blend of shapes, weights summing to 1")
    extract.add_argument("--slerp", action="store_true",
                         help="shape space: interpolate two codes spherically instead of linearly")
    extract.add_argument("--device", choices=DEVICES, default="auto")
    extract.add_argument("--json", action="store_true")

    recon = sub.add_parser("reconstruct", help="fit a shape space's code to new data (a mesh, or a possibly "
                                               "partial point cloud: NPZ array 'points' or PLY) and extract it")
    recon.add_argument("space")
    recon.add_argument("input")
    recon.add_argument("-o", "--output", required=True, help="mesh to write (OBJ, PLY or NPZ)")
    recon.add_argument("--steps", type=int, default=INFERENCE_STEPS, help="optimisation steps for the code")
    recon.add_argument("--resolution", type=int, default=256, help="grid samples along the longest side")
    recon.add_argument("--seed", type=int, default=0)
    recon.add_argument("--device", choices=DEVICES, default="auto")
    recon.add_argument("--json", action="store_true")

    small = sub.add_parser("compress", help="a compact field for delivery: a field (or a mesh) as a small network "
                                            "at a size or a fidelity")
    small.add_argument("source", help="a field file (.nfield: a field or a shape space) or a mesh (OBJ, PLY, NPZ)")
    small.add_argument("-o", "--output", required=True, help="compressed field file to write (.nfield)")
    target = small.add_mutually_exclusive_group(required=True)
    target.add_argument("--bytes", type=int, default=None, help="the file's size at most, in bytes")
    target.add_argument("--chamfer", type=float, default=None,
                        help="the smallest file whose Chamfer-L1 to the source's surface is within this, relative to "
                             "the bounding-box diagonal (e.g. 5e-4)")
    small.add_argument("--bits", type=int, choices=COMPRESS_BITS, default=COMPRESS_DEFAULT_BITS,
                       help="bits a weight of a single field (a shape space picks its own)")
    small.add_argument("--steps", type=int, default=None, help="training steps of the small network "
                                                              "(default: 12000 on CUDA, 6000 on the CPU)")
    small.add_argument("--seed", type=int, default=0)
    small.add_argument("--device", choices=DEVICES, default="auto")
    small.add_argument("--json", action="store_true")

    warm = sub.add_parser("warmup", help="compile the kernels a fit uses, once, into the caches "
                                         "($NEURAL_FIELD_CACHE; Numba's and Triton's defaults without it)")
    warm.add_argument("--device", choices=DEVICES, default="auto")
    warm.add_argument("--json", action="store_true")

    evaluate = sub.add_parser("eval", help="fidelity of CANDIDATE against REFERENCE")
    evaluate.add_argument("reference")
    evaluate.add_argument("candidate")
    evaluate.add_argument("--samples", type=int, default=EVAL_SAMPLES, help="surface samples per direction")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--json", action="store_true")

    sdf = sub.add_parser("sdf", help="exact signed distances of points (.npy, (n, 3)) to a mesh")
    sdf.add_argument("mesh")
    sdf.add_argument("points")
    sdf.add_argument("-o", "--output", required=True, help=".npy file of n distances")
    sdf.add_argument("--device", choices=DEVICES, default="auto")
    sdf.add_argument("--json", action="store_true")
    return parser


def _overrides(args) -> tuple[dict, dict]:
    """The fit flags as (field_config, train_config) overrides of the preset; unset flags are None,
    which keeps the preset's value."""
    overrides = {"field": {"init_seed": args.seed}, "train": {"seed": args.seed, "device": args.device}}
    for flag, target, name, _, _ in _FIELD_FLAGS:
        overrides[target][name] = getattr(args, flag[2:].replace("-", "_"))
    return overrides["field"], overrides["train"]


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


def task_from_args(args) -> Task:
    """The task a parsed command line asks for."""
    if args.command == "fit":
        field, train = _overrides(args)
        extract = None if args.extract is None else ExtractSettings(resolution=args.resolution)
        return FitTask(mesh=args.mesh, field_path=args.output, preset=args.preset, field_config=field,
                       train_config=train, color=args.color, storage=args.storage,
                       codec="lzma" if args.lzma else None, extract=extract, mesh_out=args.extract,
                       evaluate=args.evaluate)
    if args.command == "fit-space":
        field, train = _overrides(args)
        return FitSpaceTask(meshes=tuple(args.meshes), space_path=args.output, preset=args.preset,
                            field_config=field, train_config=train, latent_dim=args.latent_dim,
                            latent_grid=args.latent_grid, mix_weight=args.mix_weight, color=args.color,
                            storage=args.storage, codec="lzma" if args.lzma else None)
    if args.command == "extract":
        return ExtractTask(field_path=args.field, mesh_out=args.output, resolution=args.resolution, level=args.level,
                           method=args.method, normals=args.normals, device=args.device, shape=args.shape,
                           blend=None if args.blend is None else _parse_blend(args.blend), slerp=args.slerp,
                           texture=args.texture, sheet=args.sheet)
    if args.command == "reconstruct":
        return ReconstructTask(space_path=args.space, input=args.input, mesh_out=args.output, steps=args.steps,
                               seed=args.seed, device=args.device, extract=ExtractSettings(resolution=args.resolution))
    if args.command == "compress":
        return CompressTask(source=args.source, out_path=args.output, bytes=args.bytes, chamfer=args.chamfer,
                            bits=args.bits, steps=args.steps, seed=args.seed, device=args.device)
    if args.command == "warmup":
        return WarmupTask(device=args.device)
    if args.command == "eval":
        return EvalTask(reference=args.reference, candidate=args.candidate, samples=args.samples, seed=args.seed)
    return SdfTask(mesh=args.mesh, points=args.points, output=args.output, device=args.device)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class TerminalEvents:
    """A runner's events on a terminal: a progress bar, warnings and notes on stderr."""

    def __init__(self):
        from .progress import ProgressBar

        self.bar = ProgressBar()

    def progress(self, info: dict) -> None:
        self.bar.update(info)

    def warning(self, message: str) -> None:
        _say(f"warning: {message}")

    def log(self, message: str) -> None:
        _say(message)

    def close(self) -> None:
        self.bar.close()


def summary(task: Task, result: dict) -> tuple[str, dict]:
    """What the command says when it is done, and the JSON object --json prints."""
    if isinstance(task, FitTask):
        report = result["report"]
        color = f", with colour (field PSNR {report['field_color_psnr']:.1f} dB)" if "field_color_psnr" in report else ""
        text = (f"wrote {task.field_path}: {report['steps']} steps on {report['device_name']}, "
                f"ground truth {report['groundtruth_seconds']:.2f} s, training {report['train_seconds']:.2f} s, "
                f"final loss {report['final_loss']:.3e}{color}")
        data = {"field": task.field_path, "report": report}
        if task.mesh_out is not None:
            text += f"; wrote {task.mesh_out} in {result['extract_seconds']:.2f} s"
            data.update(mesh=task.mesh_out, extract_seconds=result["extract_seconds"])
            if "metrics" in result:
                metrics = result["metrics"]
                text += (f", Chamfer-L1 {metrics['chamfer_l1']:.3e}, normal consistency "
                         f"{metrics['normal_consistency']:.4f}, F-score@1% {metrics['fscore']:.4f}")
                data.update(metrics=metrics, evaluate_seconds=result["evaluate_seconds"])
        return text, data
    if isinstance(task, FitSpaceTask):
        report = result["report"]
        return (f"wrote {task.space_path}: {report['shapes']} shapes, {report['steps']} steps on "
                f"{report['device_name']}, training {report['train_seconds']:.2f} s, final loss "
                f"{report['final_loss']:.3e}"), {"space": task.space_path, "names": result["names"], "report": report}
    if isinstance(task, ExtractTask):
        keys = ("vertices", "faces", "resolution", "level", "method", "samples", "evaluated", "phases", "seconds",
                "files", "color", "sheet")
        color = {"vertex": ", vertex colours", "texture": f", vertex colours and a {task.texture}^2 texture"}.get(
            result["color"], "")
        return (f"wrote {task.mesh_out}: {result['vertices']} vertices, {result['faces']} triangles{color} in "
                f"{result['seconds']:.2f} s"), {"mesh": task.mesh_out, **{key: result[key] for key in keys}}
    if isinstance(task, ReconstructTask):
        what = "vertices" if result["input"] == "mesh" else "points"
        return (f"wrote {task.mesh_out}: reconstructed from a {result['input']} of {result['input_size']} {what}, "
                f"{result['faces']} triangles in {result['seconds']:.2f} s"), {
            "mesh": task.mesh_out, "input": result["input"], "vertices": result["vertices"],
            "faces": result["faces"], "seconds": result["seconds"]}
    if isinstance(task, CompressTask):
        report = result["report"]
        if "chamfer_l1" in report:
            text = (f"wrote {task.out_path}: {report['bytes']:,} bytes ({report['parameters']:,} weights at "
                    f"{report['bits']} bits), Chamfer-L1 {report['chamfer_l1']:.3e} and normal consistency "
                    f"{report['normal_consistency']:.4f} against {report['reference']}, in {report['seconds']:.1f} s")
        else:
            worst = report["worst_chamfer_l1"]
            fidelity = f", worst shape's Chamfer-L1 {worst:.3e}" if worst is not None else ""
            text = (f"wrote {task.out_path}: a shape space of {report['shapes']} shapes in {report['bytes']:,} bytes "
                    f"at {report['bits']} bits{fidelity}")
        return text, {"field": task.out_path, "report": report}
    if isinstance(task, WarmupTask):
        return (f"kernels ready on {' and '.join(result['devices'])}: {result['compiled']} files compiled, "
                f"{result['cache_files']} in the caches"), result
    if isinstance(task, EvalTask):
        color = f", colour PSNR {result['color_psnr']:.2f} dB (sRGB)" if "color_psnr" in result else ""
        return (f"Chamfer-L1 {result['chamfer_l1']:.3e} of the diagonal, normal consistency "
                f"{result['normal_consistency']:.4f}, F-score@1% {result['fscore']:.4f}{color}"), result
    return f"wrote {task.output}: {result['points']} signed distances in {result['seconds']:.2f} s", result


def main(argv=None) -> int:
    from ..io.fileheader import FieldFileError
    from .caches import configure
    from .runners import run_task

    configure()  # $NEURAL_FIELD_CACHE, where set: the add-on's compiled kernels

    args = build_parser().parse_args(argv)
    try:
        task = task_from_args(args)
        events = TerminalEvents()
        try:
            result = run_task(task, events)
        finally:
            events.close()
    except (ValueError, FileNotFoundError, FieldFileError, PermissionError, IsADirectoryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    text, data = summary(task, result)
    _say(text)
    if args.json:
        print(json.dumps(data), flush=True)
    return 0
