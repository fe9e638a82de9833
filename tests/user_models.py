"""A minimal user builder for the ``user`` family, shared by tests (``user_models:build_mlp``)."""

from __future__ import annotations

import math

from torch import nn


def build_mlp(arch: dict, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """One hidden layer of ``arch["width"]`` units (default 32) over the flattened input."""
    width = arch.get("width", 32)
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.ReLU(), nn.Linear(width, num_classes))
