"""Worker subprocess: python -m <package>.core.service.worker JOB.json

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
   "train_config": {...}, "extract": EXTRACT, "mesh_out": NPZ, "evaluate": bool, "color": bool|null}
  (with a preset, the configs start from it on the device the fit runs on and the given
  fields override it; without one, from the defaults)
  {"type": "fit-space", "meshes": [NPZ, ...], "names": [...], "space_path": P, "field_config": {...},
   "train_config": {...}, "extract": EXTRACT, "mesh_out": [NPZ, ...], "mix_weight": W (optional),
   "preset": NAME (optional), "latent_dim": D (optional), "latent_grid": R (optional)}
  (one mesh_out per shape; W weighs mixed-code supervision, 0 turns it off; without a preset, or
  with "auto", the configs start from the device's shape-space defaults)
  {"type": "extract", "field_path": P, "device": D, "mesh_out": NPZ, **EXTRACT}
  {"type": "reconstruct", "space_path": P, "input": NPZ (a mesh, or an array `points`), "name": N,
   "steps": S, "seed": s, "device": D, "out_space_path": P2, "extract": EXTRACT, "mesh_out": NPZ}
  (P2: the space with the reconstruction appended as its last shape)
  {"type": "bake", "field_path": P, "mesh": NPZ (vertices, faces, corner_uvs), "image_out": PNG,
   "size": S, "device": D}
  {"type": "warmup", "device": D}
  (compiles what a fit compiles into the kernel caches, service/caches.py)
  where EXTRACT is {"resolution": R, "level": L, "method": "adaptive" | "dense", "normals": bool,
  "texture": S} (all but resolution and level optional); with normals, the NPZ also holds
  per-vertex `normals`, and for a field with colour always linear `colors`. A fit's mesh NPZ may
  hold its colours (core/appearance/surface_colors.py's COLOR_ARRAYS); "color" null fits them
  where there are any, false never. For a
  shape space, an extract task also names "shape": I, or "blend": {"I": w, ...} and "slerp": bool
  (one of shape and blend; a single field takes neither); so does a bake task.
Each object is read as a task of tasks.py (unknown keys are refused) and run by runners.py, as
the command line runs its own; the CLI's `eval` and `sdf` are tasks too.
Paths are relative to the job file's folder unless absolute. Job-level options:
"cpu_fallback": true runs a task again on the CPU where CUDA fails (out of memory, no GPU), with
a warning; "gpu_memory_fraction": f (0 < f < 1) caps the worker's share of the GPU.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

from .protocol import Channel


class JobCancelled(Exception):
    """The client cancelled the job: raised at the running task's next progress report."""


class ChannelEvents:
    """A runner's events as protocol messages of task `index`; `cancelled()` (when given) is asked
    at every progress report, and a job whose client cancelled it stops there."""

    def __init__(self, channel: Channel, index: int, cancelled=None):
        self.channel, self.index, self.cancelled = channel, index, cancelled

    def progress(self, info: dict) -> None:
        if self.cancelled is not None and self.cancelled():
            raise JobCancelled()
        self.channel.send("progress", task=self.index, **info)

    def warning(self, message: str) -> None:
        self.channel.send("warning", message=message)

    def log(self, message: str) -> None:
        self.channel.send("log", message=message)


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


def _limit_gpu_memory(fraction) -> None:
    """Cap this process's share of the GPU (the rest stays with Blender's viewport and Cycles)."""
    if fraction is None or not 0.0 < float(fraction) < 1.0:
        return
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(float(fraction), 0)


def _run_task(task, channel: Channel, index: int, cpu_fallback: bool, cancelled=None) -> dict:
    """Run one task; where CUDA fails (out of memory, or no GPU) and the user allowed it, run it
    again on the CPU and say so."""
    from .runners import run_task

    events = ChannelEvents(channel, index, cancelled)
    try:
        return run_task(task, events)
    except Exception as error:  # noqa: BLE001 - re-raised unless the CPU can take over
        if isinstance(error, JobCancelled) or not (cpu_fallback and hasattr(task, "on_cpu")
                                                   and _is_cuda_failure(error)):
            raise
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        channel.send("warning", message=f"CUDA failed ({str(error).splitlines()[0]}); running on the CPU instead")
        return run_task(task.on_cpu(), events)


def unusable_reason() -> str:
    """Why this Python cannot run jobs (missing dependencies), or ''."""
    missing = _missing_dependencies()
    if not missing:
        return ""
    return (f"the training Python ({sys.executable}) lacks {', '.join(missing)}: click Install Dependencies "
            "in the add-on preferences, or set 'Python for Training' to an interpreter that has them")


def run_job(job: dict, base: str, channel, cancelled=None) -> bool:
    """Run a job's tasks (paths relative to `base`), sending their messages on `channel` (no
    'done'); True if every task succeeded. A cancelled job stops at once (JobCancelled)."""
    from .tasks import task_from_dict

    slow = _slow_geometry_warning()
    if slow:
        channel.send("warning", message=slow)
    _limit_gpu_memory(job.get("gpu_memory_fraction"))
    cpu_fallback = bool(job.get("cpu_fallback", False))
    failed = False
    for index, data in enumerate(job.get("tasks", [])):
        try:
            result = _run_task(task_from_dict(data).relative_to(base), channel, index, cpu_fallback, cancelled)
        except JobCancelled:
            raise
        except Exception as error:  # noqa: BLE001 - every failure becomes a message
            # Expected failures (bad task, bad mesh, empty surface, CUDA out of memory) read as
            # they are; anything else is named by its type. The remaining tasks still run.
            traceback.print_exc()
            expected = isinstance(error, (ValueError, FileNotFoundError, RuntimeError, MemoryError))
            channel.send("error", task=index, message=str(error) if expected else f"{type(error).__name__}: {error}")
            failed = True
            continue
        channel.send("result", task=index, **result)
    return not failed


def read_job(job_path: str) -> dict:
    """A job file's object; OSError or ValueError when it cannot be read."""
    with open(job_path, encoding="utf-8") as handle:
        job = json.load(handle)
    if not isinstance(job, dict):
        raise ValueError("a job file holds a JSON object")
    return job


def main(argv=None) -> int:
    from .caches import configure

    configure()  # before Numba or Triton is imported
    argv = sys.argv[1:] if argv is None else argv
    channel = Channel()
    if len(argv) != 1:
        channel.send("error", task=None, message="usage: python -m ...core.service.worker JOB.json")
        channel.send("done")
        return 2
    job_path = os.path.abspath(argv[0])
    try:
        job = read_job(job_path)
    except (OSError, ValueError) as error:
        channel.send("error", task=None, message=f"cannot read job file {job_path}: {error}")
        channel.send("done")
        return 2
    reason = unusable_reason()
    if reason:
        channel.send("error", task=None, message=reason)
        channel.send("done")
        return 2
    succeeded = run_job(job, os.path.dirname(job_path), channel)
    channel.send("done")
    return 0 if succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
