"""Worker subprocess: python -m <package>.core.worker JOB.json

Runs the tasks of a job file and speaks typed JSON lines on stdout, one object per line:
  {"type": "progress", "task": i, "phase": ..., "step": s, "steps": n, "loss": ..., ...}
  {"type": "log" | "warning", "message": ...}
  {"type": "result", "task": i, ...}       one per finished task
  {"type": "error", "task": i, "message": ...}
  {"type": "done"}                          last line of a job that ran to the end
Nothing else is written to stdout: stray prints from libraries are sent to stderr. Arrays
travel as files in the job folder (meshes as NPZ), never through the pipe.

Job file: {"tasks": [...]}, each task one of
  {"type": "fit", "mesh": NPZ, "field_path": P, "preset": NAME or null, "field_config": {...},
   "train_config": {...}, "extract": EXTRACT, "mesh_out": NPZ, "evaluate": bool}
  (with a preset, the configs start from it on the device the fit runs on and the given
  fields override it; without one, from the defaults)
  {"type": "fit-space", "meshes": [NPZ, ...], "names": [...], "space_path": P, "field_config": {...},
   "train_config": {...}, "extract": EXTRACT, "mesh_out": [NPZ, ...], "mix_weight": W (optional)}
  (one mesh_out per shape; W weighs mixed-code supervision, 0 turns it off)
  {"type": "extract", "field_path": P, "device": D, "mesh_out": NPZ, **EXTRACT}
  {"type": "reconstruct", "space_path": P, "input": NPZ (a mesh, or an array `points`), "name": N,
   "steps": S, "seed": s, "device": D, "out_space_path": P2, "extract": EXTRACT, "mesh_out": NPZ}
  (P2: the space with the reconstruction appended as its last shape)
  where EXTRACT is {"resolution": R, "level": L, "method": "adaptive" | "dense", "normals": bool}
  (method and normals optional); with normals, the NPZ also holds per-vertex `normals`. For a
  shape space, an extract task also names "shape": I, or "blend": {"I": w, ...} and "slerp": bool.
Paths are relative to the job file's folder unless absolute. Job-level options:
"cpu_fallback": true runs a task again on the CPU where CUDA fails (out of memory, no GPU), with
a warning; "gpu_memory_fraction": f (0 < f < 1) caps the worker's share of the GPU.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback


class _Channel:
    """The protocol stream: the real stdout, kept away from everything else that prints."""

    def __init__(self):
        self._stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding="utf-8")
        sys.stdout.flush()
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        sys.stdout = sys.stderr

    def send(self, kind: str, **payload) -> None:
        self._stream.write(json.dumps({"type": kind, **payload}) + "\n")
        self._stream.flush()


def _resolve(base: str, path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(base, path)


def _extract_to_file(field, settings: dict, mesh_out: str, channel, index: int):
    """Extract the surface and write it (NPZ, atomically) for the add-on to import; returns the
    surface and the seconds taken."""
    from .extraction import extract_isosurface, vertex_normals
    from .meshio import save_mesh

    def on_progress(fraction):
        channel.send("progress", task=index, phase="extract", step=round(100 * fraction), steps=100)

    on_progress(0.0)
    start = time.perf_counter()
    surface = extract_isosurface(field, settings["resolution"], settings.get("level", 0.0),
                                 method=settings.get("method", "adaptive"), progress=on_progress)
    normals = vertex_normals(field, surface.vertices) if settings.get("normals") else None
    save_mesh(mesh_out, surface, normals)
    return surface, time.perf_counter() - start


def run_fit(task: dict, base: str, channel: _Channel, index: int) -> dict:
    from .config import build_configs, slow_configuration_warning
    from .devices import resolve_device
    from .fieldfile import save_field
    from .meshio import load_mesh
    from .training import fit_field

    mesh = load_mesh(_resolve(base, task["mesh"]))
    train = task.get("train_config", {})
    device = resolve_device(train.get("device", "auto"))
    field_config, train_config = build_configs(task.get("preset"), device, task.get("field_config", {}), train)

    extract = task.get("extract") or {}
    if field_config.kind == "occupancy" and extract.get("level", 0.0) != 0.0:
        raise ValueError("an occupancy field has no distance scale, so it cannot be extracted at a level "
                         f"offset ({extract['level']:g}): set the level to 0, or fit a signed-distance field")
    slow = slow_configuration_warning(field_config, train_config, device)
    if slow:
        channel.send("warning", message=slow)

    def on_progress(info):
        channel.send("progress", task=index, **info)

    field = fit_field(mesh, field_config, train_config, on_progress=on_progress)
    field_path = _resolve(base, task["field_path"])
    save_field(field_path, field)
    result = {"field_path": field_path, "report": field.report}
    try:
        _extract_after_fit(task, base, channel, index, mesh, field, result)
    except BaseException:
        os.remove(field_path)  # nothing will reference it: leave no orphan field file
        raise
    return result


def _extract_after_fit(task, base, channel, index, mesh, field, result) -> None:
    from .metrics import compare_meshes

    extract = task.get("extract")
    if extract:
        mesh_out = _resolve(base, task["mesh_out"])
        surface, result["extract_seconds"] = _extract_to_file(field, extract, mesh_out, channel, index)
        result["mesh_out"] = mesh_out
        if task.get("evaluate", True):
            channel.send("progress", task=index, phase="evaluate", step=0, steps=1)
            start = time.perf_counter()
            result["metrics"] = compare_meshes(mesh, surface, samples=20_000)
            result["evaluate_seconds"] = time.perf_counter() - start


def run_extract(task: dict, base: str, channel: _Channel, index: int) -> dict:
    from .devices import resolve_device
    from .fieldfile import load_field

    from .fieldfile import is_space, load_space

    path, device = _resolve(base, task["field_path"]), resolve_device(task.get("device", "auto"))
    if is_space(path):
        space = load_space(path, device=device)
        if task.get("blend"):
            field = space.blend({int(i): float(w) for i, w in task["blend"].items()}, spherical=bool(task.get("slerp")))
        else:
            field = space.shape(int(task.get("shape", 0)))
    else:
        field = load_field(path, device=device)
    mesh_out = _resolve(base, task["mesh_out"])
    _, seconds = _extract_to_file(field, task, mesh_out, channel, index)
    return {"mesh_out": mesh_out, "extract_seconds": seconds}


def run_fit_space(task: dict, base: str, channel: _Channel, index: int) -> dict:
    from .config import with_overrides
    from .devices import resolve_device
    from .fieldfile import save_space
    from .meshio import load_mesh
    from .shapespace import fit_shape_space, space_configs

    meshes = [load_mesh(_resolve(base, path)) for path in task["meshes"]]
    device = resolve_device(task.get("train_config", {}).get("device", "auto"))
    field_config, train_config = space_configs(device)
    field_config = with_overrides(field_config, task.get("field_config", {}))
    train_config = with_overrides(train_config, task.get("train_config", {}))

    def on_progress(info):
        channel.send("progress", task=index, **info)

    extra = {"mix_weight": float(task["mix_weight"])} if "mix_weight" in task else {}
    space = fit_shape_space(meshes, field_config, train_config, names=task.get("names"), on_progress=on_progress,
                            **extra)
    space_path = _resolve(base, task["space_path"])
    save_space(space_path, space)
    result = {"space_path": space_path, "report": space.report, "names": space.names, "mesh_out": []}
    try:
        for shape, mesh_out in enumerate(task["mesh_out"]):
            mesh_out = _resolve(base, mesh_out)
            _extract_to_file(space.shape(shape), task["extract"], mesh_out, channel, index)
            result["mesh_out"].append(mesh_out)
    except BaseException:
        os.remove(space_path)  # nothing will reference it: leave no orphan file
        raise
    return result


def run_reconstruct(task: dict, base: str, channel: _Channel, index: int) -> dict:
    """Fit a code to a mesh or a point cloud with the space's decoder frozen, and write a copy of
    the space with the reconstruction as one more shape (the source space stays as it was)."""
    from .devices import resolve_device
    from .fieldfile import load_space, save_space
    from .meshio import load_points_or_mesh
    from .shapespace import INFERENCE_STEPS, reconstruct

    space = load_space(_resolve(base, task["space_path"]), device=resolve_device(task.get("device", "auto")))
    kind, data = load_points_or_mesh(_resolve(base, task["input"]))

    def on_progress(info):
        channel.send("progress", task=index, **info)

    field = reconstruct(space, **{kind: data}, steps=int(task.get("steps", INFERENCE_STEPS)),
                        seed=int(task.get("seed", 0)), on_progress=on_progress)
    extended = space.with_shape(field.network.code, field.transform, task.get("name", "reconstruction"),
                                grid=field.network.grid)
    space_path = _resolve(base, task["out_space_path"])
    save_space(space_path, extended)
    mesh_out = _resolve(base, task["mesh_out"])
    try:
        _extract_to_file(extended.shape(len(extended) - 1), task["extract"], mesh_out, channel, index)
    except BaseException:
        os.remove(space_path)  # nothing will reference it: leave no orphan file
        raise
    return {"space_path": space_path, "shape": len(extended) - 1, "names": extended.names, "input": kind,
            "mesh_out": mesh_out, "report": extended.report}


RUNNERS = {"fit": run_fit, "fit-space": run_fit_space, "extract": run_extract, "reconstruct": run_reconstruct}


def _slow_geometry_warning() -> str:
    """Without Numba or libigl, ground truth falls back to the brute-force reference."""
    import importlib.util

    if any(importlib.util.find_spec(name) for name in ("numba", "igl", "triton")):
        return ""
    return ("neither numba nor libigl is installed for the training Python: ground truth uses the "
            "slow brute-force path (minutes on large meshes)")


def _missing_dependencies() -> list[str]:
    import importlib.util

    from .environment import REQUIRED

    return [name for module, name in REQUIRED.items() if importlib.util.find_spec(module) is None]


def _is_cuda_failure(error: BaseException) -> bool:
    """CUDA ran out of memory, or was asked for and is not there: the failures a CPU run avoids."""
    import torch

    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    text = str(error)
    return "CUDA out of memory" in text or "no usable CUDA GPU" in text


def _on_cpu(task: dict) -> dict:
    """The same task with every device setting it has set to the CPU."""
    task = dict(task)
    if "train_config" in task:
        task["train_config"] = {**task["train_config"], "device": "cpu"}
    if "device" in task:
        task["device"] = "cpu"
    return task


def _limit_gpu_memory(fraction) -> None:
    """Cap this process's share of the GPU (the rest stays with Blender's viewport and Cycles)."""
    if fraction is None or not 0.0 < float(fraction) < 1.0:
        return
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(float(fraction), 0)


def _run_task(runner, task, base, channel, index, cpu_fallback: bool) -> dict:
    """Run one task; where CUDA fails (out of memory, or no GPU) and the user allowed it, run it
    again on the CPU and say so."""
    try:
        return runner(task, base, channel, index)
    except Exception as error:  # noqa: BLE001 - re-raised unless the CPU can take over
        if not (cpu_fallback and _is_cuda_failure(error)):
            raise
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        channel.send("warning", message=f"CUDA failed ({str(error).splitlines()[0]}); running on the CPU instead")
        return runner(_on_cpu(task), base, channel, index)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    channel = _Channel()
    if len(argv) != 1:
        channel.send("error", task=None, message="usage: python -m ...core.worker JOB.json")
        channel.send("done")
        return 2
    job_path = os.path.abspath(argv[0])
    try:
        with open(job_path, encoding="utf-8") as handle:
            job = json.load(handle)
    except (OSError, ValueError) as error:
        channel.send("error", task=None, message=f"cannot read job file {job_path}: {error}")
        channel.send("done")
        return 2
    missing = _missing_dependencies()
    if missing:
        channel.send(
            "error",
            task=None,
            message=f"the training Python ({sys.executable}) lacks {', '.join(missing)}: click Install "
            "Dependencies in the add-on preferences, or set 'Python for Training' to an interpreter that has them",
        )
        channel.send("done")
        return 2
    slow = _slow_geometry_warning()
    if slow:
        channel.send("warning", message=slow)
    _limit_gpu_memory(job.get("gpu_memory_fraction"))
    cpu_fallback = bool(job.get("cpu_fallback", False))
    base = os.path.dirname(job_path)
    failed = False
    for index, task in enumerate(job.get("tasks", [])):
        runner = RUNNERS.get(task.get("type"))
        if runner is None:
            channel.send("error", task=index, message=f"unknown task type {task.get('type')!r}")
            failed = True
            continue
        try:
            result = _run_task(runner, task, base, channel, index, cpu_fallback)
        except Exception as error:  # noqa: BLE001 - every failure becomes a message
            # Expected failures (bad mesh, empty surface, CUDA out of memory) read as they are;
            # anything else is named by its type. The remaining tasks still run.
            traceback.print_exc()
            expected = isinstance(error, (ValueError, FileNotFoundError, RuntimeError, MemoryError))
            channel.send("error", task=index, message=str(error) if expected else f"{type(error).__name__}: {error}")
            failed = True
            continue
        channel.send("result", task=index, **result)
    channel.send("done")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
