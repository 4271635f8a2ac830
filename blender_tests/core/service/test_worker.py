"""The worker subprocess and its driver (blender/jobs.py, which needs no bpy): typed JSON lines,
results as files, cancellation within a second, a clear error when the worker dies."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from neural_field_addon.blender.jobs import WorkerJob
from neural_field_addon.core.geometry.procedural import icosphere


def _wait_for(job, predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        for message in job.wait_messages(timeout=0.2):
            seen.append(message)
            if predicate(message):
                return seen
        if job.done:
            break
    return seen


def _fit_task(job, steps):
    vertices, faces = icosphere(radius=0.5, subdivisions=2)
    np.savez(job.path("mesh.npz"), vertices=vertices, faces=faces)
    return {
        "type": "fit",
        "mesh": "mesh.npz",
        "field_path": job.path("sphere.nfield"),
        "field_config": {"width": 32, "depth": 2, "fourier_features": 16},
        "train_config": {"steps": steps, "batch": 1024, "pool_size": 8192, "device": "cpu", "report_every": 5},
        "extract": {"resolution": 24, "level": 0.0},
        "mesh_out": "out.npz",
        "evaluate": False,
    }


def test_worker_reports_progress_then_result_then_done():
    job = WorkerJob()
    try:
        job.add_task(_fit_task(job, steps=20))
        job.start()
        messages = _wait_for(job, lambda m: m["type"] == "done")
        kinds = [m["type"] for m in messages]
        assert "progress" in kinds and kinds[-1] == "done"
        result = next(m for m in messages if m["type"] == "result")
        assert os.path.isfile(result["field_path"])
        with np.load(result["mesh_out"]) as data:
            assert data["faces"].shape[1] == 3 and len(data["faces"]) > 0
    finally:
        job.cleanup()


def test_cancel_stops_worker_within_a_second():
    job = WorkerJob()
    try:
        job.add_task(_fit_task(job, steps=1_000_000))
        job.start()
        _wait_for(job, lambda m: m["type"] == "progress" and m.get("phase") == "train")
        start = time.monotonic()
        job.cancel()
        assert time.monotonic() - start < 1.0
        assert job.process.poll() is not None
    finally:
        job.cleanup()
    assert not os.path.exists(job.folder)


def test_worker_error_names_the_bad_mesh():
    job = WorkerJob()
    try:
        np.savez(job.path("bad.npz"), vertices=np.zeros((3, 3)), faces=np.zeros((0, 3), dtype=np.int64))
        task = _fit_task(job, steps=5)
        task["mesh"] = "bad.npz"
        job.add_task(task)
        job.start()
        messages = _wait_for(job, lambda m: m["type"] == "done")
        errors = [m for m in messages if m["type"] == "error"]
        assert errors and "no faces" in errors[0]["message"]
    finally:
        job.cleanup()


def test_worker_that_dies_gives_an_error_with_exit_code():
    job = WorkerJob(python="/bin/false")
    try:
        job.start()
        messages = _wait_for(job, lambda m: m["type"] == "done", timeout=10)
        errors = [m for m in messages if m["type"] == "error"]
        assert errors and "stopped unexpectedly" in errors[0]["message"]
    finally:
        job.cleanup()


def test_worker_without_pytorch_says_which_packages_are_missing(tmp_path):
    import subprocess
    import sys

    # A bare virtual environment: the interpreter runs, but has no PyTorch.
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    job = WorkerJob(python=str(tmp_path / "bare" / "bin" / "python"))
    try:
        job.add_task({"type": "extract", "field_path": "x.nfield", "resolution": 16, "mesh_out": "o.npz"})
        job.start()
        messages = _wait_for(job, lambda m: m["type"] == "done", timeout=30)
        errors = [m for m in messages if m["type"] == "error"]
        assert errors and "PyTorch" in errors[0]["message"] and "Python for Training" in errors[0]["message"]
    finally:
        job.cleanup()


def test_occupancy_fit_with_a_level_offset_is_refused_before_training():
    job = WorkerJob()
    try:
        task = _fit_task(job, steps=1_000_000)  # would run for hours if it started training
        task["field_config"]["kind"] = "occupancy"
        task["extract"]["level"] = 0.05
        job.add_task(task)
        job.start()
        messages = _wait_for(job, lambda m: m["type"] == "done", timeout=30.0)
        error = next(m for m in messages if m["type"] == "error")
        assert "occupancy field has no distance scale" in error["message"]
        assert not any(m.get("phase") == "train" for m in messages)
        assert not os.path.exists(task["field_path"])
    finally:
        job.cleanup()


@pytest.mark.cuda
def test_cuda_out_of_memory_stops_with_a_message_or_falls_back_to_the_cpu_when_allowed():
    outcomes = {}
    for fallback in (False, True):
        # A share of the GPU far too small for a pool of a million points.
        job = WorkerJob(options={"cpu_fallback": fallback, "gpu_memory_fraction": 0.0002})
        task = _fit_task(job, steps=10)
        task["train_config"].update(device="cuda", pool_size=1 << 20)
        job.add_task(task)
        job.start()
        try:
            outcomes[fallback] = _wait_for(job, lambda m: m["type"] == "done", timeout=240)
        finally:
            job.cleanup()
    refused = outcomes[False]
    assert not [m for m in refused if m["type"] == "result"]
    assert any(m["type"] == "error" and "out of memory" in m["message"] for m in refused)
    fell_back = outcomes[True]
    assert any(m["type"] == "warning" and "running on the CPU instead" in m["message"] for m in fell_back)
    [result] = [m for m in fell_back if m["type"] == "result"]
    assert result["report"]["device_name"].startswith("CPU")
