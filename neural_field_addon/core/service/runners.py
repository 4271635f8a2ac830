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
from typing import Protocol

from .tasks import EvalTask, ExtractSettings, ExtractTask, FitSpaceTask, FitTask, ReconstructTask, SdfTask, Task

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
    from ..io.meshio import load_mesh

    device = resolve_device(task.device)
    field_config, train_config = build_configs(task.preset, device, task.field_config, task.train_config)
    slow = slow_configuration_warning(field_config, train_config, device)
    if slow:
        events.warning(slow)
    mesh = load_mesh(task.mesh)
    events.log(f"fitting {task.mesh}: {len(mesh.vertices)} vertices, {len(mesh.faces)} triangles")
    field = fit_field(mesh, field_config, train_config, on_progress=events.progress)
    save_field(task.field_path, field)
    result = {"field_path": task.field_path, "report": field.report}
    if task.extract is None:
        return result
    with _removed_on_failure(task.field_path):
        surface, result["extract_seconds"] = _extract_to_file(field, task.extract, task.mesh_out, events)
        result["mesh_out"] = task.mesh_out
        if task.evaluate:
            from ..surface.metrics import compare_meshes

            events.progress({"phase": "evaluate", "step": 0, "steps": 1})
            start = time.perf_counter()
            result["metrics"] = compare_meshes(mesh, surface, samples=FIT_EVALUATION_SAMPLES)
            result["evaluate_seconds"] = time.perf_counter() - start
    return result


def run_fit_space(task: FitSpaceTask, events: Events) -> dict:
    from ..config import space_task_configs
    from ..devices import resolve_device
    from ..fitting.space_fitter import fit_shape_space
    from ..io.fieldfile import save_space
    from ..io.meshio import load_mesh

    field_config, train_config = space_task_configs(
        task.preset, resolve_device(task.device), task.field_config, task.train_config,
        latent_dim=task.latent_dim, latent_grid=task.latent_grid)
    meshes = [load_mesh(path) for path in task.meshes]
    names = list(task.names) if task.names is not None else [_stem(path) for path in task.meshes]
    events.log(f"fitting a space of {len(meshes)} shapes: {', '.join(names)}")
    extra = {} if task.mix_weight is None else {"mix_weight": task.mix_weight}
    space = fit_shape_space(meshes, field_config, train_config, names=names, on_progress=events.progress, **extra)
    save_space(task.space_path, space)
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
    surface, seconds, report = _extract_to_file(field, task.settings, task.mesh_out, events, with_report=True)
    return {"mesh_out": task.mesh_out, "extract_seconds": seconds, "vertices": len(surface.vertices),
            "faces": len(surface.faces), "resolution": task.resolution, "level": task.level, "method": task.method,
            "samples": list(report.samples), "evaluated": report.evaluated, "phases": report.seconds,
            "seconds": time.perf_counter() - start}


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
    kind, data = load_points_or_mesh(task.input)
    field = reconstruct(space, **{kind: data}, steps=task.steps, seed=task.seed, on_progress=events.progress)
    extended = space.with_shape(field.network.code, field.transform, task.name, grid=field.network.grid)
    shape = len(extended) - 1
    if task.out_space_path:
        save_space(task.out_space_path, extended)
    with _removed_on_failure(task.out_space_path):
        surface, _ = _extract_to_file(extended.shape(shape), task.extract, task.mesh_out, events)
    return {"space_path": task.out_space_path, "shape": shape, "names": extended.names, "input": kind,
            "input_size": len(data.vertices) if kind == "mesh" else len(data), "mesh_out": task.mesh_out,
            "vertices": len(surface.vertices), "faces": len(surface.faces), "report": extended.report,
            "seconds": time.perf_counter() - start}


def run_eval(task: EvalTask, events: Events) -> dict:
    from ..io.meshio import load_mesh
    from ..surface.metrics import compare_meshes

    return compare_meshes(load_mesh(task.reference), load_mesh(task.candidate), samples=task.samples,
                          seed=task.seed)


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


RUNNERS = {FitTask: run_fit, FitSpaceTask: run_fit_space, ExtractTask: run_extract, ReconstructTask: run_reconstruct,
           EvalTask: run_eval, SdfTask: run_sdf}


def _extract_to_file(field, settings: ExtractSettings, mesh_out: str, events: Events, with_report: bool = False):
    """Extract the surface and write it (an NPZ for the add-on, written atomically, or OBJ / PLY);
    returns the surface and the seconds taken (and the extraction's report)."""
    from ..io.meshio import save_mesh
    from ..surface.extraction import ExtractionReport, extract_isosurface, vertex_normals

    def on_progress(fraction):
        events.progress({"phase": "extract", "step": round(100 * fraction), "steps": 100})

    on_progress(0.0)
    start = time.perf_counter()
    report = ExtractionReport(settings.method, settings.resolution, settings.level)
    surface = extract_isosurface(field, settings.resolution, settings.level, method=settings.method,
                                 progress=on_progress, report=report)
    normals = vertex_normals(field, surface.vertices) if settings.normals else None
    save_mesh(mesh_out, surface, normals)
    seconds = time.perf_counter() - start
    return (surface, seconds, report) if with_report else (surface, seconds)


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
