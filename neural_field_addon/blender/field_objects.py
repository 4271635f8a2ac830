"""What turns the worker's results into the scene's objects: the Neural Fields collection, new
field objects holding a result mesh (single fields and the shapes of a space alike), a field
object's mesh replaced by a new extraction, the record of what a field was made from, and the
selection of what was made."""

from __future__ import annotations

import json

import bpy

from . import mesh_bridge, storage

FIELDS_COLLECTION = "Neural Fields"


def fields_collection(scene) -> bpy.types.Collection:
    """The scene's Neural Fields collection (a local one: a linked one cannot take new objects)."""
    collection = bpy.data.collections.get(FIELDS_COLLECTION)
    if collection is None or collection.library is not None:
        collection = bpy.data.collections.new(FIELDS_COLLECTION)
    if collection.name not in scene.collection.children:
        scene.collection.children.link(collection)
    return collection


def new_field_object(collection, name: str, mesh_out: str, frame):
    """A new object holding the worker's mesh, linked into `collection`, placed like `frame` (the
    object whose coordinates the mesh is in) where it still exists."""
    obj = bpy.data.objects.new(name, mesh_bridge.result_mesh(name, mesh_out))
    collection.objects.link(obj)
    if frame is not None:
        obj.matrix_world = frame.matrix_world.copy()
    return obj


def record_field(obj, source_name: str, field_path: str, report: dict, extracted, metrics=None) -> None:
    """Mark `obj` as a field and record what it was made from: its source (where it still
    exists), the field file, the fit's report, how it was extracted (`extracted`: resolution,
    level and sheet, as they were when the job started) and, where measured, its fidelity."""
    record = obj.neural_field
    record.is_field = True
    record.field_path = storage.stored_path(field_path)
    record.source = bpy.data.objects.get(source_name)
    record.source_name = source_name
    record.steps = int(report.get("steps", 0))
    record.device = str(report.get("device_name", ""))
    record.encoding = str(report.get("encoding", ""))
    record.parameters = int(report.get("parameters", 0))
    record.train_seconds = float(report.get("train_seconds", 0.0))
    record.resolution = extracted.resolution
    record.level = extracted.level
    record.field_color_psnr = float(report.get("field_color_psnr", -1.0))
    record.surface = str(report.get("surface", ""))
    record.surface_reason = str(report.get("surface_reason", ""))
    record.thickness = float(report.get("thickness", 0.0))
    # A fit asked for sheets extracts one only where it took a shell (runners.run_fit).
    record.sheet = bool(getattr(extracted, "sheet", False)) and record.surface == "shell"
    if metrics:
        record.chamfer = metrics["chamfer_l1"]
        record.normal_consistency = metrics["normal_consistency"]
        record.fscore = metrics["fscore"]
        record.color_psnr = float(metrics.get("color_psnr", -1.0))


def new_space_object(collection, name: str, mesh_out: str, frame, source_name: str, space: dict, shape: int,
                     extracted):
    """A new field object showing shape `shape` of the space a worker result wrote (`space`: its
    space_path, names and report), with Shape A and B on that shape; the rest as new_field_object
    and record_field."""
    obj = new_field_object(collection, name, mesh_out, frame)
    record_field(obj, source_name, space["space_path"], space.get("report", {}), extracted)
    record = obj.neural_field
    record.space_shape, record.shape_a, record.shape_b, record.mix = shape, shape, shape, 0.0
    record.space_names = json.dumps(space["names"])
    return obj


def replace_field_mesh(obj, mesh_out: str) -> int:
    """Give the field object the worker's new mesh in place of its old one, with the old one's
    name and materials (and its colours, where the field has them); returns the new mesh's vertex
    count."""
    old = obj.data
    name = old.name
    mesh = mesh_bridge.result_mesh(name, mesh_out)
    if not len(mesh.materials):
        for material in old.materials:
            mesh.materials.append(material)
    obj.data = mesh
    if old.users == 0:
        bpy.data.meshes.remove(old)
        mesh.name = name  # keep "X.field" rather than "X.field.001"
    return len(mesh.vertices)


def select_only(context, objects) -> None:
    """Make the new objects the selection, where that is possible: in Object mode, and only for
    objects in the view layer (the collection may be excluded)."""
    if context.mode != "OBJECT":
        return
    visible = [obj for obj in objects if context.view_layer.objects.get(obj.name) is obj]
    if not visible:
        return
    for obj in context.selected_objects:
        obj.select_set(False)
    for obj in visible:
        obj.select_set(True)
    context.view_layer.objects.active = visible[-1]


def space_shape_count(record) -> int:
    """How many shapes the object's space must hold (0: a single field)."""
    return len(json.loads(record.space_names or "[]")) if record.space_shape >= 0 else 0
