"""Training objectives. Each returns a dict of named loss terms; 'total' is what is minimised.

Signed distance (targets in field units, negative inside):
- `clamped_l1_sdf`: DeepSDF's L1 between distances clamped to [-clamp, clamp], so capacity goes
  to the band around the surface rather than to far-away values (with a gradient kept where
  the prediction is on the wrong side: `clamped_error`);
- `mape_sdf`: Instant-NGP's relative L1, |f - d| / (|d| + eps), which weighs errors near the
  surface more the closer they are;
- `eikonal`: IGR's (|grad f| - 1)^2, which keeps f a distance function (smooth, no spurious
  level sets) where the data says little.
Occupancy: `occupancy_bce`, binary cross-entropy of the logit against inside (1) / outside (0).
Colour: `srgb_mse`, the squared error of the predicted colour in sRGB, where PSNR is measured.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..appearance.colorspace import linear_to_srgb
from ..fields.color import linear_color

MAPE_EPSILON = 0.01  # field units
OCCUPANCY_SMOOTHING = 0.05


def clamped_error(prediction: torch.Tensor, target: torch.Tensor, clamp: float) -> torch.Tensor:
    """|clamp(f) - clamp(d)| per point wherever f is on the target's side, but without DeepSDF's
    dead zone: clamping the prediction too gives no gradient where f is beyond the clamp on the
    wrong side, and a network that once overshoots past it everywhere (seen: a shape space of
    chairs on CUDA, its first steps) is stuck there for good. So points within the clamp of the
    surface take the plain |f - d|, and far points a hinge that only asks f to be at least the
    clamp out on their own side."""
    far = target.abs() >= clamp
    return torch.where(far, F.relu(clamp - torch.sign(target) * prediction), (prediction - target).abs())


def clamped_l1_sdf(prediction: torch.Tensor, target: torch.Tensor, clamp: float) -> dict:
    loss = clamped_error(prediction, target, clamp).mean()
    return {"total": loss, "sdf_l1": loss}


def mape_sdf(prediction: torch.Tensor, target: torch.Tensor, clamp: float) -> dict:
    # Clamped like the L1 loss, so far-away points do not dominate through their large errors.
    error = clamped_error(prediction, target, clamp)
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


def srgb_mse(logits: torch.Tensor, target_srgb: torch.Tensor) -> torch.Tensor:
    """Mean squared sRGB error of a colour network's logits (q, 3) against sRGB targets (q, 3)."""
    return ((linear_to_srgb(linear_color(logits)) - target_srgb) ** 2).mean()
