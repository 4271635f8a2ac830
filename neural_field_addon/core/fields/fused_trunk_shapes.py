"""Which networks the fused trunk kernels (mlp_triton.py) compute: the shape rules alone, without
Triton, so the network (networks.py) can decide and the kernels can size their pointers from one
place."""

from __future__ import annotations

from ..config import FieldConfig, conditioning_width

FUSED_TRUNK_MAX_DEPTH = 3  # the hidden layers mlp_triton's kernels are written for


def fused_trunk_eligible(config: FieldConfig) -> bool:
    """Whether mlp_triton's kernels compute this network's trunk and head: a hash grid whose
    output width is a power of two (16-256), 1-3 hidden ReLU layers of width 16-128 without
    biases (a hash grid's trunk has none), no skip connection, no latent conditioning."""
    encoded = config.hash_levels * config.hash_features
    return (config.encoding == "hashgrid" and config.activation == "relu" and config.width in (16, 32, 64, 128)
            and 1 <= config.depth <= FUSED_TRUNK_MAX_DEPTH and not (0 < config.skip_layer <= config.depth)
            and conditioning_width(config) == 0 and 16 <= encoded <= 256 and encoded & (encoded - 1) == 0)
