"""Fitting a shape space: one decoder and one latent code per shape, fitted together (DeepSDF's
auto-decoder, Park et al. 2019); the value it makes is fields/shapespace.py.

Each shape is normalised into field space by its own transform (its bounding box centred, its
longest side spanning [-1, 1]), as DeepSDF normalises every shape to the unit sphere: the decoder
then learns shapes, not positions and sizes. Codes start at N(0, 0.01^2) and are held near the origin by a penalty
on their squared norm, the Gaussian prior of the auto-decoder.

Between the codes the decoder is also supervised (mixed-code supervision): a quarter of each batch
takes two shapes a, b and a t in [0, 1], the code (1 - t) z_a + t z_b, and as target the same
blend of the two shapes' exact signed distances, (1 - t) s_a + t s_b, at points of either shape's
pool (a table of every shape's distance at every pool point is computed with the pool). The path
between two codes is then the distance-field morph: smooth and in one piece, where an auto-decoder
alone, having seen only the endpoints, makes bumpy in-betweens with fragments. Measured on an
H100 with three shapes: every blend in one piece and 20-70 times closer to the exact morph, the
endpoints within 1.3x of a plain auto-decoder's; with ten shapes at the default weight the worst
endpoint went from 2.1x to 2.4x a single fit, 2.25x with the weight annealed to 0 over the last
steps (docs/BENCHMARKS.md).

With colours, a colour decoder (fields/color.py) is fitted in the same steps: it reads a shape's
code (detached: geometry alone places the codes) followed by the shape's own appearance code,
on colour pools of the coloured shapes (fitter.sample_color_pool). A blend blends both codes, so
colour follows the shape; a reconstruction can fit an appearance code to coloured points.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from ..appearance.surface_colors import DeviceColors
from ..config import (
    COLOR_CODE_DIM,
    COLOR_POOL_FRACTION,
    DEFAULT_LATENT_DIM,
    MIX_WEIGHT,
    FieldConfig,
    TrainConfig,
    check_compatible,
    color_config,
    space_configs,
)
from ..devices import flush_denormals, resolve_device
from ..fields.color import color_network
from ..fields.networks import FieldNetwork, sample_latent_grids
from ..fields.shapespace import ShapeSpace
from ..geometry import FieldTransform, MeshQuery
from .fitter import FieldFitter, autocast_dtype, sample_color_pool, sample_pool
from .objectives import SDF_LOSSES, occupancy_bce, srgb_mse

# Weight of the codes' mean squared norm in the loss: DeepSDF's prior (sigma = 0.01 at their loss
# scale); stronger flattens the space, weaker lets codes drift apart and the middle go empty.
CODE_REGULARIZATION = 1e-4
CODE_INIT_STD = 0.01
# Mixed-code supervision: its share of the batch, its weight against the shapes' own loss, and the
# quantisation of t (t travels as an integer in the batch index, which a CUDA graph copies in).
MIX_FRACTION = 0.25
MIX_T_STEPS = 1 << 16
# Over the last 30% of the steps the blends' weight falls linearly to 0: the decoder's last, fine
# steps serve the shapes themselves, and the blends keep the form the earlier steps gave them.
# Ten shapes on an H100: worst endpoint 2.25x a single fit instead of 2.42x, blends as close to
# the exact morph as without it (docs/BENCHMARKS.md).
MIX_ANNEAL_FRACTION = 0.3
# Latent grids (FieldConfig.latent_grid): their cells move LATENT_GRID_LR_SCALE times the decoder's
# learning rate (a cell sees few samples), and LATENT_GRID_SMOOTHNESS weighs the mean squared
# difference between neighbouring cells, without which sparsely sampled cells grew spikes that
# became floating fragments in blends. Ten shapes on an H100, 48^3 x 8: worst endpoint 1.77-1.78x
# a single fit (2.23-2.30x without grids), every endpoint and blend in one piece (BENCHMARKS.md).
LATENT_GRID_LR_SCALE = 10.0
LATENT_GRID_SMOOTHNESS = 0.1


class ShapeSpaceFitter(FieldFitter):
    """Fits one decoder and a code per mesh. Shares FieldFitter's stepping, learning-rate
    schedule, progress and cancellation; each batch mixes points of all shapes."""

    def __init__(self, meshes, field_config: FieldConfig | None = None, train_config: TrainConfig | None = None,
                 names=None, code_regularization: float = CODE_REGULARIZATION, mix_weight: float = MIX_WEIGHT,
                 colors=None):
        """`colors`: each mesh's SurfaceColors or None; with any, the space gets a colour decoder."""
        if len(meshes) < 2:
            raise ValueError(f"a shape space needs at least two meshes; {len(meshes)} given")
        device = resolve_device((train_config or TrainConfig()).device)
        field_config = field_config or space_configs(device)[0]
        if field_config.latent_dim == 0:
            field_config = replace(field_config, latent_dim=DEFAULT_LATENT_DIM)
        field_config = field_config.validate()
        if field_config.encoding == "hashgrid":
            raise ValueError("a shape-space decoder conditions an MLP on codes; use the fourier, positional "
                             "or siren encoding (a hash grid stores one shape in its table)")
        self.field_config = field_config
        self.train_config = (train_config or TrainConfig()).validate()
        check_compatible(self.field_config, self.train_config)
        if self.train_config.surface == "shell":
            # Every shape of a space is a solid ('auto' means solid here): its codes blend
            # inside-outside fields, which a shell's thin band would not interpolate.
            raise ValueError("a shape space fits solids only: fit open sheets one at a time with surface 'shell'")
        self.surface_report = {"surface": "solid", "surface_reason": "a shape space fits solids"}
        self.device = resolve_device(self.train_config.device)
        flush_denormals()
        self.sources = list(meshes)
        self.code_regularization = float(code_regularization)
        self.mix_weight = float(mix_weight)
        self.mix_batch = int(round(self.train_config.batch * MIX_FRACTION)) if self.mix_weight > 0 else 0
        # The blends' weight as a device tensor, which the captured CUDA-graph step reads.
        self._mix_weight_now = torch.tensor(self.mix_weight, device=self.device)
        self._mix_weight_last = self.mix_weight
        self._pool_cross = None
        self.names = list(names) if names is not None else [f"shape_{i}" for i in range(len(meshes))]
        self.transforms = [FieldTransform.fit_unit_box(mesh) for mesh in meshes]
        self.field_meshes = [mesh.transformed(t) for mesh, t in zip(meshes, self.transforms)]
        pad = self.train_config.box_padding
        lows = np.array([m.bounds[0] for m in self.field_meshes])
        highs = np.array([m.bounds[1] for m in self.field_meshes])
        self.box_low, self.box_high = lows.min(axis=0) - pad, highs.max(axis=0) + pad
        self.sample_low, self.sample_high = self.box_low - pad, self.box_high + pad
        self.network = FieldNetwork(self.field_config).to(self.device)
        generator = torch.Generator().manual_seed(self.field_config.init_seed)
        self.codes = nn.Parameter(
            (torch.randn(len(meshes), self.field_config.latent_dim, generator=generator) * CODE_INIT_STD).to(self.device)
        )
        colors = list(colors) if colors is not None else [None] * len(meshes)
        if len(colors) != len(meshes):
            raise ValueError(f"{len(colors)} colour sources given for {len(meshes)} meshes")
        self.colors = [c.check(mesh) if c is not None else None for c, mesh in zip(colors, meshes)]
        self.colored_shapes = [index for index, c in enumerate(self.colors) if c is not None]
        self.color_network = self.color_config = self.color_codes = None
        self.side_network = self.side_config = None  # a space fits solids: no sheet sides
        if self.colored_shapes:
            self.color_config = color_config(self.field_config)
            self.color_network = color_network(self.color_config).to(self.device)
            self.color_codes = nn.Parameter(
                (torch.randn(len(meshes), COLOR_CODE_DIM, generator=generator) * CODE_INIT_STD).to(self.device))
        self.autocast = autocast_dtype(self.field_config, self.train_config, self.device)
        self._sorted_batches = False
        # On CUDA each step replays from a CUDA graph: the decoder's step is a few milliseconds
        # of GPU work, and launching its kernels from Python cost as much again.
        self._graph_pending = self.device == "cuda"
        self._graph = None
        groups = [{"params": list(self.network.parameters())}, {"params": [self.codes]}]
        if self.color_network is not None:
            groups += [{"params": list(self.color_network.parameters())}, {"params": [self.color_codes]}]
        self.grids = None
        if self.field_config.latent_grid:
            resolution, features = self.field_config.latent_grid, self.field_config.latent_grid_features
            # Zero: every shape starts as its code alone. The grids span the sample box.
            self.grids = nn.Parameter(torch.zeros(len(meshes), resolution, resolution, resolution, features,
                                                  device=self.device))
            self._grid_low = torch.tensor(self.sample_low, dtype=torch.float32, device=self.device)
            self._grid_high = torch.tensor(self.sample_high, dtype=torch.float32, device=self.device)
            groups.append({"params": [self.grids], "lr_scale": LATENT_GRID_LR_SCALE})
        for group in groups:
            group["lr"] = self.train_config.lr * group.get("lr_scale", 1.0)
            if self._graph_pending:  # the captured optimizer reads its learning rates from device tensors
                group["lr"] = torch.tensor(group["lr"], device=self.device)
        if self._graph_pending:
            self.optimizer = torch.optim.Adam(groups, lr=torch.tensor(self.train_config.lr, device=self.device),
                                              fused=True, capturable=True)
        else:
            self.optimizer = torch.optim.Adam(groups, lr=self.train_config.lr, fused=self.device == "cuda")
        self._start_stepping()

    @property
    def color_batch(self) -> int:
        """Colour rows per step (0 without coloured shapes)."""
        if not self.colored_shapes:
            return 0
        return max(1, int(self.train_config.batch * self.train_config.color_batch_fraction))

    def build_pool(self) -> None:
        """One pool per shape, stacked (shapes, pool_size, 3), each from its own seed."""
        start = time.perf_counter()
        queries = [MeshQuery(mesh, device=self.device) for mesh in self.field_meshes]  # one BVH per shape
        pools = [
            sample_pool(mesh, self.field_config.kind, self.train_config, self.sample_low, self.sample_high,
                        self.device, seed=self.train_config.seed + index, query=query)
            for index, (mesh, query) in enumerate(zip(self.field_meshes, queries))
        ]
        self._pool_points = torch.stack([points for points, _ in pools])
        self._pool_sdf = torch.stack([sdf for _, sdf in pools])
        if self.colored_shapes:
            count = max(self.color_batch, int(self.train_config.pool_size * COLOR_POOL_FRACTION))
            color_pools = [sample_color_pool(self.field_meshes[i], DeviceColors(self.colors[i], self.device), count,
                                             self.device, self.train_config.seed + i, queries[i])
                           for i in self.colored_shapes]
            self._color_points = torch.stack([points for points, _ in color_pools])
            self._color_targets = torch.stack([targets for _, targets in color_pools])
            self._color_shapes = torch.tensor(self.colored_shapes, device=self.device)
        if self.mix_batch:
            self._pool_cross = self._cross_distances(queries)
        self.timings["groundtruth_seconds"] = time.perf_counter() - start

    def mix_weight_at(self, step: int) -> float:
        """The blends' weight at a step: mix_weight, then falling linearly to 0 over the last
        MIX_ANNEAL_FRACTION of the configured steps."""
        remaining = 1.0 - step / max(1, self.train_config.steps)
        return self.mix_weight * min(1.0, max(0.0, remaining / MIX_ANNEAL_FRACTION))

    def step(self) -> None:
        weight = self.mix_weight_at(self.step_count)
        if self.mix_batch and weight != self._mix_weight_last:
            self._mix_weight_now.fill_(weight)
            self._mix_weight_last = weight
        super().step()

    def _cross_distances(self, queries) -> torch.Tensor:
        """(shapes, pool, shapes): the signed distance of shape k at pool point p of shape s, all
        in field space (every shape in its own unit box, the frame its code is trained in)."""
        shapes, pool = self._pool_points.shape[:2]
        cross = torch.empty(shapes, pool, shapes, device=self.device)
        for k, query in enumerate(queries):
            for s in range(shapes):
                cross[s, :, k] = self._pool_sdf[s] if s == k else query.signed_distance_tensor(self._pool_points[s])
        return cross

    def _batch_index(self) -> torch.Tensor:
        """(batch + mix_batch, 5) rows of [shape a, shape b, pool of, pool point, t quantised]:
        first the shapes' own samples (a = b, t = 0), uniform over shapes and points; then the
        blends, a pair of different shapes, a point of either's pool and t uniform in [0, 1]."""
        shapes, pool = self._pool_points.shape[:2]
        batch, mixed, device, generator = self.train_config.batch, self.mix_batch, self.device, self._generator
        shape = torch.randint(shapes, (batch,), device=device, generator=generator)
        point = torch.randint(pool, (batch,), device=device, generator=generator)
        rows = [torch.stack([shape, shape, shape, point, torch.zeros_like(shape)], dim=1)]
        if mixed:
            a = torch.randint(shapes, (mixed,), device=device, generator=generator)
            b = (a + torch.randint(1, shapes, (mixed,), device=device, generator=generator)) % shapes
            source = torch.where(torch.randint(2, (mixed,), device=device, generator=generator) == 0, a, b)
            point = torch.randint(pool, (mixed,), device=device, generator=generator)
            t = torch.randint(0, MIX_T_STEPS + 1, (mixed,), device=device, generator=generator)
            rows.append(torch.stack([a, b, source, point, t], dim=1))
        if self.colored_shapes:  # colour rows: [slot among the coloured shapes, colour pool point, 0, 0, 0]
            count = self.color_batch
            slot = torch.randint(len(self.colored_shapes), (count,), device=device, generator=generator)
            point = torch.randint(self._color_points.shape[1], (count,), device=device, generator=generator)
            zero = torch.zeros_like(slot)
            rows.append(torch.stack([slot, point, zero, zero, zero], dim=1))
        return torch.cat(rows) if len(rows) > 1 else rows[0]

    def _eager_step(self, index: torch.Tensor) -> None:
        losses = self.space_losses(index)
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        if self.grids is not None:
            add_smoothness_gradient(self.grids.grad, self.grids.detach(), LATENT_GRID_SMOOTHNESS)
        self.optimizer.step()
        self._loss_sum += losses["total"].detach()

    def space_losses(self, index: torch.Tensor) -> dict:
        """The shapes' own loss plus the code prior, and the blends' loss weighted by mix_weight
        (annealed: mix_weight_at).
        Each row's code is a row of W @ codes (W: 1 - t at a, t at b): the same codes as indexing,
        but a matrix product's backward, where indexing's scattered accumulation into a few rows
        took most of a CUDA step (4.0 -> 1.5 ms measured on an H100). Colour rows (at the end)
        add the colour decoder's sRGB error and the appearance codes' prior."""
        losses = {}
        if self.colored_shapes:
            index, color_rows = index[: len(index) - self.color_batch], index[len(index) - self.color_batch:]
            losses = self._color_losses(color_rows)
        a, b, source, point, t = index.unbind(1)
        t = t.float() / MIX_T_STEPS
        weights = torch.zeros(len(index), len(self.codes), device=self.device)
        weights.scatter_add_(1, a[:, None], (1.0 - t)[:, None]).scatter_add_(1, b[:, None], t[:, None])
        codes = weights @ self.codes
        points = self._pool_points[source, point]
        if self.grids is not None:  # each row's grid features: (1 - t) at a's grid plus t at b's
            own = self.train_config.batch  # rows of one shape (a = b, t = 0) read one grid
            read = sample_latent_grids(self.grids, torch.cat([a, b[own:]]), torch.cat([points, points[own:]]),
                                       self._grid_low, self._grid_high)
            at_a, at_b, t_mix = read[: len(index)], read[len(index):], t[own:, None]
            features = torch.cat([at_a[:own], (1.0 - t_mix) * at_a[own:] + t_mix * at_b])
            codes = torch.cat([codes, features], dim=1)
        with torch.autocast(self.device, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            prediction = self.network(points, codes).float()
        batch = self.train_config.batch
        color_total = losses.pop("total", 0.0)
        losses.update(self._fit_loss(prediction[:batch], self._pool_sdf[source[:batch], point[:batch]]))
        losses["code"] = codes[:batch, : self.field_config.latent_dim].pow(2).sum(dim=1).mean()
        losses["total"] = losses["total"] + self.code_regularization * losses["code"] + color_total
        if self.mix_batch:
            m_a, m_b, m_source, m_point, m_t = a[batch:], b[batch:], source[batch:], point[batch:], t[batch:]
            target = ((1.0 - m_t) * self._pool_cross[m_source, m_point, m_a]
                      + m_t * self._pool_cross[m_source, m_point, m_b])
            losses["mix"] = self._fit_loss(prediction[batch:], target)["total"]
            losses["total"] = losses["total"] + self._mix_weight_now * losses["mix"]
        return losses

    def _color_losses(self, rows: torch.Tensor) -> dict:
        slot, point = rows[:, 0], rows[:, 1]
        shape = self._color_shapes[slot]
        appearance = self.color_codes[shape]
        conditioning = torch.cat([self.codes.detach()[shape], appearance], dim=1)
        with torch.autocast(self.device, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            logits = self.color_network(self._color_points[slot, point], conditioning)
        color = srgb_mse(logits, self._color_targets[slot, point])
        prior = appearance.pow(2).sum(dim=1).mean()
        return {"color": color, "color_code": prior, "total": color + self.code_regularization * prior}

    def _fit_loss(self, prediction: torch.Tensor, target_sdf: torch.Tensor) -> dict:
        if self.field_config.kind == "occupancy":
            return occupancy_bce(prediction, target_sdf < 0)
        return SDF_LOSSES[self.train_config.sdf_loss](prediction, target_sdf, self.train_config.clamp)

    def field(self) -> ShapeSpace:  # what run() returns
        report = {**self.base_report(), "shapes": len(self.sources), "latent_dim": self.field_config.latent_dim,
                  "latent_grid": self.field_config.latent_grid, "mix_weight": self.mix_weight}
        return ShapeSpace(
            config=self.field_config,
            network=self.network,
            codes=self.codes.detach().clone(),
            names=list(self.names),
            transforms=list(self.transforms),
            box_low=self.box_low,
            box_high=self.box_high,
            report=report,
            grids=None if self.grids is None else self.grids.detach().clone(),
            grid_low=None if self.grids is None else np.array(self.sample_low, dtype=np.float64),
            grid_high=None if self.grids is None else np.array(self.sample_high, dtype=np.float64),
            color_network=self.color_network,
            color_config=self.color_config,
            color_codes=None if self.color_codes is None else self.color_codes.detach().clone(),
        )


def add_smoothness_gradient(gradient: torch.Tensor, grids: torch.Tensor, weight: float) -> None:
    """Adds to `gradient` weight x the gradient of the grids' smoothness penalty: over the three
    spatial axes of grids (shapes, R, R, R, C), the mean squared difference between neighbouring
    cells. Written out rather than through autograd: it is a few slices and adds per step."""
    for axis in (1, 2, 3):
        length = grids.size(axis)
        difference = grids.narrow(axis, 1, length - 1) - grids.narrow(axis, 0, length - 1)
        scale = 2.0 * weight / difference.numel()
        gradient.narrow(axis, 1, length - 1).add_(difference, alpha=scale)
        gradient.narrow(axis, 0, length - 1).sub_(difference, alpha=scale)


def grid_smoothness(grids: torch.Tensor) -> torch.Tensor:
    """The penalty add_smoothness_gradient differentiates (for tests and reports)."""
    return sum((grids.narrow(axis, 1, grids.size(axis) - 1) - grids.narrow(axis, 0, grids.size(axis) - 1))
               .pow(2).mean() for axis in (1, 2, 3))


def fit_shape_space(meshes, field_config=None, train_config=None, names=None, on_progress=None,
                    should_stop=None, code_regularization: float = CODE_REGULARIZATION,
                    mix_weight: float = MIX_WEIGHT, colors=None) -> ShapeSpace:
    """Fit a shape space to two or more meshes, each in its own (object) coordinates; mix_weight
    0 turns mixed-code supervision off (a plain auto-decoder); `colors`, each mesh's colours or None."""
    fitter = ShapeSpaceFitter(meshes, field_config, train_config, names, code_regularization, mix_weight, colors)
    return fitter.run(on_progress, should_stop)
