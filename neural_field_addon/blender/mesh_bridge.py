"""bpy meshes <-> numpy arrays, with foreach_get/foreach_set (no per-vertex Python loops), and the
worker's result files as meshes (with their colours shown, colors.py)."""

from __future__ import annotations

import bpy
import numpy as np

from .colors import show_colors

# Object types whose evaluated geometry is a mesh (text, curves with a bevel or extrusion, NURBS
# surfaces and metaballs become triangles as the viewport shows them).
GEOMETRY_TYPES = {"MESH", "CURVE", "SURFACE", "FONT", "META"}


def is_collection_instance(obj) -> bool:
    return obj.type == "EMPTY" and obj.instance_type == "COLLECTION" and obj.instance_collection is not None


def _triangles_of(evaluated, colors=None):
    """Vertices and loop triangles of an evaluated object; with `colors` (a list of notes), also
    their SurfaceColors (colors.surface_colors), read while the mesh exists."""
    mesh = evaluated.to_mesh()
    try:
        mesh.calc_loop_triangles()
        vertices = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
        mesh.vertices.foreach_get("co", vertices)
        triangles = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int64)
        mesh.loop_triangles.foreach_get("vertices", triangles)
        surface = None
        if colors is not None and len(triangles):
            from .colors import surface_colors

            surface = surface_colors(evaluated.original, mesh, colors, evaluated)
    finally:
        evaluated.to_mesh_clear()
    if colors is None:
        return vertices.reshape(-1, 3), triangles.reshape(-1, 3)
    return vertices.reshape(-1, 3), triangles.reshape(-1, 3), surface


def evaluated_triangles(obj, depsgraph, colors: list | None = None):
    """Vertices (n, 3) in object space and triangles (m, 3) of the object's evaluated geometry
    (modifiers applied, as the viewport shows it). For an empty that instances a collection, the
    instanced objects' geometry, placed as they are shown, in the empty's space. With `colors` (a
    list that receives notes on what was skipped), also the surface's SurfaceColors or None."""
    if is_collection_instance(obj):
        return _instanced_triangles(obj, depsgraph, colors)
    return _triangles_of(obj.evaluated_get(depsgraph), colors)


def _instanced_triangles(obj, depsgraph, colors=None):
    to_local = np.array(obj.matrix_world.inverted(), dtype=np.float64)
    vertex_parts, face_parts, color_parts, count = [], [], [], 0
    for instance in depsgraph.object_instances:
        parent = instance.parent
        if not instance.is_instance or parent is None or parent.original != obj:
            continue
        if instance.object.type not in GEOMETRY_TYPES:
            continue
        read = _triangles_of(instance.object, colors)  # copied now: instances are temporary
        vertices, faces = read[0], read[1]
        matrix = to_local @ np.array(instance.matrix_world, dtype=np.float64)
        vertex_parts.append(vertices @ matrix[:3, :3].T + matrix[:3, 3])
        face_parts.append(faces + count)
        if colors is not None:
            color_parts.append((read[2], len(faces)))
        count += len(vertices)
    if not vertex_parts:
        empty = np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
        return empty if colors is None else (*empty, None)
    vertices, faces = np.concatenate(vertex_parts), np.concatenate(face_parts)
    if colors is None:
        return vertices, faces
    from .colors import concatenate

    return vertices, faces, concatenate(color_parts)


def evaluated_points(obj, depsgraph) -> np.ndarray:
    """Positions (n, 3) in object space of a point-cloud object's evaluated points."""
    data = obj.evaluated_get(depsgraph).data
    positions = np.empty(len(data.points) * 3, dtype=np.float64)
    data.attributes["position"].data.foreach_get("vector", positions)
    return positions.reshape(-1, 3)


def evaluated_point_colors(obj, depsgraph):
    """Linear colours (n, 3) of a point-cloud object's evaluated points from its first colour
    attribute on the points (FLOAT_COLOR or BYTE_COLOR; `color` is scene linear), or None."""
    data = obj.evaluated_get(depsgraph).data
    for attribute in data.attributes:
        if attribute.data_type in ("FLOAT_COLOR", "BYTE_COLOR") and attribute.domain == "POINT":
            values = np.empty(len(attribute.data) * 4, dtype=np.float32)
            attribute.data.foreach_get("color", values)
            return values.reshape(-1, 4)[:, :3]
    return None


def mesh_from_arrays(name: str, vertices: np.ndarray, faces: np.ndarray, normals=None) -> bpy.types.Mesh:
    """A new mesh datablock with the given triangles: flat-shaded as extracted, or with `normals`
    (n, 3) smooth-shaded with them as custom vertex normals."""
    mesh = bpy.data.meshes.new(name)
    vertices = np.ascontiguousarray(vertices, dtype=np.float32).reshape(-1)
    faces = np.ascontiguousarray(faces, dtype=np.int32).reshape(-1)
    face_count = len(faces) // 3
    mesh.vertices.add(len(vertices) // 3)
    mesh.vertices.foreach_set("co", vertices)
    mesh.loops.add(len(faces))
    mesh.loops.foreach_set("vertex_index", faces)
    mesh.polygons.add(face_count)
    mesh.polygons.foreach_set("loop_start", np.arange(0, len(faces), 3, dtype=np.int32))
    mesh.update(calc_edges=True)
    mesh.validate(clean_customdata=False)
    if normals is not None and len(mesh.vertices) == len(normals):
        mesh.polygons.foreach_set("use_smooth", np.ones(face_count, dtype=bool))
        mesh.normals_split_custom_set_from_vertices(np.asarray(normals, dtype=np.float32))
    return mesh


def load_arrays(path: str):
    """The worker's result mesh (NPZ written by core/io/meshio.py): vertices, faces, the vertex
    normals and the linear vertex colours, each None where there are none."""
    from ..core.io.meshio import load_mesh

    mesh = load_mesh(path)
    with np.load(path, allow_pickle=False) as data:
        normals = np.asarray(data["normals"]) if "normals" in data else None
        colors = np.asarray(data["colors"]) if "colors" in data else None
    return mesh.vertices, mesh.faces, normals, colors


def result_mesh(name: str, mesh_out: str):
    """A new mesh datablock of the worker's result, with its colours shown where it has them."""
    vertices, faces, normals, colors = load_arrays(mesh_out)
    mesh = mesh_from_arrays(name, vertices, faces, normals)
    if colors is not None:
        show_colors(mesh, colors)
    return mesh
