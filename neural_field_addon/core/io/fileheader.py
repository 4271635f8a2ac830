"""The `.nfield` header, readable with NumPy alone: Blender's side checks a field file (missing,
corrupt, newer) without importing torch, which may not even be installed in Blender's Python.
fieldfile.py, which reads and writes whole fields, builds on it."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from .codecs import PACKED_MAGIC, PackedArchive

FORMAT_NAME = "neural-field"
FORMAT_VERSION = 9  # the newest version this add-on reads
FIELD_VERSION = 2  # what single fields are written as
SPACE_VERSION = 3  # shape spaces
GRID_SPACE_VERSION = 4  # shape spaces with latent grids
COLOR_VERSION = 5  # fields and spaces with colour
SIDES_VERSION = 6  # shell fields with a side network (their sheets can be extracted)
STORAGE_VERSION = 7  # arrays stored below float32 (io/codecs.py) or entropy-coded
PACKED_VERSION = 8  # the packed, entropy-coded container (io/codecs.py) and derived buffers left out
WIDE_VERSION = 9  # packed weights quantised above 8 bits (two byte planes)
SPACE_CONTENT = "shape-space"
SUFFIX = ".nfield"


class FieldFileError(ValueError):
    """A field file is missing, corrupt, or from a newer version."""


def read_header(path: str | os.PathLike) -> dict:
    """The header of a field file, checked for format and version; FieldFileError says what is
    wrong (missing, corrupt, not a field file, written by a newer version)."""
    with open_archive(path) as data:
        return parse_header(path, data)


def open_archive(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FieldFileError(f"field file not found: {path}")
    try:
        with open(path, "rb") as handle:
            if handle.read(len(PACKED_MAGIC)) == PACKED_MAGIC:
                return PackedArchive(PACKED_MAGIC + handle.read())
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise FieldFileError(f"field file {path} is corrupt or not a field file: {error}") from error


def parse_header(path, data) -> dict:
    try:
        header = json.loads(bytes(np.asarray(data["__header__"], dtype=np.uint8)).decode("utf-8"))
    except (KeyError, ValueError, zipfile.BadZipFile) as error:
        raise FieldFileError(f"field file {path} has no readable header: {error}") from error
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise FieldFileError(f"{path} is not a Neural Field file")
    version = header.get("version")
    if not isinstance(version, int) or version < 1:
        raise FieldFileError(f"field file {path} has an invalid version {version!r}")
    if version > FORMAT_VERSION:
        raise FieldFileError(
            f"field file {path} was written by a newer Neural Field (format version {version}); "
            f"this version reads up to {FORMAT_VERSION}. Update the add-on to open it."
        )
    return header


def has_sides(header: dict) -> bool:
    """Whether a field file's header describes a side network (a shell whose sheet extracts)."""
    return isinstance(header.get("side_config"), dict)


def has_color(header: dict) -> bool:
    """Whether a field file's header describes a colour network beside the shape."""
    return isinstance(header.get("color_config"), dict)
