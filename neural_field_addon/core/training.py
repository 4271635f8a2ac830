"""Single-shape fitting, advanced one `step()` at a time so the caller decides when to stop.

Ground truth is computed once into a pool of field-space points (near-surface at several
scales plus uniform points in the padded box) with exact signed distances; each step draws a
random batch from the pool. The loss is read back to the host only every `report_every` steps,
so the GPU is not stalled by a synchronisation per step.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch

from .config import FieldConfig, TrainConfig
from .devices import describe_device, resolve_device
from .field import NeuralField
from .geometry import DeviceSampler, FieldTransform, MeshQuery, TriangleMesh
from .networks import FieldNetwork, parameter_count
from .objectives import clamped_l1_sdf


class FitCancelled(Exception):
    """Raised by `FieldFitter.run` when `should_stop` returned True between steps."""


ProgressCallback = Callable[[dict], None]


class FieldFitter:
    def __init__(
        self,
        mesh: TriangleMesh,
        field_config: FieldConfig | None = None,
        train_config: TrainConfig | None = None,
    ):
        self.field_config = (field_config or FieldConfig()).validate()
        self.train_config = (train_config or TrainConfig()).validate()
        self.device = resolve_device(self.train_config.device)
        self.source = mesh
        self.transform = FieldTransform.fit_unit_box(mesh)
        self.field_mesh = mesh.transformed(self.transform)
        low, high = self.field_mesh.bounds
        pad = self.train_config.box_padding
        self.box_low, self.box_high = low - pad, high + pad
        self.network = FieldNetwork(self.field_config).to(self.device)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=self.train_config.lr)
        self.step_count = 0
        self.timings = {"groundtruth_seconds": 0.0, "train_seconds": 0.0}
        self.last_loss = math.nan
        self._pool_points = None
        self._pool_sdf = None
        self._loss_sum = torch.zeros((), device=self.device)
        self._loss_terms = 0
        self._generator = torch.Generator(device=self.device).manual_seed(self.train_config.seed)

    def build_pool(self) -> None:
        """Sample the training pool and compute its exact signed distances."""
        cfg = self.train_config
        start = time.perf_counter()
        sampler = DeviceSampler(self.field_mesh, self.device, cfg.seed)
        uniform_count = int(round(cfg.pool_size * cfg.pool_uniform_fraction))
        points = torch.cat(
            [
                sampler.near_surface(cfg.pool_size - uniform_count, cfg.near_scales),
                sampler.uniform_box(self.box_low, self.box_high, uniform_count),
            ]
        )
        self._pool_points = points
        self._pool_sdf = MeshQuery(self.field_mesh, device=self.device).signed_distance_tensor(points)
        self.timings["groundtruth_seconds"] = time.perf_counter() - start

    def learning_rate(self, step: int) -> float:
        """Cosine decay from lr to lr * lr_final_fraction over the configured steps."""
        cfg = self.train_config
        progress = min(1.0, step / max(1, cfg.steps - 1))
        floor = cfg.lr * cfg.lr_final_fraction
        return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * progress))

    def step(self) -> None:
        if self._pool_points is None:
            self.build_pool()
        cfg = self.train_config
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.step_count)
        index = torch.randint(
            len(self._pool_points), (cfg.batch,), device=self.device, generator=self._generator
        )
        self.network.train()
        prediction = self.network(self._pool_points[index])
        losses = clamped_l1_sdf(prediction, self._pool_sdf[index], cfg.clamp)
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        self.optimizer.step()
        self._loss_sum += losses["total"].detach()
        self._loss_terms += 1
        self.step_count += 1

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

    def field(self) -> NeuralField:
        report = {
            "steps": self.step_count,
            "final_loss": self.read_loss(),
            "device": self.device,
            "device_name": describe_device(self.device),
            "parameters": parameter_count(self.network),
            "source_vertices": len(self.source.vertices),
            "source_faces": len(self.source.faces),
            **self.timings,
        }
        return NeuralField(
            config=self.field_config,
            network=self.network,
            transform=self.transform,
            box_low=self.box_low,
            box_high=self.box_high,
            report=report,
        )


def fit_field(
    mesh: TriangleMesh,
    field_config: FieldConfig | None = None,
    train_config: TrainConfig | None = None,
    on_progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> NeuralField:
    """Fit a field to a mesh in its own (object) coordinates and return it."""
    return FieldFitter(mesh, field_config, train_config).run(on_progress, should_stop)
