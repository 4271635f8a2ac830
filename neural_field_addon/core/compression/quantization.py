"""Quantisation-aware training: a network's parameters rounded in the forward pass exactly as
io/codecs.py stores them (blocks of BLOCK values, symmetric levels, float16 scales), with the
straight-through estimator passing gradients to the float weights underneath (Bengio et al.
2013; as in Jacob et al. 2018's QAT). Trained this way, the weights the file keeps are the ones
the loss saw, so storing them loses nothing more."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..io.codecs import BLOCK, SMALL_ARRAY


def fake_quantize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """`x` rounded as codecs.quantise rounds it (float16 for arrays below SMALL_ARRAY values),
    with the gradient of the identity."""
    if x.numel() < SMALL_ARRAY:
        rounded = x.half().to(x.dtype)
    else:
        levels = 2 ** (bits - 1) - 1
        flat = x.reshape(-1).float()
        padded = nn.functional.pad(flat, (0, (-flat.numel()) % BLOCK)).view(-1, BLOCK)
        scale = (padded.abs().amax(dim=1, keepdim=True) / levels).half().float()
        divisor = torch.where(scale > 0, scale, torch.ones_like(scale))
        quantised = torch.clamp(torch.round(padded / divisor), -levels, levels) * scale
        rounded = quantised.view(-1)[: flat.numel()].view_as(x).to(x.dtype)
    return x + (rounded - x).detach()


class FakeQuantize(nn.Module):
    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def forward(self, x):
        return fake_quantize(x, self.bits)


def start_quantized_training(network: nn.Module, bits: int) -> None:
    """Round every learned parameter of `network` in its forward pass from now on. The
    parameters stay the same objects (parametrize keeps them as `.original`), so an optimizer
    built over them keeps its state."""
    for module in list(network.modules()):
        for name, _ in list(module.named_parameters(recurse=False)):
            parametrize.register_parametrization(module, name, FakeQuantize(bits), unsafe=True)


def finish_quantized_training(network: nn.Module) -> None:
    """Fold the rounding into the parameters: each holds the values the file will store."""
    for module in list(network.modules()):
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
