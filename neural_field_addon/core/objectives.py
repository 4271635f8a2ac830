"""Training objectives. Each returns a dict of named loss terms; 'total' is what is minimised.

Signed distance (targets in field units, negative inside):
- `clamped_l1_sdf`: DeepSDF's L1 between distances clamped to [-clamp, clamp], so capacity goes
  to the band around the surface rather than to far-away values;
- `mape_sdf`: Instant-NGP's relative L1, |f - d| / (|d| + eps), which weighs errors near the
  surface more the closer they are;
- `eikonal`: IGR's (|grad f| - 1)^2, which keeps f a distance function (smooth, no spurious
  level sets) where the data says little.
Occupancy: `occupancy_bce`, binary cross-entropy of the logit against inside (1) / outside (0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MAPE_EPSILON = 0.01  # field units
OCCUPANCY_SMOOTHING = 0.05


def clamped_l1_sdf(prediction: torch.Tensor, target: torch.Tensor, clamp: float) -> dict:
    loss = (prediction.clamp(-clamp, clamp) - target.clamp(-clamp, clamp)).abs().mean()
    return {"total": loss, "sdf_l1": loss}


def mape_sdf(prediction: torch.Tensor, target: torch.Tensor, clamp: float) -> dict:
    # Clamped like the L1 loss, so far-away points do not dominate through their large errors.
    error = (prediction.clamp(-clamp, clamp) - target.clamp(-clamp, clamp)).abs()
    loss = (error / (target.abs().clamp(max=clamp) + MAPE_EPSILON)).mean()
    return {"total": loss, "sdf_mape": loss}


def eikonal(gradient: torch.Tensor) -> torch.Tensor:
    """Mean of (|grad f| - 1)^2 over the batch; gradient (q, 3)."""
    return ((gradient.norm(dim=-1) - 1.0) ** 2).mean()


def occupancy_bce(logit: torch.Tensor, inside: torch.Tensor) -> dict:
    """Labels smoothed to OCCUPANCY_SMOOTHING and 1 - OCCUPANCY_SMOOTHING: the loss then has a
    finite optimum (logit +-2.9) that keeps pulling confident regions back, where plain BCE lets
    them drift once they are right, and the far box faces grew floating fragments."""
    target = inside.to(logit.dtype) * (1.0 - 2.0 * OCCUPANCY_SMOOTHING) + OCCUPANCY_SMOOTHING
    loss = F.binary_cross_entropy_with_logits(logit, target)
    return {"total": loss, "occupancy_bce": loss}


SDF_LOSSES = {"l1": clamped_l1_sdf, "mape": mape_sdf}
