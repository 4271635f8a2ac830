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

Quantisation below 8 bits ('int6', 'int5', 'int4') keeps the same blocks with fewer levels
(2^(bits-1) - 1 either side of zero), and `fake_quantize` in compression/quantization.py
rounds a tensor exactly as `quantise` does, so a network trained through it is stored without
further loss.

With the codec, a file is not a zip but a packed container (`pack` / `unpack`): PACKED_MAGIC,
then one xz stream (CRC-checked, so a damaged payload is refused) holding the header, every
float and integer array's bytes, and last every quantised value as one zigzag byte, so LZMA's
literal coder sees one distribution of small integers. A small field's zip directory alone
(about 100 bytes a member) would cost more than its weights.
"""

from __future__ import annotations

import json
import lzma
import struct

import numpy as np

from ..config import CODECS, STORAGE_PRECISIONS, check_storage, storage_bits  # noqa: F401 - this module's interface

BLOCK = 64
SMALL_ARRAY = 4 * BLOCK
FLOAT16_MAX = float(np.finfo(np.float16).max)
_PARTS = (":q", ":scale", ":shape")


def quantise(array: np.ndarray, bits: int):
    """(integers (blocks, BLOCK) int8, int16 above 8 bits; scales (blocks,) float16) of a float
    array at `bits`: each block of BLOCK values (the flattened array, zero-padded) scaled so its largest magnitude maps
    to 2^(bits-1) - 1, with the scale rounded to float16 before dividing, so decoding inverts
    exactly what was done. Up to 10 bits, rounding is idempotent (float16's 2^-11 of the scale
    moves the largest value less than half a level): a file keeps exactly the weights that
    quantisation-aware training saw. 12 would not be."""
    levels = 2 ** (bits - 1) - 1
    flat = np.asarray(array, dtype=np.float32).reshape(-1)
    blocks = np.zeros((-(-flat.size // BLOCK), BLOCK), dtype=np.float32)
    blocks.reshape(-1)[: flat.size] = flat
    scale = (np.abs(blocks).max(axis=1) / np.float32(levels)).astype(np.float16)
    divisor = np.where(scale > 0, scale.astype(np.float32), 1.0)[:, None]
    integers = np.clip(np.rint(blocks / divisor), -levels, levels)
    return integers.astype(np.int8 if bits <= 8 else np.int16), scale


def _kept_as_float(array: np.ndarray, precision: str) -> bool:
    """Whether an array stays a float at `precision`: float32 asked, values float16 cannot hold
    (it would overflow), or (below float32) too few values for block scales to pay."""
    finite_range = float(np.abs(array).max()) if array.size else 0.0
    return precision == "float32" or finite_range > FLOAT16_MAX or not np.all(np.isfinite(array))


def encode(key: str, array: np.ndarray, precision: str) -> dict:
    """The archive members (name -> array) that keep `array` at `precision`; integer arrays (a
    network's index buffers) are kept as they are."""
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        return {key: array}
    array = array.astype(np.float32)
    if _kept_as_float(array, precision):
        return {key: array}
    if precision == "float16" or array.size < SMALL_ARRAY:
        return {key: array.astype(np.float16)}
    quantised, scale = quantise(array, storage_bits(precision))
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


# ----------------------------------------------------------------------------- packed container

PACKED_MAGIC = b"NFPK"
# LZMA2 with no literal context (lc=0): the values are integers and raw floats, not text, so the
# previous byte says little about the next; xz's CRC32 makes a damaged payload an error.
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "lc": 0, "lp": 0, "pb": 0}]
_DTYPES = {"f4": np.float32, "f2": np.float16, "i8": np.int64, "i4": np.int32, "u1": np.uint8, "b1": np.bool_}


def is_packed(path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(PACKED_MAGIC)) == PACKED_MAGIC


def pack(header: dict, arrays: dict, precisions: dict) -> bytes:
    """The packed container of a header (a JSON object) and named arrays, each at its precision
    in `precisions` (float32 where not named)."""
    members, plain, values = [], [], []
    for key, array in arrays.items():
        array = np.asarray(array)
        precision = precisions.get(key, "float32")
        if np.issubdtype(array.dtype, np.floating):
            array = array.astype(np.float32)
            bits = storage_bits(precision)
            if bits is not None and array.size >= SMALL_ARRAY and not _kept_as_float(array, precision):
                quantised, scale = quantise(array, bits)
                members.append([key, "q", list(array.shape), bits])
                plain.append(scale.tobytes())
                flat = quantised.reshape(-1)[: array.size].astype(np.int32)
                zigzag = np.where(flat >= 0, 2 * flat, -2 * flat - 1)
                values.append((zigzag & 0xFF).astype(np.uint8).tobytes())
                if bits > 8:  # the high bytes as a plane of their own: small, they code in few bits
                    values.append((zigzag >> 8).astype(np.uint8).tobytes())
                continue
            if precision != "float32" and not _kept_as_float(array, precision):
                array = array.astype(np.float16)
        code = array.dtype.str[1:]
        if code not in _DTYPES:
            raise ValueError(f"cannot pack {key} of dtype {array.dtype}")
        members.append([key, code, list(array.shape)])
        plain.append(np.ascontiguousarray(array).tobytes())
    text = json.dumps({**header, "members": members}, separators=(",", ":")).encode("utf-8")
    payload = struct.pack("<I", len(text)) + text + b"".join(plain) + b"".join(values)
    return PACKED_MAGIC + lzma.compress(payload, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=_LZMA_FILTERS)


class PackedArchive:
    """A packed container read back: `files` and `archive[key]` as an NpzFile offers them (the
    header as '__header__', UTF-8 bytes in a uint8 array; quantised arrays decoded to float32)."""

    def __init__(self, data: bytes):
        try:
            self._read(data)
        except (KeyError, IndexError, TypeError, struct.error, UnicodeDecodeError) as error:
            raise ValueError(f"its payload does not match its header ({error!r})") from error

    def _read(self, data: bytes) -> None:
        if not data.startswith(PACKED_MAGIC):
            raise ValueError("not a packed field file")
        try:
            payload = lzma.decompress(data[len(PACKED_MAGIC):], format=lzma.FORMAT_XZ)
        except lzma.LZMAError as error:
            raise ValueError(f"its compressed payload is damaged ({error})") from error
        if len(payload) < 4:
            raise ValueError("its payload is truncated")
        (length,) = struct.unpack("<I", payload[:4])
        text = payload[4 : 4 + length]
        header = json.loads(text.decode("utf-8"))
        members = header.pop("members")
        self._arrays = {"__header__": np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)}
        quantised = [m for m in members if m[1] == "q"]
        offset = 4 + length
        scales = {}
        for key, code, shape, *bits in members:
            if code == "q":
                count = -(-int(np.prod(shape)) // BLOCK)
                scales[key] = np.frombuffer(payload, np.float16, count, offset)
                offset += 2 * count
            else:
                dtype = np.dtype(_DTYPES[code])
                count = int(np.prod(shape))
                self._arrays[key] = np.frombuffer(payload, dtype, count, offset).reshape(shape)
                offset += dtype.itemsize * count
        for key, _, shape, bits in quantised:
            count = int(np.prod(shape))
            zigzag = np.frombuffer(payload, np.uint8, count, offset).astype(np.int32)
            offset += count
            if bits > 8:
                zigzag = zigzag | (np.frombuffer(payload, np.uint8, count, offset).astype(np.int32) << 8)
                offset += count
            values = np.where(zigzag % 2 == 0, zigzag // 2, -(zigzag + 1) // 2).astype(np.float32)
            if np.abs(values).max(initial=0) > 2 ** (bits - 1) - 1:
                raise ValueError(f"{key} holds values beyond {bits} bits")
            padded = np.zeros(len(scales[key]) * BLOCK, dtype=np.float32)
            padded[:count] = values
            self._arrays[key] = (padded.reshape(-1, BLOCK) * scales[key].astype(np.float32)[:, None]).reshape(-1)[
                :count].reshape(shape)
        if offset != len(payload):
            raise ValueError(f"its payload holds {len(payload) - offset} bytes its header does not describe")
        self.files = list(self._arrays)

    def __getitem__(self, key: str) -> np.ndarray:
        return self._arrays[key]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def close(self) -> None:
        pass
