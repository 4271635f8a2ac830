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


@pytest.fixture(scope="session")
def addon(tmp_path_factory):
    """The extension built with Blender's tool and installed the way Blender installs it;
    returns the installed package (bl_ext.user_default.neural_field_addon)."""
    import importlib

    bpy = pytest.importorskip("bpy")
    sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))
    import build_extension

    zip_path = build_extension.build(str(tmp_path_factory.mktemp("dist")))
    bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    return importlib.import_module("bl_ext.user_default.neural_field_addon")


@pytest.fixture
def empty_scene(addon):
    """A fresh, empty scene with the add-on enabled."""
    import bpy

    bpy.ops.wm.read_homefile(use_empty=True)
    return bpy.context.scene
