"""One function per task (tasks.py) that runs it: the only place where the CLI's and the worker's
fits, spaces, extractions and reconstructions happen. Each takes the task and an `events`
object (`progress(info)`, `warning(message)`, `log(message)`): the CLI draws a progress bar and
prints, the worker sends JSON lines. Each returns a JSON-ready dict (the worker's `result`
message; the CLI picks what it prints from it). A file written before a later step fails is
removed again, so a failed task leaves no orphan field file.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from .tasks import (
    BakeTask,
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

# Surface samples per direction when a fit measures its result against the source.
FIT_EVALUATION_SAMPLES = 20_000


class Events(Protocol):
    def progress(self, info: dict) -> None: ...

    def warning(self, message: str) -> None: ...

    def log(self, message: str) -> None: ...


def run_task(task: Task, events: Events) -> dict:
    return RUNNERS[type(task)](task, events)


def run_fit(task: FitTask, events: Events) -> dict:
    from ..config import build_configs, slow_configuration_warning
    from ..devices import resolve_device
    from ..fitting.fitter import fit_field
    from ..io.fieldfile import save_field
    from ..surface.metrics import compare_colors

    device = resolve_device(task.device)
    field_config, train_config = build_configs(task.preset, device, task.field_config, task.train_config)
    slow = slow_configuration_warning(field_config, train_config, device)
    if slow:
        events.warning(slow)
    mesh, colors = _source(task.mesh, task.color, events)
    what = " with its colours" if colors is not None else ""
    events.log(f"fitting {task.mesh}{what}: {len(mesh.vertices)} vertices, {len(mesh.faces)} triangles")
    field = fit_field(mesh, field_config, train_config, on_progress=events.progress, colors=colors,
                      resolution=task.extract.resolution if task.extract is not None else None)
    _report_surface(field.report, events)
    if colors is not None:
        field.report.update(compare_colors(mesh, colors, field_colors=field.colors, samples=FIT_EVALUATION_SAMPLES))
        field.report["color"] = True
    save_field(task.field_path, field, task.storage, task.codec)
    result = {"field_path": task.field_path, "report": field.report}
    if task.extract is None:
        return result
    settings = task.extract
    if settings.sheet and field.report.get("surface") != "shell":
        # A sheet is asked of every fit of a selection; a solid among them shows its surface.
        events.log("fitted as a solid: extracting its surface (a sheet is a shell's)")
        settings = replace(settings, sheet=False)
    result["sheet"] = settings.sheet
    with _removed_on_failure(task.field_path):
        extracted = _extract_to_file(field, settings, task.mesh_out, events)
        result["extract_seconds"] = extracted.seconds
        result["mesh_out"] = task.mesh_out
        if task.evaluate:
            from ..surface.metrics import compare_meshes

            events.progress({"phase": "evaluate", "step": 0, "steps": 1})
            start = time.perf_counter()
            result["metrics"] = compare_meshes(mesh, extracted.surface, samples=FIT_EVALUATION_SAMPLES)
            if colors is not None:  # the field's own colour PSNR is in its report already
                result["metrics"].update(compare_colors(mesh, colors, extracted.surface, extracted.colors,
                                                        samples=FIT_EVALUATION_SAMPLES))
            result["evaluate_seconds"] = time.perf_counter() - start
    return result


def _warn_thin_shell(field, resolution: int, events: Events) -> None:
    """A shell thinner than this extraction's `thinnest_shell` may come out with holes."""
    from ..config import thinnest_shell

    report = getattr(field, "report", None) or {}
    if report.get("surface") != "shell":
        return
    thickness = float(report["thickness"])
    least = thinnest_shell(float((np.asarray(field.box_high) - np.asarray(field.box_low)).max()) / field.transform.scale,
                           resolution)
    if thickness < least:
        needed = int(np.ceil(resolution * least / thickness))  # where the thinnest shell shrinks to this one
        events.warning(f"the shell is {thickness:.3g} thick, finer than extraction at {resolution} shows: "
                       f"it may come out with holes; extract at {needed} or more")


def _report_surface(report: dict, events: Events) -> None:
    """Say how the fit took the surface: a shell (with its thickness, and why not thinner) is news,
    a solid chosen by measurement is logged."""
    if report.get("surface") == "shell":
        events.warning(f"fitted as a shell {report['thickness']:.4g} thick: {report['surface_reason']}")
    elif "surface" in report:
        events.log(f"fitted as a solid: {report['surface_reason']}")
    if "thickness_note" in report:
        events.warning(report["thickness_note"])


def _source(path: str, color: bool | None, events: Events):
    """The mesh of a fit and, unless `color` is False, its colours (None where it has none; a
    warning for each colour source that was skipped, and for colour asked of a mesh without any)."""
    from ..io.meshio import load_colored_mesh, load_mesh

    if color is False:
        return load_mesh(path), None
    source = load_colored_mesh(path)
    for note in source.notes:
        events.warning(note)
    if color and source.colors is None and not source.notes:
        events.warning(f"{os.path.basename(path)} has no colours (vertex colours, materials or textures): "
                       "fitting its shape alone")
    return source.mesh, source.colors


def run_fit_space(task: FitSpaceTask, events: Events) -> dict:
    from ..config import space_task_configs
    from ..devices import resolve_device
    from ..fitting.space_fitter import fit_shape_space
    from ..io.fieldfile import save_space

    field_config, train_config = space_task_configs(
        task.preset, resolve_device(task.device), task.field_config, task.train_config,
        latent_dim=task.latent_dim, latent_grid=task.latent_grid)
    sources = [_source(path, task.color, events) for path in task.meshes]
    meshes, colors = [mesh for mesh, _ in sources], [color for _, color in sources]
    names = list(task.names) if task.names is not None else [_stem(path) for path in task.meshes]
    colored = sum(color is not None for color in colors)
    what = f", {colored} with colours" if colored else ""
    events.log(f"fitting a space of {len(meshes)} shapes{what}: {', '.join(names)}")
    extra = {} if task.mix_weight is None else {"mix_weight": task.mix_weight}
    space = fit_shape_space(meshes, field_config, train_config, names=names, on_progress=events.progress,
                            colors=colors if colored else None, **extra)
    save_space(task.space_path, space, task.storage, task.codec)
    result = {"space_path": task.space_path, "report": space.report, "names": space.names, "mesh_out": []}
    if task.extract is not None:
        with _removed_on_failure(task.space_path):
            for shape, mesh_out in enumerate(task.mesh_out):
                _extract_to_file(space.shape(shape), task.extract, mesh_out, events)
                result["mesh_out"].append(mesh_out)
    return result


def run_extract(task: ExtractTask, events: Events) -> dict:
    from ..devices import resolve_device
    from ..fields.shapespace import select_field
    from ..io.fieldfile import load

    start = time.perf_counter()
    field = select_field(load(task.field_path, device=resolve_device(task.device)), task.shape, task.blend,
                         task.slerp, name=task.field_path)
    extracted = _extract_to_file(field, task.settings, task.mesh_out, events)
    surface, report = extracted.surface, extracted.report
    return {"mesh_out": task.mesh_out, "extract_seconds": extracted.seconds, "vertices": len(surface.vertices),
            "faces": len(surface.faces), "resolution": task.resolution, "level": task.level, "method": task.method,
            "sheet": task.sheet,
            "samples": list(report.samples), "evaluated": report.evaluated, "phases": report.seconds,
            "files": extracted.files, "color": extracted.color, "seconds": time.perf_counter() - start}


def run_reconstruct(task: ReconstructTask, events: Events) -> dict:
    """A code (and with latent grids, a grid) fitted to a mesh or point cloud with the space's
    decoder frozen; the space with it appended as one more shape is written to out_space_path
    when there is one, and its surface to mesh_out."""
    from ..devices import resolve_device
    from ..fitting.inference import reconstruct
    from ..io.fieldfile import load_space, save_space
    from ..io.meshio import load_points_or_mesh

    start = time.perf_counter()
    space = load_space(task.space_path, device=resolve_device(task.device))
    kind, data, colors = load_points_or_mesh(task.input)
    if space.color_network is not None and colors is None:
        events.warning(f"{os.path.basename(task.input)} has no colours: the reconstruction takes the space's mean "
                       "appearance")
    if space.color_network is None and colors is not None:
        events.warning(f"the space has no colour: the colours of {os.path.basename(task.input)} are not used")
    field = reconstruct(space, **{kind: data}, steps=task.steps, seed=task.seed, on_progress=events.progress,
                        colors=colors)
    color_code = field.color_network.code[space.config.latent_dim:] if field.has_color else None
    extended = space.with_shape(field.network.code, field.transform, task.name, grid=field.network.grid,
                                color_code=color_code)
    shape = len(extended) - 1
    if task.out_space_path:
        save_space(task.out_space_path, extended)
    with _removed_on_failure(task.out_space_path):
        surface = _extract_to_file(extended.shape(shape), task.extract, task.mesh_out, events).surface
    return {"space_path": task.out_space_path, "shape": shape, "names": extended.names, "input": kind,
            "input_size": len(data.vertices) if kind == "mesh" else len(data), "mesh_out": task.mesh_out,
            "vertices": len(surface.vertices), "faces": len(surface.faces), "report": extended.report,
            "seconds": time.perf_counter() - start}


def run_bake(task: BakeTask, events: Events) -> dict:
    """The field's colour baked through the mesh's own per-corner UVs into a PNG."""
    from ..devices import resolve_device
    from ..fields.shapespace import select_field
    from ..geometry import TriangleMesh
    from ..io.fieldfile import load
    from ..io.images import write_texture
    from ..surface.baking import bake_texture

    start = time.perf_counter()
    field = select_field(load(task.field_path, device=resolve_device(task.device)), task.shape, task.blend,
                         task.slerp, name=task.field_path)
    if not field.has_color:
        raise ValueError(f"{os.path.basename(task.field_path)} has no colour to bake: fit it with colour")
    try:
        with np.load(task.mesh, allow_pickle=False) as data:
            vertices, faces = np.asarray(data["vertices"]), np.asarray(data["faces"], dtype=np.int64)
            corner_uvs = np.asarray(data["corner_uvs"], dtype=np.float32)
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(f"cannot read the mesh to bake for {task.mesh}: {error}") from error
    if corner_uvs.shape != (len(faces), 3, 2):
        raise ValueError(f"the mesh to bake needs corner UVs of shape ({len(faces)}, 3, 2), got {corner_uvs.shape}")
    # One vertex per corner, so each corner carries its own UV across the layout's seams.
    corners = TriangleMesh(np.asarray(vertices, dtype=np.float64)[faces].reshape(-1, 3),
                           np.arange(3 * len(faces)).reshape(-1, 3))
    events.progress({"phase": "bake", "step": 0, "steps": 1})
    texture = bake_texture(field.colors, corners, corner_uvs.reshape(-1, 2), task.size, device=field.device)
    write_texture(task.image_out, texture)
    return {"image_out": task.image_out, "size": task.size, "seconds": time.perf_counter() - start}


def run_eval(task: EvalTask, events: Events) -> dict:
    """Shape fidelity, and colour PSNR where both meshes have colours."""
    from ..io.meshio import load_colored_mesh
    from ..surface.metrics import compare_colors, compare_meshes

    reference, candidate = load_colored_mesh(task.reference), load_colored_mesh(task.candidate)
    for note in (*reference.notes, *candidate.notes):
        events.warning(note)
    result = compare_meshes(reference.mesh, candidate.mesh, samples=task.samples, seed=task.seed)
    if reference.colors is not None and candidate.colors is not None:
        result.update(compare_colors(reference.mesh, reference.colors, candidate.mesh, candidate.colors,
                                     samples=task.samples, seed=task.seed))
    return result


def run_sdf(task: SdfTask, events: Events) -> dict:
    import numpy as np

    from ..devices import resolve_device
    from ..geometry import MeshQuery
    from ..io.meshio import load_mesh

    mesh = load_mesh(task.mesh)
    try:
        points = np.load(task.points, allow_pickle=False)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"points file not found: {task.points}") from error
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read points {task.points}: {error}") from error
    start = time.perf_counter()
    distances = MeshQuery(mesh, device=resolve_device(task.device)).signed_distance(points)
    seconds = time.perf_counter() - start
    np.save(task.output, distances)
    return {"output": task.output, "points": len(distances), "seconds": seconds}


def run_compress(task: CompressTask, events: Events) -> dict:
    """A compact field of the task's source at its target, written to out_path (and a single
    field's surface to mesh_out); the report says its bytes and its fidelity to the source."""
    from ..compression.compress import compress, compress_space
    from ..devices import resolve_device
    from ..fields.shapespace import ShapeSpace
    from ..io.fieldfile import load, write_content
    from ..io.meshio import load_mesh

    device = resolve_device(task.device)
    source = load_mesh(task.source) if task.from_mesh else load(task.source, device=device)
    what = "mesh" if task.from_mesh else ("shape space" if isinstance(source, ShapeSpace) else "field")
    target = f"{task.bytes:,} bytes" if task.bytes is not None else f"Chamfer {task.chamfer:.2e}"
    events.log(f"compressing the {what} {task.source} to {target} on {device}")
    if isinstance(source, ShapeSpace):
        if task.extract is not None:
            raise ValueError("a compressed shape space has many shapes: extract one with extract --shape I")
        result = compress_space(source, target_bytes=task.bytes, target_chamfer=task.chamfer, device=device)
    else:
        result = compress(source, target_bytes=task.bytes, target_chamfer=task.chamfer, bits=task.bits,
                          device=device, seed=task.seed, steps=task.steps, on_progress=events.progress)
    for note in result.report.get("notes", []):
        events.warning(note)
    write_content(task.out_path, result.content)
    report = {**result.report, "source": task.source}
    if "chamfer_l1" in report:
        events.log(f"{report['bytes']:,} bytes ({report['parameters']:,} weights at {report['bits']} bits): "
                   f"Chamfer {report['chamfer_l1']:.2e} and normal consistency {report['normal_consistency']:.4f} "
                   f"against {report['reference']}")
    out = {"field_path": task.out_path, "report": report}
    if task.extract is not None:
        with _removed_on_failure(task.out_path):
            extracted = _extract_to_file(result.field, task.extract, task.mesh_out, events)
        out.update(mesh_out=task.mesh_out, extract_seconds=extracted.seconds)
    return out


def run_warmup(task: WarmupTask, events: Events) -> dict:
    """Fits of a small torus, closed and cut open (an open mesh takes the winding-number and
    openness kernels), with extraction and fidelity on each device the worker can use, so every
    kernel a fit compiles is compiled now and kept (service/caches.py)."""
    import tempfile

    from ..devices import resolve_device
    from ..geometry import TriangleMesh
    from ..geometry.procedural import torus
    from ..io.meshio import save_mesh
    from .caches import entries

    devices = ["cpu"]
    if task.device != "cpu" and resolve_device(task.device) == "cuda":
        devices.append("cuda")
    cache = os.environ.get("NUMBA_CACHE_DIR"), os.environ.get("TRITON_CACHE_DIR")
    before = sum(entries(folder) for folder in cache if folder)
    start, seconds = time.perf_counter(), {}
    with tempfile.TemporaryDirectory(prefix="neural_field_warmup_") as folder:
        vertices, faces = torus(1.0, 0.35)
        meshes = [os.path.join(folder, "closed.npz"), os.path.join(folder, "open.npz")]
        save_mesh(meshes[0], TriangleMesh(vertices, faces))
        save_mesh(meshes[1], TriangleMesh(vertices, faces[len(faces) // 16:]))  # a strip cut away
        fits = [(device, mesh) for device in devices for mesh in meshes]
        for index, (device, mesh_path) in enumerate(fits):
            began = time.perf_counter()
            fit = FitTask(mesh=mesh_path, field_path=os.path.join(folder, f"{device}.nfield"),
                          preset="fast" if device == "cuda" else "compact",
                          train_config={"steps": 30, "device": device, "report_every": 10},
                          extract=ExtractSettings(resolution=64), mesh_out=os.path.join(folder, f"{device}.npz"))
            run_fit(fit, _WarmupEvents(events, index, len(fits)))
            seconds[device] = seconds.get(device, 0.0) + time.perf_counter() - began
    events.progress({"phase": "warmup", "step": 100 * len(fits), "steps": 100 * len(fits)})
    after = sum(entries(folder) for folder in cache if folder)
    events.log(f"kernels ready on {' and '.join(devices)} in {time.perf_counter() - start:.1f} s "
               f"({after - before} cache files written)")
    return {"devices": devices, "seconds": seconds, "cache_files": after, "compiled": after - before}


class _WarmupEvents:
    """A warm-up fit's events: its progress as the warm-up's (device `index` of `count`, in
    hundredths), its notes dropped (they are about the torus, not the user's meshes)."""

    def __init__(self, events: Events, index: int, count: int):
        self.events, self.index, self.count = events, index, count

    def progress(self, info: dict) -> None:
        fraction = info.get("step", 0) / max(1, info.get("steps", 1)) if info.get("phase") == "train" else 0.0
        self.events.progress({"phase": "warmup", "step": 100 * self.index + round(90 * fraction),
                              "steps": 100 * self.count})

    def warning(self, message: str) -> None:
        pass

    def log(self, message: str) -> None:
        pass


RUNNERS = {FitTask: run_fit, FitSpaceTask: run_fit_space, ExtractTask: run_extract, ReconstructTask: run_reconstruct,
           BakeTask: run_bake, EvalTask: run_eval, SdfTask: run_sdf, CompressTask: run_compress,
           WarmupTask: run_warmup}


@dataclass
class Extracted:
    """A surface written by _extract_to_file: the mesh, its colours (SurfaceColors, or None), what
    colour it carries ('', 'vertex' or 'texture'), the files written, the seconds and the report."""

    surface: object
    colors: object
    color: str
    files: list
    seconds: float
    report: object


def _extract_to_file(field, settings: ExtractSettings, mesh_out: str, events: Events) -> Extracted:
    """Extract the surface and write it (an NPZ for the add-on, written atomically, or OBJ / PLY),
    with vertex colours when the field has colour and a baked texture when the settings ask."""
    from ..appearance.surface_colors import SurfaceColors
    from ..io.meshio import MeshAppearance, save_mesh
    from ..surface.baking import vertex_colors
    from ..surface.extraction import ExtractionReport, extract_isosurface, vertex_normals

    if settings.texture and not field.has_color:
        raise ValueError("the field has no colour to bake into a texture: fit it with colour (--color)")
    if not settings.sheet:
        _warn_thin_shell(field, settings.resolution, events)

    def on_progress(fraction):
        events.progress({"phase": "extract", "step": round(100 * fraction), "steps": 100})

    on_progress(0.0)
    start = time.perf_counter()
    report = ExtractionReport(settings.method, settings.resolution, settings.level)
    if settings.sheet:
        from ..surface.sheet import extract_sheet, sheet_normals

        surface = extract_sheet(field, settings.resolution, progress=on_progress, report=report)
        events.log(f"sheet: {surface.boundary_loops()} boundary loops, {surface.boundary_length():.4g} long")
    else:
        surface = extract_isosurface(field, settings.resolution, settings.level, method=settings.method,
                                     progress=on_progress, report=report)
    appearance, colors, color = None, None, ""
    if field.has_color:
        if settings.texture:
            from ..surface.baking import bake_texture, unwrap

            events.progress({"phase": "bake", "step": 0, "steps": 1})
            surface, uvs, _ = unwrap(surface, settings.texture)
            texture = bake_texture(field.colors, surface, uvs, settings.texture, device=field.device)
            appearance = MeshAppearance(colors=vertex_colors(field.colors, surface, field.device), uvs=uvs,
                                        texture=texture)
            colors = SurfaceColors(np.ones((len(surface.faces), 3, 3)), uvs[surface.faces],
                                   np.zeros(len(surface.faces)), (texture,))
            color = "texture"
        else:
            appearance = MeshAppearance(colors=vertex_colors(field.colors, surface, field.device))
            colors = SurfaceColors.from_vertex_colors(surface.faces, appearance.colors)
            color = "vertex"
    normals = None
    if settings.normals:  # a sheet's field is unsigned: its normals are the faces' own
        normals = sheet_normals(surface) if settings.sheet else vertex_normals(field, surface.vertices)
    files = save_mesh(mesh_out, surface, normals, appearance)
    return Extracted(surface, colors, color, files, time.perf_counter() - start, report)


class _removed_on_failure:
    """Removes `path` if the block fails: nothing will reference a file whose task failed."""

    def __init__(self, path: str | None):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is not None and self.path and os.path.exists(self.path):
            os.remove(self.path)
        return False


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]
