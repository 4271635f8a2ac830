"""Meta-learned initialisation for single-shape fields: Reptile (Nichol et al. 2018), the
first-order form of the meta-learning MetaSDF (Sitzmann et al. 2020) applies to signed distances.

Each meta-step takes one shape of the family, fits a copy of the current initialisation to it
for a few inner steps (Adam, the shape's own ground-truth pool), and moves the initialisation a
fraction of the way toward the adapted weights. The initialisation ends near weights from which
every member, and a new member of the same family, is a short fit away.
"""

from __future__ import annotations

import copy
import time

import torch

from .config import FieldConfig, TrainConfig
from .devices import flush_denormals, resolve_device
from .geometry import FieldTransform
from .networks import FieldNetwork
from .objectives import SDF_LOSSES, occupancy_bce
from .training import sample_pool


def meta_learn_initialization(meshes, field_config: FieldConfig, train_config: TrainConfig, meta_steps: int = 200,
                              inner_steps: int = 8, meta_lr: float = 0.5, on_progress=None) -> dict:
    """Reptile over the meshes; returns a network state_dict to pass to fit_field(initial_state=...).
    The outer step size decays linearly from meta_lr to 0, as in Reptile."""
    if len(meshes) < 2:
        raise ValueError(f"meta-learning needs a family of at least two meshes; {len(meshes)} given")
    if field_config.latent_dim:
        raise ValueError("meta-learning initialises single-shape fields (latent_dim 0)")
    field_config, train_config = field_config.validate(), train_config.validate()
    device = resolve_device(train_config.device)
    flush_denormals()
    start = time.perf_counter()
    pools = []
    for index, mesh in enumerate(meshes):
        transform = FieldTransform.fit_unit_box(mesh)
        field_mesh = mesh.transformed(transform)
        low, high = field_mesh.bounds
        pad = train_config.box_padding
        pools.append(sample_pool(field_mesh, field_config.kind, train_config, low - 2 * pad, high + 2 * pad, device,
                                 seed=train_config.seed + index))
    meta = FieldNetwork(field_config).to(device)
    generator = torch.Generator(device=device).manual_seed(train_config.seed)
    loss_fn = SDF_LOSSES[train_config.sdf_loss]
    for step in range(meta_steps):
        points, sdf = pools[step % len(pools)]
        learner = copy.deepcopy(meta)
        optimizer = torch.optim.Adam(learner.parameters(), lr=train_config.lr)
        for _ in range(inner_steps):
            index = torch.randint(len(points), (train_config.batch,), device=device, generator=generator)
            prediction = learner(points[index])
            if field_config.kind == "occupancy":
                loss = occupancy_bce(prediction, sdf[index] < 0)["total"]
            else:
                loss = loss_fn(prediction, sdf[index], train_config.clamp)["total"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        epsilon = meta_lr * (1.0 - step / meta_steps)
        with torch.no_grad():
            for target, adapted in zip(meta.parameters(), learner.parameters()):
                target.add_(adapted - target, alpha=epsilon)
        if on_progress and ((step + 1) % 10 == 0 or step + 1 == meta_steps):
            on_progress({"phase": "meta", "step": step + 1, "steps": meta_steps, "loss": float(loss),
                         "elapsed": time.perf_counter() - start})
    return {name: value.detach().cpu() for name, value in meta.state_dict().items()}
