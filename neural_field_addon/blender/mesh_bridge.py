"""bpy meshes <-> numpy arrays, with foreach_get/foreach_set (no per-vertex Python loops)."""

from __future__ import annotations

import bpy
import numpy as np


def evaluated_triangles(obj, depsgraph) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (n, 3) in object space and triangles (m, 3) of the object's evaluated mesh
    (modifiers applied, as the viewport shows it)."""
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        mesh.calc_loop_triangles()
        vertices = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
        mesh.vertices.foreach_get("co", vertices)
        triangles = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int64)
        mesh.loop_triangles.foreach_get("vertices", triangles)
    finally:
        evaluated.to_mesh_clear()
    return vertices.reshape(-1, 3), triangles.reshape(-1, 3)


def evaluated_points(obj, depsgraph) -> np.ndarray:
    """Positions (n, 3) in object space of a point-cloud object's evaluated points."""
    data = obj.evaluated_get(depsgraph).data
    positions = np.empty(len(data.points) * 3, dtype=np.float64)
    data.attributes["position"].data.foreach_get("vector", positions)
    return positions.reshape(-1, 3)


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
