"""Isosurface extraction: an adaptive narrow band (the default) or a dense grid (the reference).

Index space. The grid has n samples per axis with spacing h, the same along every axis (h is
the box's longest side / (resolution - 1)). One more sample on each side, outside the box, holds
a value just outside the level, so a surface cut by the box is capped and the result is closed.
Extended sample e in [0, n + 1] sits at box_low + (e - 1) h; e = 0 and e = n + 1 are that border.

The adaptive path, in the spirit of Occupancy Networks' MISE:
1. Classification, coarse to fine over an octree whose finest cells are tiles of `tile` cells a
   side. A cell is kept if the level set can pass through it: its corner values change sign, or
   (signed distance) the smallest |f - level| at a corner is within L times the half-diagonal, L
   the field's Lipschitz bound. An occupancy field has no such bound, so the cells next to a sign
   change are kept too (MISE's safety band). A cell touching the border is kept if it can hold
   an inside sample, because the cap over the box passes through it.
2. Every sample is evaluated once: it belongs to the tile holding it at local coordinates
   [0, tile), so the (tile + 1)^3 samples of a tile are gathered from the tile and up to seven
   neighbours, and tiles that share a face see identical values.
3. Closure: both signs on a tile's face mean the surface continues into the neighbour, which is
   added until none is missing. The surface never ends at a tile boundary, whatever the
   classification missed.
4. Marching cubes (scikit-image) on batches of tiles packed into one array, the cells between
   packed tiles masked out; in worker processes where there are cores to spare.
5. Welding: every vertex lies on one grid edge. Vertices of the same edge from neighbouring tiles
   become one, with the position recomputed in float64 from the edge's two sample values.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field as dataclass_field
from typing import Protocol

import numpy as np
import torch

from ..config import EXTRACTION_METHODS, check_level
from ..geometry import FieldTransform, TriangleMesh
from .marching import march_tiles

# Cells per tile side: small tiles hug the surface (fewer samples), large ones march in fewer,
# bigger batches; the best trade differs between the CPU and a GPU (docs/BENCHMARKS.md).
TILE = {"cpu": 4, "cuda": 8}
# Largest dense grid, in bytes of float32 values: the reference path holds the whole grid.
DENSE_LIMIT = 2 << 30
# Sample values are kept at least this many cells' worth (times h, in field units) away from the
# level, so a distance field's vertices do not land within float32 rounding of a sample, where
# marching._edges would merge them (it moves vertices by at most 1e-4 of a cell).
LEVEL_MARGIN = 1e-4
# Cells whose corners are evaluated together in the classification.
CELL_CHUNK = 1 << 19
# The Lipschitz bound used is this factor times the largest gradient norm measured near the level.
LIPSCHITZ_SAFETY = 1.25


class BoxField(Protocol):
    """What extraction needs of a field: values at field-space points, negative inside and zero on
    the surface (`evaluate_field_space`, float32 on `device`); the box in field space that holds
    the surface; the transform from object to field coordinates; and its kind ('sdf': values are
    distances in field units, so a level can offset them and their Lipschitz bound narrows the
    band; 'occupancy': only their sign means anything). A fitted NeuralField is one; so is an
    exact analytic distance (fields/analytic.py), which tests extract without fitting first."""

    kind: str
    transform: FieldTransform
    box_low: np.ndarray
    box_high: np.ndarray

    @property
    def device(self) -> torch.device: ...

    def evaluate_field_space(self, points: torch.Tensor, chunk: int = ...) -> torch.Tensor: ...


class EmptySurfaceError(ValueError):
    """The field has no level set inside its box at the requested level."""


@dataclass
class ExtractionReport:
    method: str
    resolution: int
    level: float
    samples: tuple = ()
    evaluated: int = 0
    tiles: int = 0
    lipschitz: float = float("nan")
    # The tiles (boolean grid) holding surface; another extraction of the same box, resolution
    # and tile can start from them (`seed`) instead of classifying.
    surface_tiles: object = None
    seconds: dict = dataclass_field(default_factory=dict)


def grid_axes(box_low, box_high, resolution: int):
    """Sample coordinates along x, y, z with equal spacing h; returns (axes, h)."""
    if resolution < 8:
        raise ValueError(f"resolution must be at least 8, got {resolution}")
    extent = np.asarray(box_high, dtype=np.float64) - np.asarray(box_low, dtype=np.float64)
    h = float(extent.max()) / (resolution - 1)
    counts = [max(2, int(math.ceil(e / h - 1e-9)) + 1) for e in extent]
    axes = [box_low[i] + np.arange(counts[i]) * h for i in range(3)]
    return axes, h


@torch.no_grad()
def evaluate_grid(field: BoxField, axes, chunk: int = 1 << 18) -> np.ndarray:
    """Field values (nx, ny, nz) float32 at the grid points, evaluated slab by slab along x."""
    device = field.device
    xs, ys, zs = (torch.as_tensor(a, dtype=torch.float32, device=device) for a in axes)
    plane = torch.stack(torch.meshgrid(ys, zs, indexing="ij"), dim=-1).reshape(-1, 2)
    values = np.empty((len(xs), len(ys), len(zs)), dtype=np.float32)
    slab = max(1, chunk // len(plane))
    for start in range(0, len(xs), slab):
        x = xs[start : start + slab]
        points = torch.cat(
            [x.repeat_interleave(len(plane))[:, None], plane.repeat(len(x), 1)], dim=1
        )
        block = field.evaluate_field_space(points, chunk=chunk)
        values[start : start + len(x)] = block.reshape(len(x), len(ys), len(zs)).cpu().numpy()
    return values


def extract_isosurface(
    field: BoxField,
    resolution: int = 256,
    level: float = 0.0,
    *,
    method: str = "adaptive",
    tile: int | None = None,
    lipschitz: float | None = None,
    workers: int | None = None,
    progress=None,
    report: ExtractionReport | None = None,
    seed=None,
) -> TriangleMesh:
    """The surface {f = level} as a welded triangle mesh in object coordinates, faces outward.

    `level` is in object units: a positive level grows the shape by that distance (signed-distance
    fields; occupancy fields are extracted at probability 0.5 only). `method` is "adaptive" (a
    narrow band, memory growing with the surface) or "dense" (every grid sample; the reference).
    `tile` is the cells per tile side (default by device, TILE); `lipschitz` overrides the
    measured bound of a signed-distance field; `workers` the number of
    marching-cubes processes; `progress(fraction)` is called as the work advances (0 to 1); a
    given `report` is filled in. `seed` (adaptive only), the `surface_tiles` of an earlier
    extraction of a nearby field on the same grid, replaces the classification: the band starts
    there and closure follows the surface wherever it has moved, which is what a live preview
    wants between close blends; a component away from every seed tile is not found. Raises EmptySurfaceError if the field has no surface at that
    level, and ValueError for a dense grid too large to hold (DENSE_LIMIT).
    """
    if method not in EXTRACTION_METHODS:
        raise ValueError(f"method must be one of {', '.join(EXTRACTION_METHODS)}; got {method!r}")
    check_level(field.kind, level)
    if tile is None:
        tile = TILE.get(field.device.type, 8)
    if not 2 <= tile <= 32:
        raise ValueError(f"tile must be between 2 and 32 cells, got {tile}")
    report = report if report is not None else ExtractionReport(method, resolution, level)
    report.method, report.resolution, report.level = method, resolution, level
    axes, h = grid_axes(field.box_low, field.box_high, resolution)
    grid = _Grid(
        low=np.array([a[0] for a in axes]),
        h=h,
        counts=np.array([len(a) for a in axes]),
        iso=float(level) * field.transform.scale,
        device=field.device,
    )
    report.samples = tuple(int(c) for c in grid.counts)
    if method == "dense" and np.prod(grid.counts.astype(np.float64)) * 4 > DENSE_LIMIT:
        raise ValueError(
            f"a dense {'x'.join(map(str, report.samples))} grid needs "
            f"{np.prod(grid.counts.astype(np.float64)) * 4 / 2**30:.1f} GB of memory; use the adaptive method, "
            "which evaluates only a band around the surface"
        )
    if method == "dense":
        positions, faces = _extract_dense(field, grid, axes, report)
    else:
        positions, faces = _extract_adaptive(field, grid, tile, lipschitz, workers, progress, report, seed)
    vertices = field.transform.to_object(grid.low + (positions - 1.0) * h)
    return TriangleMesh(vertices, faces)


@torch.no_grad()
def vertex_normals(field: BoxField, vertices_object: np.ndarray, step: float | None = None) -> np.ndarray:
    """Unit outward normals (q, 3) at object-space points: the field's gradient by central
    differences (the hash-grid kernel has no gradient with respect to position), `step` in
    object units (default: a thousandth of the box's longest side)."""
    scale = field.transform.scale
    if step is None:
        step = float(np.max(field.box_high - field.box_low)) / 1000.0 / scale
    points = torch.as_tensor(field.transform.to_field(vertices_object), dtype=torch.float32, device=field.device)
    normals = _gradient(field, points, float(step) * scale).double().cpu().numpy()
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return normals / np.where(length > 0.0, length, 1.0)


def _gradient(field: BoxField, points: torch.Tensor, offset: float) -> torch.Tensor:
    """The field's gradient (q, 3) at field-space points by central differences over +-offset."""
    gradient = torch.empty_like(points)
    for axis in range(3):
        delta = torch.zeros(3, device=points.device)
        delta[axis] = offset
        forward, backward = field.evaluate_field_space(points + delta), field.evaluate_field_space(points - delta)
        gradient[:, axis] = (forward - backward) / (2.0 * offset)
    return gradient


# ----------------------------------------------------------------------------- grid


@dataclass
class _Grid:
    low: np.ndarray  # field-space position of sample e = 1
    h: float
    counts: np.ndarray  # samples per axis inside the box
    iso: float  # the level in field units
    device: torch.device
    # The range of the field values evaluated so far (border samples excluded).
    seen: tuple = (float("inf"), float("-inf"))

    def away_from_level(self, values):
        """Values (tensor or array) moved to at least LEVEL_MARGIN * h from the level, keeping
        their side (a value on the level counts as outside, as marching cubes has it)."""
        margin = LEVEL_MARGIN * self.h
        if isinstance(values, np.ndarray):
            near = np.abs(values - self.iso) < margin
            values[near] = np.where(values[near] < self.iso, self.iso - margin, self.iso + margin)
            return values
        near = (values - self.iso).abs() < margin
        return torch.where(near, torch.where(values < self.iso, self.iso - margin, self.iso + margin), values)

    @property
    def outside(self) -> float:
        """The value of the border samples: just outside the level."""
        return self.iso + self.h

    def positions(self, samples: torch.Tensor) -> torch.Tensor:
        """Field-space float32 positions of extended sample indices (q, 3), computed as the dense
        path computes its axes, so both see the same points."""
        low = torch.as_tensor(self.low, dtype=torch.float64, device=samples.device)
        return (low + (samples - 1).double() * self.h).float()

    def evaluate(self, field: BoxField, samples: torch.Tensor) -> torch.Tensor:
        """Values at extended sample indices (q, 3): the field inside the box (moved away from the
        level), the border value outside it."""
        counts = torch.as_tensor(self.counts, device=samples.device)
        inside = ((samples >= 1) & (samples <= counts)).all(dim=1)
        values = torch.full((len(samples),), self.outside, dtype=torch.float32, device=samples.device)
        if bool(inside.any()):
            chunk = 1 << 20 if samples.device.type == "cuda" else 1 << 16
            found = self.away_from_level(field.evaluate_field_space(self.positions(samples[inside]), chunk=chunk))
            values[inside] = found
            self.seen = (min(self.seen[0], float(found.min())), max(self.seen[1], float(found.max())))
        return values


def _no_surface(low: float, high: float, grid: _Grid, field: BoxField, level: float) -> None:
    scale = field.transform.scale
    if low >= grid.iso:
        raise EmptySurfaceError(
            f"the field has no surface at level {level:g}: it is outside everywhere in its box "
            f"(smallest value {low / scale:.4g} in object units)"
        )
    if high <= grid.iso:
        raise EmptySurfaceError(
            f"the field has no surface at level {level:g}: it is inside everywhere in its box "
            f"(largest value {high / scale:.4g} in object units)"
        )


# ----------------------------------------------------------------------------- dense reference


def _extract_dense(field, grid: _Grid, axes, report: ExtractionReport):
    from skimage.measure import marching_cubes

    start = time.perf_counter()
    values = grid.away_from_level(evaluate_grid(field, axes))
    report.evaluated = values.size
    report.seconds["evaluate"] = time.perf_counter() - start
    _no_surface(float(values.min()), float(values.max()), grid, field, report.level)
    start = time.perf_counter()
    padded = np.pad(values, 1, mode="constant", constant_values=grid.outside)
    vertices, faces, _, _ = marching_cubes(padded, level=grid.iso)
    report.seconds["march"] = time.perf_counter() - start
    # scikit-image's default winding (gradient_direction="descent") faces outward for a field that
    # is negative inside.
    return vertices.astype(np.float64), faces.astype(np.int64)


# ----------------------------------------------------------------------------- adaptive

# The eight corner offsets of a cube, in the order (dx, dy, dz) = bits (4, 2, 1).
_CORNERS = np.array([[(c >> 2) & 1, (c >> 1) & 1, c & 1] for c in range(8)], dtype=np.int64)


def _stage(progress, start: float, end: float):
    """A (done, total) callback reporting `progress` between the fractions start and end."""
    if progress is None:
        return None
    return lambda done, total: progress(start + (end - start) * done / max(1, total))


def _extract_adaptive(field, grid: _Grid, tile: int, lipschitz, workers, progress, report, seed=None):
    start = time.perf_counter()
    tiles_per_axis = (grid.counts + 1 + tile - 1) // tile  # cells e in [0, n] per axis
    if seed is not None:
        if tuple(seed.shape) != tuple(int(t) for t in tiles_per_axis):
            raise ValueError(f"the seed tiles {tuple(seed.shape)} are not of this grid {tuple(tiles_per_axis)}")
        active = seed.to(device=grid.device, dtype=torch.bool).clone()
    else:
        active, report.lipschitz = _classify(
            field, grid, tile, tiles_per_axis, lipschitz, report, _stage(progress, 0.0, 0.1)
        )
    report.seconds["classify"] = time.perf_counter() - start

    start = time.perf_counter()
    store = _SampleStore(field, grid, tile, tiles_per_axis)
    tiles = _close_surface(store, active, _stage(progress, 0.1, 0.5))
    tiles = _crossing(store, tiles)
    report.tiles = len(tiles)
    report.surface_tiles = torch.zeros_like(active)
    report.surface_tiles[tiles[:, 0], tiles[:, 1], tiles[:, 2]] = True
    report.evaluated += store.evaluated
    report.seconds["evaluate"] = time.perf_counter() - start
    _no_surface(*grid.seen, grid, field, report.level)

    start = time.perf_counter()
    shape = (grid.counts + 2 + tile).astype(np.int64)
    pieces = march_tiles(store.blocks, store.tile, tiles, grid.iso, shape, workers, _stage(progress, 0.5, 0.95))
    report.seconds["march"] = time.perf_counter() - start
    start = time.perf_counter()
    positions, faces = _weld(pieces, grid.device)
    report.seconds["weld"] = time.perf_counter() - start
    if progress:
        progress(1.0)
    if len(faces) == 0:
        raise EmptySurfaceError(f"the field has no surface at level {report.level:g} inside its box")
    return positions, faces


def _estimate_lipschitz(field, grid: _Grid, samples: torch.Tensor, values: torch.Tensor) -> float:
    """LIPSCHITZ_SAFETY times the 99th percentile of the gradient norm (central differences over
    h/2) at the samples nearest the level, and at least that of an exact distance (1). A
    percentile, not the maximum: one steep spot of a network would otherwise widen the band
    everywhere, and the closure step recovers any surface connected to what the band finds."""
    distance = (values - grid.iso).abs()
    count = min(len(samples), max(256, int((distance <= 0.05).sum())))
    near = samples[torch.topk(distance, count, largest=False).indices]
    norm = torch.quantile(_gradient(field, grid.positions(near), grid.h / 2.0).norm(dim=1).double().cpu(), 0.99)
    return LIPSCHITZ_SAFETY * max(1.0, float(norm))


def _keys(points: torch.Tensor, shape) -> torch.Tensor:
    """Linear int64 keys of non-negative integer coordinates (q, 3) in a grid of `shape`."""
    return (points[:, 0] * int(shape[1]) + points[:, 1]) * int(shape[2]) + points[:, 2]


def _unique_rows(points: torch.Tensor, shape) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique rows of integer coordinates and the inverse map, through 1-D keys (much faster than
    torch.unique(dim=0))."""
    keys, inverse = torch.unique(_keys(points, shape), return_inverse=True)
    plane = int(shape[1]) * int(shape[2])
    rows = torch.stack([keys // plane, (keys // int(shape[2])) % int(shape[1]), keys % int(shape[2])], dim=1)
    return rows, inverse


@torch.no_grad()
def _classify(field, grid: _Grid, tile: int, tiles_per_axis: np.ndarray, lipschitz, report, progress=None):
    """Boolean grid over tiles: those the level set (or the cap over the box) can pass through,
    and the Lipschitz bound used. The octree goes below the
    tile, to cells of two samples, so the band kept is about as thin as the bound allows."""
    device = grid.device
    depth = max(0, int(math.ceil(math.log2(max(1, int(tiles_per_axis.max()) / 8)))))
    sizes = [tile << j for j in range(depth, 0, -1)] + [tile]
    while sizes[-1] > 2 and sizes[-1] % 2 == 0:
        sizes.append(sizes[-1] // 2)
    counts = torch.as_tensor(grid.counts, device=device)
    extent = tiles_per_axis * tile  # cells per axis covered by tiles
    shape = extent + 1
    corners = torch.as_tensor(_CORNERS, device=device)
    cells = torch.stack(
        torch.meshgrid(*(torch.arange(int(-(-e // sizes[0])), device=device) for e in extent), indexing="ij"),
        dim=-1,
    ).reshape(-1, 3)
    occupancy = field.kind == "occupancy"
    bound = lipschitz

    def corner_values(part, size):
        """Values (k, 8) - level at the corners of cells, clamped onto the box; each corner shared
        by cells of the part is evaluated once."""
        nonlocal bound
        samples = (part[:, None, :] * size + corners[None] * size).reshape(-1, 3)
        unique, inverse = _unique_rows(torch.minimum(torch.clamp(samples, min=1), counts), shape)
        values = grid.evaluate(field, unique)
        report.evaluated += len(unique)
        if not occupancy and bound is None:
            bound = _estimate_lipschitz(field, grid, unique, values)
        return values[inverse].reshape(-1, 8) - grid.iso

    for index, size in enumerate(sizes):
        kept = []
        # Cells in linear order and in chunks: corners shared within a chunk are evaluated once,
        # and the finest levels of a 2048^3 grid never hold all their corners at once.
        for start in range(0, len(cells), CELL_CHUNK):
            part = cells[start : start + CELL_CHUNK]
            v = corner_values(part, size)
            low, high = v.min(dim=1).values, v.max(dim=1).values
            crosses = (low < 0) & (high >= 0)
            lower = part * size
            border = ((lower <= 0) | (lower + size >= counts + 1)).any(dim=1)
            if occupancy:
                kept.append(part[crosses | (border & (low < 0))])
            else:
                reach = bound * math.sqrt(3.0) / 2.0 * size * grid.h
                kept.append(part[crosses | (v.abs().min(dim=1).values <= reach) | (border & (low <= reach))])
        keep = torch.cat(kept) if kept else cells[:0]
        if occupancy:
            keep = _dilate(keep, -(-extent // size))
        if progress:
            progress(index + 1, len(sizes))
        if index + 1 == len(sizes):
            break
        ratio = size // sizes[index + 1]  # 2
        children = (keep[:, None, :] * ratio + corners[None]).reshape(-1, 3)
        finer = -(-extent // sizes[index + 1])
        children = children[(children < torch.as_tensor(finer, device=device)).all(dim=1)]
        cells = _unique_rows(children, finer)[0] if len(children) else children
    active = torch.zeros(tuple(int(d) for d in tiles_per_axis), dtype=torch.bool, device=device)
    tiles = torch.div(keep * sizes[-1], tile, rounding_mode="floor")
    if len(tiles):
        active[tiles[:, 0], tiles[:, 1], tiles[:, 2]] = True
    return active, (float("nan") if bound is None else float(bound))


_NEIGHBOURS = np.array([[x, y, z] for x in (-1, 0, 1) for y in (-1, 0, 1) for z in (-1, 0, 1)], dtype=np.int64)


def _dilate(cells: torch.Tensor, dims) -> torch.Tensor:
    """The cells and their 26 neighbours within a grid of `dims` cells, as unique coordinates."""
    grown = (cells[:, None, :] + torch.as_tensor(_NEIGHBOURS, device=cells.device)[None]).reshape(-1, 3)
    dims = torch.as_tensor(dims, device=cells.device)
    grown = grown[((grown >= 0) & (grown < dims)).all(dim=1)]
    return _unique_rows(grown, dims)[0] if len(grown) else grown


class _SampleStore:
    """Sample values held by their owner tiles: tile t owns extended samples t * tile + [0, tile)^3.
    Each sample is evaluated once, when a tile that needs it asks for it."""

    OWNER_CHUNK = 1 << 14

    def __init__(self, field, grid: _Grid, tile: int, tiles_per_axis: np.ndarray):
        self.field, self.grid, self.tile = field, grid, tile
        self.device = grid.device
        owners = tuple(int(d) + 1 for d in tiles_per_axis)  # one more layer owns the last samples
        self.tiles_per_axis = torch.as_tensor(tiles_per_axis, device=self.device)
        self.slot = torch.full(owners, -1, dtype=torch.int64, device=self.device)
        self.values = torch.empty((0, tile**3), dtype=torch.float32, device=self.device)
        self.known = torch.empty((0, tile**3), dtype=torch.bool, device=self.device)
        self.used = 0  # slots in use; the arrays hold spare capacity beyond
        self.evaluated = 0
        local = torch.arange(tile + 1, device=self.device)
        block = torch.stack(torch.meshgrid(local, local, local, indexing="ij"), dim=-1).reshape(-1, 3)
        # For each of a tile's (tile + 1)^3 samples: which owner (offset 0 or 1 per axis) holds
        # it, and where in that owner.
        self.block_owner = (block == tile).long()
        owned = block % tile
        self.block_local = (owned[:, 0] * tile + owned[:, 1]) * tile + owned[:, 2]
        self.block_delta = self.block_owner[:, 0] * 4 + self.block_owner[:, 1] * 2 + self.block_owner[:, 2]
        # needed[code]: the owned samples an owner must provide when the tiles at offsets -delta
        # whose bits are set in `code` are active (delta = 0: all; delta = (1, 0, 0): the x = 0
        # face; and so on down to the corner).
        owned_local = torch.stack(
            torch.meshgrid(*(torch.arange(tile, device=self.device),) * 3, indexing="ij"), dim=-1
        ).reshape(-1, 3)
        region = torch.stack(
            [((torch.as_tensor(_CORNERS[d], device=self.device) == 0) | (owned_local == 0)).all(dim=1)
             for d in range(8)]
        )
        codes = torch.arange(256, device=self.device)
        bits = (codes[:, None] >> torch.arange(8, device=self.device)[None]) & 1
        self.needed = (bits[:, :, None].bool() & region[None]).any(dim=1)

    def _slots_for(self, owners: torch.Tensor) -> torch.Tensor:
        """Slots of the given owner tiles, allocating missing ones."""
        slots = self.slot[owners[:, 0], owners[:, 1], owners[:, 2]]
        missing = owners[slots < 0]
        if len(missing):
            missing = _unique_rows(missing, self.slot.shape)[0]
            first = self.used
            self.used += len(missing)
            if self.used > len(self.values):  # grow by half again: amortised copies
                capacity = max(self.used, len(self.values) * 3 // 2)
                values = self.values.new_empty((capacity, self.tile**3))
                known = self.known.new_zeros((capacity, self.tile**3))
                values[:first], known[:first] = self.values[:first], self.known[:first]
                self.values, self.known = values, known
            self.slot[missing[:, 0], missing[:, 1], missing[:, 2]] = torch.arange(
                first, self.used, device=self.device
            )
            slots = self.slot[owners[:, 0], owners[:, 1], owners[:, 2]]
        return slots

    def provide(self, active: torch.Tensor, tiles: torch.Tensor, progress=None) -> None:
        """Evaluate every not yet known sample of the given active tiles; `active` is the grid of all
        active tiles (those sharing samples with `tiles` decide which faces an owner provides)."""
        corners = torch.as_tensor(_CORNERS, device=self.device)
        owners = _unique_rows((tiles[:, None, :] + corners[None]).reshape(-1, 3), self.slot.shape)[0]
        # In chunks of owners, so the sample coordinates and positions of a 2048^3 band never
        # exist all at once (tens of GB).
        for start in range(0, len(owners), self.OWNER_CHUNK):
            self._provide_owners(active, owners[start : start + self.OWNER_CHUNK])
            if progress:
                progress(min(len(owners), start + self.OWNER_CHUNK), len(owners))

    def _provide_owners(self, active: torch.Tensor, owners: torch.Tensor) -> None:
        corners = torch.as_tensor(_CORNERS, device=self.device)
        code = torch.zeros(len(owners), dtype=torch.int64, device=self.device)
        for d in range(8):
            source = owners - corners[d]
            valid = (source >= 0).all(dim=1) & (source < self.tiles_per_axis).all(dim=1)
            source = source.clamp(min=0)
            hit = valid & active[
                source[:, 0].clamp(max=active.shape[0] - 1),
                source[:, 1].clamp(max=active.shape[1] - 1),
                source[:, 2].clamp(max=active.shape[2] - 1),
            ]
            code |= hit.long() << d
        slots = self._slots_for(owners)
        wanted = self.needed[code] & ~self.known[slots]
        slot_index, local = wanted.nonzero(as_tuple=True)
        if len(slot_index) == 0:
            return
        tile = self.tile
        offset = torch.stack([local // (tile * tile), (local // tile) % tile, local % tile], dim=1)
        # Owner rows of `wanted` follow `owners`; map each wanted sample to its global index.
        samples = owners[slot_index] * tile + offset
        self.values[slots[slot_index], local] = self.grid.evaluate(self.field, samples)
        self.known[slots[slot_index], local] = True
        self.evaluated += len(samples)

    def blocks(self, tiles: torch.Tensor) -> torch.Tensor:
        """The (tile + 1)^3 sample values of each tile, (k, tile + 1, tile + 1, tile + 1)."""
        owners = tiles[:, None, :] + self.block_owner[None]
        slots = self.slot[owners[..., 0], owners[..., 1], owners[..., 2]]
        side = self.tile + 1
        return self.values[slots, self.block_local[None].expand_as(slots)].reshape(-1, side, side, side)


def _close_surface(store: _SampleStore, active: torch.Tensor, progress=None) -> torch.Tensor:
    """Evaluate the active tiles, then add every neighbour the surface crosses into, until none is
    missing. Returns the coordinates (k, 3) of the tiles to march."""
    device = store.device
    grid = store.grid
    new = active.nonzero()
    faces = [(axis, side) for axis in range(3) for side in (0, store.tile)]
    first = True
    while len(new):
        # The first round holds nearly all the work; later ones add the few tiles it missed.
        store.provide(active, new, progress if first else None)
        first = False
        grown = []
        for start in range(0, len(new), 1 << 14):
            part = new[start : start + (1 << 14)]
            blocks = store.blocks(part) < grid.iso
            for axis, side in faces:
                face = blocks.select(axis + 1, side).reshape(len(part), -1)
                mixed = face.any(dim=1) & ~face.all(dim=1)
                step = torch.zeros(3, dtype=torch.int64, device=device)
                step[axis] = 1 if side else -1
                neighbours = part[mixed] + step
                inside = (neighbours >= 0).all(dim=1) & (neighbours < store.tiles_per_axis).all(dim=1)
                grown.append(neighbours[inside])
        grown = torch.cat(grown) if grown else new[:0]
        grown = grown[~active[grown[:, 0], grown[:, 1], grown[:, 2]]]
        new = _unique_rows(grown, active.shape)[0] if len(grown) else grown
        if len(new):
            active[new[:, 0], new[:, 1], new[:, 2]] = True
    return active.nonzero()


def _crossing(store: _SampleStore, tiles: torch.Tensor) -> torch.Tensor:
    """The tiles with samples on both sides of the level: the only ones marching cubes makes
    triangles in (the band around them has none)."""
    keep = []
    for start in range(0, len(tiles), 1 << 14):
        below = (store.blocks(tiles[start : start + (1 << 14)]) < store.grid.iso).flatten(1)
        keep.append(below.any(dim=1) & ~below.all(dim=1))
    return tiles[torch.cat(keep)] if keep else tiles


def _weld(pieces, device) -> tuple[np.ndarray, np.ndarray]:
    """One indexed mesh from the marched batches, on the field's device: vertices with the same
    edge key merged, degenerate faces dropped. Returns positions (v, 3) float64 in extended sample
    units and faces (f, 3) int64."""
    keys = torch.from_numpy(np.concatenate([p[0] for p in pieces])).to(device)
    positions = torch.from_numpy(np.concatenate([p[1] for p in pieces])).to(device)
    offsets = np.cumsum([0] + [len(p[0]) for p in pieces[:-1]])
    faces = torch.from_numpy(np.concatenate([p[2].astype(np.int64) + o for p, o in zip(pieces, offsets)])).to(device)
    if len(keys) == 0:
        return np.empty((0, 3)), np.empty((0, 3), dtype=np.int64)
    unique, inverse = torch.unique(keys, return_inverse=True)
    first = torch.full((len(unique),), len(keys), dtype=torch.int64, device=device)
    first = first.scatter_reduce(0, inverse, torch.arange(len(keys), device=device), reduce="amin")
    faces = inverse[faces]
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    return positions[first].double().cpu().numpy(), faces[keep].cpu().numpy()

