"""Shared fixtures and set-up. Blender's user folders are pointed at a throw-away directory before
anything imports bpy, so tests never touch the real user's configuration or installed extensions.

The tests mirror the package: blender_tests/core/<folder> tests neural_field_addon/core/<folder>
without bpy, blender_tests/addon tests the installed extension in Blender (marked `blender`, so
`pytest -m "not blender"` runs the core alone). Markers are declared in pyproject.toml."""

from __future__ import annotations

import os
import sys
import tempfile

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_MESHES = os.path.join(os.path.dirname(REPO_ROOT), "shared", "meshes")
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

_USER_RESOURCES = tempfile.mkdtemp(prefix="neural_field_blender_user_")
os.environ["BLENDER_USER_RESOURCES"] = _USER_RESOURCES
# `from checks import ...` (this folder) and `from benchlib import ...` (scripts/, whose benchmark
# settings some tests check).
for _folder in (TESTS_DIR, os.path.join(REPO_ROOT, "scripts")):
    if _folder not in sys.path:
        sys.path.insert(0, _folder)
ADDON_TESTS = os.path.join(TESTS_DIR, "addon")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if str(item.path).startswith(ADDON_TESTS + os.sep):
            item.add_marker(pytest.mark.blender)
        if "cuda" in item.keywords and not has_cuda:
            item.add_marker(skip_cuda)


@pytest.fixture(scope="session")
def shared_mesh():
    """Path of a mesh in ../shared/meshes; skips the test when that folder is absent."""

    def path(name: str) -> str:
        full = os.path.join(SHARED_MESHES, name)
        if not os.path.isfile(full):
            pytest.skip(f"shared test mesh not available: {full}")
        return full

    return path
