"""The layering of docs/ARCHITECTURE.md, checked by import-linter (its contracts are in
pyproject.toml): Blender's side above the core, the core's folders each importing only those
below it, no import cycles in any folder, no bpy in the core. The contracts are shown to fail on
a copy of the package with an upward import, a cycle or a bpy import. Also: the core modules
that Blender's process imports work without torch, and no private name crosses modules."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys

import pytest

from checks import REPO_ROOT

pytest.importorskip("importlinter")
import grimp  # noqa: E402 - import-linter's graph library, installed with it

PACKAGE = "neural_field_addon"
PACKAGE_DIR = os.path.join(REPO_ROOT, PACKAGE)
LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"


def lint(root: str) -> subprocess.CompletedProcess:
    """import-linter on the package and pyproject.toml under `root`."""
    return subprocess.run([sys.executable, "-c", LINT], cwd=root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": root})


def test_the_package_keeps_every_layering_contract():
    result = lint(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.lower().replace("0 broken", "")


VIOLATIONS = {
    # geometry is below service: an upward import
    "upward import": ("core/geometry/mesh.py", "from ..service import cli  # noqa\n",
                      "The core's folders are layered"),
    # bvh_torch imports bruteforce: importing back closes a cycle
    "cycle": ("core/geometry/bruteforce.py", "from . import bvh_torch  # noqa\n", "No import cycles"),
    "bpy in the core": ("core/config.py", "import bpy  # noqa\n", "The core never imports Blender"),
}


@pytest.mark.parametrize("violation", sorted(VIOLATIONS))
def test_the_contracts_fail_on_a_violation(tmp_path, violation):
    relative, line, contract = VIOLATIONS[violation]
    shutil.copytree(PACKAGE_DIR, tmp_path / PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    shutil.copy(os.path.join(REPO_ROOT, "pyproject.toml"), tmp_path / "pyproject.toml")
    target = tmp_path / PACKAGE / relative
    target.write_text(target.read_text(encoding="utf-8") + "\n" + line, encoding="utf-8")
    result = lint(str(tmp_path))
    assert result.returncode != 0
    broken = [text for text in result.stdout.splitlines() if text.endswith("BROKEN")]
    # (an upward import between folders is a cycle between them too)
    assert any(contract in text for text in broken), result.stdout


BLOCK_HEAVY = """
import importlib.abc, sys

HEAVY = ("torch", "skimage", "scipy", "numba", "triton", "igl")


class BlockHeavy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError(f"{name} is blocked: Blender's Python may not have it")
        return None


sys.meta_path.insert(0, BlockHeavy())
"""


def core_modules_blender_imports() -> set[str]:
    """The core modules that modules of blender/ import, directly (lazy imports included)."""
    graph = grimp.build_graph(PACKAGE)
    imported = set()
    for module in graph.find_descendants(f"{PACKAGE}.blender"):
        imported |= {name for name in graph.find_modules_directly_imported_by(module)
                     if name.startswith(f"{PACKAGE}.core")}
    return imported


def test_every_core_module_blender_uses_imports_without_torch():
    modules = sorted(core_modules_blender_imports())
    # What Blender's process reads: field-file headers, meshes, settings, tasks, the loss curve.
    assert {f"{PACKAGE}.core.config", f"{PACKAGE}.core.io.fileheader", f"{PACKAGE}.core.service.tasks"} <= set(modules)
    code = BLOCK_HEAVY + f"import importlib\nfor name in {modules!r}:\n    importlib.import_module(name)\nprint('ok')"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def _module_name(path: str) -> str:
    relative = os.path.relpath(path, REPO_ROOT)[: -len(".py")].split(os.sep)
    return ".".join(relative[:-1] if relative[-1] == "__init__" else relative)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_names_crossing_modules() -> list[str]:
    """`from .x import _y` and `x._y` (x a module of the package) anywhere in the package."""
    found = []
    for folder, _, files in os.walk(PACKAGE_DIR):
        for file in files:
            if not file.endswith(".py"):
                continue
            path = os.path.join(folder, file)
            with open(path, encoding="utf-8") as handle:
                tree = ast.parse(handle.read(), path)
            package = _module_name(path) if file == "__init__.py" else _module_name(path).rpartition(".")[0]
            modules = {}  # local name -> module of the package it is bound to
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                    for alias in node.names:
                        if _is_private(alias.name):
                            found.append(f"{_module_name(path)}: from {source} import {alias.name}")
                        candidate = os.path.join(REPO_ROOT, *f"{source}.{alias.name}".split("."))
                        if os.path.isfile(candidate + ".py") or os.path.isdir(candidate):
                            modules[alias.asname or alias.name] = f"{source}.{alias.name}"
            for node in ast.walk(tree):
                if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                        and node.value.id in modules and _is_private(node.attr)):
                    found.append(f"{_module_name(path)}: {modules[node.value.id]}.{node.attr}")
    return found


def test_no_private_name_crosses_modules():
    assert private_names_crossing_modules() == []
