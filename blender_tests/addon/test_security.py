"""Security, packaging and cancelling: the worker is started without a shell in a folder only the
user can read; names from the scene stay data; a field file holding a pickle is refused without
running it; the built zip validates with Blender's own tool; Cancel stops a job within a second
and leaves the scene as it was (and the warm worker warm)."""

from __future__ import annotations

import importlib
import os
import stat
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

PACKAGE = "bl_ext.user_default.neural_field_addon"


def _module(name):
    return importlib.import_module(f"{PACKAGE}.blender.{name}")


def test_the_job_folder_is_private_and_the_worker_runs_without_a_shell(addon):
    jobs = _module("jobs")
    job = jobs.WorkerJob()
    try:
        assert stat.S_IMODE(os.stat(job.folder).st_mode) & 0o077 == 0
        job.start()  # no tasks: the worker starts, finds nothing to do and says done
        assert isinstance(job.process.args, list) and job.process.args[:2] == [job.python, "-m"]
        while not job.done:
            job.wait_messages(timeout=1.0)
    finally:
        job.cleanup()
    assert not os.path.exists(job.folder)


def test_names_with_shell_syntax_stay_names(quick_scene, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=2)
    name = "$(touch pwned) `touch pwned2`; touch pwned3 'x\""
    bpy.context.active_object.name = name
    assert bpy.ops.neural_field.fit() == {"FINISHED"}
    [field] = [obj for obj in bpy.data.objects if obj.neural_field.is_field]
    assert os.path.isfile(bpy.path.abspath(field.neural_field.field_path))
    assert not any(entry.startswith("pwned") for entry in os.listdir(tmp_path))
    assert not any(entry.startswith("pwned") for entry in os.listdir(os.path.dirname(field.neural_field.field_path)))


def test_a_field_file_holding_a_pickle_is_refused_without_running_it(quick_scene, tmp_path):
    import pickle

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "ran"), "w"))

    path = tmp_path / "evil.nfield"
    np.savez(path.with_suffix(""), header=np.array([pickle.dumps(Payload())], dtype=object))
    os.replace(str(path.with_suffix("")) + ".npz", path)
    storage = _module("storage")
    problem = storage.field_problem(str(path))
    assert problem and "evil.nfield" in problem
    assert not (tmp_path / "ran").exists()


def test_the_extension_zip_validates_with_blenders_tool(addon, tmp_path):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
    import build_extension

    zip_path = build_extension.build(str(tmp_path))
    tool = build_extension.find_blender_ext()
    checked = subprocess.run([sys.executable, tool, "validate", zip_path], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
    assert "blender_manifest.toml" in names and "__init__.py" in names
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)


def test_cancel_stops_a_job_within_a_second_and_leaves_the_scene_as_it_was(quick_scene):
    bpy.ops.mesh.primitive_monkey_add()
    bpy.context.scene.neural_field.steps = 100_000
    before = sorted(bpy.data.objects.keys()), sorted(bpy.data.meshes.keys()), sorted(bpy.data.collections.keys())
    state = _module("operators").STATE
    asked = {}

    def cancel_when_training():
        for _ in range(1200):
            if state.job is not None and "Training" in state.status:
                asked["process"], asked["at"] = state.job.process, time.monotonic()
                state.cancel_requested = True
                return
            time.sleep(0.05)

    canceller = threading.Thread(target=cancel_when_training, daemon=True)
    canceller.start()
    assert bpy.ops.neural_field.fit() == {"CANCELLED"}
    stopped = time.monotonic()
    canceller.join(timeout=5)
    assert stopped - asked["at"] < 1.0
    # The warm worker stays, and the job stopped in it: it answers, which it does between jobs only.
    assert asked["process"].poll() is None
    assert _module("jobs").current_worker().status(timeout=15)["pid"] == asked["process"].pid
    after = sorted(bpy.data.objects.keys()), sorted(bpy.data.meshes.keys()), sorted(bpy.data.collections.keys())
    assert after == before and not state.running
