"""sRGB <-> linear RGB (IEC 61966-2-1), for NumPy arrays and torch tensors alike.

The core works in linear RGB; values are converted exactly where Blender or a file format says
they are sRGB (8-bit PNG and JPEG textures, PLY and OBJ vertex colours, the PSNR's comparison).
Torch-free: Blender's side imports this module (a tensor argument is converted with torch).
"""

from __future__ import annotations

import numpy as np

_KNEE_SRGB = 0.04045
_KNEE_LINEAR = 0.0031308


def _is_tensor(values) -> bool:
    return type(values).__module__.startswith("torch")


def srgb_to_linear(values):
    """Linear RGB of sRGB-encoded values in [0, 1] (the same array type back)."""
    if _is_tensor(values):
        import torch

        values = values.clamp(0.0, 1.0)
        return torch.where(values <= _KNEE_SRGB, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)
    values = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)
    return np.where(values <= _KNEE_SRGB, values / 12.92, ((values + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(values):
    """sRGB encoding of linear RGB values (clamped to [0, 1] first)."""
    if _is_tensor(values):
        import torch

        values = values.clamp(0.0, 1.0)
        # The power's gradient is infinite at 0: evaluate it only where it is used.
        power = values.clamp(min=_KNEE_LINEAR) ** (1.0 / 2.4)
        return torch.where(values <= _KNEE_LINEAR, values * 12.92, 1.055 * power - 0.055)
    values = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)
    power = np.maximum(values, _KNEE_LINEAR) ** (1.0 / 2.4)
    return np.where(values <= _KNEE_LINEAR, values * 12.92, 1.055 * power - 0.055).astype(np.float32)


def to_bytes(linear) -> np.ndarray:
    """8-bit sRGB of linear RGB values (as a PNG or a PLY stores colour)."""
    return np.round(linear_to_srgb(linear) * 255.0).astype(np.uint8)


def from_bytes(srgb_bytes) -> np.ndarray:
    """Linear RGB of 8-bit sRGB values."""
    return srgb_to_linear(np.asarray(srgb_bytes, dtype=np.float32) / 255.0)
