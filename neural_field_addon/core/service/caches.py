"""Where compiled kernels are kept between processes: Numba's (the CPU ground truth and fidelity
queries) and Triton's (the GPU kernels) caches, in a folder the caller owns (the add-on's user
folder; `NEURAL_FIELD_CACHE` names it), so the first fit on a machine compiles once, visibly at
set-up (the warm-up task), and every later process loads what was compiled.

Each cache gets a subfolder named by the versions that make its contents stale (Numba and
Python; Triton and PyTorch), so an upgrade starts a fresh folder rather than reading old
binaries; both libraries also key each entry by its source and target (Numba by the CPU, Triton
by the GPU's architecture), so another GPU or CPU recompiles beside the old entries. Set before
either library is imported (the worker's first step)."""

from __future__ import annotations

import os
import sys

CACHE_ENV = "NEURAL_FIELD_CACHE"


def _version(distribution: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "none"


def cache_folders(base: str) -> dict:
    """The environment variables naming each library's cache under `base`."""
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    return {"NUMBA_CACHE_DIR": os.path.join(base, f"numba-{_version('numba')}-{python}"),
            "TRITON_CACHE_DIR": os.path.join(base, f"triton-{_version('triton')}-torch-{_version('torch')}")}


def configure() -> dict:
    """Point Numba and Triton at their folders under $NEURAL_FIELD_CACHE (nothing without it, and
    a variable the user set wins); returns what was set."""
    base = os.environ.get(CACHE_ENV)
    if not base:
        return {}
    chosen = {}
    for name, folder in cache_folders(base).items():
        if not os.environ.get(name):
            os.makedirs(folder, exist_ok=True)
            os.environ[name] = folder
            chosen[name] = folder
    return chosen


def entries(base: str) -> int:
    """How many files the caches under `base` hold."""
    return sum(len(files) for _, _, files in os.walk(base)) if os.path.isdir(base) else 0
