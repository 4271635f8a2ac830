"""The `.nfield` file: a versioned, code-free container for a fitted field.

Layout: a NumPy `.npz` archive (a zip) holding
- `__header__`: UTF-8 JSON as a uint8 array: format name and version, field config, the
  object-to-field transform, the box, and the training report;
- `param/<name>`: one array per network parameter or buffer (float32).
- `space/codes`: for a shape space, its latent codes (shapes, latent_dim);
- `space/grids`: for a shape space with latent grids, the grids (shapes, R, R, R, C), spanning
  the header's `grid_low` to `grid_high`;
- `color/<name>`: the colour network's parameters, when the header has a `color_config`;
- `space/color_codes`: for a shape space with colour, the appearance codes (shapes, C);
- `sides/<name>`: a shell's side network (fields/sides.py), when the header has a `side_config`.
Version 2 added field kinds, SIREN and hash-grid encodings and renamed the hidden layers;
version 1 files still load (their layer names are mapped). Version 3 is a shape space (header
`content: "shape-space"` with the shapes' names and transforms), version 4 one with latent grids;
single fields stay version 2 and plain spaces 3 (their headers leave the latent-grid settings
out), so earlier add-ons read what they can and refuse the rest as newer. Version 5 is a field or
a space with colour; without colour a file keeps its earlier version. Version 6 is a shell field
with a side network, whose sheet can be extracted. Version 7 stores arrays below float32
(io/codecs.py: float16, the default, or int8 with block scales) or entropy-coded; the header's
`storage` says how, and every array reads back as float32. Version 8 is the packed container
(io/codecs.py) that entropy coding now writes: no zip, arrays down to 4 bits, and buffers a
freshly built network reproduces (a Fourier projection drawn from the seed) left out, listed
under the header's `derived`; version-7 zips still read.
It is read with `allow_pickle=False`, so loading a file never executes code. Writes go to a
temporary file in the same folder and are renamed into place, so a crash never leaves half a file.
"""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import torch

from ..config import DEFAULT_PRECISION, FieldConfig, config_from_dict, config_to_dict, resolve_precision, storage_bits
from ..fields.color import color_network
from ..fields.field import NeuralField
from ..fields.networks import FieldNetwork
from ..fields.shapespace import ShapeSpace
from ..fields.sides import side_network
from ..geometry import FieldTransform
from .codecs import BLOCK, PACKED_MAGIC, DecodedArchive, PackedArchive, check_storage, encode, pack
from .fileheader import (  # noqa: F401 - the header's names are part of this module's interface
    COLOR_VERSION,
    FIELD_VERSION,
    FORMAT_NAME,
    FORMAT_VERSION,
    GRID_SPACE_VERSION,
    PACKED_VERSION,
    SIDES_VERSION,
    SPACE_CONTENT,
    SPACE_VERSION,
    STORAGE_VERSION,
    SUFFIX,
    WIDE_VERSION,
    FieldFileError,
    has_color,
    has_sides,
    open_archive,
    parse_header,
    read_header,
)


def save_field(path: str | os.PathLike, field: NeuralField, precision: str = DEFAULT_PRECISION,
               codec: str | None = None) -> None:
    """Write a field, its arrays at `precision` and (codec 'lzma') entropy-coded (io/codecs.py)."""
    write_content(path, field_content(field, precision, codec))


def field_content(field: NeuralField, precision: str = DEFAULT_PRECISION, codec: str | None = None) -> bytes:
    """The bytes save_field writes: what a field costs to keep or send at this storage."""
    header = {
        "format": FORMAT_NAME,
        "version": FIELD_VERSION,
        "field_config": _config_header(field.config),
        "transform": field.transform.as_dict(),
        "box_low": [float(v) for v in field.box_low],
        "box_high": [float(v) for v in field.box_high],
        "report": field.report,
    }
    _describe(header, "color_config", field.color_config, COLOR_VERSION)
    _describe(header, "side_config", field.side_config, SIDES_VERSION)
    return _content(header, {"param": field.network, "color": field.color_network, "sides": field.side_network}, {},
                    precision, codec)


def save_space(path: str | os.PathLike, space, precision: str = DEFAULT_PRECISION, codec: str | None = None) -> None:
    """Write a ShapeSpace (decoder, codes, names, per-shape transforms), stored as save_field."""
    write_content(path, space_content(space, precision, codec))


def space_content(space, precision: str = DEFAULT_PRECISION, codec: str | None = None) -> bytes:
    """The bytes save_space writes."""
    header = {
        "format": FORMAT_NAME,
        "version": GRID_SPACE_VERSION if space.grids is not None else SPACE_VERSION,
        "content": SPACE_CONTENT,
        "field_config": _config_header(space.config),
        "names": list(space.names),
        "transforms": [t.as_dict() for t in space.transforms],
        "box_low": [float(v) for v in space.box_low],
        "box_high": [float(v) for v in space.box_high],
        "report": space.report,
    }
    arrays = {"space/codes": space.codes.detach().float().cpu().numpy()}
    if space.grids is not None:
        header["grid_low"] = [float(v) for v in space.grid_low]
        header["grid_high"] = [float(v) for v in space.grid_high]
        arrays["space/grids"] = space.grids.detach().float().cpu().numpy()
    _describe(header, "color_config", space.color_config, COLOR_VERSION)
    if space.color_codes is not None:
        arrays["space/color_codes"] = space.color_codes.detach().float().cpu().numpy()
    return _content(header, {"param": space.network, "color": space.color_network}, arrays, precision, codec)


def _describe(header: dict, key: str, config, version: int) -> None:
    """A second network's config put into the header (colour, sides), the version raised to what
    reads it; nothing without one."""
    if config is not None:
        header["version"] = max(header["version"], version)
        header[key] = config_to_dict(config)


def _config_header(config: FieldConfig) -> dict:
    """The config as the header stores it: without the latent-grid settings when there are no
    grids, so add-ons from before grids (which refuse unknown settings) still read the file."""
    data = config_to_dict(config)
    if not config.latent_grid:
        del data["latent_grid"], data["latent_grid_features"]
    return data


def is_space(path: str | os.PathLike) -> bool:
    return read_header(path).get("content") == SPACE_CONTENT


def _content(header: dict, networks: dict, extra: dict, precision: str, codec) -> bytes:
    """A file's bytes: each network's state under its prefix ('param' the field's own, 'color',
    'sides'; None skipped) beside the `extra` arrays; a zip (an .npz) without a codec, the packed
    container with one."""
    check_storage(precision, codec)
    precision = resolve_precision(precision, config_from_dict(FieldConfig, header["field_config"]))
    arrays = dict(extra)
    fixed = set()  # the networks' buffers, kept in float32 (below)
    derived = []  # buffers a fresh network reproduces: left out of a packed file
    for prefix, network in networks.items():
        if network is None:
            continue
        fresh = _fresh_buffers(network) if codec is not None else {}
        buffers = {name for name, _ in network.named_buffers()}
        for name, tensor in network.state_dict().items():
            tensor = tensor.detach().cpu()
            if name in fresh and torch.equal(fresh[name], tensor):
                derived.append(f"{prefix}/{name}")
                continue
            arrays[f"{prefix}/{name}"] = (tensor.float() if tensor.is_floating_point() else tensor).numpy()
            if name in buffers:
                fixed.add(f"{prefix}/{name}")
    if precision != "float32" or codec is not None:
        header["version"] = max(header["version"], STORAGE_VERSION)
        header["storage"] = {"precision": precision, "block": BLOCK, "codec": codec}
    # Buffers (a Fourier projection, a fixed code) are not learned: rounding them moves every
    # feature at once (int8 projections: 1.8e-2 of error, against 2.3e-3 for the weights alone).
    precisions = {key: "float32" if key in fixed else precision for key in arrays}
    if codec is not None:
        header["version"] = max(header["version"], PACKED_VERSION if (storage_bits(precision) or 8) <= 8
                                else WIDE_VERSION)
        header["derived"] = derived
        return pack(header, arrays, precisions)
    buffer = io.BytesIO()
    _write_zip(buffer, header, arrays, precisions)
    return buffer.getvalue()


def write_content(path, content: bytes) -> None:
    """Write `content` to a temporary file in the same folder and rename it into place, so a
    crash never leaves half a file."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _write_zip(handle, header: dict, arrays: dict, precisions: dict) -> None:
    """The archive np.savez writes, each array encoded at its precision (io/codecs.py)."""
    members = {"__header__": np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)}
    for key, array in arrays.items():
        members.update(encode(key, array, precisions[key]))
    with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key, array in members.items():
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)


def _fresh_buffers(network) -> dict:
    """The buffers a freshly built network of the same config holds (its seed fixes them), or
    none for a network that is not built from a config alone."""
    if type(network) is not FieldNetwork:
        return {}
    with torch.device("cpu"):
        fresh = FieldNetwork(network.config, network.outputs)
    return {name: buffer for name, buffer in fresh.named_buffers()}


def load(path: str | os.PathLike, device: str = "cpu") -> NeuralField | ShapeSpace:
    """What a field file holds, read once: a NeuralField, or a ShapeSpace (fields.shapespace
    .select_field then picks a shape or a blend of it)."""
    return _load(path, device, None)


def load_field(path: str | os.PathLike, device: str = "cpu") -> NeuralField:
    """A single field; a shape space is refused with how to choose one of its shapes."""
    return _load(path, device, "field")


def load_space(path: str | os.PathLike, device: str = "cpu") -> ShapeSpace:
    """A shape space written by save_space; a single field is refused."""
    return _load(path, device, "space")


def load_content(content: bytes, device: str = "cpu", label: str = "the compressed field"):
    """What a file's bytes (field_content, space_content) hold, without a file: a NeuralField
    or a ShapeSpace."""
    try:
        data = PackedArchive(content) if content.startswith(PACKED_MAGIC) else np.load(io.BytesIO(content))
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise FieldFileError(f"{label} is corrupt: {error}") from error
    return _from_archive(label, data, device, None)


def _load(path, device: str, expected: str | None):
    path = os.fspath(path)
    return _from_archive(path, open_archive(path), device, expected)


def _from_archive(path: str, archive, device: str, expected: str | None):
    with archive as data:
        header = parse_header(path, data)
        data = DecodedArchive(data)
        space = header.get("content") == SPACE_CONTENT
        if expected == "field" and space:
            raise FieldFileError(
                f"{path} is a shape space of {len(header.get('names', []))} shapes, not a single field: "
                "choose a shape (extract --shape I) or a blend (--blend I=w,J=w)"
            )
        if expected == "space" and not space:
            raise FieldFileError(f"{path} is a single field, not a shape space")
        return _read_space(path, header, data, device) if space else _read_field(path, header, data, device)


def _read_field(path: str, header: dict, data, device: str) -> NeuralField:
    try:
        config, network = _network(header, data)
        transform = FieldTransform.from_dict(header["transform"])
        box_low = np.asarray(header["box_low"], dtype=np.float64)
        box_high = np.asarray(header["box_high"], dtype=np.float64)
        color_config, color = _color_network(header, data)
        side_config, sides = _side_network(header, data)
    except (KeyError, ValueError, RuntimeError, zipfile.BadZipFile) as error:
        raise FieldFileError(f"field file {path} is corrupt: {error}") from error
    return NeuralField(config=config, network=network.to(device), transform=transform, box_low=box_low,
                       box_high=box_high, report=header.get("report", {}),
                       color_network=None if color is None else color.to(device), color_config=color_config,
                       side_network=None if sides is None else sides.to(device), side_config=side_config)


def _read_space(path: str, header: dict, data, device: str) -> ShapeSpace:
    try:
        config, network = _network(header, data)
        codes = torch.from_numpy(np.array(data["space/codes"])).float()
        names = [str(name) for name in header["names"]]
        transforms = [FieldTransform.from_dict(t) for t in header["transforms"]]
        if codes.shape != (len(names), config.latent_dim) or len(transforms) != len(names):
            raise ValueError(f"codes {tuple(codes.shape)} do not match {len(names)} shapes of "
                             f"latent_dim {config.latent_dim}")
        box_low = np.asarray(header["box_low"], dtype=np.float64)
        box_high = np.asarray(header["box_high"], dtype=np.float64)
        grids = grid_low = grid_high = None
        if config.latent_grid:
            grids = torch.from_numpy(np.array(data["space/grids"])).float()
            side, features = config.latent_grid, config.latent_grid_features
            if grids.shape != (len(names), side, side, side, features):
                raise ValueError(f"grids {tuple(grids.shape)} do not match {len(names)} shapes of "
                                 f"{side}^3 x {features}")
            grid_low = np.asarray(header["grid_low"], dtype=np.float64)
            grid_high = np.asarray(header["grid_high"], dtype=np.float64)
            if grid_low.shape != (3,) or grid_high.shape != (3,) or not np.all(grid_high > grid_low):
                raise ValueError(f"the grids' box {grid_low.tolist()} - {grid_high.tolist()} is not a box")
            if not bool(torch.isfinite(grids).all()):
                raise ValueError("the latent grids hold NaN or infinite values")
            grids = grids.to(device)
        color_config, color = _color_network(header, data)
        color_codes = None
        if color is not None:
            color_codes = torch.from_numpy(np.array(data["space/color_codes"])).float()
            if color_codes.shape[0] != len(names) or codes.shape[1] + color_codes.shape[1] != color_config.latent_dim:
                raise ValueError(f"appearance codes {tuple(color_codes.shape)} do not match {len(names)} shapes and "
                                 f"a colour decoder of latent_dim {color_config.latent_dim}")
            color_codes = color_codes.to(device)
    except (KeyError, ValueError, RuntimeError, zipfile.BadZipFile) as error:
        raise FieldFileError(f"shape space file {path} is corrupt: {error}") from error
    return ShapeSpace(config=config, network=network.to(device), codes=codes.to(device), names=names,
                      transforms=transforms, box_low=box_low, box_high=box_high, report=header.get("report", {}),
                      grids=grids, grid_low=grid_low, grid_high=grid_high,
                      color_network=None if color is None else color.to(device), color_config=color_config,
                      color_codes=color_codes)


def _network(header: dict, data):
    """The config and network (with its weights) a header and archive describe."""
    config = config_from_dict(FieldConfig, header["field_config"])
    network = FieldNetwork(config)
    state = _state(header, data, "param/", network)
    if header["version"] == 1:
        state = _state_from_version_1(state)
    network.load_state_dict(state, strict=True)
    return config, network


def _color_network(header: dict, data):
    """The colour config and network of a file with colour, or (None, None)."""
    return _second_network(header, data, "color_config", "color/", color_network) if has_color(header) else (None, None)


def _side_network(header: dict, data):
    """The side config and network of a shell file with sides, or (None, None)."""
    return _second_network(header, data, "side_config", "sides/", side_network) if has_sides(header) else (None, None)


def _second_network(header: dict, data, key: str, prefix: str, build):
    """The config under header[key] and the network `build` makes of it, with the archive's
    `prefix` parameters."""
    config = config_from_dict(FieldConfig, header[key])
    network = build(config)
    state = _state(header, data, prefix, network)
    network.load_state_dict(state, strict=True)
    return config, network


def _state(header: dict, data, prefix: str, network) -> dict:
    """A network's state from the archive's `prefix` arrays, with the buffers the header lists as
    derived taken from the freshly built `network`."""
    state = {name[len(prefix) :]: torch.from_numpy(np.array(data[name])) for name in data.files
             if name.startswith(prefix)}
    derived = header.get("derived", [])
    for name, buffer in network.named_buffers():
        if f"{prefix}{name}" in derived:
            state[name] = buffer
    return state


def _state_from_version_1(state: dict) -> dict:
    """Version 1 kept the hidden layers in a Sequential ('mlp.0', activation, 'mlp.2', ...);
    version 2 keeps only the linear layers ('hidden.0', 'hidden.1', ...)."""
    renamed = {}
    for key, value in state.items():
        if key.startswith("mlp."):
            _, index, rest = key.split(".", 2)
            key = f"hidden.{int(index) // 2}.{rest}"
        renamed[key] = value
    return renamed
