"""Click-to-mesh latency (issue 22): the worker driven exactly as the add-on drives it (blender/jobs.py:
job folders, job files, JSON lines; no bpy), each phase timed from the request to the mesh on disk.

    python scripts/bench_latency.py [--mesh stanford-bunny.obj] [--device auto] [--steps 1500]
        [--resolution 256] [--reextract 512] [--preset auto] [--cli] [--json out.json]

Rows, in order: `check` (the warm-up job Check runs, in a fresh warm worker, into a fresh kernel
cache), `first fit` (a new warm worker's first job, the worker's start included), `warm fit` (the
next job), `re-extract` (the fitted field again at --reextract), `one-shot fit` (a worker process
of its own, as with Keep Worker Warm at 0) and, with --cli, `cli fit` (a fresh `python -m
neural_field_addon.core fit --extract`). Each row has the wall seconds and the phases the worker
reported (ground truth, training, extraction, fidelity). A mesh from ../shared/meshes by name, or
Suzanne (through bpy) with --mesh suzanne."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import benchlib
from neural_field_addon.blender import jobs
from neural_field_addon.core.service.caches import CACHE_ENV, entries


def _mesh_file(name: str, folder: str) -> str:
    if name == "suzanne":
        import bpy

        bpy.ops.wm.read_homefile(use_empty=True)
        bpy.ops.mesh.primitive_monkey_add()
        mesh = bpy.context.active_object.data
        mesh.calc_loop_triangles()
        path = os.path.join(folder, "suzanne.npz")
        np.savez(path, vertices=np.array([v.co[:] for v in mesh.vertices]),
                 faces=np.array([t.vertices[:] for t in mesh.loop_triangles]))
        return path
    return os.path.abspath(name) if os.path.isfile(name) else benchlib.shared_mesh(name)


def _run(job: jobs.WorkerJob) -> tuple[float, dict]:
    start = time.perf_counter()
    job.start()
    result, errors = None, []
    while not job.done:
        for message in job.wait_messages(timeout=0.05):
            if message["type"] == "result":
                result = message
            elif message["type"] == "error":
                errors.append(message["message"])
    seconds = time.perf_counter() - start
    job.cleanup()
    if result is None:
        raise SystemExit(f"the job failed: {'; '.join(errors)}")
    return seconds, result


def _fit_job(args, mesh: str, field: str, out: str, warm, environment) -> jobs.WorkerJob:
    job = jobs.WorkerJob(warm=warm, environment=environment)
    job.add_task({"type": "fit", "mesh": mesh, "field_path": field, "preset": args.preset,
                  "train_config": {"steps": args.steps, "device": args.device},
                  "extract": {"resolution": args.resolution, "level": 0.0}, "mesh_out": out, "evaluate": True})
    return job


def _phases(result: dict) -> dict:
    report = result.get("report", {})
    return {key: round(value, 3) for key, value in (
        ("groundtruth_s", report.get("groundtruth_seconds")), ("train_s", report.get("train_seconds")),
        ("extract_s", result.get("extract_seconds", result.get("seconds"))),
        ("evaluate_s", result.get("evaluate_seconds"))) if value is not None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mesh", default="stanford-bunny.obj")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--preset", default="auto")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--reextract", type=int, default=512)
    parser.add_argument("--cli", action="store_true", help="also time a fresh CLI process")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = []

    def row(name: str, seconds: float, **extra) -> None:
        rows.append({"row": name, "wall_s": round(seconds, 3), **extra})
        print(json.dumps(rows[-1]), flush=True)

    with tempfile.TemporaryDirectory(prefix="neural_field_latency_") as folder:
        environment = {CACHE_ENV: os.path.join(folder, "cache")}
        warm = {"idle": 600.0, "device": args.device, "memory": 1.0}
        mesh = _mesh_file(args.mesh, folder)
        field, out = os.path.join(folder, "f.nfield"), os.path.join(folder, "out.npz")

        check = jobs.WorkerJob(warm=warm, environment=environment)
        check.add_task({"type": "warmup", "device": args.device})
        seconds, result = _run(check)
        row("check", seconds, devices=result["devices"], cache_files=entries(environment[CACHE_ENV]))
        jobs.shutdown_worker()

        seconds, result = _run(_fit_job(args, mesh, field, out, warm, environment))
        row("first fit", seconds, **_phases(result), chamfer=result["metrics"]["chamfer_l1"],
            worker_ready_s=round(jobs.current_worker().ready["seconds"], 3))
        seconds, result = _run(_fit_job(args, mesh, field, out, warm, environment))
        row("warm fit", seconds, **_phases(result), chamfer=result["metrics"]["chamfer_l1"],
            cache_files=entries(environment[CACHE_ENV]))
        job = jobs.WorkerJob(warm=warm, environment=environment)
        job.add_task({"type": "extract", "field_path": field, "device": args.device, "mesh_out": out,
                      "resolution": args.reextract, "level": 0.0})
        seconds, result = _run(job)
        row("re-extract", seconds, resolution=args.reextract, faces=result.get("faces"), **_phases(result))
        jobs.shutdown_worker()

        seconds, result = _run(_fit_job(args, mesh, field, out, None, environment))
        row("one-shot fit", seconds, **_phases(result))
        if args.cli:
            start = time.perf_counter()
            command = [sys.executable, "-m", "neural_field_addon.core", "fit", mesh, "-o", field, "--preset",
                       args.preset, "--steps", str(args.steps), "--device", args.device, "--extract",
                       os.path.join(folder, "out.obj"), "--resolution", str(args.resolution), "--json"]
            done = subprocess.run(command, capture_output=True, text=True, cwd=benchlib.ROOT,
                                  env={**os.environ, **environment})
            seconds = time.perf_counter() - start
            report = json.loads(done.stdout.strip().splitlines()[-1])
            work = (report["report"]["groundtruth_seconds"] + report["report"]["train_seconds"]
                    + report["extract_seconds"] + report.get("evaluate_seconds", 0.0))
            row("cli fit", seconds, work_s=round(work, 3), overhead_s=round(seconds - work, 3))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"mesh": args.mesh, "device": args.device, "steps": args.steps, "rows": rows}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
