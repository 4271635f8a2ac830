"""Marching cubes over tiles of samples and welding of the pieces: numpy and scikit-image only,
so worker processes start without torch.

A tile is a (tile + 1)^3 block of samples; many are packed side by side into one array and
marched in one scikit-image call, with the cells spanning two packed tiles masked out. Each
vertex lies on one grid edge (or, rounded, on a sample); its key names that edge, and its position
is recomputed in float64 from the edge's two values, so the copies of a vertex made by tiles
sharing a face are identical and weld into one.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import types

import numpy as np

# Packed tiles start at sample ORIGIN and end before 2 * ORIGIN on every axis, so all packed
# coordinates share one float32 exponent: a vertex's float32 coordinate then rounds the same way
# (to 2^-17 of a cell) in every tile that makes it, and its edge key is the same. The samples
# before ORIGIN are masked out.
ORIGIN = 64


def slots_per_side(tile: int) -> int:
    """Tiles per side of a packed batch: as many as fit between ORIGIN and 2 * ORIGIN (7 for
    tiles of 8 cells: 343 per batch, 8 MB)."""
    return max(1, ORIGIN // (tile + 1))

_POOL = None
# Marching a packed batch here takes ~20 ms; starting the pool ~0.5 s (each process imports numpy
# and scikit-image). Smaller jobs march here unless a pool is already running.
POOL_MIN_BATCHES = 32


@contextlib.contextmanager
def _bare_main():
    """A __main__ with neither file nor spec while processes start, so spawned workers do not
    import the caller's script or module again (it imported torch: seconds per worker, 3.9 s for
    the first 256^3 extraction on a 16-core host); they need only this module."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is None:
            del sys.modules["__main__"]
        else:
            sys.modules["__main__"] = main


def _worker_pool(workers: int):
    """A process pool kept for the life of the process, its workers all started at once."""
    global _POOL
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if _POOL is None or _POOL._max_workers != workers:
        if _POOL is not None:
            _POOL.shutdown()
        _POOL = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        with _bare_main():
            # A spawning pool starts a process per submitted task while none is idle; a worker that
            # already finished its task is idle, so submit until all have started here.
            for _ in range(8 * workers):
                if len(_POOL._processes) >= workers:
                    break
                _POOL.submit(os.getpid)
    return _POOL


def default_workers(batches: int) -> int:
    """Processes for marching `batches` packed batches: none beside this one on a small machine
    or for a job that marches faster here than a pool starts (unless one is running already),
    else one per spare core."""
    cores = os.cpu_count() or 1
    if cores < 4 or batches < 4 or (_POOL is None and batches < POOL_MIN_BATCHES):
        return 1
    return min(cores - 1, 16)


def march_tiles(blocks, tile: int, tiles, iso: float, shape, workers=None, progress=None):
    """Marching cubes over tiles in packed batches. `blocks(batch)` gives the sample values of a
    batch of tile coordinates (a torch tensor) as a tensor (k, tile + 1, tile + 1, tile + 1).
    Returns the per-batch (keys, positions, faces) for `weld`."""
    per_batch = slots_per_side(tile) ** 3
    batches = [tiles[start : start + per_batch] for start in range(0, len(tiles), per_batch)]
    workers = default_workers(len(batches)) if workers is None else max(1, int(workers))
    total, pieces = len(batches), []

    def inputs():
        for batch in batches:
            yield blocks(batch).cpu().numpy(), batch.cpu().numpy()

    if workers == 1:
        for index, (values, origin) in enumerate(inputs()):
            pieces.append(march_packed(values, origin, tile, iso, shape))
            if progress:
                progress(index + 1, total)
        return pieces
    global _POOL
    from concurrent.futures.process import BrokenProcessPool

    try:
        pool = _worker_pool(workers)
        futures = [pool.submit(march_packed, values, origin, tile, iso, shape) for values, origin in inputs()]
        for index, future in enumerate(futures):
            pieces.append(future.result())
            if progress:
                progress(index + 1, total)
        return pieces
    except BrokenProcessPool:
        # Workers that cannot start (a __main__ read from stdin cannot be re-imported by them):
        # march here instead.
        _POOL = None
        return march_tiles(blocks, tile, tiles, iso, shape, 1, progress)


def march_packed(values: np.ndarray, tiles: np.ndarray, tile: int, iso: float, shape):
    """Marching cubes over tiles (k, tile + 1, tile + 1, tile + 1) packed side by side into one
    array. Returns edge keys (v,), positions (v, 3) in extended sample units, float32, and faces
    (f, 3) int32 indexing them; a vertex's key names the grid edge it lies on (or the sample it sits on)."""
    from skimage.measure import marching_cubes

    count, side = len(values), tile + 1
    slots = max(1, int(math.ceil(count ** (1.0 / 3.0) - 1e-9)))
    while slots**3 < count:
        slots += 1
    if slots * side > ORIGIN:
        raise ValueError(f"{count} tiles of {tile} cells do not fit one packed batch")
    packed = np.full((ORIGIN + slots * side,) * 3, iso + 1.0, dtype=np.float32)
    mask = np.zeros_like(packed, dtype=bool)
    slot = np.stack(np.unravel_index(np.arange(count), (slots,) * 3), axis=1)
    for k in range(count):
        x, y, z = ORIGIN + slot[k] * side
        packed[x : x + side, y : y + side, z : z + side] = values[k]
        # scikit-image marches the cell whose far corner the mask marks: the first sample of a
        # tile stays unmarked, so no cell spans two packed tiles.
        mask[x + 1 : x + side, y + 1 : y + side, z + 1 : z + side] = True
    empty = (np.empty(0, np.int64), np.empty((0, 3), np.float32), np.empty((0, 3), np.int32))
    try:
        vertices, faces, _, _ = marching_cubes(packed, level=iso, mask=mask, allow_degenerate=True)
    except (ValueError, RuntimeError):  # no sample on one side of the level
        return empty
    if len(faces) == 0:
        return empty
    coords = vertices.astype(np.float64) - ORIGIN
    which = np.minimum(np.floor(coords / side).astype(np.int64), slots - 1)
    local = coords - which * side
    owner = np.ravel_multi_index(which.T, (slots,) * 3)
    key, position = _edges(packed, ORIGIN + which * side, local, iso, tile)
    origin = tiles[owner] * tile
    lower = origin + key[:, :3]
    keys = np.ravel_multi_index(lower.T, shape) * 4 + key[:, 3]
    # float32 positions (2^-13 of a cell at 2048 samples) and int32 faces halve what travels back
    # from the workers.
    return keys, (origin + position).astype(np.float32), faces.astype(np.int32)


def _edges(packed, base, local, iso, tile):
    """The grid edge (lower sample, axis 0-2) of each vertex and its position recomputed from the
    edge's two sample values, both in tile-local units. Two of a vertex's packed coordinates are
    integers and the third names its edge; a vertex whose coordinate rounded onto a sample (t
    within 2^-18 of an end) is keyed to that sample (axis 3), which every tile making it does
    alike (see ORIGIN), so copies still weld; several such vertices at one sample merge."""
    integral = local == np.round(local)
    lower = np.floor(local).astype(np.int64)
    axis = np.where(integral.sum(axis=1) == 3, 3, np.argmin(integral, axis=1))
    edge = np.nonzero(axis < 3)[0]
    position = lower.astype(np.float64)
    if len(edge):
        a = axis[edge]
        step = np.zeros((len(edge), 3), dtype=np.int64)
        step[np.arange(len(edge)), a] = 1
        v0 = packed[tuple((base[edge] + lower[edge]).T)].astype(np.float64)
        v1 = packed[tuple((base[edge] + lower[edge] + step).T)].astype(np.float64)
        t = np.clip((iso - v0) / (v1 - v0), 0.0, 1.0)
        position[edge, a] += t
    return np.concatenate([lower, axis[:, None]], axis=1), position
