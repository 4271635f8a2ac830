"""What the operators take from the selection, checked before any job starts (InputError names
the problem): the objects to fit, exported as triangles into the job folder; the shape-space
object and the inputs of a reconstruction, as the arrays the worker reads."""

from __future__ import annotations

import numpy as np

from . import mesh_bridge, storage
from .driver import InputError

# Surface points taken from a mesh reconstructed as points.
POINT_SAMPLES = 20_000


def selected_sources(context) -> tuple[list, list]:
    """The selected objects that have geometry to fit (meshes, text, curves, surfaces, metaballs,
    and empties instancing a collection) and the names of those skipped (cameras, lights, ...)."""
    selected = list(context.selected_objects)
    active = context.active_object
    if not selected:
        if active is not None and active.type != "MESH":
            raise InputError(f"The active object '{active.name}' is a {active.type.lower()}, not a mesh: "
                             "select one or more mesh objects")
        raise InputError("Nothing is selected: select one or more mesh objects to fit")
    sources = [obj for obj in selected
               if obj.type in mesh_bridge.GEOMETRY_TYPES or mesh_bridge.is_collection_instance(obj)]
    if not sources:
        kinds = ", ".join(sorted({obj.type.lower() for obj in selected}))
        raise InputError(f"None of the selected objects is a mesh (found: {kinds}); select a mesh object")
    skipped = [f"{obj.name} ({obj.type.lower()})" for obj in selected if obj not in sources]
    return sources, skipped


def export_selected(context, job, at_least: int = 1, colors: bool = False, notes: list | None = None):
    """The selected objects' evaluated triangles, checked and written into the job folder; returns
    the source objects, their NPZ paths and the names of selected objects without geometry. With
    `colors`, each file also holds its surface's colours (core/appearance/surface_colors.py's
    arrays) and `notes` gets what was skipped, naming the object. Nothing is written if any of them
    is refused."""
    from ..core.appearance.surface_colors import colors_to_arrays
    from ..core.geometry.mesh import TriangleMesh

    sources, skipped = selected_sources(context)
    if len(sources) < at_least:
        raise InputError(f"A shape space needs two or more meshes; {len(sources)} is selected")
    if context.mode == "EDIT_MESH":
        for obj in sources:
            if obj.mode == "EDIT":
                obj.update_from_editmode()
    depsgraph = context.evaluated_depsgraph_get()
    exported = []
    for obj in sources:
        skipped_colors = [] if colors else None
        read = mesh_bridge.evaluated_triangles(obj, depsgraph, skipped_colors)
        vertices, faces = read[0], read[1]
        surface = read[2] if colors else None
        if notes is not None and skipped_colors:
            notes.extend(f"'{obj.name}': {note}" for note in skipped_colors)
        if len(faces) == 0 and obj.type != "MESH":
            what = ("instances no geometry with faces" if mesh_bridge.is_collection_instance(obj)
                    else f"is a {obj.type.lower()} without faces (give it a bevel, extrusion or fill, or deselect it)")
            raise InputError(f"Cannot fit '{obj.name}': it {what}")
        try:
            TriangleMesh(vertices, faces)
        except ValueError as error:
            raise InputError(f"Cannot fit '{obj.name}': {error}") from error
        exported.append((vertices, faces, {} if surface is None else colors_to_arrays(surface)))
    paths = []
    for index, (vertices, faces, arrays) in enumerate(exported):
        paths.append(job.path(f"mesh_{index}.npz"))
        np.savez(paths[-1], vertices=vertices, faces=faces, **arrays)
    return sources, paths, skipped


def selected_space_object(context):
    """The one shape-space field object among the selected and active objects."""
    candidates = {obj for obj in context.selected_objects if obj.neural_field.space_shape >= 0}
    active = context.active_object
    if active is not None and active.neural_field.space_shape >= 0:
        candidates.add(active)
    spaces = {storage.absolute_path(obj.neural_field.field_path) for obj in candidates}
    if not candidates:
        raise InputError("Select a shape-space field object (made by Fit Shape Space) together with the input")
    if len(spaces) > 1:
        raise InputError(f"The selection holds objects of {len(spaces)} different shape spaces: select one")
    if active in candidates:
        return active
    return sorted(candidates, key=lambda obj: obj.name)[0]


def reconstruct_inputs(context) -> list:
    """The selected meshes and point clouds that are not fields, with their edit-mode changes."""
    inputs = [obj for obj in context.selected_objects
              if obj.type in ("MESH", "POINTCLOUD") and not obj.neural_field.is_field]
    if not inputs:
        raise InputError("Select the mesh or point cloud to reconstruct together with the shape-space object")
    if context.mode == "EDIT_MESH":
        for obj in inputs:
            obj.update_from_editmode()
    return inputs


def reconstruct_input(obj, space_obj, depsgraph, input_mode: str, notes: list | None = None):
    """The input as the worker takes it, and the object whose frame the result lands in: a
    surface in the input's own coordinates (the reconstruction finds its frame), or points
    in the space object's coordinates (a partial cloud cannot say where its shape's centre is,
    so it is read in the frame of the space's shapes). `input_mode`: AUTO, MESH or POINTS. With
    `notes` (a list for what was skipped), the input's colours travel too: a surface's as
    SurfaceColors arrays, points' as linear `colors` (a mesh's surface colours at the points, or
    a point cloud's colour attribute)."""
    from ..core.appearance.surface_colors import colors_to_arrays
    from ..core.geometry.mesh import TriangleMesh

    surface = point_colors = None
    if obj.type == "MESH":
        read = mesh_bridge.evaluated_triangles(obj, depsgraph, notes)
        vertices, faces = read[0], read[1]
        surface = read[2] if notes is not None else None
    else:
        vertices, faces = mesh_bridge.evaluated_points(obj, depsgraph), np.zeros((0, 3), dtype=np.int64)
        if notes is not None:
            point_colors = mesh_bridge.evaluated_point_colors(obj, depsgraph)
    as_surface = input_mode == "MESH" or (input_mode == "AUTO" and len(faces) > 0)
    if as_surface:
        if len(faces) == 0:
            raise InputError(f"'{obj.name}' has no faces to use as a surface: reconstruct it from its points")
        try:
            TriangleMesh(vertices, faces)
        except ValueError as error:
            raise InputError(f"Cannot reconstruct '{obj.name}': {error}") from error
        return {"vertices": vertices, "faces": faces, **({} if surface is None else colors_to_arrays(surface))}, obj
    if len(faces):  # the surface, sampled evenly, rather than its vertices bunched where detail is
        from ..core.geometry.sampling import sample_surface_barycentric

        try:
            vertices, _, face, weights = sample_surface_barycentric(TriangleMesh(vertices, faces), POINT_SAMPLES,
                                                                    np.random.default_rng(0))
        except ValueError as error:
            raise InputError(f"Cannot reconstruct '{obj.name}': {error}") from error
        if surface is not None:
            point_colors = surface.colors_at(face, weights)
    to_space = np.array(space_obj.matrix_world.inverted() @ obj.matrix_world)
    points = vertices @ to_space[:3, :3].T + to_space[:3, 3]
    if len(points) < 16:
        raise InputError(f"'{obj.name}' has {len(points)} points; a reconstruction needs at least 16")
    if not np.all(np.isfinite(points)):
        raise InputError(f"'{obj.name}' has NaN or infinite coordinates")
    return {"points": points, **({} if point_colors is None else {"colors": point_colors})}, space_obj
