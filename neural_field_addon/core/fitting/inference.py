"""Latent inference: a new shape of a fitted space from new data (DeepSDF's inference), the
decoder frozen and a code (with latent grids, also a grid) optimised. A mesh gives exact signed
distances around it; a point cloud, possibly partial (a scan, the upper half of a shape), gives
surface points where the field must be zero: shape completion. In a space with colour, coloured
data also fits the shape's appearance code (infer_color_code); without colours a reconstruction
takes the space's mean appearance."""

from __future__ import annotations

import numpy as np
import torch

from ..appearance.colorspace import linear_to_srgb
from ..appearance.surface_colors import DeviceColors
from ..config import INFERENCE_STEPS, TrainConfig
from ..fields.field import NeuralField
from ..fields.networks import sample_latent_grids
from ..fields.shapespace import ShapeSpace
from ..geometry import FieldTransform, MeshQuery, TriangleMesh
from .fitter import sample_color_pool, sample_pool
from .objectives import clamped_error, srgb_mse
from .space_fitter import CODE_REGULARIZATION, LATENT_GRID_SMOOTHNESS, add_smoothness_gradient

INFERENCE_BATCH = 8192


def infer_code(space: ShapeSpace, points: torch.Tensor, targets: torch.Tensor, steps: int = INFERENCE_STEPS,
               lr: float = 1e-2, clamp: float = 0.1, seed: int = 0, on_progress=None, fit_grid: bool = False):
    """With the decoder frozen, the code whose field best matches `targets` (signed distances in
    field units) at field-space `points`: clamped L1 plus the codes' prior, from the mean code
    (DeepSDF's inference, started where the training codes are). Returns (code, grid): with
    latent grids the shape's grid, the space's mean grid, or with `fit_grid` (data all around the
    shape) that grid refined too over the second half of the steps, smoothed as in training;
    without, None."""
    generator = torch.Generator(device=space.device).manual_seed(seed)
    code = space.codes.mean(dim=0).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([code], lr=lr)
    grid = None
    if space.grids is not None:
        grid = space.mean_grid()[None].clone().requires_grad_(fit_grid)
        low = torch.as_tensor(space.grid_low, dtype=torch.float32, device=space.device)
        high = torch.as_tensor(space.grid_high, dtype=torch.float32, device=space.device)
        if fit_grid:
            optimizer.add_param_group({"params": [grid], "lr": lr})
    trainable = [p.requires_grad for p in space.network.parameters()]
    space.network.eval()
    for parameter in space.network.parameters():
        parameter.requires_grad_(False)
    try:
        for step in range(steps):
            index = torch.randint(len(points), (min(INFERENCE_BATCH, len(points)),), device=space.device,
                                  generator=generator)
            conditioning = code.expand(len(index), -1)
            if grid is not None:
                features = sample_latent_grids(grid, torch.zeros_like(index), points[index], low, high)
                conditioning = torch.cat([conditioning, features], dim=1)
            prediction = space.network(points[index], conditioning)
            loss = clamped_error(prediction, targets[index], clamp).mean()
            loss = loss + CODE_REGULARIZATION * code.pow(2).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if fit_grid and grid is not None:
                if step < steps // 2:  # the code first: the grid refines a shape the code has placed
                    grid.grad = None
                else:
                    add_smoothness_gradient(grid.grad, grid.detach(), LATENT_GRID_SMOOTHNESS)
            optimizer.step()
            if on_progress and ((step + 1) % 25 == 0 or step + 1 == steps):
                on_progress({"phase": "reconstruct", "step": step + 1, "steps": steps, "loss": float(loss)})
    finally:
        for parameter, flag in zip(space.network.parameters(), trainable):
            parameter.requires_grad_(flag)
    return code.detach(), None if grid is None else grid.detach()[0]


def infer_color_code(space: ShapeSpace, code: torch.Tensor, points: torch.Tensor, targets_srgb: torch.Tensor,
                     steps: int = INFERENCE_STEPS, lr: float = 1e-2, seed: int = 0) -> torch.Tensor:
    """With the colour decoder frozen, the appearance code whose colours best match sRGB
    `targets_srgb` (q, 3) at field-space `points` for the shape of `code`, from the mean one."""
    generator = torch.Generator(device=space.device).manual_seed(seed)
    appearance = space.color_codes.mean(dim=0).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([appearance], lr=lr)
    network = space.color_network
    trainable = [p.requires_grad for p in network.parameters()]
    network.eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    try:
        for _ in range(steps):
            index = torch.randint(len(points), (min(INFERENCE_BATCH, len(points)),), device=space.device,
                                  generator=generator)
            conditioning = torch.cat([code.reshape(-1), appearance]).expand(len(index), -1)
            loss = srgb_mse(network(points[index], conditioning), targets_srgb[index])
            loss = loss + CODE_REGULARIZATION * appearance.pow(2).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finally:
        for parameter, flag in zip(network.parameters(), trainable):
            parameter.requires_grad_(flag)
    return appearance.detach()


def reconstruct(space: ShapeSpace, mesh: TriangleMesh | None = None, points: np.ndarray | None = None,
                steps: int = INFERENCE_STEPS, seed: int = 0, on_progress=None, colors=None) -> NeuralField:
    """A field of the space fitted to new data: a mesh (its exact signed distances around it, in
    its own normalised frame) or a point cloud of surface points, possibly partial (the field is
    zero there; the frame is the space's mean, as a partial cloud's own bounds would misplace the
    shape). The code is found with the decoder frozen (infer_code); with latent grids, a mesh's
    grid is refined too, and a point cloud's is the space's mean (a partial cloud says nothing
    about the cells it does not reach). `colors`: a mesh's SurfaceColors, or a point cloud's linear
    colours (n, 3); in a space with colour they fit the appearance code."""
    if (mesh is None) == (points is None):
        raise ValueError("reconstruct takes a mesh or a point cloud (one of them)")
    device = str(space.device)
    if mesh is not None:
        transform = FieldTransform.fit_unit_box(mesh)
        config = TrainConfig(pool_size=1 << 16, batch=INFERENCE_BATCH, device=device.split(":")[0], seed=seed)
        sample_points, targets = sample_pool(mesh.transformed(transform), space.config.kind, config,
                                             space.box_low, space.box_high, device, seed=seed)
    else:
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 3 or len(points) < 16:
            raise ValueError(f"a point cloud needs at least 16 points of shape (n, 3); got {points.shape}")
        if not np.all(np.isfinite(points)):
            raise ValueError("the point cloud has NaN or infinite coordinates")
        transform = space.mean_transform()
        sample_points = torch.as_tensor(transform.to_field(points), dtype=torch.float32, device=device)
        targets = torch.zeros(len(sample_points), device=device)
    code, grid = infer_code(space, sample_points, targets, steps=steps, seed=seed, on_progress=on_progress,
                            fit_grid=mesh is not None)
    color_code = None
    if colors is not None and space.color_network is not None:
        if mesh is not None:
            field_mesh = mesh.transformed(transform)
            color_points, color_targets = sample_color_pool(
                field_mesh, DeviceColors(colors.check(mesh), device), 1 << 15, device, seed,
                MeshQuery(field_mesh, device=device))
        else:
            colors = np.asarray(colors, dtype=np.float32)
            if colors.shape != (len(sample_points), 3) or not np.all(np.isfinite(colors)):
                raise ValueError(f"the point cloud's colours must be {len(sample_points)} finite RGB values; "
                                 f"got {colors.shape}")
            color_points = sample_points
            color_targets = linear_to_srgb(torch.as_tensor(colors, device=device))
        color_code = infer_color_code(space, code, color_points, color_targets, steps=steps, seed=seed)
    field = space.field_for_code(code, transform, grid, color_code)
    field.report.update({"reconstructed_from": "mesh" if mesh is not None else "points", "inference_steps": steps,
                         "color_fitted": color_code is not None})
    return field
