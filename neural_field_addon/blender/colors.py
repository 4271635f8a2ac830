"""The colours of a Blender object's surface, read as the core's SurfaceColors (core/appearance), and
the colour of a result made visible: a colour attribute and the "Neural Field Colour" material.

What a face shows is its material's: a Principled BSDF's Base Color that is a plain value, an
Image Texture (through the UV map its Vector names, else the render UV map) or a Color Attribute
node; any other Base Color (a procedural node tree) is baked with Blender's own bake (Cycles,
Diffuse, Color only) onto a temporary Smart UV Project layout of a temporary copy in a temporary
scene, all removed again, so nothing of the user's file changes. An object without materials
shows its colour attribute (the render one) where it has one.
Colour attributes are read with `color`, which Blender gives in scene linear for byte and float
attributes alike; images are converted from sRGB where their colour space says so. Anything
that cannot be read is a note naming it, and that material's faces keep a plain colour.
"""

from __future__ import annotations

import bpy
import numpy as np

COLOR_MATERIAL = "Neural Field Colour"
COLOR_ATTRIBUTE = "Neural Field Colour"
# Blender's default Base Color: what faces without a material show.
DEFAULT_COLOR = 0.8
# The texture procedural Base Colors are baked into, texels a side, and Cycles' samples per texel.
BAKE_SIZE = 1024
BAKE_SAMPLES = 4
BAKE_NAME = "Neural Field Bake"


def _principled_base_color(material):
    """The Base Color input of the Principled BSDF that feeds the material's active output, or None."""
    if material is None or not material.use_nodes or material.node_tree is None:
        return None
    outputs = [node for node in material.node_tree.nodes if node.type == "OUTPUT_MATERIAL"]
    output = next((node for node in outputs if node.is_active_output), outputs[0] if outputs else None)
    if output is None or not output.inputs["Surface"].is_linked:
        return None
    shader = output.inputs["Surface"].links[0].from_node
    if shader.type != "BSDF_PRINCIPLED":
        return None
    return shader.inputs["Base Color"]


def image_pixels(image) -> np.ndarray:
    """An image's pixels as linear RGB (H, W, 3), row 0 at the top; ValueError if it has none."""
    from ..core.appearance.colorspace import srgb_to_linear

    if image.source not in ("FILE", "GENERATED", "TILED"):
        raise ValueError(f"the image '{image.name}' is a {image.source.lower()}, not a still image")
    width, height = image.size
    if width == 0 or height == 0:
        raise ValueError(f"the image '{image.name}' has no pixels (its file '{image.filepath}' is missing or "
                         "unreadable)")
    channels = image.channels
    pixels = np.empty(width * height * channels, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    pixels = pixels.reshape(height, width, channels)[::-1]
    rgb = np.repeat(pixels[..., :1], 3, axis=2) if channels < 3 else pixels[..., :3].copy()
    if channels == 4 and image.alpha_mode == "PREMUL":
        alpha = pixels[..., 3:4]
        rgb = np.where(alpha > 0, rgb / np.maximum(alpha, 1e-6), rgb)
    if not image.is_float and image.colorspace_settings.name == "sRGB":
        rgb = srgb_to_linear(rgb)
    return np.clip(rgb, 0.0, 1.0)


def surface_colors(obj, mesh, notes: list, evaluated=None):
    """SurfaceColors of an evaluated mesh's loop triangles (the triangles mesh_bridge exports), or
    None where nothing colours it; `notes` gets what was skipped and why. `evaluated`: the
    evaluated object the mesh comes from, which a bake of procedural Base Colors copies."""
    from ..core.appearance.surface_colors import SurfaceColors, Texture

    triangles = len(mesh.loop_triangles)
    loops = np.empty(triangles * 3, dtype=np.int64)
    mesh.loop_triangles.foreach_get("loops", loops)
    loops = loops.reshape(-1, 3)
    material_index = np.empty(triangles, dtype=np.int64)
    mesh.loop_triangles.foreach_get("material_index", material_index)
    corner_colors = np.full((triangles, 3, 3), DEFAULT_COLOR, dtype=np.float32)
    face_texture = np.full(triangles, -1, dtype=np.int32)
    corner_uvs = np.zeros((triangles, 3, 2), dtype=np.float32)
    textures, colored, procedural = [], False, []
    materials = list(mesh.materials)
    if not any(material is not None for material in materials):
        attribute = _color_attribute(mesh, "")
        if attribute is None:
            return None
        return SurfaceColors(_attribute_corners(mesh, attribute, loops))
    for slot, material in enumerate(materials):
        faces = material_index == slot
        if material is None or not faces.any():
            continue
        base = _principled_base_color(material)
        if base is None:
            corner_colors[faces] = np.asarray(material.diffuse_color[:3], dtype=np.float32)
            colored = True
            continue
        if not base.is_linked:
            corner_colors[faces] = np.asarray(base.default_value[:3], dtype=np.float32)
            colored = True
            continue
        node = base.links[0].from_node
        if node.type == "VERTEX_COLOR":
            attribute = _color_attribute(mesh, node.layer_name)
            if attribute is None:
                notes.append(f"material '{material.name}' reads a colour attribute '{node.layer_name}' that "
                             f"'{obj.name}' does not have: its faces take a plain colour")
                continue
            corner_colors[faces] = _attribute_corners(mesh, attribute, loops[faces])
            colored = True
        elif node.type == "TEX_IMAGE" and node.image is not None:
            uv_name = ""
            if node.inputs["Vector"].is_linked:
                source = node.inputs["Vector"].links[0].from_node
                uv_name = source.uv_map if source.type == "UVMAP" else None
            uv_layer = _uv_layer(mesh, uv_name)
            if uv_layer is None:
                notes.append(f"the texture '{node.image.name}' of material '{material.name}' is skipped: "
                             f"'{obj.name}' has no UV map" + (f" '{uv_name}'" if uv_name else ""))
                continue
            try:
                pixels = image_pixels(node.image)
            except ValueError as error:
                notes.append(f"colour of material '{material.name}' skipped: {error}")
                continue
            uvs = np.empty(len(uv_layer.uv) * 2, dtype=np.float32)
            uv_layer.uv.foreach_get("vector", uvs)
            corner_uvs[faces] = uvs.reshape(-1, 2)[loops[faces]]
            face_texture[faces] = len(textures)
            textures.append(Texture(pixels, name=node.image.name))
            colored = True
        else:
            procedural.append(slot)
    if procedural:
        baked = _bake_base_colors(evaluated, procedural, notes) if evaluated is not None else None
        if baked is not None:
            pixels, uvs = baked
            faces = np.isin(material_index, procedural)
            corner_uvs[faces] = uvs[loops[faces]]
            face_texture[faces] = len(textures)
            textures.append(Texture(pixels, name=BAKE_NAME))
            colored = True
    if not colored:
        return None
    if textures:
        return SurfaceColors(corner_colors, corner_uvs, face_texture, tuple(textures))
    return SurfaceColors(corner_colors)


def _color_attribute(mesh, name: str):
    attributes = mesh.color_attributes
    if name:
        return attributes.get(name)
    for candidate in (attributes.default_color_name, attributes.active_color_name):
        if candidate and candidate in attributes:
            return attributes[candidate]
    return attributes[0] if len(attributes) else None


def _attribute_corners(mesh, attribute, loops: np.ndarray) -> np.ndarray:
    """Linear RGB (t, 3, 3) of an attribute at the corners of triangles with these loops."""
    values = np.empty(len(attribute.data) * 4, dtype=np.float32)
    attribute.data.foreach_get("color", values)
    values = values.reshape(-1, 4)[:, :3]
    if attribute.domain == "POINT":
        vertex_of_loop = np.empty(len(mesh.loops), dtype=np.int64)
        mesh.loops.foreach_get("vertex_index", vertex_of_loop)
        return values[vertex_of_loop[loops]]
    return values[loops]


def _uv_layer(mesh, name):
    """The named UV map, or with '' the render one (the active one if none is marked)."""
    if name is None:
        return None
    if name:
        return mesh.uv_layers.get(name)
    for layer in mesh.uv_layers:
        if layer.active_render:
            return layer
    return mesh.uv_layers.active


def color_material() -> bpy.types.Material:
    """The one material that shows a result's colour attribute: Color Attribute into Base Color."""
    material = bpy.data.materials.get(COLOR_MATERIAL)
    if material is not None and material.library is None:
        return material
    material = bpy.data.materials.new(COLOR_MATERIAL)
    material.use_nodes = True
    tree = material.node_tree
    shader = next(node for node in tree.nodes if node.type == "BSDF_PRINCIPLED")
    attribute = tree.nodes.new("ShaderNodeVertexColor")
    attribute.layer_name = COLOR_ATTRIBUTE
    attribute.location = (shader.location.x - 300, shader.location.y)
    tree.links.new(attribute.outputs["Color"], shader.inputs["Base Color"])
    return material


def show_colors(mesh, colors: np.ndarray) -> None:
    """Give a result mesh its vertex colours (n, 3 linear) as the render colour attribute and the
    material that shows them, so Solid view (Attribute), Material Preview and Cycles show them."""
    attribute = mesh.color_attributes.new(COLOR_ATTRIBUTE, "FLOAT_COLOR", "POINT")
    rgba = np.concatenate([np.asarray(colors, dtype=np.float32), np.ones((len(colors), 1), np.float32)], axis=1)
    attribute.data.foreach_set("color", rgba.reshape(-1))
    mesh.color_attributes.active_color = attribute
    mesh.color_attributes.render_color_index = mesh.color_attributes.active_color_index
    if COLOR_MATERIAL not in [m.name for m in mesh.materials if m is not None]:
        mesh.materials.clear()
        mesh.materials.append(color_material())


def reveal_colors(objects) -> bool:
    """Let Solid view show the new results' colours: every 3D view in Solid mode that colours by
    material switches to colouring by attribute (Blender's Viewport Shading > Color). Views with
    another choice (Texture, Single, ...) are the user's and stay. True if a view switched."""
    if not any(obj.type == "MESH" and obj.data.color_attributes.get(COLOR_ATTRIBUTE) for obj in objects):
        return False
    switched = False
    for screen in bpy.data.screens:
        for area in screen.areas:
            for space in area.spaces:
                if space.type == "VIEW_3D" and space.shading.type == "SOLID" and space.shading.color_type == "MATERIAL":
                    space.shading.color_type = "VERTEX"  # labelled "Attribute" in the UI
                    switched = True
    return switched


def concatenate(parts: list):
    """One SurfaceColors of several meshes' faces in order (None parts: plain default colour);
    None if no part has colour. `parts`: (SurfaceColors or None, face count) pairs."""
    from ..core.appearance.surface_colors import SurfaceColors

    if all(colors is None for colors, _ in parts):
        return None
    corner_colors, corner_uvs, face_texture, textures = [], [], [], []
    for colors, count in parts:
        if colors is None:
            corner_colors.append(np.full((count, 3, 3), DEFAULT_COLOR, dtype=np.float32))
            corner_uvs.append(np.zeros((count, 3, 2), dtype=np.float32))
            face_texture.append(np.full(count, -1, dtype=np.int32))
            continue
        corner_colors.append(colors.corner_colors)
        if colors.textured:
            corner_uvs.append(colors.corner_uvs)
            face_texture.append(np.where(colors.face_texture >= 0, colors.face_texture + len(textures), -1))
            textures.extend(colors.textures)
        else:
            corner_uvs.append(np.zeros((count, 3, 2), dtype=np.float32))
            face_texture.append(np.full(count, -1, dtype=np.int32))
    if not textures:
        return SurfaceColors(np.concatenate(corner_colors))
    return SurfaceColors(np.concatenate(corner_colors), np.concatenate(corner_uvs), np.concatenate(face_texture),
                         tuple(textures))


def _bake_base_colors(evaluated, slots: list, notes: list):
    """The Base Colors of material slots `slots` baked by Cycles (Diffuse, Color only) onto a
    Smart UV Project layout: (linear pixels (H, W, 3) row 0 at the top, UVs per loop (L, 2)), or
    None with a note naming the materials if Blender cannot bake them. Works on copies in a
    temporary scene, removed before returning."""
    names = ", ".join(f"'{evaluated.material_slots[slot].material.name}'" for slot in slots)
    mesh = bpy.data.meshes.new_from_object(evaluated)
    image = bpy.data.images.new(BAKE_NAME, BAKE_SIZE, BAKE_SIZE, float_buffer=True)
    copies = []
    scene = obj = None
    try:
        # A layout of its own, whatever UVs the mesh has (they may overlap): active for the bake's
        # target, while the render UV map, which the node trees read, stays as it is.
        scene, obj = _temporary_scene(mesh)
        _smart_project(scene, obj, BAKE_NAME)
        override = _override(scene, obj)
        for index, material in enumerate(mesh.materials):
            if material is None:
                continue
            copy = material.copy()
            copies.append(copy)
            copy.use_nodes = True
            mesh.materials[index] = copy
            target = copy.node_tree.nodes.new("ShaderNodeTexImage")
            target.image = image
            copy.node_tree.nodes.active = target
        scene.render.engine = "CYCLES"
        scene.cycles.device = "CPU"
        scene.cycles.samples = BAKE_SAMPLES
        bake = scene.render.bake
        bake.use_pass_direct, bake.use_pass_indirect, bake.use_pass_color = False, False, True
        with bpy.context.temp_override(**override):
            bpy.ops.object.bake(type="DIFFUSE", pass_filter={"COLOR"}, margin=4, use_clear=True)
        uvs = np.empty(len(mesh.loops) * 2, dtype=np.float32)
        mesh.uv_layers[BAKE_NAME].uv.foreach_get("vector", uvs)
        return image_pixels(image), uvs.reshape(-1, 2)
    except (RuntimeError, ValueError) as error:
        notes.append(f"the Base Color of {names} could not be baked ({str(error).strip()}): its faces take a "
                     "plain colour")
        return None
    finally:
        _remove_temporary_scene(scene, obj)
        bpy.data.meshes.remove(mesh)
        for copy in copies:
            bpy.data.materials.remove(copy)
        bpy.data.images.remove(image)


def _temporary_scene(mesh):
    """A scene of its own holding one object of `mesh`, active and selected: where operators that
    need an object (Smart UV Project, bake) run without touching the user's scenes."""
    scene = bpy.data.scenes.new(BAKE_NAME)
    obj = bpy.data.objects.new(BAKE_NAME, mesh)
    scene.collection.objects.link(obj)
    layer = scene.view_layers[0]
    layer.objects.active = obj
    obj.select_set(True, view_layer=layer)
    return scene, obj


def _remove_temporary_scene(scene, obj) -> None:
    if obj is not None:
        bpy.data.objects.remove(obj)
    if scene is not None:
        bpy.data.scenes.remove(scene)


def _override(scene, obj) -> dict:
    return dict(scene=scene, view_layer=scene.view_layers[0], object=obj, active_object=obj,
                selected_objects=[obj], selected_editable_objects=[obj])


def _smart_project(scene, obj, layer_name: str) -> None:
    """A new UV map `layer_name` on the object's mesh, laid out by Smart UV Project, made active."""
    mesh = obj.data
    mesh.uv_layers.active = mesh.uv_layers.new(name=layer_name)
    mesh.polygons.foreach_set("select", np.ones(len(mesh.polygons), dtype=bool))
    override = _override(scene, obj)
    with bpy.context.temp_override(**override):
        bpy.ops.object.mode_set(mode="EDIT")
    with bpy.context.temp_override(**override, edit_object=obj):
        bpy.ops.uv.smart_project(island_margin=0.002)
        bpy.ops.object.mode_set(mode="OBJECT")


# The UV map Bake Texture lays out on a result, and the image it bakes.
TEXTURE_UV = "Neural Field UV"


def texture_layout(mesh) -> np.ndarray:
    """Smart UV Project of a copy of `mesh` (the mesh itself is not changed): UVs per loop (L, 2)."""
    copy = mesh.copy()
    scene = obj = None
    try:
        scene, obj = _temporary_scene(copy)
        _smart_project(scene, obj, TEXTURE_UV)
        uvs = np.empty(len(copy.loops) * 2, dtype=np.float32)
        copy.uv_layers[TEXTURE_UV].uv.foreach_get("vector", uvs)
        return uvs.reshape(-1, 2)
    finally:
        _remove_temporary_scene(scene, obj)
        bpy.data.meshes.remove(copy)


def show_texture(obj, uvs: np.ndarray, path: str) -> bpy.types.Material:
    """Give a result object the baked texture at `path` through the UV map `uvs` (per loop): its
    own material "Neural Field Colour: <object>" with the image into Base Color."""
    mesh = obj.data
    layer = mesh.uv_layers.get(TEXTURE_UV) or mesh.uv_layers.new(name=TEXTURE_UV)
    layer.uv.foreach_set("vector", np.asarray(uvs, dtype=np.float32).reshape(-1))
    mesh.uv_layers.active = layer
    layer.active_render = True
    name = f"{COLOR_MATERIAL}: {obj.name}"
    image = next((image for image in bpy.data.images if image.filepath == path), None)
    if image is None:
        image = bpy.data.images.load(path, check_existing=False)
    else:
        image.reload()
    material = bpy.data.materials.get(name)
    if material is None or material.library is not None:
        material = bpy.data.materials.new(name)
        material.use_nodes = True
    tree = material.node_tree
    shader = next(node for node in tree.nodes if node.type == "BSDF_PRINCIPLED")
    texture = next((node for node in tree.nodes if node.type == "TEX_IMAGE"), None) or tree.nodes.new(
        "ShaderNodeTexImage")
    texture.image = image
    texture.location = (shader.location.x - 300, shader.location.y)
    uv_node = next((node for node in tree.nodes if node.type == "UVMAP"), None) or tree.nodes.new("ShaderNodeUVMap")
    uv_node.uv_map = TEXTURE_UV
    uv_node.location = (texture.location.x - 250, texture.location.y)
    tree.links.new(uv_node.outputs["UV"], texture.inputs["Vector"])
    tree.links.new(texture.outputs["Color"], shader.inputs["Base Color"])
    mesh.materials.clear()
    mesh.materials.append(material)
    return material
