"""A minimal user builder for the ``user`` family, shared by tests (``user_models:build_mlp``)."""

from __future__ import annotations

import math

from torch import nn


def build_mlp(arch: dict, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """One hidden layer of ``arch["width"]`` units (default 32) over the flattened input."""
    width = arch.get("width", 32)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.ReLU(), nn.Linear(width, num_classes)
    )


class _Slow(nn.Module):
    """Sleeps on every training forward: stretches a run so a test can stop it between rungs."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        if self.training:
            import time

            time.sleep(self.seconds)
        return x


def build_slow_mlp(arch: dict, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """``build_mlp`` that takes ``arch["sleep_ms"]`` per training step."""
    return nn.Sequential(_Slow(arch.get("sleep_ms", 0) / 1000), build_mlp(arch, input_shape, num_classes))
