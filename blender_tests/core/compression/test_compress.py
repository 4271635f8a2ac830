"""Compress: a field or a mesh as a small quantised network at a byte or Chamfer target, the
packed file that keeps it, and a shape space compressed with its one decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neural_field_addon.core.compression.compress import compress, compress_space, student_config
from neural_field_addon.core.compression.quantization import fake_quantize
from neural_field_addon.core.config import FieldConfig, TrainConfig
from neural_field_addon.core.fitting.fitter import fit_field
from neural_field_addon.core.fitting.space_fitter import fit_shape_space
from neural_field_addon.core.geometry import TriangleMesh
from neural_field_addon.core.geometry.procedural import icosphere, torus
from neural_field_addon.core.io.codecs import quantise
from neural_field_addon.core.io.fieldfile import (
    FieldFileError,
    load_content,
    load_field,
    load_space,
    save_space,
    space_content,
)
from neural_field_addon.core.io.fileheader import WIDE_VERSION, read_header

STEPS = 300  # a test's student: enough for a torus's rough shape in about 3 s on 2 cores


@pytest.fixture(scope="module")
def torus_mesh():
    vertices, faces = torus(1.0, 0.35)
    return TriangleMesh(vertices * 2.0 + np.array([5.0, -1.0, 0.5]), faces)  # off the origin, not unit size


@pytest.fixture(scope="module")
def compressed(torus_mesh):
    return compress(torus_mesh, target_bytes=5000, device="cpu", steps=STEPS)


def _points(count=4000):
    return torch.rand(count, 3, generator=torch.Generator().manual_seed(1)) * 2.2 - 1.1


def test_a_compressed_mesh_is_no_larger_than_its_byte_target(compressed, tmp_path):
    assert len(compressed.content) <= 5000
    assert compressed.report["bytes"] == len(compressed.content)
    path = tmp_path / "small.nfield"
    path.write_bytes(compressed.content)
    header = read_header(path)
    assert header["version"] == WIDE_VERSION and header["storage"]["precision"] == "int10"  # the default bits


def test_the_file_holds_exactly_the_weights_training_saw(compressed):
    back = load_content(compressed.content)
    points = _points()
    assert torch.equal(back.evaluate_field_space(points), compressed.field.evaluate_field_space(points))


def test_the_report_measures_fidelity_against_the_source(compressed, torus_mesh):
    report = compressed.report
    assert report["reference"] == "the mesh"
    assert 0 < report["chamfer_l1"] < 5e-2 and report["normal_consistency"] > 0.8  # a rough torus at 300 steps
    centre = torch.as_tensor(compressed.field.transform.to_field(np.array([[5.0 + 2.0, -1.0, 0.5]])),
                             dtype=torch.float32)
    hole = torch.as_tensor(compressed.field.transform.to_field(np.array([[5.0, -1.0, 0.5]])), dtype=torch.float32)
    assert float(compressed.field.evaluate_field_space(centre)) < 0 < float(compressed.field.evaluate_field_space(hole))


def test_a_larger_budget_gives_a_wider_network():
    small, large = student_config(5000, 8), student_config(40000, 8)
    assert small.width < large.width and large.depth >= small.depth


def test_a_small_budget_takes_two_wide_layers_rather_than_three_narrow_ones():
    config = student_config(3600, 10)  # three hidden layers would be 28 wide: a SIREN that grows floaters
    assert config.depth == 2 and config.width >= 32


def test_a_student_far_from_its_source_is_reported(torus_mesh):
    rough = compress(torus_mesh, target_bytes=5000, device="cpu", steps=3)
    assert rough.report["chamfer_l1"] > 1e-3
    assert any("far from its source" in note for note in rough.report["notes"])


def test_a_budget_below_the_smallest_network_is_refused_with_the_size_it_needs(torus_mesh):
    with pytest.raises(ValueError, match="below the smallest compressed field .* bytes"):
        compress(torus_mesh, target_bytes=500, device="cpu", steps=STEPS)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "one target"),
    ({"target_bytes": 5000, "target_chamfer": 1e-3}, "one target"),
    ({"target_bytes": 0}, "positive whole number"),
    ({"target_chamfer": float("nan")}, "Chamfer target"),
    ({"target_bytes": 5000, "bits": 3}, "bits must be one of"),
])
def test_bad_targets_are_refused_with_the_reason(torus_mesh, kwargs, message):
    with pytest.raises(ValueError, match=message):
        compress(torus_mesh, device="cpu", steps=STEPS, **kwargs)


def test_a_chamfer_target_is_met_by_the_smallest_budget_that_meets_it(torus_mesh):
    result = compress(torus_mesh, target_chamfer=4e-2, device="cpu", steps=STEPS)
    assert result.report["chamfer_l1"] <= 4e-2
    # The ladder's smallest budget (2,000 bytes) already meets so loose a target.
    assert len(result.content) <= 2000


def test_a_field_is_distilled_in_its_own_frame_and_units(torus_mesh):
    teacher = fit_field(torus_mesh, FieldConfig(fourier_features=32, width=32, depth=2),
                        TrainConfig(steps=200, batch=4096, pool_size=1 << 14, device="cpu"))
    result = compress(teacher, target_bytes=5000, device="cpu", steps=STEPS)
    student = result.field
    assert student.transform.as_dict() == teacher.transform.as_dict()
    assert np.array_equal(student.box_low, teacher.box_low) and np.array_equal(student.box_high, teacher.box_high)
    assert result.report["reference"] == "the teacher's surface" and result.report["chamfer_l1"] < 5e-2
    low, high = (torch.as_tensor(b, dtype=torch.float32) for b in (teacher.box_low, teacher.box_high))
    points = low + (high - low) * torch.rand(4000, 3, generator=torch.Generator().manual_seed(2))
    near = teacher.evaluate_field_space(points).abs() < 0.05
    agree = torch.sign(teacher.evaluate_field_space(points)[~near]) == torch.sign(student.evaluate_field_space(points)[~near])
    assert float(agree.float().mean()) > 0.97


def test_a_corrupt_or_truncated_compressed_file_is_refused_with_a_message(compressed, tmp_path):
    data = bytearray(compressed.content)
    data[len(data) // 2] ^= 0xFF
    damaged = tmp_path / "damaged.nfield"
    damaged.write_bytes(bytes(data))
    with pytest.raises(FieldFileError, match="corrupt"):
        load_field(damaged)
    truncated = tmp_path / "truncated.nfield"
    truncated.write_bytes(compressed.content[: len(compressed.content) - 40])
    with pytest.raises(FieldFileError, match="corrupt"):
        load_field(truncated)


@pytest.mark.parametrize("bits", [10, 8, 6, 5, 4])
def test_training_rounds_exactly_as_the_file_stores(bits):
    values = torch.randn(37, 29, generator=torch.Generator().manual_seed(bits)) * torch.linspace(0.01, 10, 29)
    integers, scale = quantise(values.numpy(), bits)
    stored = (integers.astype(np.float32) * scale.astype(np.float32)[:, None]).reshape(-1)[: values.numel()]
    assert np.array_equal(fake_quantize(values, bits).numpy().reshape(-1), stored)


def test_rounding_passes_gradients_straight_through():
    values = torch.randn(300, requires_grad=True)
    (fake_quantize(values, 4) * torch.arange(300.0)).sum().backward()
    assert torch.equal(values.grad, torch.arange(300.0))


@pytest.fixture(scope="module")
def space():
    meshes = [TriangleMesh(*torus(1.0, radius)) for radius in (0.25, 0.45)]
    return fit_shape_space(meshes, FieldConfig(width=64, depth=2, fourier_features=32, latent_dim=8),
                           TrainConfig(steps=150, batch=4096, pool_size=1 << 14, device="cpu"), names=["thin", "fat"])


def test_a_space_compresses_with_one_decoder_and_every_code(space, tmp_path):
    half = len(space_content(space, "float16"))
    result = compress_space(space, target_bytes=half // 2, device="cpu")
    assert len(result.content) <= half // 2 and result.report["bits"] in (10, 8, 6, 5, 4)
    path = tmp_path / "space.nfield"
    path.write_bytes(result.content)
    back = load_space(path)
    assert back.names == space.names and back.codes.shape == space.codes.shape
    from neural_field_addon.core.fields.shapespace import select_field

    points = _points()
    for shape in range(len(space.names)):
        error = (select_field(back, shape=shape).evaluate_field_space(points)
                 - select_field(space, shape=shape).evaluate_field_space(points)).abs().max()
        assert float(error) < 5e-2


def test_a_space_too_large_for_its_target_is_refused_with_its_size(space):
    with pytest.raises(ValueError, match="the space takes .* bytes at 4 bits"):
        compress_space(space, target_bytes=1000, device="cpu")


def test_a_packed_space_reads_back_like_its_zip(space, tmp_path):
    save_space(tmp_path / "zip.nfield", space, "int8")
    save_space(tmp_path / "packed.nfield", space, "int8", "lzma")
    zipped, packed = load_space(tmp_path / "zip.nfield"), load_space(tmp_path / "packed.nfield")
    assert torch.equal(zipped.codes, packed.codes)
    points = _points()
    assert torch.equal(zipped.network(points, zipped.codes[0]), packed.network(points, packed.codes[0]))
