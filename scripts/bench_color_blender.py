"""Colour fits through the add-on in Blender (issue 19's Blender targets): a multi-material mesh and
a procedural material (Cycles-baked), each fitted with bpy.ops.neural_field.fit() and measured by
the fit itself (colour PSNR in sRGB of the result's vertex colours and of the field, against the
source's colours as the add-on read them).

    python scripts/bench_color_blender.py [--steps N] [--resolution R] [--export DIR [--export-only]]

Cases: Suzanne with four materials by height (plain Base Colors), and a UV sphere whose Base Color
is a Voronoi texture on Generated coordinates (a procedural node tree, baked).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import benchlib  # noqa: F401 - the checkout's package on the path


def _material(bpy, name, color):
    material = bpy.data.materials.new(name)
    material.use_nodes = True
    material.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (*color, 1.0)
    return material


def multi_material(bpy):
    bpy.ops.mesh.primitive_monkey_add()
    obj = bpy.context.active_object
    bpy.ops.object.modifier_add(type="SUBSURF")
    colors = ((0.8, 0.1, 0.1), (0.1, 0.6, 0.1), (0.1, 0.2, 0.8), (0.8, 0.7, 0.1))
    for index, color in enumerate(colors):
        obj.data.materials.append(_material(bpy, f"Band {index}", color))
    for polygon in obj.data.polygons:
        polygon.material_index = min(3, int((polygon.center.z + 1.0) / 0.5))
    return obj


def procedural(bpy):
    bpy.ops.mesh.primitive_uv_sphere_add(radius=1.0, location=(3.0, 0.0, 0.0), segments=64, ring_count=32)
    obj = bpy.context.active_object
    material = bpy.data.materials.new("Cells")
    material.use_nodes = True
    tree = material.node_tree
    coordinates = tree.nodes.new("ShaderNodeTexCoord")
    cells = tree.nodes.new("ShaderNodeTexVoronoi")
    cells.inputs["Scale"].default_value = 3.0
    tree.links.new(coordinates.outputs["Generated"], cells.inputs["Vector"])
    tree.links.new(cells.outputs["Color"], tree.nodes["Principled BSDF"].inputs["Base Color"])
    obj.data.materials.append(material)
    return obj


def export(bpy, obj, path):
    """The object's evaluated triangles and colours, as the add-on sends them to a fit."""
    import importlib

    import numpy as np

    from neural_field_addon.core.appearance.surface_colors import colors_to_arrays

    mesh_bridge = importlib.import_module("bl_ext.user_default.neural_field_addon.blender.mesh_bridge")
    notes = []
    vertices, faces, colors = mesh_bridge.evaluated_triangles(obj, bpy.context.evaluated_depsgraph_get(), notes)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(path, vertices=vertices, faces=faces, **colors_to_arrays(colors))
    print(f"wrote {path}: {len(faces)} triangles{'; ' + '; '.join(notes) if notes else ''}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--export", default=None, help="folder to write each case's source as the add-on "
                        "reads it (NPZ: vertices, faces, colours), for scripts/bench_color.py --mesh on a GPU")
    parser.add_argument("--export-only", action="store_true", help="write the sources and fit nothing")
    args = parser.parse_args()
    user_folder = tempfile.mkdtemp(prefix="neural_field_bench_user_")
    os.environ["BLENDER_USER_RESOURCES"] = user_folder  # before bpy is imported
    try:
        import bpy

        import build_extension

        zip_path = build_extension.build(os.path.join(user_folder, "dist"))
        bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
        rows = []
        for name, make in (("multi-material Suzanne (subdivided)", multi_material), ("procedural Voronoi sphere", procedural)):
            bpy.ops.wm.read_homefile(use_empty=True)
            source = make(bpy)
            if args.export:
                export(bpy, source, os.path.join(args.export, f"{make.__name__}.npz"))
            if args.export_only:
                continue
            settings = bpy.context.scene.neural_field
            settings.steps, settings.resolution, settings.device = args.steps, args.resolution, "AUTO"
            start = time.perf_counter()
            assert bpy.ops.neural_field.fit() == {"FINISHED"}
            seconds = time.perf_counter() - start
            record = bpy.data.objects[f"{source.name}.field"].neural_field
            rows.append((name, seconds, record.chamfer, record.color_psnr, record.field_color_psnr, record.device))
        if args.export_only:
            return 0
        print(f"\n{args.steps} steps, extraction at {args.resolution}")
        print("| case | fit s (wall) | Chamfer | vertex PSNR | field PSNR | device |")
        print("|---|---|---|---|---|---|")
        for name, seconds, chamfer, vertex, field, device in rows:
            print(f"| {name} | {seconds:.1f} | {chamfer:.2e} | {vertex:.2f} | {field:.2f} | {device} |")
        return 0
    finally:
        shutil.rmtree(user_folder, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
