"""Render meshes side by side in one picture (Blender's Workbench, headless), for the README.

    .venv/bin/python scripts/render_row.py OUT.png MESH [MESH ...] [--labels "A|B|..."]
        [--y-up] [--yaw DEG] [--scale common|each] [--colors source,field,...] [--width PX]

MESH is an OBJ, PLY or NPZ (core.io.meshio; an NPZ's `normals`, when present, shade it). With
`--scale common` (the default) all meshes keep their relative sizes (a blend strip); `each`
scales every mesh to the same height. `--y-up` turns Y-up files (most scans) to Blender's Z-up.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import benchlib  # noqa: F401 - the checkout's package on the path

COLOURS = {"source": (0.75, 0.75, 0.78, 1.0), "field": (0.95, 0.55, 0.25, 1.0), "blend": (0.55, 0.7, 0.95, 1.0)}


def _load(path: str, y_up: bool):
    import numpy as np

    from neural_field_addon.core.io.meshio import load_mesh

    mesh = load_mesh(path)
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    normals = None
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            normals = np.asarray(data["normals"]) if "normals" in data else None
    if y_up:  # (x, y, z) -> (x, -z, y): Y-up to Z-up
        vertices = vertices[:, [0, 2, 1]] * np.array([1.0, -1.0, 1.0])
        if normals is not None:
            normals = normals[:, [0, 2, 1]] * np.array([1.0, -1.0, 1.0])
    return vertices, np.asarray(mesh.faces), normals


def render_row(out: str, paths, labels=(), y_up=False, yaw=30.0, scale="common", colours=(), width=1600) -> None:
    import bpy
    import numpy as np

    from neural_field_addon.blender.mesh_bridge import mesh_from_arrays

    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    meshes = [_load(path, y_up) for path in paths]
    extents = [v.max(axis=0) - v.min(axis=0) for v, _, _ in meshes]
    common = max(float(e.max()) for e in extents)
    spacing = 1.25
    rotation = np.array([[math.cos(math.radians(yaw)), -math.sin(math.radians(yaw)), 0.0],
                         [math.sin(math.radians(yaw)), math.cos(math.radians(yaw)), 0.0], [0.0, 0.0, 1.0]])
    for index, ((vertices, faces, normals), extent) in enumerate(zip(meshes, extents)):
        factor = 1.0 / (common if scale == "common" else float(extent.max()))
        centre = (vertices.max(axis=0) + vertices.min(axis=0)) / 2
        placed = (vertices - centre) @ rotation.T * factor
        placed[:, 2] -= placed[:, 2].min()  # stand on the ground
        placed[:, 0] += (index - (len(meshes) - 1) / 2) * spacing
        turned = normals @ rotation.T if normals is not None else None
        name = labels[index] if index < len(labels) else os.path.basename(paths[index])
        obj = bpy.data.objects.new(name, mesh_from_arrays(name, placed, faces, turned))
        if turned is None:
            obj.data.shade_smooth()
        colour = colours[index] if index < len(colours) else "field"
        obj.color = COLOURS.get(colour, COLOURS["field"])
        scene.collection.objects.link(obj)
        if index < len(labels) and labels[index]:
            text = bpy.data.objects.new(f"label {index}", bpy.data.curves.new(f"label {index}", "FONT"))
            text.data.body, text.data.align_x, text.data.size = labels[index], "CENTER", 0.075
            text.location = ((index - (len(meshes) - 1) / 2) * spacing, -0.6, -0.17)
            text.rotation_euler = (math.radians(84), 0.0, 0.0)
            text.color = (0.12, 0.12, 0.12, 1.0)
            scene.collection.objects.link(text)

    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    row_width = len(meshes) * spacing
    camera.data.type = "ORTHO"
    camera.data.ortho_scale = row_width * 1.02
    tilt = math.radians(84)  # from straight down: a slightly raised front view
    target_z, view_height = 0.45, 1.45  # the meshes stand 0..1 high, captions below them
    camera.location = (0.0, -10.0 * math.sin(tilt), target_z + 10.0 * math.cos(tilt))
    camera.rotation_euler = (tilt, 0.0, 0.0)
    scene.camera = camera
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.light = "STUDIO"
    scene.display.shading.color_type = "OBJECT"
    scene.display.shading.show_cavity = True
    scene.render.resolution_x = width
    scene.render.resolution_y = int(width * view_height / camera.data.ortho_scale)
    scene.render.image_settings.file_format = "PNG"
    scene.render.filepath = os.path.abspath(out)
    bpy.ops.render.render(write_still=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("meshes", nargs="+")
    parser.add_argument("--labels", default="", help="captions separated by |, one per mesh")
    parser.add_argument("--colors", default="", help="comma-separated source|field|blend, one per mesh")
    parser.add_argument("--y-up", action="store_true")
    parser.add_argument("--yaw", type=float, default=30.0)
    parser.add_argument("--scale", choices=("common", "each"), default="common")
    parser.add_argument("--width", type=int, default=1600)
    args = parser.parse_args()
    labels = args.labels.split("|") if args.labels else ()
    colours = args.colors.split(",") if args.colors else ()
    render_row(args.out, args.meshes, labels, args.y_up, args.yaw, args.scale, colours, args.width)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
