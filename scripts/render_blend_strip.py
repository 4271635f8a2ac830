"""The README's slider strip, made the way an artist makes it: in Blender (headless), three
primitives (a torus, a bevelled cube, a UV sphere) are selected and fitted as one shape space with
Fit Shape Space; Mix is then set from 0 to 1 between neighbours and Extract Blend makes each
blend a mesh. The meshes are written as NPZ and rendered in a row (scripts/render_row.py).

    .venv/bin/python scripts/render_blend_strip.py OUT.png [--steps N] [--resolution R] [--mixes 0.25,0.5,0.75]
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time

import benchlib  # noqa: F401 - the checkout's package on the path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=0, help="space steps (0: the device's default)")
    parser.add_argument("--resolution", type=int, default=96)
    parser.add_argument("--mixes", default="0.25,0.5,0.75")
    args = parser.parse_args()
    user_folder = tempfile.mkdtemp(prefix="neural_field_strip_user_")
    os.environ["BLENDER_USER_RESOURCES"] = user_folder  # before bpy is imported
    try:
        return run(args, user_folder)
    finally:
        shutil.rmtree(user_folder, ignore_errors=True)


def run(args, user_folder: str) -> int:
    import bpy
    import numpy as np
    from render_row import render_row

    import build_extension

    zip_path = build_extension.build(os.path.join(user_folder, "dist"))
    bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    mesh_bridge = importlib.import_module("bl_ext.user_default.neural_field_addon.blender.mesh_bridge")

    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.mesh.primitive_torus_add(major_radius=0.75, minor_radius=0.25, location=(0, 0, 0))
    torus = bpy.context.active_object
    bpy.ops.mesh.primitive_cube_add(size=1.4, location=(3, 0, 0))
    cube = bpy.context.active_object
    bevel = cube.modifiers.new("Bevel", "BEVEL")
    bevel.width, bevel.segments = 0.2, 4
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.8, location=(6, 0, 0))
    sphere = bpy.context.active_object
    for obj in (torus, cube, sphere):
        obj.select_set(True)
    settings = bpy.context.scene.neural_field
    settings.space_steps, settings.resolution, settings.device = args.steps, args.resolution, "AUTO"
    tick = time.perf_counter()
    assert bpy.ops.neural_field.fit_shape_space() == {"FINISHED"}
    print(f"Fit Shape Space: {time.perf_counter() - tick:.1f} s", flush=True)

    folder = tempfile.mkdtemp(prefix="neural_field_strip_")
    paths, colours = [], []
    space_object = bpy.data.objects["Torus.field"]
    bpy.context.view_layer.objects.active = space_object
    mixes = [float(m) for m in args.mixes.split(",")]
    depsgraph = bpy.context.evaluated_depsgraph_get()
    for a, b in ((0, 1), (1, 2)):
        for mix in ([0.0] if a == 0 else []) + mixes + [1.0]:
            record = space_object.neural_field
            record.shape_a, record.shape_b, record.mix = a, b, mix
            assert bpy.ops.neural_field.extract() == {"FINISHED"}
            depsgraph = bpy.context.evaluated_depsgraph_get()
            vertices, faces = mesh_bridge.evaluated_triangles(space_object, depsgraph)
            paths.append(os.path.join(folder, f"blend_{a}{b}_{mix:g}.npz"))
            np.savez(paths[-1], vertices=vertices, faces=faces)
            colours.append("field" if mix in (0.0, 1.0) else "blend")
    labels = ["torus"] + [""] * len(mixes) + ["bevelled cube"] + [""] * len(mixes) + ["sphere"]
    render_row(args.out, paths, labels, yaw=-30, scale="common", colours=colours, width=1800)
    shutil.rmtree(folder, ignore_errors=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
