"""Colours read from mesh files (OBJ + MTL + textures, PLY, NPZ) and written with extracted meshes."""

import os
import struct
import zlib

import numpy as np
import pytest

from checks import SHARED_MESHES
from neural_field_addon.core.appearance.colorspace import srgb_to_linear
from neural_field_addon.core.appearance.surface_colors import Texture
from neural_field_addon.core.geometry import TriangleMesh
from neural_field_addon.core.geometry.procedural import icosphere
from neural_field_addon.core.io.images import read_texture, write_png
from neural_field_addon.core.io.meshio import MeshAppearance, load_colored_mesh, load_mesh, save_mesh

SPOT = os.path.join(SHARED_MESHES, "spot_textured.obj")
QUAD = "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 0.5 0.5 1\n"


def _write(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.skipif(not os.path.isfile(SPOT), reason="../shared/meshes is not beside the checkout")
def test_spot_reads_its_texture_through_its_uvs():
    spot = load_colored_mesh(SPOT)
    assert spot.notes == ()
    assert spot.colors.textured and spot.colors.textures[0].pixels.shape == (1024, 1024, 3)
    assert len(spot.mesh.faces) == 5856
    # A corner's colour is the texel under its vt, converted from sRGB to linear.
    face = 100
    uv = spot.colors.corner_uvs[face, 0]
    from PIL import Image

    image = np.asarray(Image.open(os.path.join(SHARED_MESHES, "spot_texture.png")).convert("RGB"))
    column, row = int(uv[0] * 1024), int((1.0 - uv[1]) * 1024)
    got = spot.colors.colors_at(np.array([face]), np.array([[1.0, 0.0, 0.0]]))[0]
    nearby = srgb_to_linear(image[max(row - 1, 0):row + 2, max(column - 1, 0):column + 2].reshape(-1, 3) / 255.0)
    assert nearby.min(axis=0).min() - 1e-4 <= got.min() and got.max() <= nearby.max() + 1e-4


def test_obj_materials_colour_their_faces_with_kd(tmp_path):
    _write(tmp_path / "m.mtl", "newmtl red\nKd 0.8 0.1 0.1\nnewmtl blue\nKd 0.1 0.1 0.8\n")
    path = _write(tmp_path / "m.obj", "mtllib m.mtl\n" + QUAD + "usemtl red\nf 1 2 5\nf 2 3 5\nusemtl blue\n"
                  "f 3 4 5\nf 4 1 5\nf 1 3 2\nf 1 4 3\n")
    colors = load_colored_mesh(path).colors
    assert np.allclose(colors.corner_colors[:2], [0.8, 0.1, 0.1])
    assert np.allclose(colors.corner_colors[2:], [0.1, 0.1, 0.8])


def test_a_missing_texture_skips_colour_with_a_note_that_names_it(tmp_path):
    _write(tmp_path / "m.mtl", "newmtl skin\nKd 1 1 1\nmap_Kd gone.png\n")
    path = _write(tmp_path / "m.obj", "mtllib m.mtl\n" + QUAD + "vt 0 0\nusemtl skin\nf 1/1 2/1 5/1\nf 2/1 3/1 5/1\n"
                  "f 3/1 4/1 5/1\nf 4/1 1/1 5/1\nf 1/1 3/1 2/1\nf 1/1 4/1 3/1\n")
    source = load_colored_mesh(path)
    assert source.colors is None and len(source.mesh.faces) == 6
    assert len(source.notes) == 1 and "gone.png" in source.notes[0] and "skin" in source.notes[0]


def test_a_texture_without_uvs_falls_back_to_kd_with_a_note(tmp_path):
    write_png(str(tmp_path / "t.png"), np.zeros((2, 2, 3), dtype=np.uint8))
    _write(tmp_path / "m.mtl", "newmtl skin\nKd 0.5 0.5 0.5\nmap_Kd t.png\n")
    path = _write(tmp_path / "m.obj", "mtllib m.mtl\n" + QUAD + "usemtl skin\nf 1 2 5\nf 2 3 5\nf 3 4 5\nf 4 1 5\n"
                  "f 1 3 2\nf 1 4 3\n")
    source = load_colored_mesh(path)
    assert "no texture coordinates" in source.notes[0]
    assert not source.colors.textured and np.allclose(source.colors.corner_colors, 0.5)


def _png16(path, pixels):
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else 3

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, 0 if channels == 1 else 2, 0, 0, 0)
    rows = b"".join(b"\x00" + pixels[row].astype(">u2").tobytes() for row in range(height))
    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) +
                     chunk(b"IEND", b""))


def test_grey_and_16_bit_images_become_linear_rgb(tmp_path):
    grey = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    _png16(tmp_path / "grey.png", grey)
    texture = read_texture(tmp_path / "grey.png")
    assert texture.pixels.shape == (2, 2, 3)
    assert np.allclose(texture.pixels[:, :, 0], srgb_to_linear(grey / 65535.0), atol=1e-6)
    rgb = np.zeros((1, 2, 3), dtype=np.uint16)
    rgb[0, 1] = (65535, 32768, 0)
    _png16(tmp_path / "rgb.png", rgb)
    # Pillow reads 16-bit RGB at 8 bits a channel: within one 8-bit step.
    assert np.allclose(read_texture(tmp_path / "rgb.png").pixels, srgb_to_linear(rgb / 65535.0), atol=4e-3)


def test_vertex_colours_round_trip_through_ply_obj_and_npz(tmp_path):
    mesh = TriangleMesh(*icosphere(1.0, 1))
    colors = np.random.default_rng(0).random((len(mesh.vertices), 3)).astype(np.float32)
    corners = np.array([[1.0, 0.0, 0.0]] * len(mesh.faces))
    for suffix, tolerance in ((".ply", 5e-3), (".obj", 2e-4), (".npz", 0.0)):
        path = tmp_path / f"c{suffix}"
        save_mesh(path, mesh, appearance=MeshAppearance(colors=colors))
        back = load_colored_mesh(path).colors.colors_at(np.arange(len(mesh.faces)), corners)
        assert np.abs(back - colors[mesh.faces[:, 0]]).max() <= tolerance, suffix
        assert np.array_equal(load_mesh(path).faces, mesh.faces)


def test_a_textured_obj_is_written_with_its_mtl_and_png_and_reads_back(tmp_path):
    mesh = TriangleMesh(*icosphere(1.0, 1))
    uvs = np.random.default_rng(1).random((len(mesh.vertices), 2)).astype(np.float32)
    texture = Texture(srgb_to_linear(np.random.default_rng(2).integers(0, 256, (16, 16, 3)) / 255.0))
    written = save_mesh(tmp_path / "t.obj", mesh, appearance=MeshAppearance(uvs=uvs, texture=texture))
    assert sorted(os.path.basename(p) for p in written) == ["t.mtl", "t.obj", "t.png"]
    back = load_colored_mesh(tmp_path / "t.obj").colors
    assert back.textured
    assert np.allclose(back.textures[0].pixels, texture.pixels, atol=1e-6)
    assert np.allclose(back.corner_uvs, uvs[mesh.faces], atol=1e-6)
