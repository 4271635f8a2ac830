"""Single-shape fitting, advanced one `step()` at a time so the caller decides when to stop.

Ground truth is computed once into a pool of field-space points (near-surface at several
scales plus uniform points in the padded box) with exact signed distances (occupancy fields use
their sign); each step draws a random batch from the pool. The loss is read back to the host
only every `report_every` steps, so the GPU is not stalled by a synchronisation per step.

A shell (an open sheet thickened) also fits a side network (fields/sides.py) in the same steps: a
third pool of points within a few voxels of the sheet, each with its offset along the normal of
the (consistently oriented) source sheet, so the sheet itself can be extracted later (surface/sheet.py).

With colours (appearance.surface_colors), a colour network (fields/color.py) is fitted in the same
steps: a second pool of points on and near the surface, each with the colour of its closest
source point, and a batch of them per step scored in sRGB, where the colour PSNR is measured.

On CUDA, hash-grid fields train under bf16 autocast (the encoding itself stays fp32) with
PyTorch's fused Adam, and each batch is sorted along the pool's Morton order so neighbouring
lanes of the encoding kernel read neighbouring table entries.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch

from ..appearance.colorspace import linear_to_srgb
from ..appearance.surface_colors import DeviceColors, SurfaceColors, barycentric_of
from ..config import (
    COLOR_POOL_FRACTION,
    DEFAULT_RESOLUTION,
    SHELL_THICKNESS,
    SIDE_BATCH_FRACTION,
    SIDE_SCALES,
    FieldConfig,
    TrainConfig,
    check_compatible,
    color_config,
    side_config,
    thinnest_shell,
)
from ..devices import describe_device, flush_denormals, resolve_device
from ..fields.color import color_network
from ..fields.field import NeuralField
from ..fields.networks import FieldNetwork, parameter_count
from ..fields.sides import side_network
from ..geometry import DeviceSampler, FieldTransform, MeshQuery, TriangleMesh
from ..geometry.bvh import morton_order_tensor
from ..geometry.openness import analyse_surface
from ..geometry.sides import normal_offsets, orient_faces
from .objectives import SDF_LOSSES, eikonal, occupancy_bce, srgb_mse

# Colour samples off the surface: Gaussian offsets at these scales (field units), so colour is
# defined across the band where an extracted surface can lie.
COLOR_NEAR_SCALES = (0.002, 0.01)


class FitCancelled(Exception):
    """Raised by `FieldFitter.run` when `should_stop` returned True between steps."""


ProgressCallback = Callable[[dict], None]


class FieldFitter:
    def __init__(
        self,
        mesh: TriangleMesh,
        field_config: FieldConfig | None = None,
        train_config: TrainConfig | None = None,
        use_cuda_graph: bool = True,
        initial_state: dict | None = None,
        colors: SurfaceColors | None = None,
        color_network_config: FieldConfig | None = None,
        resolution: int | None = None,
    ):
        """`initial_state`: network weights to start from (e.g. a meta-learned initialisation)
        instead of the seeded initialisation. `colors`: the source's surface colours, fitted by a
        colour network beside the shape (of `color_network_config`, else config.color_config's).
        `resolution`: the extraction resolution to come, whose `thinnest_shell` a shell is never
        thinner than."""
        self.field_config = (field_config or FieldConfig()).validate()
        self.train_config = (train_config or TrainConfig()).validate()
        check_compatible(self.field_config, self.train_config)
        self.device = resolve_device(self.train_config.device)
        flush_denormals()
        self.source = mesh
        self.transform = FieldTransform.fit_unit_box(mesh)
        self.field_mesh = mesh.transformed(self.transform)
        low, high = self.field_mesh.bounds
        pad = self.train_config.box_padding
        self.box_low, self.box_high = low - pad, high + pad
        # Uniform samples reach one padding beyond the extraction box, so the field is held
        # down at the box's faces and corners too (unconstrained, a network's extrapolation
        # there left floating fragments).
        self.sample_low, self.sample_high = self.box_low - pad, self.box_high + pad
        self.network = FieldNetwork(self.field_config)
        if initial_state is not None:
            self.network.load_state_dict(initial_state)
        self.network = self.network.to(self.device)
        self.colors = colors.check(mesh) if colors is not None else None
        self.color_config = self.color_network = None
        if self.colors is not None:
            self.color_config = (color_network_config or color_config(self.field_config)).validate()
            self.color_network = color_network(self.color_config).to(self.device)
            self._device_colors = DeviceColors(self.colors, self.device)
        self.resolution = resolution
        self.side_config = self.side_network = None  # a shell's, made once the pool shows it is one
        self.surface_report: dict = {}
        self.half_thickness = None  # a shell's half thickness in field units, once the pool is built
        self.autocast = autocast_dtype(self.field_config, self.train_config, self.device)
        cuda_hash_grid = self.device == "cuda" and self.field_config.encoding == "hashgrid"
        # Sorted batches help the hash-grid kernel's memory access; elsewhere order is moot.
        self._sorted_batches = cuda_hash_grid
        # On CUDA each step replays from a CUDA graph: a step is a few milliseconds of GPU work,
        # and launching its ~60 kernels from Python took as long again. (The eikonal term's
        # double backward stays eager.)
        self._graph_pending = self.device == "cuda" and self.train_config.eikonal_weight == 0 and use_cuda_graph
        self._graph = None
        self._make_optimizer()
        self._start_stepping()

    def _make_optimizer(self) -> None:
        networks = [n for n in (self.network, self.color_network, self.side_network) if n is not None]
        self.optimizer = _optimizer(networks, self.train_config.lr, self.device, self._graph_pending)

    def _start_stepping(self) -> None:
        """Step count, timings, an empty pool, the loss accumulator and the batch generator."""
        self.step_count = 0
        self.timings = {"groundtruth_seconds": 0.0, "train_seconds": 0.0}
        self.last_loss = math.nan
        self._pool_points = None
        self._pool_sdf = None
        self._color_points = None
        self._color_targets = None
        self._side_points = None
        self._side_signed = None
        self._loss_sum = torch.zeros((), device=self.device)
        self._loss_terms = 0
        self._generator = torch.Generator(device=self.device).manual_seed(self.train_config.seed)

    def build_pool(self) -> None:
        """Sample the training pool and compute its exact signed distances."""
        start = time.perf_counter()
        query = MeshQuery(self.field_mesh, device=self.device)
        self._choose_surface(query)
        self._pool_points, self._pool_sdf = sample_pool(
            self.field_mesh, self.field_config.kind, self.train_config, self.sample_low, self.sample_high, self.device,
            query=query, half_thickness=self.half_thickness)
        if self.half_thickness is not None:
            self._build_side_pool(query)
        if self.colors is not None:
            count = max(self.color_batch, int(self.train_config.pool_size * COLOR_POOL_FRACTION))
            self._color_points, self._color_targets = sample_color_pool(
                self.field_mesh, self._device_colors, count, self.device, self.train_config.seed, query)
        if self._graph is not None:  # it reads the old pool: capture again from new steps
            self._graph, self._graph_pending = None, True
        self.timings["groundtruth_seconds"] = time.perf_counter() - start

    def _build_side_pool(self, query: MeshQuery) -> None:
        """The side network (made now, so the optimizer is made again before any step) and its pool:
        points within SIDE_SCALES voxels of the sheet at the extraction resolution, with their
        offsets along the normal of the consistently oriented source (geometry/sides.py)."""
        if self.side_network is None:
            self.side_config = side_config(self.field_config)
            self.side_network = side_network(self.side_config).to(self.device)
            self._make_optimizer()
        oriented, seams = orient_faces(self.field_mesh)
        if seams:
            self.surface_report["sheet_seam_edges"] = seams
        voxel = float((self.box_high - self.box_low).max()) / ((self.resolution or DEFAULT_RESOLUTION) - 1)
        count = max(self.side_batch, self.train_config.pool_size // 4)
        sampler = DeviceSampler(oriented, self.device, self.train_config.seed + 2)
        points = sampler.near_surface(count, tuple(scale * voxel for scale in SIDE_SCALES))
        host = points.double().cpu().numpy()
        _, closest, face = query.closest_points(host)
        offsets = normal_offsets(oriented, host, closest, face)
        order = morton_order_tensor(points, points.min(dim=0).values, points.max(dim=0).values)
        self._side_points = points[order].contiguous()
        self._side_signed = torch.as_tensor(offsets, dtype=torch.float32, device=self.device)[order].contiguous()

    def _choose_surface(self, query: MeshQuery) -> None:
        """Solid or shell (measured, for 'auto'), and a shell's thickness in object units: the
        asked one, else SHELL_THICKNESS of the diagonal; at least the extraction resolution's
        `thinnest_shell`, and thinner than the mesh's box."""
        cfg = self.train_config
        if cfg.surface == "auto":
            self.surface_report = analyse_surface(self.field_mesh, query, seed=cfg.seed).as_report()
        else:
            self.surface_report = {"surface": cfg.surface, "surface_reason": f"asked for ({cfg.surface})"}
        if self.surface_report["surface"] != "shell":
            return
        thickness = cfg.thickness if cfg.thickness is not None else SHELL_THICKNESS * self.source.diagonal
        low, high = self.source.bounds
        largest = float((high - low).max())
        if thickness >= largest:
            raise ValueError(f"a shell {thickness:g} thick is as thick as the mesh's box is wide ({largest:g} at its "
                             "widest): give a thickness below that")
        if self.resolution:
            least = thinnest_shell(float((self.box_high - self.box_low).max()) / self.transform.scale, self.resolution)
            if thickness < least:
                self.surface_report["thickness_note"] = (
                    f"the shell is {least:.3g} thick, not {thickness:.3g}: thinner, extraction at "
                    f"{self.resolution} could not show it as a closed shell")
                thickness = least
        self.surface_report["thickness"] = thickness
        self.half_thickness = 0.5 * thickness * self.transform.scale

    def learning_rate(self, step: int) -> float:
        """Cosine decay from lr to lr * lr_final_fraction over the configured steps."""
        cfg = self.train_config
        progress = min(1.0, step / max(1, cfg.steps - 1))
        floor = cfg.lr * cfg.lr_final_fraction
        return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * progress))

    def step(self) -> None:
        if self._pool_points is None:
            self.build_pool()
        self._set_learning_rate(self.learning_rate(self.step_count))
        index = self._batch_index()
        if self._graph is not None:
            self._graph.replay(index)
        else:
            self.network.train()
            self._eager_step(index)
            if self._graph_pending and self.step_count + 1 >= GRAPH_WARMUP_STEPS:
                self._graph = _GraphedStep.capture(self)
                self._graph_pending = False
        self._loss_terms += 1
        self.step_count += 1

    @property
    def color_batch(self) -> int:
        """Colour points per step (0 without colour)."""
        return 0 if self.colors is None else max(1, int(self.train_config.batch * self.train_config.color_batch_fraction))

    @property
    def side_batch(self) -> int:
        """Side points per step (0 but for a shell)."""
        return 0 if self.half_thickness is None else max(1, int(self.train_config.batch * SIDE_BATCH_FRACTION))

    def _eager_step(self, index: torch.Tensor) -> None:
        """One step on a batch index (the shape pool's, then the colour pool's when there is colour)."""
        batch, color_end = self.train_config.batch, self.train_config.batch + self.color_batch
        shape_index, color_index, side_index = index[:batch], index[batch:color_end], index[color_end:]
        colors = sides = None
        if self.colors is not None:
            colors = (self._color_points[color_index], self._color_targets[color_index])
        if self.side_network is not None:
            sides = (self._side_points[side_index], self._side_signed[side_index])
        losses = self.losses(self._pool_points[shape_index], self._pool_sdf[shape_index], colors, sides)
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        self.optimizer.step()
        self._loss_sum += losses["total"].detach()

    def _batch_index(self) -> torch.Tensor:
        """A uniform random batch of pool indices (with replacement), followed by one of the
        colour pool's when there is colour and one of the side pool's for a shell (one tensor, the
        CUDA graph's one static input)."""
        index = [self._draw(len(self._pool_points), self.train_config.batch)]
        if self.colors is not None:
            index.append(self._draw(len(self._color_points), self.color_batch))
        if self.side_network is not None:
            index.append(self._draw(len(self._side_points), self.side_batch))
        return index[0] if len(index) == 1 else torch.cat(index)

    def _draw(self, pool: int, count: int) -> torch.Tensor:
        """`count` uniform indices into a pool of `pool`. Sorted draws come from the order
        statistics of uniforms, U_(k) = S_k / S_(n+1) with S the running sum of n+1 exponentials
        (Renyi): one scan instead of a sort of the batch."""
        if not self._sorted_batches:
            return torch.randint(pool, (count,), device=self.device, generator=self._generator)
        gaps = torch.empty(count + 1, dtype=torch.float64, device=self.device)
        sums = gaps.exponential_(generator=self._generator).cumsum_(0)
        return (sums[:-1] * (pool / sums[-1])).long().clamp_(max=pool - 1)

    def _set_learning_rate(self, value: float) -> None:
        for group in self.optimizer.param_groups:
            scaled = value * group.get("lr_scale", 1.0)  # a group may move at a multiple of the schedule
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(scaled)  # read by the captured optimizer step
            else:
                group["lr"] = scaled

    def losses(self, points: torch.Tensor, target_sdf: torch.Tensor, colors=None, sides=None) -> dict:
        """Named loss terms of a batch; 'total' is minimised. `colors`: colour points and their
        target sRGB colours; `sides`: side points and their offsets along the sheet's normal."""
        cfg = self.train_config
        eikonal_on = cfg.eikonal_weight > 0
        if eikonal_on:
            points = points.detach().requires_grad_(True)
        with torch.autocast(self.device, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            prediction = self.network(points).float()
        if self.field_config.kind == "occupancy":
            losses = occupancy_bce(prediction, target_sdf < 0)
        else:
            losses = SDF_LOSSES[cfg.sdf_loss](prediction, target_sdf, cfg.clamp)
        if eikonal_on:
            field = -prediction if self.field_config.kind == "occupancy" else prediction
            (gradient,) = torch.autograd.grad(field.sum(), points, create_graph=True)
            losses["eikonal"] = eikonal(gradient)
            losses["total"] = losses["total"] + cfg.eikonal_weight * losses["eikonal"]
        if colors is not None:
            color_points, target = colors
            with torch.autocast(self.device, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
                logits = self.color_network(color_points)
            losses["color"] = srgb_mse(logits, target)
            losses["total"] = losses["total"] + losses["color"]
        if sides is not None:
            side_points, signed = sides
            with torch.autocast(self.device, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
                prediction = self.side_network(side_points).float()
            losses["sides"] = (prediction - signed).abs().mean()
            losses["total"] = losses["total"] + losses["sides"]
        return losses

    def read_loss(self) -> float:
        """Mean loss since the last read (one host synchronisation)."""
        if self._loss_terms:
            self.last_loss = float(self._loss_sum) / self._loss_terms
            self._loss_sum.zero_()
            self._loss_terms = 0
        return self.last_loss

    def run(
        self,
        on_progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> NeuralField:
        cfg = self.train_config
        if on_progress:
            on_progress({"phase": "groundtruth", "step": 0, "steps": cfg.steps})
        if self._pool_points is None:
            self.build_pool()
        start = time.perf_counter()
        while self.step_count < cfg.steps:
            if should_stop and should_stop():
                raise FitCancelled(f"cancelled after {self.step_count} of {cfg.steps} steps")
            self.step()
            if self.step_count % cfg.report_every == 0 or self.step_count == cfg.steps:
                loss = self.read_loss()
                if on_progress:
                    elapsed = time.perf_counter() - start
                    remaining = elapsed / self.step_count * (cfg.steps - self.step_count)
                    on_progress(
                        {
                            "phase": "train",
                            "step": self.step_count,
                            "steps": cfg.steps,
                            "loss": loss,
                            "elapsed": elapsed,
                            "remaining": remaining,
                        }
                    )
        if self.device == "cuda":
            torch.cuda.synchronize()
        self.timings["train_seconds"] = time.perf_counter() - start
        return self.field()

    def base_report(self) -> dict:
        """What every fit reports: steps, final loss, device, network, timings."""
        return {
            "steps": self.step_count,
            "final_loss": self.read_loss(),
            "device": self.device,
            "device_name": describe_device(self.device),
            "kind": self.field_config.kind,
            "encoding": self.field_config.encoding,
            "precision": str(self.autocast or torch.float32).replace("torch.", ""),
            "parameters": parameter_count(self.network),
            **({} if self.color_network is None else {"color_parameters": parameter_count(self.color_network)}),
            **({} if self.side_network is None else {"side_parameters": parameter_count(self.side_network)}),
            **self.surface_report,
            **self.timings,
        }

    def field(self) -> NeuralField:
        report = {
            **self.base_report(),
            "source_vertices": len(self.source.vertices),
            "source_faces": len(self.source.faces),
        }
        return NeuralField(
            config=self.field_config,
            network=self.network,
            transform=self.transform,
            box_low=self.box_low,
            box_high=self.box_high,
            report=report,
            color_network=self.color_network,
            color_config=self.color_config,
            side_network=self.side_network,
            side_config=self.side_config,
        )


def sample_color_pool(field_mesh: TriangleMesh, colors: DeviceColors, count: int, device: str, seed: int,
                      query: MeshQuery):
    """Colour training points (count, 3) in field space, half on the surface and half a little off
    it (COLOR_NEAR_SCALES), in Morton order, each with the sRGB colour (count, 3) of its closest
    point of the source."""
    sampler = DeviceSampler(field_mesh, device, seed + 1)
    on_count = count // 2
    on_points, _, on_face, on_weights = sampler.surface_samples(on_count)
    near = sampler.near_surface(count - on_count, COLOR_NEAR_SCALES)
    _, closest, near_face = query.closest_points(near.double().cpu().numpy())
    near_face = torch.as_tensor(near_face, dtype=torch.long, device=sampler.device)
    closest = torch.as_tensor(closest, dtype=torch.float32, device=sampler.device)
    near_weights = barycentric_of(closest, sampler.triangles[near_face])
    points = torch.cat([on_points, near])
    targets = linear_to_srgb(torch.cat([colors.at(on_face, on_weights), colors.at(near_face, near_weights)]))
    low, high = points.min(dim=0).values, points.max(dim=0).values
    order = morton_order_tensor(points, low, high)
    return points[order].contiguous(), targets[order].contiguous()


def sample_pool(field_mesh: TriangleMesh, kind: str, cfg: TrainConfig, sample_low, sample_high, device: str,
                seed: int | None = None, query: MeshQuery | None = None, half_thickness: float | None = None):
    """A training pool for a mesh in field space: points (pool_size, 3) near the surface at
    cfg.near_scales and uniform in the sample box, in Morton order, with exact signed distances
    (from `query` where the caller keeps one for the mesh, so its BVH is built once).

    With `half_thickness` (field units) the distances are those of a shell around the surface:
    the unsigned distance less the half thickness, exact for the offset surface (a Minkowski sum
    with a ball), negative inside the shell; a share of the near points lies within the shell's
    own scale, on both sides of the sheet."""
    sampler = DeviceSampler(field_mesh, device, cfg.seed if seed is None else seed)
    scales = cfg.near_scales if half_thickness is None else (half_thickness, *cfg.near_scales)
    fraction = cfg.pool_uniform_fraction
    if fraction is None:
        fraction = 0.5 if kind == "occupancy" else 0.2
    uniform_count = int(round(cfg.pool_size * fraction))
    points = torch.cat(
        [
            sampler.near_surface(cfg.pool_size - uniform_count, scales),
            sampler.uniform_box(sample_low, sample_high, uniform_count),
        ]
    )
    # Pool in Morton order: a sorted batch index then reads points that are near in space.
    points = points[morton_order_tensor(points, sample_low, sample_high)].contiguous()
    query = query or MeshQuery(field_mesh, device=device)
    if half_thickness is not None:
        return points, query.distance_tensor(points) - half_thickness
    sdf = query.signed_distance_tensor(points)
    if not bool((sdf < 0).any()):
        # A sheet (one triangle, a plane) has no inside, so its field has no zero level: refuse
        # now rather than train a field whose surface is noise.
        raise ValueError(f"the mesh encloses no volume: none of {len(points):,} sample points is inside it "
                         "(a single triangle, a plane or another open sheet has no inside; fit it as a shell, "
                         "surface 'shell' or 'auto', or give it thickness with a Solidify modifier)")
    return points, sdf


def _optimizer(networks: list, lr: float, device: str, capturable: bool) -> torch.optim.Optimizer:
    """Adam over the networks; hash-grid tables get Instant-NGP's betas and epsilon (their entries
    see rare, sparse gradients). PyTorch's fused implementation on CUDA (one kernel for all
    tensors); for a CUDA graph, capturable, with the learning rate as a device tensor per group."""
    encoding = [p for network in networks for p in network.encoding.parameters()]
    encoding_ids = {id(p) for p in encoding}
    rest = [p for network in networks for p in network.parameters() if id(p) not in encoding_ids]
    groups = [{"params": rest}]
    if encoding:
        groups.append({"params": encoding, "betas": (0.9, 0.99), "eps": 1e-15})
    if capturable:
        for group in groups:
            group["lr"] = torch.tensor(lr, device=device)
        return torch.optim.Adam(groups, lr=torch.tensor(lr, device=device), fused=True, capturable=True)
    return torch.optim.Adam(groups, lr=lr, fused=device == "cuda")


GRAPH_WARMUP_STEPS = 3  # eager steps before capture: optimizer state and kernels must exist


class _GraphedStep:
    """One training step (forward, backward, Adam) captured in a CUDA graph and replayed. The
    batch index is drawn eagerly and copied into the graph's static input; the learning rate
    lives in device tensors the captured optimizer reads."""

    def __init__(self, graph, static_index):
        self.graph, self.static_index = graph, static_index

    @classmethod
    def capture(cls, fitter: "FieldFitter") -> "_GraphedStep | None":
        static_index = fitter._batch_index()
        fitter.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                fitter._eager_step(static_index)
        except RuntimeError:  # capture unsupported here: stay eager
            torch.cuda.synchronize()
            return None
        return cls(graph, static_index)

    def replay(self, index: torch.Tensor) -> None:
        self.static_index.copy_(index)
        self.graph.replay()


def autocast_dtype(field_config: FieldConfig, train_config: TrainConfig, device: str):
    """bf16 for the MLP where it keeps accuracy and pays: hash-grid fields on CUDA ('auto')."""
    if device != "cuda" or train_config.precision == "fp32":
        return None
    if train_config.precision == "bf16" or field_config.encoding == "hashgrid":
        return torch.bfloat16
    return None


def fit_field(
    mesh: TriangleMesh,
    field_config: FieldConfig | None = None,
    train_config: TrainConfig | None = None,
    on_progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    initial_state: dict | None = None,
    colors: SurfaceColors | None = None,
    resolution: int | None = None,
) -> NeuralField:
    """Fit a field (with `colors`, a coloured one) to a mesh in its own (object) coordinates;
    `resolution`: the extraction resolution to come (FieldFitter)."""
    return FieldFitter(mesh, field_config, train_config, initial_state=initial_state, colors=colors,
                       resolution=resolution).run(on_progress, should_stop)
