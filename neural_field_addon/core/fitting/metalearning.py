"""Meta-learned fast fitting for single-shape signed-distance fields: a shared body learned over
a family of shapes, and a linear head fitted in closed form.

A field network is a body (encoding and hidden layers) and a linear head. MetaSDF (Sitzmann et
al. 2020) meta-learns the whole initialisation and fits a new shape by gradient steps from it;
gradient steps from a good start are the slow part (an Adam step at the fitter's learning rate
throws a near-perfect start away, one at a safe rate moves too little). Here, as in the
closed-form meta-learners (R2-D2, Bertinetto et al. 2019; MetaOptNet, Lee et al. 2019), the
body is meta-learned so that every member's signed distance is a linear function of its
features, and a new member's head is a ridge regression: one solve on one batch.

Meta-training, on the family's ground-truth pools (each member in its own unit box):
1. multi-head: the body with one head per member, trained jointly (clamped L1);
2. through the solve (second order): each member's head is the ridge solution on one batch, its
   loss is taken on another, and the gradient flows through the solve into the body and into
   the prior head the ridge pulls toward.
Fitting a member (`MetaFitter`, one batch per step): the first step solves the head on the
batch's points near the surface (|d| < clamp); each later step takes one small Adam step on the
body with the head fixed and solves the head again on that batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field as dataclass_field

import torch

from ..config import FieldConfig, TrainConfig, check_compatible
from ..devices import flush_denormals, resolve_device
from ..fields.field import NeuralField
from ..fields.networks import FieldNetwork
from ..geometry import FieldTransform, TriangleMesh
from .fitter import FieldFitter, FitCancelled, sample_pool
from .objectives import clamped_error

# Ridge strength, relative to the number of points in the solve: the head stays at the least-
# squares solution (1e-3 was measured too strong, 1e-8 the same as 1e-6).
RIDGE = 1e-6
# The body's Adam learning rate after the first solve: the fitter's 2e-3, even 5e-4, threw the
# solved start away at the first step (Chamfer 2.4e-4 -> 3e-3 on the benchmark's torus).
BODY_LEARNING_RATE = 5e-5
HEAD_STEPS = 4000
SOLVE_STEPS = 300
HEAD_LEARNING_RATE = 2e-3
SOLVE_LEARNING_RATE = 2e-4


@dataclass
class MetaInitialization:
    """A meta-learned start: the network's state (its head the prior head) and how it was made."""

    config: FieldConfig
    state: dict
    report: dict = dataclass_field(default_factory=dict)


def body_features(network: FieldNetwork, points: torch.Tensor) -> torch.Tensor:
    """The last hidden layer's output with a column of ones appended (the head's bias): (q, width + 1)."""
    x = network.features(points)
    return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], dim=1)


def solve_head(features: torch.Tensor, sdf: torch.Tensor, prior: torch.Tensor, clamp: float,
               ridge: float = RIDGE) -> torch.Tensor:
    """The head h (width + 1) minimising sum over the band |d| < clamp of (features h - d)^2 plus
    ridge * n * |h - prior|^2 (n points in the band), solved in float64; differentiable."""
    weight = (sdf.abs() < clamp).to(torch.float64)
    count = weight.sum().clamp(min=1.0)  # no band point: the solve returns the prior
    f64 = features.to(torch.float64)
    normal = f64.T @ (f64 * weight[:, None])
    right = f64.T @ (weight * sdf.to(torch.float64))
    eye = torch.eye(len(normal), dtype=torch.float64, device=normal.device)
    head = torch.linalg.solve(normal + ridge * count * eye, right + ridge * count * prior.to(torch.float64))
    return head.to(features.dtype)


def head_vector(network: FieldNetwork) -> torch.Tensor:
    return torch.cat([network.head.weight.detach()[0], network.head.bias.detach()])


def set_head(network: FieldNetwork, head: torch.Tensor) -> None:
    with torch.no_grad():
        network.head.weight.copy_(head[:-1][None])
        network.head.bias.copy_(head[-1:])


def meta_learn_initialization(meshes, field_config: FieldConfig, train_config: TrainConfig,
                              head_steps: int = HEAD_STEPS, solve_steps: int = SOLVE_STEPS,
                              on_progress=None, should_stop=None) -> MetaInitialization:
    """Meta-train a body and a prior head over a family of meshes (at least two), with each
    member's pool built as a fit builds it. `train_config` gives the batch (per member per step),
    pool size, clamp, seed and device; `head_steps` multi-head steps, then `solve_steps` through
    the ridge solve, at this module's learning rates and with the clamped L1."""
    if len(meshes) < 2:
        raise ValueError(f"meta-learning needs a family of at least two meshes; {len(meshes)} given")
    field_config, train_config = field_config.validate(), train_config.validate()
    if field_config.latent_dim:
        raise ValueError("meta-learning initialises single-shape fields (latent_dim 0)")
    if field_config.kind != "sdf":
        raise ValueError("meta-learning fits signed-distance fields; its head is solved by least squares on "
                         "distances, which an occupancy field does not have")
    if head_steps < 1 or solve_steps < 0:
        raise ValueError(f"meta-learning needs at least one multi-head step and no negative step count; "
                         f"got {head_steps} and {solve_steps}")
    check_compatible(field_config, train_config)
    device = resolve_device(train_config.device)
    flush_denormals()
    start = time.perf_counter()
    pools = []
    for index, mesh in enumerate(meshes):
        field_mesh = mesh.transformed(FieldTransform.fit_unit_box(mesh))
        low, high = field_mesh.bounds
        pad = train_config.box_padding  # the sample box a fit of this mesh uses
        pools.append(sample_pool(field_mesh, "sdf", train_config, low - 2 * pad, high + 2 * pad, device,
                                 seed=train_config.seed + index))
    network = FieldNetwork(field_config).to(device)
    body = [p for name, p in network.named_parameters() if not name.startswith("head.")]
    generator = torch.Generator(device=device).manual_seed(train_config.seed)
    clamp, batch = train_config.clamp, train_config.batch

    def draw(points, sdf):
        index = torch.randint(len(points), (batch,), device=device, generator=generator)
        return points[index], sdf[index]

    def report(phase, step, steps, loss):
        if should_stop and should_stop():
            raise FitCancelled(f"meta-learning cancelled in its {phase} phase at step {step} of {steps}")
        if on_progress and (step % 25 == 0 or step == steps):
            on_progress({"phase": phase, "step": step, "steps": steps, "loss": float(loss) / len(pools),
                         "elapsed": time.perf_counter() - start})

    # 1. One head per member, every member in every step.
    heads = torch.nn.Parameter(head_vector(network).repeat(len(pools), 1))
    optimizer = torch.optim.Adam([{"params": body}, {"params": [heads]}], lr=HEAD_LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, head_steps, eta_min=0.02 * HEAD_LEARNING_RATE)
    for step in range(1, head_steps + 1):
        loss = 0.0
        for member, (points, sdf) in enumerate(pools):
            x, d = draw(points, sdf)
            loss = loss + clamped_error(body_features(network, x) @ heads[member], d, clamp).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        report("meta-heads", step, head_steps, loss.detach())
    # 2. Through the solve: the head solved on one batch, the loss on another.
    prior = torch.nn.Parameter(heads.detach().mean(dim=0))
    optimizer = torch.optim.Adam([{"params": body}, {"params": [prior]}], lr=SOLVE_LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, solve_steps),
                                                          eta_min=0.05 * SOLVE_LEARNING_RATE)
    for step in range(1, solve_steps + 1):
        loss = 0.0
        for points, sdf in pools:
            x, d = draw(points, sdf)
            head = solve_head(body_features(network, x), d, prior, clamp)
            x, d = draw(points, sdf)
            loss = loss + clamped_error(body_features(network, x) @ head, d, clamp).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        report("meta-solve", step, solve_steps, loss.detach())
    set_head(network, prior.detach())
    state = {name: value.detach().cpu().clone() for name, value in network.state_dict().items()}
    return MetaInitialization(config=field_config, state=state, report={
        "members": len(pools), "head_steps": head_steps, "solve_steps": solve_steps,
        "seconds": time.perf_counter() - start, "device": device})


class MetaFitter(FieldFitter):
    """Fits one mesh from a meta-learned start: the head solved in closed form on the first
    batch; then per batch one Adam step on the body (head fixed) and the head solved again.
    Shares FieldFitter's pool, progress, cancellation and field; no CUDA graph (a step is a
    small solve, and its first step differs from the rest). From train_config it takes the
    steps, batch, pool, clamp, seed and device; the loss is the clamped L1 and the body's rate
    `body_learning_rate` (train_config.lr is a from-scratch rate, which would undo the start)."""

    def __init__(self, mesh: TriangleMesh, initialization: MetaInitialization, train_config: TrainConfig | None = None,
                 body_learning_rate: float = BODY_LEARNING_RATE):
        if not isinstance(initialization, MetaInitialization):
            raise ValueError("MetaFitter starts from a MetaInitialization (meta_learn_initialization's result)")
        super().__init__(mesh, initialization.config, train_config, use_cuda_graph=False,
                         initial_state=initialization.state)
        self.network.head.requires_grad_(False)
        self.body_learning_rate = body_learning_rate
        body = [p for name, p in self.network.named_parameters() if not name.startswith("head.")]
        self.optimizer = torch.optim.Adam(body, lr=body_learning_rate)

    def learning_rate(self, step: int) -> float:
        return self.body_learning_rate  # constant: the body only refines

    def _choose_surface(self, query) -> None:
        super()._choose_surface(query)
        if self.half_thickness is not None:  # its start was learned on solids' signed distances
            raise ValueError("a meta-learned start fits solids only; fit this open sheet from scratch as a shell")

    def _eager_step(self, index: torch.Tensor) -> None:
        points, sdf = self._pool_points[index], self._pool_sdf[index]
        clamp = self.train_config.clamp
        if self.step_count:
            loss = clamped_error(self.network(points), sdf, clamp).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        with torch.no_grad():
            features = body_features(self.network, points)
            head = solve_head(features, sdf, head_vector(self.network), clamp)
            set_head(self.network, head)
            self._loss_sum += clamped_error(features @ head, sdf, clamp).mean()

    def field(self) -> NeuralField:
        result = super().field()
        result.report["meta_learned"] = True
        return result


def fit_from_initialization(mesh: TriangleMesh, initialization: MetaInitialization,
                            train_config: TrainConfig | None = None, on_progress=None, should_stop=None,
                            body_learning_rate: float = BODY_LEARNING_RATE) -> NeuralField:
    """A field of `mesh` in train_config.steps steps from a meta-learned start (see MetaFitter)."""
    return MetaFitter(mesh, initialization, train_config, body_learning_rate).run(on_progress, should_stop)

