"""Colour in Blender: the sources' colours read as the core's SurfaceColors (colour attributes,
plain Base Colors per material slot, image textures through UVs), what cannot be read named in a
note, and fits that come back coloured with the "Neural Field Colour" material wired."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

STEPS = 250
RESOLUTION = 48


def _module(name):
    return importlib.import_module(f"bl_ext.user_default.neural_field_addon.blender.{name}")


def _read(obj):
    notes = []
    _, faces, colors = _module("mesh_bridge").evaluated_triangles(obj, bpy.context.evaluated_depsgraph_get(), notes)
    return faces, colors, notes


def _corner_colors(colors):
    return colors.colors_at(np.arange(colors.face_count).repeat(3),
                            np.tile(np.eye(3), (colors.face_count, 1))).reshape(-1, 3, 3)


@pytest.mark.parametrize("domain", ["POINT", "CORNER"])
@pytest.mark.parametrize("kind", ["BYTE_COLOR", "FLOAT_COLOR"])
def test_a_colour_attribute_is_read_in_linear_rgb(empty_scene, domain, kind):
    bpy.ops.mesh.primitive_cube_add()
    obj = bpy.context.active_object
    attribute = obj.data.color_attributes.new("Paint", kind, domain)
    values = np.random.default_rng(0).random((len(attribute.data), 4)).astype(np.float32)
    attribute.data.foreach_set("color", values.reshape(-1))
    stored = np.empty(len(attribute.data) * 4, dtype=np.float32)
    attribute.data.foreach_get("color", stored)
    stored = stored.reshape(-1, 4)[:, :3]
    faces, colors, notes = _read(obj)
    assert notes == [] and colors is not None and colors.face_count == len(faces)
    mesh = obj.data
    mesh.calc_loop_triangles()
    loops = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int64)
    mesh.loop_triangles.foreach_get("loops", loops)
    if domain == "POINT":
        vertex = np.empty(len(mesh.loops), dtype=np.int64)
        mesh.loops.foreach_get("vertex_index", vertex)
        expected = stored[vertex[loops]]
    else:
        expected = stored[loops]
    assert np.allclose(_corner_colors(colors).reshape(-1, 3), expected, atol=1e-5)


def _fitted(source, steps: int = STEPS, resolution: int = RESOLUTION, **settings):
    """The field object Fit Neural Field makes of `source` on the CPU, with these panel settings."""
    panel = bpy.context.scene.neural_field
    panel.steps, panel.resolution, panel.device = steps, resolution, "CPU"
    for name, value in settings.items():
        setattr(panel, name, value)
    assert bpy.ops.neural_field.fit() == {"FINISHED"}
    return bpy.data.objects[f"{source.name}.field"]


def _material(name, color):
    material = bpy.data.materials.new(name)
    material.use_nodes = True
    shader = material.node_tree.nodes["Principled BSDF"]
    shader.inputs["Base Color"].default_value = (*color, 1.0)
    return material


def _two_material_cube():
    bpy.ops.mesh.primitive_cube_add(size=2.0)
    obj = bpy.context.active_object
    obj.data.materials.append(_material("Red", (0.8, 0.05, 0.05)))
    obj.data.materials.append(_material("Green", (0.05, 0.6, 0.1)))
    for polygon in obj.data.polygons:
        polygon.material_index = 1 if polygon.center.x > 0.5 else 0
    return obj


def test_each_material_slot_gives_its_faces_its_base_color(empty_scene):
    obj = _two_material_cube()
    faces, colors, notes = _read(obj)
    assert notes == []
    mesh = obj.data
    mesh.calc_loop_triangles()
    slot = np.empty(len(mesh.loop_triangles), dtype=np.int64)
    mesh.loop_triangles.foreach_get("material_index", slot)
    assert np.allclose(colors.corner_colors[slot == 0], (0.8, 0.05, 0.05), atol=1e-6)
    assert np.allclose(colors.corner_colors[slot == 1], (0.05, 0.6, 0.1), atol=1e-6)


def _textured_suzanne(image, through_uv_node: bool):
    bpy.ops.mesh.primitive_monkey_add()
    obj = bpy.context.active_object
    material = bpy.data.materials.new("Skin")
    material.use_nodes = True
    tree = material.node_tree
    texture = tree.nodes.new("ShaderNodeTexImage")
    texture.image = image
    tree.links.new(texture.outputs["Color"], tree.nodes["Principled BSDF"].inputs["Base Color"])
    if through_uv_node:
        uv = tree.nodes.new("ShaderNodeUVMap")
        uv.uv_map = obj.data.uv_layers[0].name
        tree.links.new(uv.outputs["UV"], texture.inputs["Vector"])
    obj.data.materials.append(material)
    return obj


def _halves_image(name="Halves", size=32):
    """Left half red, right half blue, as 8-bit sRGB, packed into the .blend."""
    image = bpy.data.images.new(name, size, size)
    pixels = np.zeros((size, size, 4), dtype=np.float32)
    pixels[..., 3] = 1.0
    pixels[:, : size // 2, 0] = 1.0
    pixels[:, size // 2 :, 2] = 0.5
    image.pixels.foreach_set(pixels.reshape(-1))
    image.pack()
    return image


@pytest.mark.parametrize("through_uv_node", [False, True])
def test_an_image_texture_is_read_through_the_uv_map_and_converted_from_srgb(empty_scene, through_uv_node):
    from neural_field_addon.core.appearance.colorspace import srgb_to_linear

    obj = _textured_suzanne(_halves_image(), through_uv_node)
    _, colors, notes = _read(obj)
    assert notes == [] and colors.textured
    pixels = colors.textures[0].pixels
    assert np.allclose(pixels[0, 0], (1.0, 0.0, 0.0), atol=1e-3)
    assert np.allclose(pixels[0, -1], (0.0, 0.0, srgb_to_linear(np.float32(0.5))), atol=2e-3)
    # Every corner reads the texture at its UV: u < 0.5 red, u > 0.5 blue (away from the seam in
    # the middle and from the edges, where the image wraps around).
    uv = colors.corner_uvs.reshape(-1, 2)
    corners = _corner_colors(colors).reshape(-1, 3)
    left, right = (uv[:, 0] > 0.05) & (uv[:, 0] < 0.45), (uv[:, 0] > 0.55) & (uv[:, 0] < 0.95)
    assert left.sum() > 100 and right.sum() > 100
    assert np.all(corners[left, 0] > 0.9) and np.all(corners[right, 0] < 0.1)


def test_a_missing_image_is_named_in_a_note_and_its_colour_skipped(empty_scene):
    image = bpy.data.images.new("Lost", 8, 8)
    image.source = "FILE"
    image.filepath = "//textures/lost_texture.png"
    obj = _textured_suzanne(image, through_uv_node=False)
    _, colors, notes = _read(obj)
    assert colors is None
    assert len(notes) == 1 and "Lost" in notes[0] and "Skin" in notes[0]


def test_a_coloured_fit_comes_back_coloured_with_its_material_and_keeps_it_on_reopen(empty_scene, tmp_path):
    source = _two_material_cube()
    field = _fitted(source)
    colors_module = _module("colors")
    attribute = field.data.color_attributes.get(colors_module.COLOR_ATTRIBUTE)
    assert attribute is not None and attribute.domain == "POINT"
    material = field.data.materials[0]
    assert material.name == colors_module.COLOR_MATERIAL
    base = material.node_tree.nodes["Principled BSDF"].inputs["Base Color"]
    assert base.is_linked and base.links[0].from_node.type == "VERTEX_COLOR"
    assert base.links[0].from_node.layer_name == colors_module.COLOR_ATTRIBUTE
    # The red faces stay red and the green face (+X) green.
    vertices = np.empty(len(field.data.vertices) * 3)
    field.data.vertices.foreach_get("co", vertices)
    rgba = np.empty(len(attribute.data) * 4, dtype=np.float32)
    attribute.data.foreach_get("color", rgba)
    x, rgb = vertices.reshape(-1, 3)[:, 0], rgba.reshape(-1, 4)[:, :3]
    red, green = rgb[x < -0.5], rgb[x > 0.95]
    assert np.median(red[:, 0]) > 0.5 > np.median(red[:, 1])
    assert np.median(green[:, 1]) > 2 * np.median(green[:, 0])
    assert field.neural_field.color_psnr > 15.0 and field.neural_field.field_color_psnr > 15.0
    assert _solid_view_colors() == {"VERTEX", "TEXTURE"}  # "Attribute" in the UI; Texture Paint keeps its own
    name = field.name
    path = str(tmp_path / "coloured.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    bpy.ops.wm.open_mainfile(filepath=path)
    reopened = bpy.data.objects[name]
    assert reopened.data.color_attributes.get(colors_module.COLOR_ATTRIBUTE) is not None
    assert reopened.data.materials[0].name == colors_module.COLOR_MATERIAL


def _planar_uvs(obj):
    """UVs projected along Y onto the object's X-Z extent, so u grows with x."""
    mesh = obj.data
    vertices = np.empty(len(mesh.vertices) * 3)
    mesh.vertices.foreach_get("co", vertices)
    vertices = vertices.reshape(-1, 3)
    vertex_of_loop = np.empty(len(mesh.loops), dtype=np.int64)
    mesh.loops.foreach_get("vertex_index", vertex_of_loop)
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    uv = (vertices[:, [0, 2]] - low[[0, 2]]) / (high - low)[[0, 2]]
    mesh.uv_layers[0].uv.foreach_set("vector", uv[vertex_of_loop].astype(np.float32).reshape(-1))


def _painted_suzanne():
    """Suzanne with a point colour attribute: red where x < 0, blue where x > 0."""
    bpy.ops.mesh.primitive_monkey_add()
    obj = bpy.context.active_object
    x = np.empty(len(obj.data.vertices) * 3)
    obj.data.vertices.foreach_get("co", x)
    x = x.reshape(-1, 3)[:, 0]
    attribute = obj.data.color_attributes.new("Paint", "BYTE_COLOR", "POINT")
    rgba = np.where((x < 0)[:, None], (1.0, 0.0, 0.0, 1.0), (0.0, 0.0, 1.0, 1.0)).astype(np.float32)
    attribute.data.foreach_set("color", rgba.reshape(-1))
    return obj


def _textured_left_red_right_blue():
    obj = _textured_suzanne(_halves_image(), through_uv_node=False)
    _planar_uvs(obj)
    return obj


@pytest.mark.parametrize("make", [_textured_left_red_right_blue, _painted_suzanne], ids=["image texture", "colour attribute"])
def test_a_textured_or_painted_suzanne_comes_back_red_on_the_left_and_blue_on_the_right(empty_scene, make):
    source = make()
    field = _fitted(source)
    base = field.data.materials[0].node_tree.nodes["Principled BSDF"].inputs["Base Color"]
    assert base.is_linked and base.links[0].from_node.type == "VERTEX_COLOR"
    vertices = np.empty(len(field.data.vertices) * 3)
    field.data.vertices.foreach_get("co", vertices)
    x, rgb = vertices.reshape(-1, 3)[:, 0], _colors_of(field)
    left, right = rgb[x < -0.3], rgb[x > 0.3]
    assert np.median(left[:, 0]) > 0.6 and np.median(left[:, 2]) < 0.2
    assert np.median(right[:, 2]) > 0.15 and np.median(right[:, 0]) < 0.2
    assert field.neural_field.color_psnr > 15.0


def test_bake_texture_wires_a_packed_image_of_the_field_colour_into_the_material(empty_scene):
    import os

    import torch

    from neural_field_addon.core.appearance.surface_colors import sample_bilinear

    source = _two_material_cube()
    field = _fitted(source, steps=100, resolution=32, texture_size=256)
    vertex_colors = _colors_of(field)
    bpy.context.view_layer.objects.active = field
    assert bpy.ops.neural_field.bake_texture() == {"FINISHED"}
    colors_module = _module("colors")
    material = field.data.materials[0]
    assert material.name == f"{colors_module.COLOR_MATERIAL}: {field.name}"
    base = material.node_tree.nodes["Principled BSDF"].inputs["Base Color"]
    image = base.links[0].from_node.image
    assert base.links[0].from_node.type == "TEX_IMAGE" and image.packed_file is not None
    assert os.path.isfile(bpy.path.abspath(image.filepath)) and image.size[:] == (256, 256)
    # The texture at each corner's UV holds the colour the field gave that corner's vertex.
    mesh = field.data
    uvs = np.empty(len(mesh.loops) * 2, dtype=np.float32)
    mesh.uv_layers[colors_module.TEXTURE_UV].uv.foreach_get("vector", uvs)
    vertex_of_loop = np.empty(len(mesh.loops), dtype=np.int64)
    mesh.loops.foreach_get("vertex_index", vertex_of_loop)
    pixels = colors_module.image_pixels(image)
    baked = sample_bilinear(torch.as_tensor(pixels), torch.as_tensor(uvs.reshape(-1, 2))).numpy()
    assert np.median(np.abs(baked - vertex_colors[vertex_of_loop])) < 0.03
    assert mesh.uv_layers[colors_module.TEXTURE_UV].active_render


def test_colour_off_fits_the_shape_alone(empty_scene):
    source = _two_material_cube()
    field = _fitted(source, steps=50, resolution=32, color=False)
    assert len(field.data.color_attributes) == 0 and field.neural_field.field_color_psnr == -1.0
    assert _solid_view_colors() == {"MATERIAL", "TEXTURE"}


def _solid_view_colors() -> set:
    """What the file's 3D views in Solid mode colour by."""
    return {space.shading.color_type for screen in bpy.data.screens for area in screen.areas
            for space in area.spaces if space.type == "VIEW_3D" and space.shading.type == "SOLID"}


def test_a_procedural_base_color_is_baked_by_blender_and_nothing_of_the_file_changes(empty_scene):
    from neural_field_addon.core.appearance.colorspace import linear_to_srgb
    from neural_field_addon.core.surface.metrics import psnr

    bpy.ops.mesh.primitive_uv_sphere_add(radius=1.0, segments=48, ring_count=24)
    obj = bpy.context.active_object
    material = bpy.data.materials.new("Gradient")
    material.use_nodes = True
    tree = material.node_tree
    coordinates = tree.nodes.new("ShaderNodeTexCoord")
    tree.links.new(coordinates.outputs["Generated"], tree.nodes["Principled BSDF"].inputs["Base Color"])
    obj.data.materials.append(material)
    before = {kind: len(getattr(bpy.data, kind)) for kind in ("scenes", "objects", "meshes", "materials", "images")}
    engine, uv_maps = bpy.context.scene.render.engine, [layer.name for layer in obj.data.uv_layers]
    faces, colors, notes = _read(obj)
    assert notes == [] and colors.textured
    assert before == {kind: len(getattr(bpy.data, kind)) for kind in before}
    assert bpy.context.scene.render.engine == engine and [layer.name for layer in obj.data.uv_layers] == uv_maps
    assert sorted(node.type for node in tree.nodes) == ["BSDF_PRINCIPLED", "OUTPUT_MATERIAL", "TEX_COORD"]
    # Generated coordinates span the bounding box 0..1: the colour at a corner is its position.
    vertices = np.empty(len(obj.data.vertices) * 3)
    obj.data.vertices.foreach_get("co", vertices)
    expected = (vertices.reshape(-1, 3)[faces] + 1.0) / 2.0
    assert psnr(linear_to_srgb(expected), linear_to_srgb(_corner_colors(colors))) >= 30.0


def _colors_of(obj) -> np.ndarray:
    attribute = obj.data.color_attributes[_module("colors").COLOR_ATTRIBUTE]
    rgba = np.empty(len(attribute.data) * 4, dtype=np.float32)
    attribute.data.foreach_get("color", rgba)
    return rgba.reshape(-1, 4)[:, :3]


def test_extract_blend_blends_the_colours_of_a_coloured_space(empty_scene):
    red, blue = _material("Red", (0.8, 0.05, 0.05)), _material("Blue", (0.05, 0.1, 0.8))
    bpy.ops.mesh.primitive_torus_add(major_radius=1.0, minor_radius=0.25, location=(-3.0, 0.0, 0.0))
    thin = bpy.context.active_object
    thin.name = "Thin"
    thin.data.materials.append(red)
    bpy.ops.mesh.primitive_torus_add(major_radius=1.0, minor_radius=0.45, location=(3.0, 0.0, 0.0))
    fat = bpy.context.active_object
    fat.name = "Fat"
    fat.data.materials.append(blue)
    thin.select_set(True)
    settings = bpy.context.scene.neural_field
    settings.space_steps, settings.resolution, settings.device = 150, 32, "CPU"
    assert bpy.ops.neural_field.fit_shape_space() == {"FINISHED"}
    thin_field, fat_field = bpy.data.objects["Thin.field"], bpy.data.objects["Fat.field"]
    ends = np.median(_colors_of(thin_field), axis=0), np.median(_colors_of(fat_field), axis=0)
    assert ends[0][0] > ends[0][2] and ends[1][2] > ends[1][0]
    bpy.context.view_layer.objects.active = thin_field
    thin_field.neural_field.shape_a, thin_field.neural_field.shape_b, thin_field.neural_field.mix = 0, 1, 0.5
    assert bpy.ops.neural_field.extract() == {"FINISHED"}
    middle = np.median(_colors_of(thin_field), axis=0)
    assert ends[1][0] < middle[0] < ends[0][0] and ends[0][2] < middle[2] < ends[1][2]
    assert thin_field.data.materials[0].name == _module("colors").COLOR_MATERIAL
    # A fat torus coloured red: its shape is the blue one's, and its colour, fitted as an appearance
    # code, is red.
    bpy.ops.mesh.primitive_torus_add(major_radius=1.0, minor_radius=0.45, location=(0.0, 4.0, 0.0))
    scan = bpy.context.active_object
    scan.name = "Scan"
    scan.data.materials.append(red)
    for obj in bpy.context.selected_objects:
        obj.select_set(False)
    scan.select_set(True)
    thin_field.select_set(True)
    bpy.context.view_layer.objects.active = thin_field
    assert bpy.ops.neural_field.reconstruct(steps=200) == {"FINISHED"}
    rebuilt = np.median(_colors_of(bpy.data.objects["Scan.reconstructed"]), axis=0)
    assert rebuilt[0] > rebuilt[2]
