"""The live-preview worker (core/service/preview.py) and its driver (blender/jobs.py PreviewSession): a
long-lived process that keeps a shape space loaded, answers blends with meshes, skips blends a
newer one has overtaken, and reports bad requests without stopping."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from checks import edge_face_counts
from neural_field_addon.blender.jobs import PreviewSession
from neural_field_addon.core.config import FieldConfig, TrainConfig
from neural_field_addon.core.fields.networks import ConditionedNetwork, FieldNetwork
from neural_field_addon.core.fitting.space_fitter import fit_shape_space
from neural_field_addon.core.geometry import TriangleMesh
from neural_field_addon.core.geometry.procedural import signed_volume, torus
from neural_field_addon.core.io.fieldfile import save_space
from neural_field_addon.core.io.meshio import load_mesh


@pytest.fixture(scope="module")
def space_path(tmp_path_factory):
    meshes = [TriangleMesh(*torus(1.0, radius)) for radius in (0.2, 0.5)]
    space = fit_shape_space(meshes, FieldConfig(width=64, depth=3, fourier_sigma=0.75, latent_dim=8),
                            TrainConfig(steps=150, batch=4096, pool_size=1 << 14, device="cpu"))
    path = tmp_path_factory.mktemp("preview") / "space.nfield"
    save_space(path, space)
    return str(path)


@pytest.fixture
def session(space_path):
    session = PreviewSession(space_path, device="cpu")
    yield session
    session.close()


def _replies(session, count, timeout=60.0):
    replies, deadline = [], time.monotonic() + timeout
    while len(replies) < count and time.monotonic() < deadline:
        replies += session.poll(timeout=0.2)
    return replies


@pytest.mark.parametrize("skip_layer", [0, 1, 2])
@pytest.mark.parametrize("kind", ["sdf", "occupancy"])
def test_a_code_folded_into_the_biases_gives_the_decoders_values(skip_layer, kind):
    decoder = FieldNetwork(FieldConfig(kind=kind, width=32, depth=3, skip_layer=skip_layer, latent_dim=8))
    code, points = torch.randn(8), torch.rand(500, 3) * 2 - 1
    with torch.no_grad():
        expected = decoder.field_value(points, code)
        folded = ConditionedNetwork(decoder, code).field_value(points)
    torch.testing.assert_close(folded, expected, atol=2e-6, rtol=1e-5)


def test_blends_come_back_as_closed_meshes_growing_with_the_mix(session):
    [loaded] = _replies(session, 1)
    assert loaded["type"] == "loaded" and loaded["shapes"] == 2
    volumes = []
    for mix in (0.0, 0.5, 1.0):
        request = session.request({0: 1.0 - mix, 1: mix}, resolution=32)
        [reply] = _replies(session, 1)
        assert reply["type"] == "mesh" and reply["id"] == request
        mesh = load_mesh(reply["path"])
        assert np.all(edge_face_counts(mesh.faces) == 2)
        volumes.append(signed_volume(mesh.vertices, mesh.faces))
    assert volumes[0] < volumes[1] < volumes[2]


def test_blends_overtaken_by_newer_ones_are_skipped(session):
    _replies(session, 1)  # loaded
    ids = [session.request({0: 1.0 - mix, 1: mix}, resolution=48) for mix in np.linspace(0, 1, 12)]
    answered = []
    deadline = time.monotonic() + 60
    while ids[-1] not in answered and time.monotonic() < deadline:
        answered += [reply["id"] for reply in session.poll(timeout=0.2) if reply["type"] == "mesh"]
    assert answered[-1] == ids[-1]
    assert len(answered) < len(ids)
    assert answered == sorted(answered)


def test_a_bad_request_is_answered_with_the_reason_and_the_worker_stays_up(session):
    _replies(session, 1)
    bad = session.request({0: 0.5, 5: 0.5}, resolution=32)
    [reply] = _replies(session, 1)
    assert reply["type"] == "error" and reply["id"] == bad and "out of range" in reply["message"]
    good = session.request({1: 1.0}, resolution=32)
    [reply] = _replies(session, 1)
    assert reply["type"] == "mesh" and reply["id"] == good and session.alive


def test_a_file_that_is_not_a_space_is_refused(tmp_path):
    path = tmp_path / "nothing.nfield"
    path.write_bytes(b"not a field")
    session = PreviewSession(str(path), device="cpu")
    try:
        [reply] = _replies(session, 1)
        assert reply["type"] == "error" and "not a field file" in reply["message"]
    finally:
        session.close()
