"""Shared fixtures. Blender's user folders are pointed at a throw-away directory before anything
imports bpy, so tests never touch the real user's configuration or installed extensions."""

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
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped where there is none)")
    config.addinivalue_line("markers", "blender: needs the bpy module")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
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
