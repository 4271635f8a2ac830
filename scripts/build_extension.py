"""Build the extension zip with Blender's own tool: dist/neural_field_addon-<version>.zip.

Stages the add-on package with blender_manifest.toml at its root (the layout Blender expects),
runs `blender_ext.py build` and then `blender_ext.py validate` on the result. The tool ships inside
the bpy package (addons_core/bl_pkg/cli/blender_ext.py); pass --blender-ext to use another copy.

    python scripts/build_extension.py [--output-dir dist]
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "neural_field_addon")
MANIFEST = os.path.join(ROOT, "blender_manifest.toml")


def find_blender_ext() -> str:
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: the bpy package is not installed; run ./scripts/test or pass --blender-ext")
    for location in spec.submodule_search_locations:
        found = sorted(glob.glob(os.path.join(location, "*", "scripts", "addons_core", "bl_pkg", "cli", "blender_ext.py")))
        if found:
            return found[-1]
    raise SystemExit("error: blender_ext.py not found inside the bpy package")


def manifest() -> dict:
    with open(MANIFEST, "rb") as handle:
        return tomllib.load(handle)


def build(output_dir: str, blender_ext: str | None = None) -> str:
    tool = blender_ext or find_blender_ext()
    info = manifest()
    os.makedirs(output_dir, exist_ok=True)
    output = os.path.join(output_dir, f"{info['id']}-{info['version']}.zip")
    with tempfile.TemporaryDirectory() as stage_root:
        stage = os.path.join(stage_root, info["id"])
        shutil.copytree(PACKAGE, stage, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copy2(MANIFEST, os.path.join(stage, "blender_manifest.toml"))
        subprocess.run(
            [sys.executable, tool, "build", "--source-dir", stage, "--output-filepath", output],
            check=True,
        )
    subprocess.run([sys.executable, tool, "validate", output], check=True)
    return output


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default=os.path.join(ROOT, "dist"))
    parser.add_argument("--blender-ext", help="path to blender_ext.py (default: the one inside bpy)")
    args = parser.parse_args()
    try:
        path = build(args.output_dir, args.blender_ext)
    except subprocess.CalledProcessError as error:
        print(f"error: Blender's extension tool failed ({error})", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
