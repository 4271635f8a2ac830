"""How field files keep their parameters: float16 by default, int8 with block scales and LZMA
where asked, float32 exactly; every precision reads back, and a damaged quantised array is refused."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch

from neural_field_addon.core.config import FieldConfig, TrainConfig
from neural_field_addon.core.fitting.fitter import FieldFitter
from neural_field_addon.core.geometry import TriangleMesh
from neural_field_addon.core.geometry.procedural import icosphere
from neural_field_addon.core.io.codecs import BLOCK, decode, encode
from neural_field_addon.core.io.fieldfile import FieldFileError, load_field, save_field
from neural_field_addon.core.io.fileheader import STORAGE_VERSION, read_header

CONFIGS = {
    "fourier": FieldConfig(encoding="fourier", fourier_features=64, width=64, depth=2),
    "hashgrid": FieldConfig(encoding="hashgrid", hash_levels=4, hash_log2_size=12, hash_finest_resolution=64,
                            width=16, depth=1, activation="relu"),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def field(request):
    mesh = TriangleMesh(*icosphere(1.0, 2))
    train = TrainConfig(steps=30, batch=1024, pool_size=4096, device="cpu")
    return FieldFitter(mesh, CONFIGS[request.param], train).run()


def _error(a, b) -> float:
    points = torch.rand(4000, 3) * 2.2 - 1.1
    return float((a.evaluate_field_space(points) - b.evaluate_field_space(points)).abs().max())


def test_a_field_is_stored_in_float16_by_default_at_half_the_bytes(field, tmp_path):
    save_field(tmp_path / "half.nfield", field)
    save_field(tmp_path / "full.nfield", field, "float32")
    header = read_header(tmp_path / "half.nfield")
    assert header["version"] == STORAGE_VERSION and header["storage"]["precision"] == "float16"
    half, full = (tmp_path / "half.nfield").stat().st_size, (tmp_path / "full.nfield").stat().st_size
    assert half < 0.6 * full
    assert _error(load_field(tmp_path / "half.nfield"), field) < 1e-3  # field units (the box is [-1, 1])
    assert _error(load_field(tmp_path / "full.nfield"), field) == 0.0


def test_int8_with_lzma_is_smaller_still_and_close(field, tmp_path):
    save_field(tmp_path / "half.nfield", field)
    save_field(tmp_path / "small.nfield", field, "int8", "lzma")
    assert (tmp_path / "small.nfield").stat().st_size < 0.7 * (tmp_path / "half.nfield").stat().st_size
    assert read_header(tmp_path / "small.nfield")["storage"] == {"precision": "int8", "block": BLOCK, "codec": "lzma"}
    assert _error(load_field(tmp_path / "small.nfield"), field) < 2e-2


def test_block_quantisation_is_within_half_a_step_of_each_block():
    values = np.random.default_rng(0).normal(size=(37, 29)).astype(np.float32) * np.linspace(0.01, 10, 29)
    members = encode("table", values, "int8")
    back = decode(members, "table")
    steps = np.repeat(members["table:scale"].astype(np.float32), BLOCK)[: values.size].reshape(values.shape)
    assert back.shape == values.shape and np.all(np.abs(back - values) <= 0.5 * steps + 1e-6 * np.abs(values))


def test_integer_buffers_are_kept_exactly():
    members = encode("offsets", np.array([0, 1 << 20, (1 << 24) + 1], dtype=np.int64), "int8")
    assert np.array_equal(decode(members, "offsets"), [0, 1 << 20, (1 << 24) + 1])


def test_a_damaged_quantised_array_is_refused_with_a_message(field, tmp_path):
    path = tmp_path / "small.nfield"
    save_field(path, field, "int8")
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    scale = next(name for name in members if name.endswith(":scale.npy"))
    shortened = io.BytesIO()
    np.save(shortened, np.load(io.BytesIO(members[scale]))[:-1])
    members[scale] = shortened.getvalue()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(FieldFileError, match="corrupt"):
        load_field(path)


def test_an_unknown_storage_precision_is_refused(field, tmp_path):
    with pytest.raises(ValueError, match="storage precision"):
        save_field(tmp_path / "x.nfield", field, "int4")
    assert not list(tmp_path.iterdir())  # nothing written
