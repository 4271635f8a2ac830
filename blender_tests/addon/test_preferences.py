"""Add-on preferences: Check finds what the training Python has; Install Dependencies puts
packages into the dependency folder (here from an offline wheel folder) and says what it did or
why it failed; the Compute Device and the CPU fallback apply to jobs; a chosen Fields Folder
keeps new fields; a job leaves a loss-curve picture that opens as an image."""

from __future__ import annotations

import base64
import hashlib
import importlib
import os
import struct
import zipfile

import pytest

bpy = pytest.importorskip("bpy")
torch = pytest.importorskip("torch")

PACKAGE = "bl_ext.user_default.neural_field_addon"


def _module(name):
    return importlib.import_module(f"{PACKAGE}.blender.{name}")


@pytest.fixture
def prefs(addon):
    preferences = bpy.context.preferences.addons[PACKAGE].preferences
    yield preferences
    for name in ("device", "cpu_fallback", "gpu_memory_limit", "fields_folder", "python_path", "wheel_folder",
                 "worker_idle_minutes"):
        preferences.property_unset(name)


def _wheel(folder, name: str, version: str = "1.0") -> str:
    """A minimal pure-Python wheel of a module `name` defining VALUE = 42."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"VALUE = 42\n",
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: neural-field-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for path, data in files.items()
    ]
    files[f"{dist_info}/RECORD"] = ("\n".join(record + [f"{dist_info}/RECORD,,"]) + "\n").encode()
    path = os.path.join(folder, f"{name}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    return path


def test_check_reports_the_pytorch_and_device_the_worker_will_use(prefs):
    assert bpy.ops.neural_field.check_dependencies() == {"FINISHED"}
    dependencies = _module("dependencies")
    report = dependencies.PROBE.report
    assert report["packages"]["PyTorch"] == torch.__version__
    assert report["cuda"] == torch.cuda.is_available()
    assert report["missing"] == []
    assert dependencies.found_text().startswith(f"PyTorch {torch.__version__}")


def test_check_compiles_the_kernels_into_the_add_ons_cache_and_a_fit_then_compiles_nothing(prefs, empty_scene):
    from neural_field_addon.core.service.caches import CACHE_ENV, entries

    assert bpy.ops.neural_field.check_dependencies() == {"FINISHED"}
    dependencies = _module("dependencies")
    assert dependencies.WARMUP.succeeded and dependencies.WARMUP.result.startswith("Kernels ready on CPU")
    cache = _module("worker_env").worker_environment()[CACHE_ENV]
    compiled = entries(cache)
    assert compiled > 0
    prefs.worker_idle_minutes = 0  # a fresh worker process, as the first fit after a restart
    empty_scene.neural_field.steps, empty_scene.neural_field.device = 30, "CPU"
    bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=2)
    assert bpy.ops.neural_field.fit() == {"FINISHED"}
    assert entries(cache) == compiled


def test_check_of_a_python_without_pytorch_names_what_is_missing(prefs, tmp_path):
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    prefs.python_path = str(tmp_path / "bare" / "bin" / "python")
    assert bpy.ops.neural_field.check_dependencies() == {"FINISHED"}
    assert "Missing: PyTorch, NumPy, scikit-image" == _module("dependencies").found_text()


def test_install_puts_packages_into_the_dependency_folder_the_worker_uses(prefs, tmp_path):
    worker_env, dependencies = _module("worker_env"), _module("dependencies")
    _wheel(str(tmp_path), "nf_probe_pkg")
    prefs.wheel_folder = str(tmp_path)
    folder = worker_env.dependency_folder()
    try:
        assert bpy.ops.neural_field.install_dependencies(packages="nf_probe_pkg") == {"FINISHED"}
        assert os.path.isfile(os.path.join(folder, "nf_probe_pkg", "__init__.py"))
        assert dependencies.INSTALL.succeeded
        assert dependencies.INSTALL.result.startswith("Successfully installed nf_probe_pkg-1.0") or \
            dependencies.INSTALL.result.startswith("Successfully installed nf-probe-pkg-1.0")
        assert dependencies.INSTALL.progress == 1.0
        assert folder in worker_env.worker_paths()
    finally:
        import shutil

        for entry in os.listdir(folder):
            if entry.startswith("nf_probe_pkg"):
                shutil.rmtree(os.path.join(folder, entry))


def test_a_failed_install_names_the_package_and_installs_nothing(prefs, tmp_path):
    worker_env = _module("worker_env")
    prefs.wheel_folder = str(tmp_path)
    before = sorted(os.listdir(worker_env.dependency_folder()))
    with pytest.raises(RuntimeError, match=r"pip failed \(exit code 1\).*nf_absent_pkg"):
        bpy.ops.neural_field.install_dependencies(packages="nf_absent_pkg")
    assert sorted(os.listdir(worker_env.dependency_folder())) == before
    assert not _module("dependencies").INSTALL.running


def test_install_from_a_missing_offline_folder_is_refused(prefs, tmp_path):
    prefs.wheel_folder = str(tmp_path / "nowhere")
    with pytest.raises(RuntimeError, match="offline packages folder does not exist"):
        bpy.ops.neural_field.install_dependencies(packages="nf_probe_pkg")


def _tiny_fit_scene():
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=2)
    settings = bpy.context.scene.neural_field
    settings.steps, settings.resolution, settings.evaluate = 30, 24, False
    settings.device = "PREFERENCES"
    return settings


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_preferred_cuda_without_a_gpu_stops_unless_the_cpu_fallback_is_allowed(prefs):
    _tiny_fit_scene()
    prefs.device, prefs.cpu_fallback = "CUDA", False
    with pytest.raises(RuntimeError, match="no usable CUDA GPU"):
        bpy.ops.neural_field.fit()
    assert "Icosphere.field" not in bpy.data.objects

    prefs.cpu_fallback = True
    assert bpy.ops.neural_field.fit() == {"FINISHED"}
    assert bpy.data.objects["Icosphere.field"].neural_field.device.startswith("CPU")


def test_a_chosen_fields_folder_keeps_new_fields_by_absolute_path(prefs, tmp_path):
    _tiny_fit_scene()
    prefs.device = "CPU"
    prefs.fields_folder = str(tmp_path / "library")
    (tmp_path / "library").mkdir()
    (tmp_path / "shot").mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot" / "scene.blend"))
    assert bpy.ops.neural_field.fit() == {"FINISHED"}
    stored = bpy.data.objects["Icosphere.field"].neural_field.field_path
    assert os.path.dirname(stored) == str(tmp_path / "library") and os.path.isfile(stored)
    bpy.ops.wm.save_mainfile()
    assert bpy.data.objects["Icosphere.field"].neural_field.field_path == stored
    assert not (tmp_path / "shot" / "neural_fields").exists()


def test_a_fit_leaves_a_loss_curve_that_opens_as_an_image(prefs):
    _tiny_fit_scene()
    prefs.device = "CPU"
    assert bpy.ops.neural_field.fit() == {"FINISHED"}
    state = _module("operators").STATE
    with open(state.curve_path, "rb") as handle:
        head = handle.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (320, 160)
    assert state.losses[0][-1][0] > state.losses[0][0][0]  # several steps recorded, in order
    assert bpy.ops.neural_field.show_loss_curve() == {"FINISHED"}
    image = bpy.data.images["Neural Field Loss"]
    assert tuple(image.size) == (320, 160)
