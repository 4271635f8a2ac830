"""The main job, headless: install the extension into a throw-away Blender user folder, add
Suzanne, run bpy.ops.neural_field.fit(), and write out/demo.blend, out/demo.png (source and field
side by side) and out/demo.json (timings and fidelity). Run through ./scripts/demo.

    python scripts/demo.py [--steps N] [--resolution R] [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
import time

from benchlib import ROOT


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="training steps (default: 1000 on the CPU, 3000 with CUDA)")
    parser.add_argument("--resolution", type=int, help="extraction resolution (default: 128 on the CPU, 256 with CUDA)")
    parser.add_argument("--out", default=os.path.join(ROOT, "out"))
    args = parser.parse_args()

    started = time.perf_counter()
    user_folder = tempfile.mkdtemp(prefix="neural_field_demo_user_")
    os.environ["BLENDER_USER_RESOURCES"] = user_folder  # before bpy is imported
    # The compiled kernels outlive the throw-away user folder: a second demo compiles nothing.
    os.environ.setdefault("NEURAL_FIELD_CACHE", os.path.join(args.out, "kernel_cache"))
    try:
        return run(args, user_folder, started)
    finally:
        shutil.rmtree(user_folder, ignore_errors=True)


def run(args, user_folder: str, started: float) -> int:
    import bpy
    import numpy as np
    import torch

    import build_extension
    from neural_field_addon.core.geometry import TriangleMesh
    from neural_field_addon.core.io.fieldfile import read_header
    from neural_field_addon.core.surface.metrics import compare_meshes

    cuda = torch.cuda.is_available()
    steps = args.steps or (3000 if cuda else 1000)
    resolution = args.resolution or (256 if cuda else 128)
    os.makedirs(args.out, exist_ok=True)
    timings = {}

    tick = time.perf_counter()
    zip_path = build_extension.build(os.path.join(user_folder, "dist"))
    bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    # The installed extension's own modules, as Blender imported them.
    mesh_bridge = importlib.import_module("bl_ext.user_default.neural_field_addon.blender.mesh_bridge")
    timings["build_and_install_seconds"] = time.perf_counter() - tick

    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.mesh.primitive_monkey_add(size=2.0, location=(0.0, 0.0, 1.0))
    source = bpy.context.active_object
    subdivision = source.modifiers.new("Subdivision", "SUBSURF")
    subdivision.levels = 1
    bpy.ops.object.shade_smooth()

    settings = bpy.context.scene.neural_field
    settings.steps = steps
    settings.resolution = resolution
    settings.device = "AUTO"
    print(f"fitting {source.name} ({steps} steps, resolution {resolution}, {'CUDA' if cuda else 'CPU'})", flush=True)
    tick = time.perf_counter()
    result = bpy.ops.neural_field.fit()
    timings["fit_wall_seconds"] = time.perf_counter() - tick
    if result != {"FINISHED"}:
        print(f"error: fit returned {result}", file=sys.stderr)
        return 1
    field_object = bpy.data.objects[f"{source.name}.field"]

    report = read_header(bpy.path.abspath(field_object.neural_field.field_path))["report"]
    timings.update({k: report[k] for k in ("groundtruth_seconds", "train_seconds") if k in report})
    # The rest of the fit's wall time: the worker's start (none when it is warm), extraction and
    # the worker's own fidelity measurement, and the messages and files between the processes.
    timings["fit_other_seconds"] = timings["fit_wall_seconds"] - sum(
        timings.get(k, 0.0) for k in ("groundtruth_seconds", "train_seconds"))

    # Independent fidelity check: both meshes in the source's object space.
    depsgraph = bpy.context.evaluated_depsgraph_get()
    reference = TriangleMesh(*mesh_bridge.evaluated_triangles(source, depsgraph))
    candidate = TriangleMesh(*mesh_bridge.evaluated_triangles(field_object, depsgraph))
    tick = time.perf_counter()
    fidelity = compare_meshes(reference, candidate, samples=50_000)
    timings["evaluate_seconds"] = time.perf_counter() - tick

    blend_path = os.path.join(args.out, "demo.blend")
    field_file = bpy.path.abspath(field_object.neural_field.field_path)
    saved_field = os.path.join(args.out, "neural_fields", os.path.basename(field_file))
    os.makedirs(os.path.dirname(saved_field), exist_ok=True)
    shutil.copy2(field_file, saved_field)
    bpy.ops.wm.save_as_mainfile(filepath=blend_path)
    field_object.neural_field.field_path = bpy.path.relpath(saved_field)
    bpy.ops.wm.save_mainfile()

    tick = time.perf_counter()
    png_path = os.path.join(args.out, "demo.png")
    _render_side_by_side(source, field_object, png_path)
    timings["render_seconds"] = time.perf_counter() - tick
    timings["total_seconds"] = time.perf_counter() - started

    summary = {
        "mesh": "Suzanne + Subdivision (level 1)",
        "source_triangles": len(reference.faces),
        "field_triangles": len(candidate.faces),
        "device": report.get("device_name", ""),
        "steps": steps,
        "resolution": resolution,
        "parameters": report.get("parameters"),
        "fidelity": {
            "chamfer_l1": fidelity["chamfer_l1"],
            "normal_consistency": fidelity["normal_consistency"],
            "fscore_1pct": fidelity["fscore"],
            "hausdorff": fidelity["hausdorff"],
        },
        "timings": timings,
        "versions": {"blender": bpy.app.version_string, "torch": torch.__version__, "numpy": np.__version__},
    }
    json_path = os.path.join(args.out, "demo.json")
    with open(json_path, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    print(
        f"Chamfer-L1 {fidelity['chamfer_l1']:.2e} of the diagonal, normal consistency "
        f"{fidelity['normal_consistency']:.3f}, F-score@1% {fidelity['fscore']:.3f}; "
        f"total {timings['total_seconds']:.1f} s"
    )
    print(f"wrote {blend_path}\nwrote {png_path}\nwrote {json_path}")
    return 0


def _render_side_by_side(source, field_object, path: str) -> None:
    """Workbench render: the source on the left, the field's surface on the right. Objects are
    moved apart for the picture only; the saved .blend keeps the field exactly over its source."""
    import bpy
    from mathutils import Vector

    scene = bpy.context.scene
    offset = Vector((1.4, 0.0, 0.0))
    source.location -= offset
    field_object.matrix_world.translation += offset
    source.color = (0.75, 0.75, 0.78, 1.0)
    field_object.color = (0.95, 0.55, 0.25, 1.0)

    for label, x in (("Source", -offset.x), ("Neural field", offset.x)):
        text = bpy.data.objects.new(label, bpy.data.curves.new(label, "FONT"))
        text.data.body = label
        text.data.align_x = "CENTER"
        text.data.size = 0.3
        text.location = (x, 0.0, -0.35)
        text.rotation_euler = (1.5708, 0.0, 0.0)
        text.color = (0.15, 0.15, 0.15, 1.0)
        scene.collection.objects.link(text)

    camera_data = bpy.data.cameras.new("DemoCamera")
    camera = bpy.data.objects.new("DemoCamera", camera_data)
    scene.collection.objects.link(camera)
    camera.location = (0.0, -7.5, 2.2)
    camera.rotation_euler = (1.40, 0.0, 0.0)
    camera_data.lens = 40
    scene.camera = camera

    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.light = "STUDIO"
    scene.display.shading.color_type = "OBJECT"
    scene.display.shading.show_cavity = True
    scene.render.resolution_x, scene.render.resolution_y = 1200, 600
    scene.render.film_transparent = False
    scene.render.image_settings.file_format = "PNG"
    scene.render.filepath = path
    bpy.ops.render.render(write_still=True)


if __name__ == "__main__":
    sys.exit(main())
