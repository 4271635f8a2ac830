"""How a field file keeps its arrays: the fewest bytes that keep a field's fidelity.

Precisions (`STORAGE_PRECISIONS`):
- 'float32': as trained; every file before format version 7 holds only this;
- 'float16': half precision, the default: a hash table's entries and an MLP's weights lose
  nothing a fit can show (the bunny's Fast field: Chamfer 1.31e-4 either way, issue 21's probe);
- 'int8': symmetric 8-bit integers with one float16 scale per block of BLOCK values (the
  block's largest magnitude maps to 127), a quarter of float32's bytes; arrays smaller than
  SMALL_ARRAY values (biases, codes) stay float16, where scales would cost more than they save.
Entropy coding (`codec='lzma'`): the archive's members compressed with LZMA (the standard
library's xz, through zipfile, which NumPy's loader reads as it reads any zip), worth most on
quantised tables, whose values repeat.

An encoded array is one or three archive members: `key` itself (float32 or float16), or
`key:q` (int8, padded to whole blocks), `key:scale` (float16, one per block) and `key:shape`.
`DecodedArchive` reads them back as float32 arrays under the plain keys, so the readers of the
format see one kind of archive whatever the precision.
"""

from __future__ import annotations

import numpy as np

from ..config import CODECS, STORAGE_PRECISIONS, check_storage  # noqa: F401 - part of this module's interface

BLOCK = 64
SMALL_ARRAY = 4 * BLOCK
FLOAT16_MAX = float(np.finfo(np.float16).max)
_PARTS = (":q", ":scale", ":shape")


def encode(key: str, array: np.ndarray, precision: str) -> dict:
    """The archive members (name -> array) that keep `array` at `precision`; integer arrays (a
    network's index buffers) are kept as they are."""
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        return {key: array}
    array = array.astype(np.float32)
    finite_range = float(np.abs(array).max()) if array.size else 0.0
    if precision == "float32" or finite_range > FLOAT16_MAX or not np.all(np.isfinite(array)):
        return {key: array}  # float16 would overflow: kept as it is
    if precision == "float16" or array.size < SMALL_ARRAY:
        return {key: array.astype(np.float16)}
    flat = array.reshape(-1)
    blocks = np.zeros((-(-flat.size // BLOCK), BLOCK), dtype=np.float32)
    blocks.reshape(-1)[: flat.size] = flat
    scale = (np.abs(blocks).max(axis=1) / 127.0).astype(np.float16)
    # Quantise with the stored (float16-rounded) scale, so decoding inverts exactly what was done.
    divisor = np.where(scale > 0, scale.astype(np.float32), 1.0)[:, None]
    quantised = np.clip(np.rint(blocks / divisor), -127, 127).astype(np.int8)
    return {f"{key}:q": quantised.reshape(-1), f"{key}:scale": scale,
            f"{key}:shape": np.asarray(array.shape, dtype=np.int64)}


def decode(archive, key: str) -> np.ndarray:
    """The array stored under `key` in an archive (NpzFile or a mapping of arrays): float32, or the
    integers it was."""
    names = set(archive.files) if hasattr(archive, "files") else set(archive)
    if key in names:
        value = np.asarray(archive[key])
        return value.astype(np.float32) if np.issubdtype(value.dtype, np.floating) else value
    shape = tuple(int(n) for n in np.asarray(archive[f"{key}:shape"]))
    quantised = np.asarray(archive[f"{key}:q"]).reshape(-1, BLOCK).astype(np.float32)
    scale = np.asarray(archive[f"{key}:scale"]).astype(np.float32)
    if quantised.shape[0] != scale.shape[0] or int(np.prod(shape)) > quantised.size:
        raise ValueError(f"the quantised array {key} does not match its scales or shape")
    return (quantised * scale[:, None]).reshape(-1)[: int(np.prod(shape))].reshape(shape)


class DecodedArchive:
    """An archive's arrays as float32 under their plain keys, decoded on access."""

    def __init__(self, data):
        self._data = data
        keys = []
        for name in data.files:
            for part in _PARTS:
                if name.endswith(part):
                    name = name[: -len(part)]
                    break
            if name not in keys:
                keys.append(name)
        self.files = keys

    def __getitem__(self, key: str) -> np.ndarray:
        if key == "__header__":
            return self._data[key]
        return decode(self._data, key)

    def __contains__(self, key: str) -> bool:
        return key in self.files
