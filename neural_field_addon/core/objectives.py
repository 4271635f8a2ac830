"""Training objectives. Each returns a dict of named loss terms; 'total' is what is minimised."""

from __future__ import annotations

import torch


def clamped_l1_sdf(prediction: torch.Tensor, target: torch.Tensor, clamp: float) -> dict:
    """DeepSDF's loss: L1 between distances clamped to [-clamp, clamp], so capacity goes to the
    band around the surface rather than to far-away values."""
    loss = (prediction.clamp(-clamp, clamp) - target.clamp(-clamp, clamp)).abs().mean()
    return {"total": loss, "sdf_l1": loss}
