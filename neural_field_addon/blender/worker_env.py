"""Where and how the worker runs, as the preferences and the panel decide it: the Python that
runs it, the dependency folder on its path, the device a job asks for and the job-level options.
Shared by the operators, the live preview and Install/Check Dependencies; it reads the add-on
preferences through Blender, so it needs no import of preferences.py (which draws these)."""

from __future__ import annotations

import os
import sys

import bpy

from .storage import ADDON_PACKAGE, user_folder

# How long the warm worker waits for a next job before it exits (the preferences' default).
DEFAULT_IDLE_MINUTES = 10


def addon_preferences(context=None):
    """The add-on's preferences (preferences.NeuralFieldPreferences), or None when not registered."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_PACKAGE)
    return addon.preferences if addon else None


def worker_python(context=None) -> str:
    """The preferences' Python for Training, or Blender's own Python."""
    prefs = addon_preferences(context)
    if prefs and prefs.python_path:
        return bpy.path.abspath(prefs.python_path)
    return sys.executable


def dependency_folder() -> str:
    """Where `Install Dependencies` puts PyTorch and friends for Blender's own Python."""
    return user_folder("deps")


def worker_paths() -> tuple[str, ...]:
    """What goes on the worker's path besides the package: the dependency folder, once it holds anything."""
    folder = dependency_folder()
    return (folder,) if os.path.isdir(folder) and os.listdir(folder) else ()


def job_device(context=None) -> str:
    """The device a job asks for: the panel's Device, or the preferences' where it says so."""
    context = context or bpy.context
    device = context.scene.neural_field.device
    if device == "PREFERENCES":
        prefs = addon_preferences(context)
        device = prefs.device if prefs else "AUTO"
    return device.lower()


def warm_settings(context=None) -> dict | None:
    """The warm worker's settings for a job (jobs.warm_worker's idle, device, memory), or None
    where the preferences keep no warm worker (a worker process per job)."""
    prefs = addon_preferences(context)
    minutes = prefs.worker_idle_minutes if prefs is not None else DEFAULT_IDLE_MINUTES
    if minutes <= 0:
        return None
    memory = float(prefs.gpu_memory_limit) if prefs is not None else 1.0
    return {"idle": 60.0 * minutes, "device": job_device(context), "memory": memory}


def worker_environment() -> dict:
    """What the worker's environment gets besides ours: where its compiled kernels are kept
    (core/service/caches.py), a folder of the add-on's own unless $NEURAL_FIELD_CACHE names one
    (a script's own, kept across throw-away Blender user folders)."""
    from ..core.service.caches import CACHE_ENV

    return {CACHE_ENV: os.environ.get(CACHE_ENV) or user_folder("cache")}


def job_options(context=None) -> dict:
    """Job-level worker options from the preferences (see core/service/worker.py)."""
    prefs = addon_preferences(context)
    if prefs is None:
        return {}
    options = {"cpu_fallback": bool(prefs.cpu_fallback)}
    if prefs.gpu_memory_limit < 1.0:
        options["gpu_memory_fraction"] = float(prefs.gpu_memory_limit)
    return options
