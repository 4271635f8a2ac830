"""Field networks: an input encoding, an MLP trunk, and a head.

- kind 'sdf': the head is the signed distance in field units (negative inside);
- kind 'occupancy': the head is the logit of 'inside';
- a colour network (`outputs=3`, fields/color.py): the head is the logit of linear RGB.
`FieldNetwork.field_value` turns either into one convention, negative inside and zero on the
surface, so extraction and rendering need not know the kind.

The trunk is `width` x `depth` hidden layers with softplus (beta 100: ReLU-like but with smooth
gradients, hence smooth normals) or ReLU, or, for the 'siren' encoding, sine activations with
SIREN's initialisation (Sitzmann et al. 2020). `skip_layer` k > 0 feeds the encoded input again
into hidden layer k, as DeepSDF does at its middle layer. With `latent_dim` > 0 the network is a
shape-space decoder: a latent code is concatenated to the encoded point (and to the skip input).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import FieldConfig, conditioning_width
from ..devices import triton_available
from .encodings import build_encoding
from .fused_trunk_shapes import fused_trunk_eligible

OCCUPANCY_PRIOR_LOGIT = -2.0
# Occupancy logits are the head's output times this: the trunk then works at the scale of
# distances (about 0.1 for a confident label), which the same initialisation and learning rate
# suit; unscaled, the interior of Suzanne kept 'outside' bubbles after 600 steps.
OCCUPANCY_LOGIT_SCALE = 30.0


class Sine(nn.Module):
    def __init__(self, omega: float):
        super().__init__()
        self.omega = omega

    def forward(self, x):
        return torch.sin(self.omega * x)


def _activation(config: FieldConfig) -> nn.Module:
    if config.encoding == "siren":
        return Sine(config.siren_omega)
    return nn.Softplus(beta=100.0) if config.activation == "softplus" else nn.ReLU()


def _siren_init(layer: nn.Linear, first: bool, omega: float) -> None:
    """SIREN's initialisation: U(-1/n, 1/n) for the first layer, U(-sqrt(6/n)/omega, ...) after,
    so pre-activations stay distributed alike through the depth (n: fan-in)."""
    fan_in = layer.in_features
    bound = 1.0 / fan_in if first else math.sqrt(6.0 / fan_in) / omega
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound)
        layer.bias.uniform_(-bound, bound)


class FieldNetwork(nn.Module):
    def __init__(self, config: FieldConfig, outputs: int = 1):
        super().__init__()
        self.config = config
        self.outputs = outputs
        # Seeded initialisation without disturbing the caller's global random state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.init_seed)
            self.encoding = build_encoding(config)
            encoded = self.encoding.out_dim + conditioning_width(config)
            self.hidden = nn.ModuleList()
            in_dim = encoded
            # Hidden layers after a hash grid have no biases, as in tiny-cuda-nn: the grid's
            # features already carry offsets, and bias gradients cost a reduction per layer.
            bias = config.encoding != "hashgrid"
            for index in range(1, config.depth + 1):
                if index == config.skip_layer:
                    in_dim += encoded
                self.hidden.append(nn.Linear(in_dim, config.width, bias=bias))
                in_dim = config.width
            self.activation = _activation(config)
            self.head = nn.Linear(in_dim, outputs)
            if config.encoding == "siren":
                for index, layer in enumerate([*self.hidden, self.head]):
                    _siren_init(layer, first=index == 0, omega=config.siren_omega)
            # The fused kernels compute one output (a distance or a logit).
            self.fused_trunk = outputs == 1 and fused_trunk_eligible(config)
            if config.kind == "occupancy" and outputs == 1:
                # Start from 'outside' everywhere (p = 0.12): most of the box is empty, and
                # regions the samples rarely reach then stay empty instead of floating at p = 0.5.
                with torch.no_grad():
                    self.head.bias.fill_(OCCUPANCY_PRIOR_LOGIT / OCCUPANCY_LOGIT_SCALE)

    def forward(self, points: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        """The head's raw output (q,) at field-space points (q, 3): distance or logit ((q, outputs)
        for more than one output). A decoder
        (latent_dim > 0) takes the latent code, one for all points or one per point; with latent
        grids, each point's code is followed by its grid features (conditioning_width in all)."""
        if self._fused_trunk(points):
            from .mlp_triton import fused_mlp

            out = fused_mlp(self.encoding(points), [layer.weight for layer in self.hidden], self.head.weight,
                            self.head.bias)
        else:
            out = self.head(self.features(points, code))
            if self.outputs == 1:
                out = out.squeeze(-1)
        return out * OCCUPANCY_LOGIT_SCALE if self.config.kind == "occupancy" and self.outputs == 1 else out

    def _fused_trunk(self, points: torch.Tensor) -> bool:
        """Whether the Triton kernels of mlp_triton compute this call: a network of their shape,
        on CUDA, under bf16 autocast (whose numerics they follow), so training steps use them and
        float32 evaluation (extraction) keeps the PyTorch layers. Not where a gradient with respect
        to the points is wanted (an eikonal term): the kernels' backward is not differentiable. Nor
        where this GPU cannot run them for this shape (mlp_triton.runs_on)."""
        if not (self.fused_trunk and points.is_cuda and not points.requires_grad
                and torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda") == torch.bfloat16
                and triton_available()):
            return False
        from .mlp_triton import runs_on

        return runs_on(points.device, self.encoding.out_dim, self.config.width, self.config.depth)

    def features(self, points: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        """The last hidden layer's output (q, width): what the linear head reads."""
        encoded = self.encoding(points)
        if self.config.latent_dim:
            if code is None:
                raise ValueError("a shape-space decoder needs a latent code")
            encoded = torch.cat([encoded, code.to(encoded.dtype).expand(len(points), -1)], dim=-1)
        x = encoded
        for index, layer in enumerate(self.hidden, start=1):
            if index == self.config.skip_layer:
                x = torch.cat([x, encoded], dim=-1)
            x = self.activation(layer(x))
        return x

    def field_value(self, points: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        """Negative inside, positive outside, zero on the surface, whatever the kind."""
        out = self.forward(points, code)
        return -out if self.config.kind == "occupancy" else out


def sample_latent_grids(grids: torch.Tensor, shape: torch.Tensor, points: torch.Tensor, low: torch.Tensor,
                        high: torch.Tensor) -> torch.Tensor:
    """Features (q, C) of grids (shapes, R, R, R, C) spanning the box [low, high], read
    trilinearly at points (q, 3) of shape[q]; points outside read the nearest face. One
    grid_sample over the grids stacked along x with a one-cell gap between shapes, so a sample
    never blends two shapes' cells."""
    shapes, resolution, channels = grids.shape[0], grids.shape[1], grids.shape[-1]
    volume = nn.functional.pad(grids, (0, 0, 0, 0, 0, 0, 0, 1))  # (shapes, R + 1, R, R, C)
    volume = volume.reshape(shapes * (resolution + 1), resolution, resolution, channels).permute(3, 0, 1, 2)[None]
    cell = ((points - low) / (high - low)).clamp(0.0, 1.0) * (resolution - 1)
    depth = shapes * (resolution + 1) - 1
    x = (cell[:, 0] + shape.to(cell.dtype) * (resolution + 1)) / depth
    # grid_sample's coordinates are (x, y, z) = (W, H, D): z is the fastest axis of the volume.
    coordinates = torch.stack([cell[:, 2] / (resolution - 1), cell[:, 1] / (resolution - 1), x], dim=-1) * 2 - 1
    features = nn.functional.grid_sample(volume, coordinates.view(1, -1, 1, 1, 3).to(volume.dtype), mode="bilinear",
                                         padding_mode="border", align_corners=True)
    return features.view(channels, -1).t()


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class ConditionedNetwork(nn.Module):
    """A shape-space decoder with one code fixed, the code folded into the biases.

    The code enters a layer as extra input columns, and a fixed code makes those columns a
    constant: W [e, c] + b = W_e e + (W_c c + b). Folding it drops latent_dim columns from the
    first and the skip layer, and the per-point concatenation of the code, which is what a
    blend's extraction and the live preview evaluate millions of times. A latent grid (R, R, R, C)
    over [grid_low, grid_high] stays an input: its features differ from point to point.
    """

    def __init__(self, decoder: FieldNetwork, code: torch.Tensor, grid: torch.Tensor | None = None,
                 grid_low=None, grid_high=None):
        super().__init__()
        config = decoder.config
        self.config = config
        self.encoding = decoder.encoding
        self.activation = decoder.activation
        self.head = decoder.head
        self.outputs = decoder.outputs
        reference = next(decoder.parameters())
        code = code.detach().reshape(-1).to(reference)
        if len(code) != config.latent_dim:
            raise ValueError(f"the decoder takes codes of {config.latent_dim}; got {len(code)}")
        if (grid is not None) != bool(config.latent_grid):
            raise ValueError("a decoder with latent grids needs its shape's grid, and one without takes none")
        if grid is not None:
            side, features = config.latent_grid, config.latent_grid_features
            if tuple(grid.shape) != (side, side, side, features):
                raise ValueError(f"the decoder takes grids of {side}^3 x {features}; got {tuple(grid.shape)}")
        self.register_buffer("code", code.clone())
        grid_features = config.latent_grid_features if config.latent_grid else 0
        if grid is not None:
            self.register_buffer("grid", grid.detach().to(reference)[None].clone())
            self.register_buffer("grid_low", torch.as_tensor(grid_low, dtype=reference.dtype, device=reference.device))
            self.register_buffer("grid_high", torch.as_tensor(grid_high, dtype=reference.dtype, device=reference.device))
        else:
            self.grid = None
        encoded_is_code = [False] * self.encoding.out_dim + [True] * config.latent_dim + [False] * grid_features
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        with torch.no_grad():
            for index, layer in enumerate(decoder.hidden, start=1):
                is_code = encoded_is_code if index == 1 else [False] * config.width
                if index == config.skip_layer:
                    is_code = is_code + encoded_is_code
                mask = torch.tensor(is_code, device=code.device)
                bias = layer.bias if layer.bias is not None else torch.zeros(layer.out_features, device=code.device)
                codes = code.repeat(int(mask.sum()) // max(1, len(code)))
                self.weights.append(nn.Parameter(layer.weight[:, ~mask].clone(), requires_grad=False))
                self.biases.append(nn.Parameter(bias + layer.weight[:, mask] @ codes, requires_grad=False))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """The head's raw output, as FieldNetwork.forward with the code given."""
        encoded = self.encoding(points)
        if self.grid is not None:
            shape = torch.zeros(len(points), dtype=torch.long, device=points.device)
            features = sample_latent_grids(self.grid, shape, points, self.grid_low, self.grid_high)
            encoded = torch.cat([encoded, features.to(encoded.dtype)], dim=-1)
        x = encoded
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases), start=1):
            if index == self.config.skip_layer:
                x = torch.cat([x, encoded], dim=-1)
            x = self.activation(nn.functional.linear(x, weight.to(x.dtype), bias.to(x.dtype)))
        out = self.head(x)
        if self.outputs > 1:
            return out
        out = out.squeeze(-1)
        return out * OCCUPANCY_LOGIT_SCALE if self.config.kind == "occupancy" else out

    def field_value(self, points: torch.Tensor) -> torch.Tensor:
        """Negative inside, positive outside, zero on the surface, whatever the kind."""
        out = self.forward(points)
        return -out if self.config.kind == "occupancy" else out
