"""What the training Python has: python -m <package>.core.service.environment prints one JSON object.

Blender runs this in the worker's interpreter (with the dependency folder on its path) to show
in the add-on preferences what was found: PyTorch and its version, CUDA or not, the GPU, and the
optional accelerators. Nothing here imports a package that is missing; each is looked up first.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import sys

# Needed by the worker, and optional packages that make it faster.
REQUIRED = {"torch": "PyTorch", "numpy": "NumPy", "skimage": "scikit-image"}
OPTIONAL = {"numba": "Numba", "igl": "libigl", "triton": "Triton", "scipy": "SciPy"}


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        imported = __import__(module)
    except Exception as error:  # noqa: BLE001 - a broken install is reported, not raised
        return f"broken ({type(error).__name__}: {error})"
    version = getattr(imported, "__version__", None)
    if version is None:  # libigl keeps its version in the distribution's metadata only
        from importlib import metadata

        try:
            version = metadata.version({"igl": "libigl", "skimage": "scikit-image"}.get(module, module))
        except metadata.PackageNotFoundError:
            version = "installed"
    return str(version)


def describe() -> dict:
    """The interpreter, the version of each package (None where missing) and the CUDA device."""
    versions = {name: _version(module) for module, name in {**REQUIRED, **OPTIONAL}.items()}
    report = {
        "python": sys.executable,
        "python_version": platform.python_version(),
        "packages": versions,
        "missing": [name for name in REQUIRED.values() if versions[name] is None or versions[name].startswith("broken")],
        "cuda": False,
        "cuda_version": None,
        "gpu": None,
        "gpu_memory_gb": None,
    }
    if versions["PyTorch"] and not versions["PyTorch"].startswith("broken"):
        import torch

        report["cuda_version"] = torch.version.cuda
        try:
            report["cuda"] = bool(torch.cuda.is_available())
            if report["cuda"]:
                properties = torch.cuda.get_device_properties(0)
                report["gpu"] = properties.name
                report["gpu_memory_gb"] = round(properties.total_memory / 2**30, 1)
        except RuntimeError as error:  # a driver too old for this build: say so, train on the CPU
            report["cuda_error"] = str(error)
    return report


def summary(report: dict) -> str:
    """One line for a person: 'PyTorch 2.13.0, CUDA 13.0 on NVIDIA H100 (80 GB)' or what is missing."""
    if report.get("missing"):
        return "Missing: " + ", ".join(report["missing"])
    packages = report["packages"]
    line = f"PyTorch {packages['PyTorch']}"
    if report.get("cuda"):
        line += f", CUDA {report.get('cuda_version')} on {report.get('gpu')} ({report.get('gpu_memory_gb')} GB)"
    elif report.get("cuda_error"):
        line += f", CUDA unusable: {report['cuda_error']}"
    else:
        line += ", CPU only (no CUDA GPU found)"
    return line


def main() -> int:
    print(json.dumps(describe()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
