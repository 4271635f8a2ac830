"""The warm worker as the add-on drives it: every job of a Blender session runs in one process,
a new Python preference starts another, and when Blender's process ends no worker is left."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap

import pytest

from checks import process_gone

bpy = pytest.importorskip("bpy")

PACKAGE = "bl_ext.user_default.neural_field_addon"


def _module(name):
    return importlib.import_module(f"{PACKAGE}.blender.{name}")


@pytest.fixture
def scene(quick_scene):
    yield quick_scene
    bpy.context.preferences.addons[PACKAGE].preferences.python_path = ""


def _fit_a_sphere() -> None:
    bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=2)
    assert bpy.ops.neural_field.fit() == {"FINISHED"}


def test_every_job_of_a_session_runs_in_one_warm_worker(scene):
    _fit_a_sphere()
    pid = _module("jobs").current_worker().pid
    bpy.ops.object.select_all(action="DESELECT")
    _fit_a_sphere()
    assert _module("jobs").current_worker().pid == pid


def test_a_new_python_preference_starts_a_new_worker(scene, tmp_path):
    _fit_a_sphere()
    first = _module("jobs").current_worker().pid
    wrapper = tmp_path / "python"  # the same interpreter by another path, as an artist might name it
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    bpy.context.preferences.addons[PACKAGE].preferences.python_path = str(wrapper)
    bpy.ops.object.select_all(action="DESELECT")
    _fit_a_sphere()
    worker = _module("jobs").current_worker()
    assert worker.pid != first and worker.process.args[0] == str(wrapper)
    assert process_gone(first)


def test_when_blenders_process_ends_no_worker_is_left(addon, tmp_path):
    script = textwrap.dedent(f"""
        import time
        import bpy
        bpy.ops.preferences.addon_enable(module={PACKAGE!r})
        import importlib
        driver = importlib.import_module({PACKAGE!r} + ".blender.driver")
        jobs = importlib.import_module({PACKAGE!r} + ".blender.jobs")
        driver.prewarm(bpy.context)  # what drawing the panel does
        worker = jobs.current_worker()
        deadline = time.monotonic() + 120
        while worker.ready is None and time.monotonic() < deadline:
            time.sleep(0.1)
        print("WORKER", worker.pid, worker.ready is not None, flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240,
                         env=dict(os.environ))
    line = next(line for line in out.stdout.splitlines() if line.startswith("WORKER"))
    _, pid, ready = line.split()
    assert ready == "True"
    assert process_gone(int(pid), timeout=10.0)
