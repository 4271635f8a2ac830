"""Colour spaces and surface colours: sRGB <-> linear, corner colours, textures read through UVs."""

import numpy as np
import pytest
import torch

from neural_field_addon.core.appearance.colorspace import from_bytes, linear_to_srgb, srgb_to_linear, to_bytes
from neural_field_addon.core.appearance.surface_colors import (
    SurfaceColors,
    Texture,
    barycentric_of,
    colors_from_arrays,
    colors_to_arrays,
    sample_bilinear,
)


def test_srgb_and_linear_round_trip_for_arrays_and_tensors():
    values = np.linspace(0.0, 1.0, 1001, dtype=np.float32)
    assert np.allclose(linear_to_srgb(srgb_to_linear(values)), values, atol=2e-6)
    tensor = torch.linspace(0.0, 1.0, 1001)
    assert torch.allclose(linear_to_srgb(srgb_to_linear(tensor)), tensor, atol=2e-6)
    # IEC 61966-2-1 reference points: 0.5 sRGB is 0.2140 linear; the linear segment below 0.04045.
    assert srgb_to_linear(np.float32(0.5)) == pytest.approx(0.21404, abs=1e-5)
    assert srgb_to_linear(np.float32(0.02)) == pytest.approx(0.02 / 12.92, rel=1e-6)
    assert np.array_equal(to_bytes(from_bytes(np.arange(256, dtype=np.uint8))), np.arange(256))


def test_a_texture_is_read_at_its_texel_centres_with_row_zero_at_the_top_and_wraps_around():
    pixels = np.random.default_rng(0).random((4, 8, 3)).astype(np.float32)
    row, column = 1, 5
    centre = torch.tensor([[(column + 0.5) / 8, 1.0 - (row + 0.5) / 4]])
    assert np.allclose(sample_bilinear(torch.as_tensor(pixels), centre).numpy(), pixels[row, column], atol=1e-6)
    wrapped = centre + torch.tensor([[1.0, -2.0]])
    assert np.allclose(sample_bilinear(torch.as_tensor(pixels), wrapped).numpy(), pixels[row, column], atol=1e-5)
    # Half way between two texels of a row: their mean.
    between = torch.tensor([[(column + 1.0) / 8, 1.0 - (row + 0.5) / 4]])
    expected = 0.5 * (pixels[row, column] + pixels[row, column + 1])
    assert np.allclose(sample_bilinear(torch.as_tensor(pixels), between).numpy(), expected, atol=1e-6)


def test_corner_colours_blend_barycentrically_and_textured_faces_read_their_image():
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    vertex_colors = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], dtype=np.float32)
    plain = SurfaceColors.from_vertex_colors(faces, vertex_colors)
    weights = np.array([[0.2, 0.3, 0.5]])
    assert np.allclose(plain.colors_at(np.array([0]), weights), [[0.2, 0.3, 0.5]])
    image = Texture(np.full((2, 2, 3), 0.25, dtype=np.float32))
    textured = SurfaceColors(plain.corner_colors, np.zeros((2, 3, 2)), np.array([-1, 0]), (image,))
    assert np.allclose(textured.colors_at(np.array([0, 1]), np.array([[1, 0, 0], [1, 0, 0]])),
                       [[1, 0, 0], [0.25, 0.25, 0.25]])


def test_colours_with_nan_are_refused_with_how_many():
    colors = np.ones((3, 3, 3), dtype=np.float32)
    colors[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite values at 1 corners of 1 faces"):
        SurfaceColors(colors)


def test_closest_points_get_barycentric_weights_that_rebuild_them():
    rng = np.random.default_rng(1)
    triangles = torch.as_tensor(rng.random((50, 3, 3)))
    weights = torch.as_tensor(rng.dirichlet((1, 1, 1), size=50))
    points = (triangles * weights[:, :, None]).sum(dim=1)
    assert torch.allclose(barycentric_of(points, triangles), weights, atol=1e-9)


def test_colour_arrays_round_trip_through_an_npz(tmp_path):
    faces = np.array([[0, 1, 2]])
    texture = Texture(np.random.default_rng(2).random((3, 5, 3)))
    colors = SurfaceColors(np.full((1, 3, 3), 0.5), np.array([[[0, 0], [1, 0], [0, 1]]]), np.array([0]), (texture,))
    np.savez(tmp_path / "c.npz", vertices=np.eye(3), faces=faces, **colors_to_arrays(colors))
    with np.load(tmp_path / "c.npz") as data:
        back = colors_from_arrays(data, faces)
    assert np.array_equal(back.corner_colors, colors.corner_colors)
    assert np.array_equal(back.textures[0].pixels, texture.pixels)
    assert np.array_equal(back.face_texture, [0])
