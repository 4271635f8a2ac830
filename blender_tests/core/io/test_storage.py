"""How field files keep their parameters: float16 by default, int4..int10 with block scales and
LZMA where asked, float32 exactly; every precision reads back, and a damaged quantised array is refused."""

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
from neural_field_addon.core.io.codecs import BLOCK, decode, encode, is_packed
from neural_field_addon.core.io.fieldfile import FieldFileError, load_field, save_field
from neural_field_addon.core.io.fileheader import PACKED_VERSION, STORAGE_VERSION, WIDE_VERSION, read_header

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


def test_a_field_is_stored_in_float16_or_for_a_hash_grid_int8_by_default(field, tmp_path):
    save_field(tmp_path / "default.nfield", field)
    save_field(tmp_path / "full.nfield", field, "float32")
    header = read_header(tmp_path / "default.nfield")
    expected = "int8" if field.config.encoding == "hashgrid" else "float16"
    assert header["version"] == STORAGE_VERSION and header["storage"]["precision"] == expected
    small, full = (tmp_path / "default.nfield").stat().st_size, (tmp_path / "full.nfield").stat().st_size
    assert small < (0.35 if expected == "int8" else 0.6) * full
    bound = 2e-2 if expected == "int8" else 1e-3  # field units (the box is [-1, 1])
    assert _error(load_field(tmp_path / "default.nfield"), field) < bound
    assert _error(load_field(tmp_path / "full.nfield"), field) == 0.0


def test_int8_with_lzma_is_smaller_still_and_close(field, tmp_path):
    save_field(tmp_path / "half.nfield", field, "float16")
    save_field(tmp_path / "small.nfield", field, "int8", "lzma")
    assert (tmp_path / "small.nfield").stat().st_size < 0.7 * (tmp_path / "half.nfield").stat().st_size
    header = read_header(tmp_path / "small.nfield")
    assert header["storage"] == {"precision": "int8", "block": BLOCK, "codec": "lzma"}
    assert header["version"] == PACKED_VERSION and is_packed(tmp_path / "small.nfield")
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
        save_field(tmp_path / "x.nfield", field, "int3")
    assert not list(tmp_path.iterdir())  # nothing written


def test_fewer_than_8_bits_need_the_codec(field, tmp_path):
    with pytest.raises(ValueError, match="int6 storage needs the lzma codec"):
        save_field(tmp_path / "x.nfield", field, "int6")
    assert not list(tmp_path.iterdir())


def _assert_within_half_a_step(field, back, bits: int) -> None:
    """Every block-quantised parameter of `back` within half a level of `field`'s (a level: the
    tensor's largest magnitude over 2^(bits-1) - 1)."""
    levels = 2 ** (bits - 1) - 1
    for (name, original), (_, stored) in zip(field.network.state_dict().items(), back.network.state_dict().items()):
        if original.is_floating_point() and original.numel() >= 256:
            step = float(original.abs().max()) / levels
            assert float((stored - original).abs().max()) <= 0.5 * step * 1.01 + 1e-7, name


@pytest.mark.parametrize("precision", ["int6", "int4"])
def test_fewer_bits_with_lzma_are_smaller_and_within_half_a_step(field, tmp_path, precision):
    save_field(tmp_path / "int8.nfield", field, "int8", "lzma")
    save_field(tmp_path / "small.nfield", field, precision, "lzma")
    assert (tmp_path / "small.nfield").stat().st_size < (tmp_path / "int8.nfield").stat().st_size
    back = load_field(tmp_path / "small.nfield")
    _assert_within_half_a_step(field, back, int(precision[3:]))


def test_10_bits_are_finer_than_8_and_within_half_a_step(field, tmp_path):
    save_field(tmp_path / "wide.nfield", field, "int10", "lzma")
    assert read_header(tmp_path / "wide.nfield")["version"] == WIDE_VERSION
    back = load_field(tmp_path / "wide.nfield")
    save_field(tmp_path / "int8.nfield", field, "int8", "lzma")
    assert _error(back, field) < _error(load_field(tmp_path / "int8.nfield"), field)
    _assert_within_half_a_step(field, back, 10)


def test_8_bit_packed_files_stay_at_the_version_older_readers_take(field, tmp_path):
    save_field(tmp_path / "int8.nfield", field, "int8", "lzma")
    assert read_header(tmp_path / "int8.nfield")["version"] == PACKED_VERSION


def test_a_packed_file_leaves_out_what_the_seed_rebuilds(field, tmp_path):
    save_field(tmp_path / "packed.nfield", field, "float32", "lzma")
    header = read_header(tmp_path / "packed.nfield")
    if field.config.encoding == "fourier":
        assert "param/encoding.projection" in header["derived"]
    assert _error(load_field(tmp_path / "packed.nfield"), field) == 0.0


def test_version_7_files_written_as_zips_with_lzma_still_load(field, tmp_path):
    # The layout the previous release wrote for int8 + LZMA: a zip of LZMA-compressed members.
    import json

    header = {"format": "neural-field", "version": STORAGE_VERSION, "field_config": {
        k: v for k, v in __import__("dataclasses").asdict(field.config).items()
        if k not in ("latent_grid", "latent_grid_features")},
        "transform": field.transform.as_dict(), "box_low": [float(v) for v in field.box_low],
        "box_high": [float(v) for v in field.box_high], "report": {},
        "storage": {"precision": "int8", "block": BLOCK, "codec": "lzma"}}
    members = {"__header__": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
    buffers = {name for name, _ in field.network.named_buffers()}
    for name, tensor in field.network.state_dict().items():
        array = tensor.numpy()
        members.update(encode(f"param/{name}", array, "float32" if name in buffers else "int8"))
    path = tmp_path / "v7.nfield"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_LZMA) as archive:
        for key, array in members.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            archive.writestr(f"{key}.npy", buffer.getvalue())
    assert _error(load_field(path), field) < 2e-2
