"""The warm worker (core/service/server.py) and its driver (blender/jobs.py, which needs no bpy):
one process kept between jobs, replaced when it dies or its settings change, gone when its idle
time runs out or the process that started it ends, and a cancelled job leaves it warm."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from checks import process_gone
from neural_field_addon.blender import jobs
from neural_field_addon.core.geometry.procedural import icosphere

WARM = {"idle": 120.0, "device": "cpu", "memory": 1.0}


@pytest.fixture(autouse=True)
def _no_worker_left():
    jobs.shutdown_worker()
    yield
    jobs.shutdown_worker()


def _fit_job(steps: int = 20, warm=WARM) -> jobs.WorkerJob:
    job = jobs.WorkerJob(warm=warm)
    vertices, faces = icosphere(radius=0.5, subdivisions=2)
    np.savez(job.path("mesh.npz"), vertices=vertices, faces=faces)
    job.add_task({
        "type": "fit", "mesh": "mesh.npz", "field_path": job.path("sphere.nfield"),
        "field_config": {"width": 32, "depth": 2, "fourier_features": 16},
        "train_config": {"steps": steps, "batch": 1024, "pool_size": 8192, "device": "cpu", "report_every": 5},
        "extract": {"resolution": 24, "level": 0.0}, "mesh_out": "out.npz", "evaluate": False,
    })
    return job


def _run(job: jobs.WorkerJob, until=lambda message: False, timeout: float = 120.0) -> list:
    """Start the job and collect its messages until it is done (or `until` one of them)."""
    job.start()
    deadline, seen = time.monotonic() + timeout, []
    while not job.done and time.monotonic() < deadline:
        for message in job.wait_messages(timeout=0.2):
            seen.append(message)
            if until(message):
                return seen
    assert job.done, f"the job did not finish: {seen[-3:]}"
    return seen


def _timed(job) -> tuple[float, list]:
    start = time.monotonic()
    try:
        messages = _run(job)
    finally:
        job.cleanup()
    return time.monotonic() - start, messages


def test_a_second_job_reuses_the_worker_and_is_faster():
    first_seconds, first = _timed(_fit_job())
    pid = jobs.current_worker().pid
    second_seconds, second = _timed(_fit_job())
    assert any(m["type"] == "result" for m in first) and any(m["type"] == "result" for m in second)
    assert jobs.current_worker().pid == pid
    assert second_seconds < first_seconds


def test_a_killed_idle_worker_is_replaced_and_the_next_job_succeeds():
    _timed(_fit_job())
    worker = jobs.current_worker()
    worker.process.kill()
    assert process_gone(worker.pid)
    _, messages = _timed(_fit_job())
    assert any(m["type"] == "result" for m in messages)
    assert jobs.current_worker().pid != worker.pid


def test_another_python_restarts_it(tmp_path):
    _timed(_fit_job())
    first = jobs.current_worker()
    other = tmp_path / "python"  # the same interpreter by another path, as a preference would name it
    other.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    other.chmod(0o755)
    job = _fit_job()
    job.python = str(other)
    _, messages = _timed(job)
    assert any(m["type"] == "result" for m in messages)
    assert jobs.current_worker().pid != first.pid and process_gone(first.pid)


def test_a_cancelled_job_stops_and_the_worker_stays_warm():
    job = _fit_job(steps=200_000)
    try:
        _run(job, until=lambda m: m["type"] == "progress" and m.get("phase") == "train")
        pid = job.worker.pid
        job.cancel()
    finally:
        job.cleanup()
    _, messages = _timed(_fit_job())  # queued behind the cancelled job, which stops at its next report
    assert any(m["type"] == "result" for m in messages)
    assert jobs.current_worker().pid == pid


def test_an_idle_worker_exits_after_its_idle_time():
    _timed(_fit_job(warm={**WARM, "idle": 1.0}))
    worker = jobs.current_worker()
    assert process_gone(worker.pid, timeout=15.0)


def test_the_worker_exits_when_the_process_that_started_it_ends(tmp_path):
    # A client that starts the warm worker and dies without a word (no atexit, its pipe inherited
    # by nobody else): the worker notices its parent is gone.
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from neural_field_addon.blender import jobs
        worker = jobs.warm_worker(sys.executable, (), idle=600.0, device="cpu")
        deadline = time.monotonic() + 120
        while worker.ready is None and time.monotonic() < deadline:
            time.sleep(0.1)
        print(worker.pid, flush=True)
        os._exit(0)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    pid = int(out.stdout.split()[-1])
    assert process_gone(pid, timeout=10.0)


def test_a_python_without_the_dependencies_is_reported_by_the_job(tmp_path):
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    job = jobs.WorkerJob(python=str(tmp_path / "bare" / "bin" / "python"), warm=WARM)
    try:
        messages = _run(job)
    finally:
        job.cleanup()
    errors = [m["message"] for m in messages if m["type"] == "error"]
    assert errors and "PyTorch" in errors[0] and "Python for Training" in errors[0]


@pytest.mark.cuda
def test_an_idle_worker_holds_no_gpu_memory_beyond_its_context():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    job = _fit_job(warm={**WARM, "device": "cuda"})
    job.tasks[0]["train_config"]["device"] = "cuda"
    _timed(job)
    assert jobs.current_worker().status()["cuda_reserved"] == 0


def test_after_the_warm_up_a_fit_compiles_nothing(tmp_path):
    from neural_field_addon.core.service.caches import CACHE_ENV, entries

    environment = {CACHE_ENV: str(tmp_path / "cache")}
    warmup = jobs.WorkerJob(environment=environment)
    warmup.add_task({"type": "warmup", "device": "cpu"})
    try:
        [result] = [m for m in _run(warmup, timeout=300) if m["type"] == "result"]
    finally:
        warmup.cleanup()
    assert result["compiled"] > 0 and result["devices"] == ["cpu"]
    compiled = entries(str(tmp_path / "cache"))
    fit = _fit_job(warm=None)  # a fresh process, the way a first fit on the machine starts
    fit.environment = environment
    fit.tasks[0]["evaluate"] = True
    _, messages = _timed(fit)
    assert any(m["type"] == "result" for m in messages)
    assert entries(str(tmp_path / "cache")) == compiled


def test_prewarm_does_not_restart_a_python_that_cannot_run_jobs(tmp_path):
    # Drawing the panel prewarms at every redraw: a Python without PyTorch is started once only.
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    python = str(tmp_path / "bare" / "bin" / "python")
    first = jobs.prewarm(python, **WARM)
    deadline = time.monotonic() + 30
    while not first.unusable and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "PyTorch" in first.unusable
    assert jobs.prewarm(python, **WARM) is None and jobs.prewarm(python, **WARM) is None
    assert jobs._WORKER is first
